"""Quality metrics against cases with known answers."""

import numpy as np
import pytest

from trainer import metrics


def test_identical_sets_have_distance_zero():
    x = np.random.default_rng(0).normal(size=(500, 8))
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_shifted_gaussians_match_the_closed_form():
    # Same covariance, means apart by d: the distance is ||d||^2 exactly.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 5))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert metrics.frechet_distance(x, x + shift) == pytest.approx(shift @ shift, rel=1e-9)


def test_gaussians_with_different_scales_match_the_closed_form():
    # Diagonal covariances s1^2 I and s2^2 I in D dims: ||mu1-mu2||^2 + D (s1 - s2)^2.
    mu1, mu2, s1, s2, dims = np.zeros(3), np.array([1.0, 2.0, 2.0]), 1.0, 3.0, 3
    distance = metrics.frechet_distance_gaussians(mu1, s1**2 * np.eye(dims), mu2, s2**2 * np.eye(dims))
    assert distance == pytest.approx(9.0 + dims * (s1 - s2) ** 2)


def test_sampled_gaussians_approach_the_closed_form():
    rng = np.random.default_rng(2)
    a = rng.normal(0.0, 1.0, size=(20000, 2))
    b = rng.normal(1.0, 2.0, size=(20000, 2))
    assert metrics.frechet_distance(a, b) == pytest.approx(2 * 1.0 + 2 * (2.0 - 1.0) ** 2, rel=0.05)


def test_distance_is_symmetric_and_positive():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 4)), rng.normal(size=(300, 4)) @ rng.normal(size=(4, 4))
    assert metrics.frechet_distance(a, b) == pytest.approx(metrics.frechet_distance(b, a), rel=1e-6)
    assert metrics.frechet_distance(a, b) > 0


def test_too_few_features_is_a_clear_error():
    with pytest.raises(ValueError, match="N >= 2"):
        metrics.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


def test_classifier_score_bounds():
    k = 10
    confident_all_classes = np.eye(k)[np.arange(100) % k]
    assert metrics.classifier_score(confident_all_classes) == pytest.approx(k, rel=1e-6)
    collapsed = np.eye(k)[np.zeros(100, int)]  # every image the same class: mode collapse
    assert metrics.classifier_score(collapsed) == pytest.approx(1.0, rel=1e-6)
    unsure = np.full((100, k), 1.0 / k)
    assert metrics.classifier_score(unsure) == pytest.approx(1.0, rel=1e-6)
    two_modes = np.eye(k)[np.arange(100) % 2]
    assert metrics.classifier_score(two_modes) == pytest.approx(2.0, rel=1e-6)


def test_label_accuracy_overall_and_per_class():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 0, 0])
    accuracy, per_class = metrics.label_accuracy(np.eye(4)[predicted], labels, 4)
    assert accuracy == pytest.approx(3 / 6)
    assert per_class == [0.5, 1.0, 0.0, None]  # class 3 has no images


def test_non_commuting_covariances_match_the_reference_sqrtm_form():
    # Full-rank, non-commuting covariances: the reference code's sqrtm(S1 S2) is well-behaved here.
    from scipy import linalg

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + np.eye(6), b @ b.T + 0.5 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    reference = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert metrics.frechet_distance_gaussians(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-9)


def test_fewer_images_than_features_still_give_a_real_distance():
    # 50 images of 128 sparse (ReLU-like) features: both covariances singular. sqrtm(S1 S2) had
    # imaginary parts of several units here, and evaluate --samples 50 stopped on them.
    rng = np.random.default_rng(0)
    a = np.maximum(0, rng.normal(size=(50, 128)) - 1.5) * 10
    b = np.maximum(0, rng.normal(size=(50, 128)) - 1.5)
    a[:, :60] = 0
    distance = metrics.frechet_distance(a, b)
    assert np.isfinite(distance) and distance > 0
    assert metrics.frechet_distance(b, a) == pytest.approx(distance, rel=1e-6)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6 * np.trace(np.cov(a, rowvar=False)))


def test_identical_sets_are_at_distance_zero_not_a_round_off_below_it():
    # Five 3-d features (seed 0) came out at -8e-15 here: a distance below zero reads as a bug in a report.
    for seed in range(20):
        x = np.random.default_rng(seed).normal(size=(5, 3))
        assert 0.0 <= metrics.frechet_distance(x, x) < 1e-9
