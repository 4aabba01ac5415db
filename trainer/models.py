"""Generator and discriminator networks, for both presets and any image size.

Every network takes `[z, onehot]` (generator) or `[image, onehot]`
(discriminator) when conditional, and `z` or `image` alone when not, and is a
plain functional Keras model made of stock layers, so an exported generator
loads anywhere without custom objects.

`seed` is the book's CGAN. `default` is ours, chosen for image quality per
GPU-second:
- the generator drops dropout (noise in G mostly slows convergence) and uses
  ReLU with 4x4 kernels, which tile stride-2 upsampling without checkerboards;
- the discriminator drops batch norm (per-batch statistics leak information
  between real and fake batches and cost a GPU pass) and learns the label
  through a projection head (Miyato & Koyama, 2018), which makes the label
  matter far more than extra input channels do;
- a batch of 128 keeps a modern GPU busy on 28x28 images.

`sync_bn` makes batch norm use the statistics of the global batch across
tf.distribute replicas (what one device would compute), not of each slice.
"""

import keras
from keras import layers


def upsampling_plan(size: int) -> tuple[int, int]:
    """(base size, number of stride-2 steps) so that base * 2**n == size and base <= 7.

    28 -> (7, 2) as in the book; 64 -> (4, 4); 32 -> (4, 3).
    """
    base, n = size, 0
    while base > 7 and base % 2 == 0:
        base //= 2
        n += 1
    return base, n


def _inputs(shape, num_classes, name):
    x = keras.Input(shape, name=name)
    y = keras.Input((num_classes,), name="label") if num_classes else None
    return x, y


def _model(x, y, out, name):
    return keras.Model([x, y] if y is not None else x, out, name=name)


def build_generator(preset, z_dim, image_shape, num_classes=0, sync_bn=False):
    size, _, channels = image_shape
    base, n = upsampling_plan(size)
    z, y = _inputs((z_dim,), num_classes, "z")
    h = layers.Concatenate()([z, y]) if y is not None else z
    if preset == "seed":
        filters = 512
        h = layers.Dense(base * base * filters)(h)
        h = layers.Reshape((base, base, filters))(h)
        h = _bn_lrelu_dropout(h, sync_bn)
        for _ in range(n):
            filters //= 2
            h = layers.Conv2DTranspose(filters, 5, strides=2, padding="same")(h)
            h = _bn_lrelu_dropout(h, sync_bn)
        h = layers.Conv2DTranspose(channels, 5, strides=1, padding="same")(h)
    else:
        filters = 64 * 2**n
        h = layers.Dense(base * base * filters, use_bias=False)(h)
        h = layers.Reshape((base, base, filters))(h)
        h = layers.ReLU()(layers.BatchNormalization(synchronized=sync_bn)(h))
        for _ in range(n):
            filters //= 2
            h = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False)(h)
            h = layers.ReLU()(layers.BatchNormalization(synchronized=sync_bn)(h))
        h = layers.Conv2D(channels, 3, padding="same")(h)
    # float32 output keeps tanh exact under mixed precision.
    out = layers.Activation("tanh", dtype="float32", name="image")(h)
    return _model(z, y, out, "generator")


def build_discriminator(preset, image_shape, num_classes=0, sync_bn=False):
    size, _, _ = image_shape
    _, n = upsampling_plan(size)
    x, y = _inputs(image_shape, num_classes, "image")
    if preset == "seed":
        h = x
        if y is not None:
            # The book's conditioning: the one-hot label as extra image channels.
            planes = layers.Reshape((1, 1, num_classes))(y)
            planes = layers.UpSampling2D(size=(size, size))(planes)
            h = layers.Concatenate()([x, planes])
        for i in range(n):
            h = layers.Conv2D(32 * 2**i, 5, strides=2, padding="same")(h)
            h = _bn_lrelu_dropout(h, sync_bn)
        h = layers.Conv2D(32 * 2**n, 5, strides=1, padding="same")(h)
        h = layers.Flatten()(_bn_lrelu_dropout(h, sync_bn))
        out = layers.Dense(1, dtype="float32", name="logit")(h)
    else:
        h = x
        for i in range(n):
            h = layers.Conv2D(64 * 2**i, 4, strides=2, padding="same")(h)
            h = layers.LeakyReLU(0.2)(h)
        h = layers.Flatten()(h)
        out = layers.Dense(1, dtype="float32", name="logit")(h)
        if y is not None:
            # Projection: logit += <embed(label), features>.
            embedded = layers.Dense(h.shape[-1], use_bias=False, name="label_embedding")(y)
            projection = layers.Dot(axes=1)([embedded, h])
            out = layers.Add(dtype="float32", name="projected_logit")([out, projection])
    return _model(x, y, out, "discriminator")


def _bn_lrelu_dropout(h, sync_bn):
    h = layers.BatchNormalization(synchronized=sync_bn)(h)
    h = layers.LeakyReLU(0.2)(h)
    return layers.Dropout(0.5)(h)
