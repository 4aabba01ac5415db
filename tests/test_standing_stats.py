"""The sampled generator's batch-norm statistics are its own (trainer/standing_stats.py, Nets.sampler)."""

import dataclasses
import types

import keras
import numpy as np
import pytest

from trainer.config import TrainConfig
from trainer.standing_stats import set_standing_statistics, standing_inputs
from trainer.steps import build_nets

SHAPE, CLASSES = (16, 16, 1), 4


def nets_for(preset, ema):
    keras.utils.set_random_seed(0)
    resolved = TrainConfig(dataset="mnist", output_dir="-", preset=preset, batch_size=8).resolve()
    cfg = types.SimpleNamespace(**{**dataclasses.asdict(resolved), "z_distribution": resolved.z_distribution,
                                   "ema": ema})
    return build_nets(cfg, SHAPE, CLASSES, "float32"), cfg


def norms(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def spoil_moving_statistics(model):
    # What a run's lagging, dropout-inflated averages do to a sampled generator, exaggerated.
    for layer in norms(model):
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, 3.0, np.float32))
        layer.moving_variance.assign(np.full(layer.moving_variance.shape, 50.0, np.float32))


def without_dropout_in_training_mode(model, inputs):
    drops = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    rates = [d.rate for d in drops]
    for d in drops:
        d.rate = 0.0
    try:
        # Batch statistics are used in training mode; the moving ones it updates are put back.
        saved = [v.numpy() for v in model.non_trainable_variables]
        out = np.asarray(model(inputs, training=True))
        for v, s in zip(model.non_trainable_variables, saved):
            v.assign(s)
        return out
    finally:
        for d, r in zip(drops, rates):
            d.rate = r


@pytest.mark.parametrize("preset", ["book", "projection"])  # with dropout, and without
def test_sampling_reproduces_the_batch_statistics_pass(preset):
    nets, cfg = nets_for(preset, 0.0)
    g = nets.generator
    inputs = standing_inputs(cfg.z_dim, CLASSES, cfg.z_distribution, count=64)
    spoil_moving_statistics(g)
    want = without_dropout_in_training_mode(g, inputs)
    assert np.abs(np.asarray(g(inputs, training=False)) - want).max() > 0.1  # spoilt: sampling is off
    set_standing_statistics(g, inputs)
    np.testing.assert_allclose(np.asarray(g(inputs, training=False)), want, atol=1e-4)
    # The layers are as they were: training still uses momentum and dropout.
    assert all(layer.momentum == 0.99 for layer in norms(g))
    assert all(layer.rate == 0.5 for layer in g.layers if isinstance(layer, keras.layers.Dropout))


@pytest.mark.parametrize("ema", [0.0, 0.999])
def test_the_sampler_leaves_the_live_generator_alone(ema):
    nets, cfg = nets_for("book", ema)
    spoil_moving_statistics(nets.generator)
    live = [v.numpy() for v in nets.generator.variables]
    inputs = standing_inputs(cfg.z_dim, CLASSES, cfg.z_distribution, count=64)
    sampled = nets.sampler(inputs)
    assert sampled is not nets.generator
    for v, before in zip(nets.generator.variables, live):
        np.testing.assert_array_equal(v.numpy(), before)  # the checkpointed training state is untouched
    if ema == 0.0:  # without EMA the sampled copy has the live weights
        for s, v in zip(sampled.trainable_variables, nets.generator.trainable_variables):
            np.testing.assert_array_equal(s.numpy(), v.numpy())
    # and statistics of its own: those of the standing batch, not the spoilt ones
    assert all(np.abs(layer.moving_variance.numpy() - 50.0).max() > 1 for layer in norms(sampled))


def test_standing_inputs_are_fixed_and_mix_the_classes_evenly():
    z, y = standing_inputs(8, 4, "normal", count=12, seed=3)
    z2, _ = standing_inputs(8, 4, "normal", count=12, seed=3)
    np.testing.assert_array_equal(z, z2)
    assert z.shape == (12, 8) and y.sum(axis=0).tolist() == [3, 3, 3, 3]
    u = standing_inputs(8, 0, "uniform", count=5)
    assert u.shape == (5, 8) and u.min() >= -1 and u.max() <= 1
