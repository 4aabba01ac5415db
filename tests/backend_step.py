"""One training step from given weights, batch and noise, on the backend this process runs.

    KERAS_BACKEND=jax python -m tests.backend_step INIT.npz OUT.npz PRESET

tests/test_backends.py runs it under JAX and calls `first_step` itself under
TensorFlow, then compares the two.
"""

import dataclasses
import sys
import types

import numpy as np

SHAPE, CLASSES, BATCH, EMA = (16, 16, 1), 4, 8, 0.9


def batch():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (BATCH, *SHAPE)).astype(np.uint8)
    labels = rng.integers(0, CLASSES, BATCH).astype(np.int32)
    z = rng.standard_normal((BATCH, 100)).astype(np.float32)
    return images, labels, z


def first_step(init: dict | None = None, preset: str = "sn-hinge"):
    """(initial arrays, [d_loss, g_loss], arrays after one step) with `preset`."""
    import keras

    from trainer.config import TrainConfig
    from trainer.steps import build_nets, spec_from
    from trainer.weights import arrays_of, load_arrays

    keras.utils.set_random_seed(0)
    # With an EMA generator of decay EMA (a faster average, so one step shows).
    resolved = TrainConfig(dataset="mnist", output_dir="-", batch_size=BATCH, preset=preset).resolve()
    cfg = types.SimpleNamespace(**{**dataclasses.asdict(resolved), "z_distribution": resolved.z_distribution, "ema": EMA})
    nets = build_nets(cfg, SHAPE, CLASSES, "float32")
    if init is not None:
        load_arrays(nets.groups(), init, "init")
    before = arrays_of(nets.groups())
    spec = spec_from(cfg, CLASSES, BATCH)
    images, labels, z = batch()
    if keras.backend.backend() == "jax":
        import jax

        from trainer.step_jax import make_core, state_of

        state, groups = state_of(nets)
        state, losses = jax.jit(make_core(nets, spec))(state, images, labels, z, 0)
        for values, variables in zip(state, groups):
            for value, variable in zip(values, variables):
                variable.assign(value)
    else:
        import tensorflow as tf

        from trainer.step_tf import make_core

        losses = tf.function(make_core(nets, spec))(tf.constant(images), tf.constant(labels), tf.constant(z),
                                                    tf.constant(0, tf.int64))
    return before, np.asarray(losses), arrays_of(nets.groups())


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
    _, losses, after = first_step(init, sys.argv[3])
    np.savez(sys.argv[2], losses=losses, **after)
