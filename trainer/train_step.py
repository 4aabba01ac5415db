"""The compiled training step: one call updates D, then G.

Images arrive as uint8 and are scaled to [-1, 1] on the device, which moves a
quarter of the bytes a float pipeline would. The noise of a step is a pure
function of (seed, step): a resumed run draws what the uninterrupted one would
have, and under a tf.distribute strategy each replica takes its own rows of the
global batch's noise, so N replicas compute what one device would on the same
global batch.
"""

import keras
import tensorflow as tf

from trainer.losses import discriminator_objective, generator_objective


def scale_images(images):
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def sample_z(seed, step, batch, z_dim, distribution):
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    if distribution == "uniform":
        return tf.random.stateless_uniform((batch, z_dim), key, -1.0, 1.0)
    return tf.random.stateless_normal((batch, z_dim), key)


def make_train_step(generator, discriminator, g_opt, d_opt, *, seed, z_dim, num_classes,
                    smooth, z_distribution, jit_compile=False, strategy=None, loss="bce", aux_weight=0.0,
                    aux_g_weight=0.0):
    """`train_step(images, labels, step) -> [d_loss, g_loss]`, averaged over the global batch.

    Without a strategy (or with the default one) this is one tf.function on one
    device; with several replicas, each runs the same step on its slice of the
    batch and the optimizers sum their gradients (hence the losses / replicas).
    """
    conditional = num_classes > 0
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1

    def with_label(net, x, y, training):
        return net([x, y] if conditional else x, training=training)

    def update(opt, tape, scaled_loss, variables):
        opt.apply_gradients(zip(tape.gradient(scaled_loss, variables), variables))

    def replica_step(images, labels, step):
        real = scale_images(images)
        y = tf.one_hot(labels, num_classes) if conditional else None
        batch = tf.shape(real)[0]
        if replicas == 1:
            z = sample_z(seed, step, batch, z_dim, z_distribution)
        else:
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            z = sample_z(seed, step, batch * replicas, z_dim, z_distribution)[replica * batch:(replica + 1) * batch]

        # One persistent tape: the generator runs forward once per step. D is
        # updated first; G's update then backpropagates through the *updated*
        # D into that same forward pass (same z, G unchanged in between), which
        # is what the book's alternating updates compute, minus a second pass.
        with tf.GradientTape(persistent=True) as tape:
            fake = with_label(generator, z, y, True)
            real_logits = with_label(discriminator, real, y, True)
            fake_logits = with_label(discriminator, fake, y, True)
            d_loss = discriminator_objective(real_logits, fake_logits, y, smooth=smooth, kind=loss,
                                             aux_weight=aux_weight) / replicas
            # scale_loss is the identity except under LossScaleOptimizer, which
            # unscales the gradients again in apply_gradients.
            scaled = d_opt.scale_loss(d_loss)
        update(d_opt, tape, scaled, discriminator.trainable_variables)

        with tape:
            g_loss = generator_objective(with_label(discriminator, fake, y, True), y, kind=loss,
                                         aux_g_weight=aux_g_weight) / replicas
            scaled = g_opt.scale_loss(g_loss)
        update(g_opt, tape, scaled, generator.trainable_variables)
        del tape
        return tf.stack([d_loss, g_loss])

    if replicas == 1:
        return tf.function(replica_step, jit_compile=jit_compile)

    @tf.function
    def train_step(images, labels, step):
        per_replica = strategy.run(replica_step, args=(images, labels, step))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return train_step


def make_optimizer(lr, beta1, precision, beta2=0.999):
    opt = keras.optimizers.Adam(learning_rate=lr, beta_1=beta1, beta_2=beta2)
    if precision == "mixed_float16":
        # float16 gradients underflow without loss scaling; bfloat16 needs none.
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt
