"""The training step on TensorFlow: tf.GradientTape inside one tf.function that runs many steps.

D runs through `stateless_call`, as in trainer/step_jax.py, so the two backends train
the same thing even where a layer writes its own weights (SpectralNormalization).

On one device the uint8 dataset is a tensor on the device, and each call runs
`n` steps in a tf.while_loop, gathering every batch there from the epoch's
order. Under a tf.distribute strategy (several GPUs or hosts) each call runs
its steps one strategy.run at a time, fed by tf.data: each replica takes its
own rows of the global batch and of its noise, so N replicas compute what one
device would on the same global batch.
"""

import numpy as np
import tensorflow as tf

from trainer.step_spec import d_objective, ema_decay, epoch_order, g_objective


def scale_images(images):
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def sample_z(seed, step, batch, z_dim, distribution):
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    if distribution == "uniform":
        return tf.random.stateless_uniform((batch, z_dim), key, -1.0, 1.0)
    return tf.random.stateless_normal((batch, z_dim), key)


def make_core(nets, spec, replicas=1):
    """`core(images_uint8, labels, z, step) -> [d_loss, g_loss]`: one D update then one G update (no tf.function)."""
    generator, discriminator, g_opt, d_opt = nets.generator, nets.discriminator, nets.g_opt, nets.d_opt
    g_weights = generator.trainable_variables
    d_weights, d_state = discriminator.trainable_variables, discriminator.non_trainable_variables
    ema = nets.ema_generator

    def inputs(x, y):
        return [x, y] if spec.conditional else x

    def values(variables):
        return [tf.convert_to_tensor(v.value) for v in variables]

    def d_call(weights, state, x, y):
        # D runs stateless, as in JAX's step: a layer's write to its own weights (Keras'
        # SpectralNormalization stores W/sigma into its kernel) stays inside the call, so the
        # gradient goes through sigma and the variable keeps W; both backends train the same thing.
        return discriminator.stateless_call(weights, state, inputs(x, y), training=True)

    def core(images, labels, z, step):
        real = scale_images(images)
        y = tf.one_hot(labels, spec.num_classes) if spec.conditional else None
        weights, state = values(d_weights), values(d_state)
        # One persistent tape: the generator runs forward once per step (see trainer/step_spec.py).
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(weights)
            fake = generator(inputs(z, y), training=True)
            real_out, state = d_call(weights, state, real, y)
            fake_out, state = d_call(weights, state, fake, y)
            d_loss = d_objective(real_out, fake_out, y, spec) / replicas
            # scale_loss is the identity except under LossScaleOptimizer, which
            # unscales the gradients again in apply_gradients.
            scaled = d_opt.scale_loss(d_loss)
        d_opt.apply_gradients(zip(tape.gradient(scaled, weights), d_weights))

        with tape:
            fake_out, state = d_call(values(d_weights), state, fake, y)  # D as just updated
            g_loss = g_objective(fake_out, y, spec) / replicas
            scaled = g_opt.scale_loss(g_loss)
        g_opt.apply_gradients(zip(tape.gradient(scaled, g_weights), g_weights))
        del tape
        for v, value in zip(d_state, state):
            v.assign(value)
        if ema is not None:
            decay = ema_decay(spec.ema, tf.cast(step, tf.float32))
            for e, v in zip(ema.trainable_variables, g_weights):
                e.assign(decay * e + (1.0 - decay) * v)
        return tf.stack([tf.cast(d_loss, tf.float32), tf.cast(g_loss, tf.float32)])

    return core


class TFRunner:
    """See trainer/steps.py for the interface."""

    def __init__(self, nets, spec, images, labels, placement, jit_compile, resident):
        self.spec, self.placement = spec, placement
        self.images, self.labels = images, labels.astype(np.int32)
        self.replicas = placement.replicas
        core = make_core(nets, spec, self.replicas)
        if self.replicas > 1:
            self._step = _distributed_step(core, spec, placement.strategy)
            self._agree = _any_worker(placement.strategy)
            return
        self.device_images = tf.constant(images) if resident else None
        self.device_labels = tf.constant(self.labels) if resident else None
        batch = spec.batch

        def run(images, labels, order, first, n, step0):
            losses = tf.TensorArray(tf.float32, size=n)
            for i in tf.range(n):
                idx = tf.slice(order, [(first + i) * batch], [batch])
                z = sample_z(spec.seed, step0 + tf.cast(i, tf.int64), batch, spec.z_dim, spec.z_distribution)
                losses = losses.write(i, core(tf.gather(images, idx), tf.gather(labels, idx), z, step0 + tf.cast(i, tf.int64)))
            return losses.stack()

        self._run = tf.function(run, jit_compile=jit_compile, reduce_retracing=True)

    def start_epoch(self, epoch, first, last):
        self.order = epoch_order(self.spec.seed, epoch, len(self.images))
        if self.replicas > 1:
            self._batches = iter(_epoch_batches(self.images, self.labels, self.spec.batch // self.replicas,
                                                self.order, first, last, self.placement.strategy))
        elif self.device_images is not None:
            self._order = tf.constant(self.order)

    def run(self, first, n, step0) -> np.ndarray:
        if self.replicas > 1:
            losses = []
            for i in range(n):
                images, labels = next(self._batches)
                losses.append(self._step(images, labels, tf.constant(step0 + i, tf.int64)))
            return tf.stack(losses).numpy()
        if self.device_images is not None:
            images, labels, order, start = self.device_images, self.device_labels, self._order, first
        else:  # too big for the device: this call's batches, gathered on the host
            rows = self.order[first * self.spec.batch:(first + n) * self.spec.batch]
            images, labels, order, start = self.images[rows], self.labels[rows], np.arange(len(rows), dtype=np.int32), 0
        return self._run(images, labels, order, tf.constant(start, tf.int32), tf.constant(n, tf.int32),
                         tf.constant(step0, tf.int64)).numpy()

    def sync(self):
        pass  # TensorFlow updates the Keras variables in place

    def agree_stop(self, wanted: bool) -> bool:
        """Whether any worker wants to stop (one collective; every worker calls it after the same step)."""
        if getattr(self.placement, "workers", 1) <= 1:
            return wanted
        return bool(self._agree(tf.constant(1.0 if wanted else 0.0)).numpy() > 0)


def _any_worker(strategy):
    @tf.function
    def agree(flag):
        per_replica = strategy.run(tf.identity, args=(flag,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return agree


def _distributed_step(core, spec, strategy):
    replicas = strategy.num_replicas_in_sync

    def replica_step(images, labels, step):
        batch = tf.shape(images)[0]
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        z = sample_z(spec.seed, step, batch * replicas, spec.z_dim, spec.z_distribution)[replica * batch:(replica + 1) * batch]
        return core(images, labels, z, step)

    @tf.function
    def train_step(images, labels, step):
        per_replica = strategy.run(replica_step, args=(images, labels, step))
        # Each replica's losses are already divided by the number of replicas (the optimizers sum gradients).
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return train_step


def _epoch_batches(images, labels, batch_size, order, first, last, strategy):
    """Global batches `first`..`last`-1 in `order`: replica r gets rows r*batch_size.. of each global
    batch (each worker builds only its own replicas' slices), so every example is seen once per epoch."""
    replicas = strategy.num_replicas_in_sync
    signature = (tf.TensorSpec((batch_size, *images.shape[1:]), tf.uint8), tf.TensorSpec((batch_size,), tf.int32))

    def pipeline(worker=0, workers=1):
        local = replicas // workers

        def batches():
            for b in range(first, last):
                rows = order[b * batch_size * replicas:(b + 1) * batch_size * replicas]
                for r in range(worker * local, (worker + 1) * local):
                    idx = rows[r * batch_size:(r + 1) * batch_size]
                    yield images[idx], labels[idx]

        return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(
        lambda ctx: pipeline(ctx.input_pipeline_id, ctx.num_input_pipelines))
