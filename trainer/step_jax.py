"""The training step on JAX: `stateless_call`, `jax.value_and_grad`, `optimizer.stateless_apply`, all in one jax.jit.

Between calls the networks' and optimizers' variables live as a tuple of arrays
(the Keras guide's stateless idiom); `sync()` writes them back into the Keras
variables before anything samples or saves. Each call runs `n` steps in a
`lax.fori_loop` whose trip count is an argument, so one compilation serves every
call; batches are gathered on the device from the epoch's order. With several
devices (keras.distribution.DataParallel) the variables are replicated and each
batch is split along its first axis: XLA then computes batch-norm statistics
and gradients over the global batch, as one device would.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from trainer.pacer import MAX_STEPS_PER_CALL
from trainer.step_spec import d_objective, ema_decay, epoch_order, g_objective


def scale_images(images):
    return images.astype(jnp.float32) / 127.5 - 1.0


def sample_z(seed, step, batch, z_dim, distribution):
    key = jax.random.fold_in(jax.random.key(seed), step)
    if distribution == "uniform":
        return jax.random.uniform(key, (batch, z_dim), jnp.float32, -1.0, 1.0)
    return jax.random.normal(key, (batch, z_dim), jnp.float32)


def state_of(nets) -> tuple:
    """The values the step carries: (G trainable, G non-trainable, D trainable, D non-trainable, G opt, D opt, EMA)."""
    g, d = nets.generator, nets.discriminator
    ema = nets.ema_generator.trainable_variables if nets.ema_generator is not None else []
    groups = (g.trainable_variables, g.non_trainable_variables, d.trainable_variables, d.non_trainable_variables,
              nets.g_opt.variables, nets.d_opt.variables, ema)
    return tuple([v.value for v in group] for group in groups), groups


def make_core(nets, spec, constrain=lambda x: x):
    """`core(state, images_uint8, labels, z, step) -> (state, [d_loss, g_loss])`: one D update then one G update."""
    generator, discriminator, g_opt, d_opt = nets.generator, nets.discriminator, nets.g_opt, nets.d_opt

    def inputs(x, y):
        return [x, y] if spec.conditional else x

    def core(state, images, labels, z, step):
        g_tv, g_ntv, d_tv, d_ntv, g_ov, d_ov, ema = state
        real = constrain(scale_images(images))
        y = jax.nn.one_hot(labels, spec.num_classes, dtype=jnp.float32) if spec.conditional else None
        z = constrain(z)

        # G forward once; its vjp carries G's gradient later (see trainer/step_spec.py).
        def g_forward(g_tv):
            return generator.stateless_call(g_tv, g_ntv, inputs(z, y), training=True)

        fake, g_vjp, g_ntv = jax.vjp(g_forward, g_tv, has_aux=True)

        def d_loss_fn(d_tv):
            real_out, ntv = discriminator.stateless_call(d_tv, d_ntv, inputs(real, y), training=True)
            fake_out, ntv = discriminator.stateless_call(d_tv, ntv, inputs(fake, y), training=True)
            return d_objective(real_out, fake_out, y, spec), ntv

        (d_loss, d_ntv), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_tv)
        d_tv, d_ov = d_opt.stateless_apply(d_ov, d_grads, d_tv)

        def g_loss_fn(fake):
            out, ntv = discriminator.stateless_call(d_tv, d_ntv, inputs(fake, y), training=True)
            return g_objective(out, y, spec), ntv

        (g_loss, d_ntv), d_fake = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
        (g_grads,) = g_vjp(d_fake)
        g_tv, g_ov = g_opt.stateless_apply(g_ov, g_grads, g_tv)
        if ema:
            decay = ema_decay(spec.ema, jnp.asarray(step, jnp.float32))
            ema = [decay * e + (1.0 - decay) * v for e, v in zip(ema, g_tv)]
        losses = jnp.stack([d_loss.astype(jnp.float32), g_loss.astype(jnp.float32)])
        return (g_tv, g_ntv, d_tv, d_ntv, g_ov, d_ov, ema), losses

    return core


class JaxRunner:
    """See trainer/steps.py for the interface."""

    def __init__(self, nets, spec, images, labels, placement, resident):
        self.spec, self.images, self.labels = spec, images, labels.astype(np.int32)
        self.state, self.groups = state_of(nets)
        # The Keras variables hold self.state's very arrays: the first sync still gives them copies (below).
        self.synced = False
        devices = jax.devices()
        constrain = lambda x: x  # noqa: E731
        self.put = jnp.asarray
        if placement.replicas > 1:
            mesh = Mesh(np.array(devices[:placement.replicas]), ("batch",))
            split, whole = NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec())
            constrain = lambda x: jax.lax.with_sharding_constraint(x, split)  # noqa: E731
            self.put = lambda x: jax.device_put(x, whole)  # noqa: E731
        self.device_images = self.put(images) if resident else None
        self.device_labels = self.put(self.labels) if resident else None
        core = make_core(nets, spec, constrain)
        batch = spec.batch

        def run(state, images, labels, order, first, n, step0):
            def body(i, carry):
                state, losses = carry
                idx = jax.lax.dynamic_slice(order, ((first + i) * batch,), (batch,))
                z = sample_z(spec.seed, step0 + i, batch, spec.z_dim, spec.z_distribution)
                state, step_losses = core(state, images[idx], labels[idx], z, step0 + i)
                return state, jax.lax.dynamic_update_slice(losses, step_losses[None], (i, 0))

            # Per-step losses in a buffer of the largest call's size: one compilation for every n.
            return jax.lax.fori_loop(0, n, body, (state, jnp.zeros((MAX_STEPS_PER_CALL, 2), jnp.float32)))

        self._run = jax.jit(run)

    def start_epoch(self, epoch, first, last):
        self.order = epoch_order(self.spec.seed, epoch, len(self.images))
        if self.device_images is not None:
            self._order = self.put(self.order)

    def run(self, first, n, step0) -> np.ndarray:
        if self.device_images is not None:
            images, labels, order, start = self.device_images, self.device_labels, self._order, first
        else:  # too big for the device: this call's batches, gathered on the host
            rows = self.order[first * self.spec.batch:(first + n) * self.spec.batch]
            images, labels = self.put(self.images[rows]), self.put(self.labels[rows])
            order, start = self.put(np.arange(len(rows), dtype=np.int32)), 0
        self.state, losses = self._run(self.state, images, labels, order, np.int32(start), np.int32(n), np.int32(step0))
        self.synced = False
        return np.asarray(losses)[:n]

    def agree_stop(self, wanted: bool) -> bool:
        return wanted  # one host, one process

    def sync(self):
        # Once per call's state: an epoch's end syncs for its sampling and again for its checkpoint, and the
        # run's end once more, with no step between (only the sampled generator changes there, not these).
        if self.synced:
            return
        # Copies: Keras may donate its variables' buffers to a compiled call (predict_on_batch does),
        # which must not delete the arrays this runner carries on.
        for values, variables in zip(self.state, self.groups):
            for value, variable in zip(values, variables):
                variable.assign(jnp.copy(value))
        self.synced = True
