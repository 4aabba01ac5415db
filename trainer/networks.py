"""The networks a preset can name: generator and discriminator builders for any image size.

Every network takes `[z, onehot]` (generator) or `[image, onehot]`
(discriminator) when conditional, and `z` or `image` alone when not, and is a
plain functional Keras model made of stock layers, so an exported generator
loads anywhere without custom objects. A discriminator built with an auxiliary
classifier (`aux`, conditional only) returns `[logit, class_logits]`.

A generator builder is `(z_dim, image_shape, num_classes, sync_bn) -> keras.Model`,
a discriminator builder `(image_shape, num_classes, sync_bn, aux) -> keras.Model`;
trainer/presets.py's entries name them. A new architecture is one such function.

- `book_*` (G and D): the book's CGAN.
- `lean_generator`: drops dropout (noise in G mostly slows convergence) and uses ReLU
  with 4x4 kernels, which tile stride-2 upsampling without checkerboards.
- `projection_discriminator`: no batch norm (per-batch statistics leak information between
  real and fake batches and cost a GPU pass), and the label enters through a
  projection head (Miyato & Koyama, 2018), which makes it matter far more than
  extra input channels do.
- `sn_projection_discriminator`: the same with Keras' stock SpectralNormalization on every
  conv and dense layer (a 1-Lipschitz D, the partner of the hinge loss) and one
  more 3x3 conv for depth.

`sync_bn` makes batch norm use the statistics of the global batch across
tf.distribute replicas (what one device would compute), not of each slice.
"""

import importlib


class _OnFirstUse:
    """A module imported when first used: the CLIs read the presets naming these builders
    before Keras' backend is chosen (trainer/backend.py), so this module must not import Keras."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)


keras = _OnFirstUse("keras")
layers = _OnFirstUse("keras.layers")


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


def book_generator(z_dim, image_shape, num_classes, sync_bn):
    size, _, channels = image_shape
    base, n = upsampling_plan(size)
    z, y = _inputs((z_dim,), num_classes, "z")
    h = layers.Concatenate()([z, y]) if y is not None else z
    filters = 512
    h = layers.Dense(base * base * filters)(h)
    h = layers.Reshape((base, base, filters))(h)
    h = _bn_lrelu_dropout(h, sync_bn)
    for _ in range(n):
        filters //= 2
        h = layers.Conv2DTranspose(filters, 5, strides=2, padding="same")(h)
        h = _bn_lrelu_dropout(h, sync_bn)
    h = layers.Conv2DTranspose(channels, 5, strides=1, padding="same")(h)
    return _model(z, y, _image(h), "generator")


def lean_generator(z_dim, image_shape, num_classes, sync_bn):
    size, _, channels = image_shape
    base, n = upsampling_plan(size)
    z, y = _inputs((z_dim,), num_classes, "z")
    h = layers.Concatenate()([z, y]) if y is not None else z
    filters = 64 * 2**n
    h = layers.Dense(base * base * filters, use_bias=False)(h)
    h = layers.Reshape((base, base, filters))(h)
    h = layers.ReLU()(layers.BatchNormalization(synchronized=sync_bn)(h))
    for _ in range(n):
        filters //= 2
        h = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False)(h)
        h = layers.ReLU()(layers.BatchNormalization(synchronized=sync_bn)(h))
    h = layers.Conv2D(channels, 3, padding="same")(h)
    return _model(z, y, _image(h), "generator")


def _image(h):
    # float32 output keeps tanh exact under mixed precision.
    return layers.Activation("tanh", dtype="float32", name="image")(h)


def book_discriminator(image_shape, num_classes, sync_bn, aux):
    size, _, _ = image_shape
    _, n = upsampling_plan(size)
    x, y = _inputs(image_shape, num_classes, "image")
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
    return _model(x, y, _with_classifier(out, h, num_classes, aux, _plain), "discriminator")


def projection_discriminator(image_shape, num_classes, sync_bn, aux):
    return _projection(image_shape, num_classes, aux, _plain, extra_conv=False)


def sn_projection_discriminator(image_shape, num_classes, sync_bn, aux):
    return _projection(image_shape, num_classes, aux, _spectral, extra_conv=True)


def _projection(image_shape, num_classes, aux, wrap, extra_conv):
    size, _, _ = image_shape
    _, n = upsampling_plan(size)
    x, y = _inputs(image_shape, num_classes, "image")
    h = x
    for i in range(n):
        h = layers.LeakyReLU(0.2)(wrap(layers.Conv2D, 64 * 2**i, 4, strides=2, padding="same")(h))
    if extra_conv:
        # Issue 12's ablation: this one conv took FCD from 2.25 to 1.08 at 64 epochs.
        h = layers.LeakyReLU(0.2)(wrap(layers.Conv2D, 64 * 2**max(n - 1, 0), 3, padding="same")(h))
    h = layers.Flatten()(h)
    out = wrap(layers.Dense, 1, dtype="float32", name="logit")(h)
    if y is not None:
        # Projection: logit += <embed(label), features>.
        embedded = wrap(layers.Dense, h.shape[-1], use_bias=False, name="label_embedding")(y)
        projection = layers.Dot(axes=1)([embedded, h])
        out = layers.Add(dtype="float32", name="projected_logit")([out, projection])
    return _model(x, y, _with_classifier(out, h, num_classes, aux, wrap), "discriminator")


def _with_classifier(logit, features, num_classes, aux, wrap):
    """The logit alone, or [logit, class_logits] with an auxiliary classifier head on the features."""
    if not aux:
        return logit
    return [logit, wrap(layers.Dense, num_classes, dtype="float32", name="class_logits")(features)]


def _plain(layer_class, *args, dtype=None, name=None, **kwargs):
    return layer_class(*args, dtype=dtype, name=name, **kwargs)


def _spectral(layer_class, *args, dtype=None, name=None, **kwargs):
    # The wrapper carries the name and, like the layer, the dtype (float32 logits under mixed precision).
    return layers.SpectralNormalization(layer_class(*args, dtype=dtype, **kwargs), dtype=dtype, name=name)


def _bn_lrelu_dropout(h, sync_bn):
    h = layers.BatchNormalization(synchronized=sync_bn)(h)
    h = layers.LeakyReLU(0.2)(h)
    return layers.Dropout(0.5)(h)
