"""The compiled training step: one call updates D, then G.

Images arrive as uint8 and are scaled to [-1, 1] on the device, which moves a
quarter of the bytes a float pipeline would.
"""

import keras
import tensorflow as tf

from trainer.losses import discriminator_loss, generator_loss


def scale_images(images):
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def sample_z(rng: tf.random.Generator, batch, z_dim, distribution):
    if distribution == "uniform":
        return rng.uniform((batch, z_dim), -1.0, 1.0)
    return rng.normal((batch, z_dim))


def make_train_step(generator, discriminator, g_opt, d_opt, rng, *, z_dim, num_classes,
                    smooth, z_distribution, jit_compile=False):
    conditional = num_classes > 0

    def with_label(net, x, y, training):
        return net([x, y] if conditional else x, training=training)

    def update(opt, tape, scaled_loss, variables):
        opt.apply_gradients(zip(tape.gradient(scaled_loss, variables), variables))

    @tf.function(jit_compile=jit_compile)
    def train_step(images, labels):
        real = scale_images(images)
        y = tf.one_hot(labels, num_classes) if conditional else None
        z = sample_z(rng, tf.shape(real)[0], z_dim, z_distribution)

        # One persistent tape: the generator runs forward once per step. D is
        # updated first; G's update then backpropagates through the *updated*
        # D into that same forward pass (same z, G unchanged in between), which
        # is what the book's alternating updates compute, minus a second pass.
        with tf.GradientTape(persistent=True) as tape:
            fake = with_label(generator, z, y, True)
            real_logits = with_label(discriminator, real, y, True)
            fake_logits = with_label(discriminator, fake, y, True)
            d_loss = discriminator_loss(real_logits, fake_logits, smooth)
            # scale_loss is the identity except under LossScaleOptimizer, which
            # unscales the gradients again in apply_gradients.
            scaled = d_opt.scale_loss(d_loss)
        update(d_opt, tape, scaled, discriminator.trainable_variables)

        with tape:
            g_loss = generator_loss(with_label(discriminator, fake, y, True))
            scaled = g_opt.scale_loss(g_loss)
        update(g_opt, tape, scaled, generator.trainable_variables)
        del tape
        return tf.stack([d_loss, g_loss])

    return train_step


def make_optimizer(lr, beta1, precision):
    opt = keras.optimizers.Adam(learning_rate=lr, beta_1=beta1)
    if precision == "mixed_float16":
        # float16 gradients underflow without loss scaling; bfloat16 needs none.
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt
