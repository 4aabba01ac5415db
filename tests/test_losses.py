"""The losses, the EMA update and the data order against values worked out by hand (keras.ops, the active backend)."""

import math

import numpy as np
import pytest
from keras import ops

from trainer import ema, losses


def value(x):
    return float(ops.convert_to_numpy(x))


def softplus(x):
    return math.log1p(math.exp(x))


REAL, FAKE = [2.0, -0.5, 0.3], [-1.5, 0.8]


def test_bce_matches_the_formula_with_one_sided_smoothing():
    # BCE(t, x) = t * softplus(-x) + (1 - t) * softplus(x); real targets 0.9, fake targets 0.
    real = np.mean([0.9 * softplus(-x) + 0.1 * softplus(x) for x in REAL])
    fake = np.mean([softplus(x) for x in FAKE])
    assert value(losses.discriminator_loss(ops.array(REAL), ops.array(FAKE), 0.1)) == pytest.approx(real + fake, rel=1e-5)
    assert value(losses.generator_loss(ops.array(FAKE))) == pytest.approx(np.mean([softplus(-x) for x in FAKE]), rel=1e-5)


def test_bce_is_stable_at_large_logits():
    assert value(losses.discriminator_loss(ops.array([80.0]), ops.array([-80.0]))) == pytest.approx(0.0, abs=1e-6)
    assert value(losses.generator_loss(ops.array([-200.0]))) == pytest.approx(200.0, rel=1e-6)


def test_hinge_by_hand():
    # D: mean(relu(1 - real)) + mean(relu(1 + fake)) = mean(0, 1.5, 0.7) + mean(0, 1.8) = 0.7333 + 0.9
    d = value(losses.discriminator_loss(ops.array(REAL), ops.array(FAKE), smooth=0.1, kind="hinge"))
    assert d == pytest.approx((0 + 1.5 + 0.7) / 3 + (0 + 1.8) / 2, rel=1e-6)  # smoothing does not apply
    assert value(losses.generator_loss(ops.array(FAKE), kind="hinge")) == pytest.approx(-(-1.5 + 0.8) / 2, rel=1e-6)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown loss 'l2'"):
        losses.generator_loss(ops.array(FAKE), kind="l2")


def test_aux_loss_is_mean_cross_entropy_from_logits():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]], np.float32)
    onehot = np.array([[1, 0, 0], [0, 0, 1]], np.float32)
    lse0 = math.log(math.exp(2) + 1 + math.exp(-1))
    expected = ((lse0 - 2.0) + math.log(3.0)) / 2
    assert value(losses.aux_loss(ops.array(logits), ops.array(onehot))) == pytest.approx(expected, rel=1e-5)


def test_objectives_add_the_classifier_on_real_images_for_d_and_on_fakes_for_g():
    real_logit, fake_logit = ops.array([[0.5]]), ops.array([[-0.2]])
    real_classes = ops.array([[3.0, 0.0]])
    fake_classes = ops.array([[0.0, 1.0]])
    y = ops.array([[1.0, 0.0]])
    d_plain = value(losses.discriminator_loss(real_logit, fake_logit, kind="hinge"))
    d = losses.discriminator_objective([real_logit, real_classes], [fake_logit, fake_classes], y, smooth=0.0,
                                       kind="hinge", aux_weight=0.3)
    assert value(d) == pytest.approx(d_plain + 0.3 * math.log1p(math.exp(-3.0)), rel=1e-5)  # fake classes unused
    g = losses.generator_objective([fake_logit, fake_classes], y, kind="hinge", aux_g_weight=0.1)
    assert value(g) == pytest.approx(0.2 + 0.1 * math.log1p(math.e), rel=1e-5)
    # One output (no head): just the adversarial term, whatever the weights.
    assert value(losses.discriminator_objective(real_logit, fake_logit, y, smooth=0.0, kind="hinge",
                                                aux_weight=0.3)) == pytest.approx(d_plain)


def test_ema_copy_starts_from_the_generator_and_stays_apart():
    import keras

    inputs = keras.Input((3,))
    gen = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    twin = ema.ema_copy(gen)
    assert [w.shape for w in twin.weights] == [w.shape for w in gen.weights] and twin is not gen
    start = [w.copy() for w in gen.get_weights()]
    for got, w in zip(twin.get_weights(), start):
        np.testing.assert_allclose(got, w)  # the generator's weights at the copy
    gen.set_weights([w + 1.0 for w in start])
    for got, w in zip(twin.get_weights(), start):
        np.testing.assert_allclose(got, w)  # a copy, not a view: training the generator leaves it be


def test_ema_decay_warms_up_then_holds_the_asked_decay():
    from trainer.step_spec import ema_decay

    assert value(ema_decay(0.999, 0)) == pytest.approx(0.1)  # early on the average follows the generator
    assert value(ema_decay(0.999, 90)) == pytest.approx(91 / 100)
    # Once warmed up, the decay is the one asked for: it never climbs on towards 1 (a frozen average).
    assert value(ema_decay(0.9, 1000)) == pytest.approx(0.9)
    assert value(ema_decay(0.999, 100_000)) == pytest.approx(0.999)


def test_each_epoch_has_its_own_order_and_a_seed_fixes_it():
    from trainer.step_spec import epoch_order

    first, second = epoch_order(7, 0, 1000), epoch_order(7, 1, 1000)
    assert sorted(first.tolist()) == list(range(1000))  # every example once
    assert not np.array_equal(first, second)  # reshuffled each epoch
    np.testing.assert_array_equal(first, epoch_order(7, 0, 1000))  # what a resume recomputes
    assert not np.array_equal(first, epoch_order(8, 0, 1000))  # another seed, another order
