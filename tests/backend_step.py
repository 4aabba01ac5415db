"""Training steps from given weights, batches and noise, on the backend this process runs.

    KERAS_BACKEND=jax python -m tests.backend_step INIT.npz OUT.npz PRESET [BATCH STEP,STEP,...]

tests/test_backends.py runs it under JAX and calls `train_steps` (or `first_step`) itself
under TensorFlow, then compares the two.
"""

import contextlib
import dataclasses
import math
import sys
import types

import numpy as np

SHAPE, CLASSES, BATCH, EMA = (16, 16, 1), 4, 8, 0.9


def batches(batch, n, z_dim):
    """`n` (images, labels, z), the same on every backend; the first one is `batch()`'s when batch is BATCH."""
    rng = np.random.default_rng(1)
    return [(rng.integers(0, 256, (batch, *SHAPE)).astype(np.uint8), rng.integers(0, CLASSES, batch).astype(np.int32),
             rng.standard_normal((batch, z_dim)).astype(np.float32)) for _ in range(n)]


def batch():
    return batches(BATCH, 1, 100)[0]


def config(preset, batch_size=BATCH):
    """`preset`'s resolved config with an EMA generator of decay EMA (a faster average, so a few steps show)."""
    from trainer.config import TrainConfig

    resolved = TrainConfig(dataset="mnist", output_dir="-", batch_size=batch_size, preset=preset).resolve()
    return types.SimpleNamespace(**{**dataclasses.asdict(resolved), "z_distribution": resolved.z_distribution, "ema": EMA})


def build(cfg):
    import keras

    from trainer.steps import build_nets

    keras.utils.set_random_seed(0)
    return build_nets(cfg, SHAPE, CLASSES, "float32")


def first_step(init: dict | None = None, preset: str = "sn-hinge"):
    """(initial arrays, [d_loss, g_loss], arrays after one step) with `preset`."""
    before, losses, after = train_steps(init, preset, BATCH, (0,))
    return before, losses[0], after


def train_steps(init: dict | None, preset: str, batch_size: int, steps: tuple):
    """(initial arrays, each step's [d_loss, g_loss], arrays after the steps): one step per number in `steps`
    (the step number sets the EMA's warm-up decay), on `batches`, with `same_dropout_masks`."""
    import keras

    from trainer.steps import spec_from
    from trainer.weights import arrays_of, load_arrays

    cfg = config(preset, batch_size)
    nets = build(cfg)
    if init is not None:
        load_arrays(nets.groups(), init, "init")  # a checkpoint's loader: the other backend's dtypes included
    before = arrays_of(nets.groups())
    spec = spec_from(cfg, CLASSES, batch_size)
    data = batches(batch_size, len(steps), cfg.z_dim)
    with same_dropout_masks():
        if keras.backend.backend() == "jax":
            losses = _jax_steps(nets, spec, data, steps)
        else:
            losses = _tf_steps(nets, spec, data, steps)
    return before, np.asarray(losses), arrays_of(nets.groups())


def _jax_steps(nets, spec, data, steps):
    import jax

    from trainer.step_jax import make_core, state_of

    state, groups = state_of(nets)
    core, losses = jax.jit(make_core(nets, spec)), []
    for step, (images, labels, z) in zip(steps, data):
        state, step_losses = core(state, images, labels, z, step)
        losses.append(np.asarray(step_losses))
    for values, variables in zip(state, groups):
        for value, variable in zip(values, variables):
            variable.assign(value)
    return losses


def _tf_steps(nets, spec, data, steps):
    import tensorflow as tf

    from trainer.step_tf import make_core

    core = tf.function(make_core(nets, spec))
    return [core(tf.constant(images), tf.constant(labels), tf.constant(z), tf.constant(step, tf.int64)).numpy()
            for step, (images, labels, z) in zip(steps, data)]


@contextlib.contextmanager
def same_dropout_masks():
    """Keras' dropout with a mask both backends compute alike. Keras draws its masks with each backend's
    own RNG (Philox on TensorFlow, threefry on JAX), so they differ whatever the seed; here the mask is a
    fixed function of the seed generator's state, which the layer still advances as it does in training,
    and of each element's position. Everything else about dropout (which calls draw, the 1 / (1 - rate)
    scaling, the seed state carried from step to step) is the backends' own."""
    from keras import ops
    from keras.src import backend
    from keras.src.random.seed_generator import draw_seed

    def dropout(inputs, rate, noise_shape=None, seed=None):
        assert noise_shape is None  # the presets' Dropout layers drop elements, not channels
        state = ops.cast(draw_seed(seed), "int32")  # [seed, draws so far]: int64 on TensorFlow, uint32 on JAX
        position = ops.reshape(ops.arange(math.prod(inputs.shape), dtype="int32"), inputs.shape)
        keep = ops.mod(position * 31 + state[0] % 1009 + state[1] * 101, 97) >= round(rate * 97)
        return ops.where(keep, inputs / (1.0 - rate), ops.zeros_like(inputs))

    kept = backend.random.dropout
    backend.random.dropout = dropout
    try:
        yield
    finally:
        backend.random.dropout = kept


def inert_arrays(preset) -> set:
    """Names (as train_steps' arrays) of the weights whose gradient is zero in exact arithmetic, and of
    their Adam moments: the bias of a layer whose output goes only into batch norm, which subtracts it
    again with the batch mean. What moves them is each backend's rounding noise divided by Adam's
    epsilon, so they cannot agree between backends, and nothing the networks compute depends on them."""
    import keras

    nets = build(config(preset))
    names = set()
    for group, model, opt in (("generator", nets.generator, nets.g_opt),
                              ("discriminator", nets.discriminator, nets.d_opt)):
        trainable = [id(v) for v in model.trainable_variables]
        for layer in model.layers:
            bias = getattr(layer, "bias", None)
            consumers = [node.operation for node in layer._outbound_nodes]  # Keras' graph: no public accessor
            if bias is None or not consumers or not all(isinstance(c, keras.layers.BatchNormalization)
                                                        for c in consumers):
                continue
            t = trainable.index(id(bias))
            names.add(f"{group}/{index_of(model.variables, bias):04d}")
            # Adam keeps [iterations, learning_rate, then momentum and velocity of each trainable weight in turn].
            names |= {f"{group[0]}_opt/{2 + 2 * t:04d}", f"{group[0]}_opt/{3 + 2 * t:04d}"}
            assert opt.variables[2 + 2 * t].path.endswith(bias.path.replace("/", "_") + "_momentum")
            if group == "generator" and nets.ema_generator is not None:
                names.add(f"ema_generator/{t:04d}")
    return names


def index_of(variables, variable) -> int:
    return [id(v) for v in variables].index(id(variable))


def non_trainable_arrays(preset) -> list:
    """Names (as train_steps' arrays) of the networks' state that is not trained: batch-norm moving
    statistics, spectral norm's power-iteration vectors, dropout's seed states."""
    nets = build(config(preset))
    return [f"{group}/{index_of(model.variables, v):04d}"
            for group, model in (("generator", nets.generator), ("discriminator", nets.discriminator))
            for v in model.non_trainable_variables]


def trainable_before_after(before: dict, after: dict, preset: str):
    """(G's trainable arrays before, after, the EMA generator's after) from first_step's arrays."""
    from trainer.config import TrainConfig
    from trainer.models import build_generator

    cfg = TrainConfig(dataset="mnist", output_dir="-", preset=preset).resolve()
    g = build_generator(cfg.preset, cfg.z_dim, SHAPE, CLASSES)
    trainable = {id(v) for v in g.trainable_variables}
    index = [i for i, v in enumerate(g.variables) if id(v) in trainable]  # "generator/i" is g.variables[i]
    ema = sorted(k for k in after if k.startswith("ema_generator/"))
    assert len(ema) == len(index) > 0
    return ([before[f"generator/{i:04d}"] for i in index], [after[f"generator/{i:04d}"] for i in index],
            [after[k] for k in ema])


if __name__ == "__main__":
    with np.load(sys.argv[1]) as npz:
        init = {k: npz[k] for k in npz.files}
    if len(sys.argv) > 4:
        steps = tuple(int(s) for s in sys.argv[5].split(","))
        _, losses, after = train_steps(init, sys.argv[3], int(sys.argv[4]), steps)
    else:
        _, losses, after = first_step(init, sys.argv[3])
    np.savez(sys.argv[2], losses=losses, **after)
