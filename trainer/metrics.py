"""Image-quality figures from a judge classifier's outputs (numpy/scipy only).

- `frechet_distance`: between two sets of feature vectors, each summarised as a Gaussian.
  Biased upwards at small counts, so only compare figures taken at the same count.
- `classifier_score`: exp(mean KL(p(y|x) || p(y))); high when each image is clearly one
  class and all classes appear; falls when a generator collapses onto a few modes.
- `label_accuracy`: the share of images the judge puts in the class they were made for.
"""

import numpy as np


def gaussian(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of (N, D) features, in float64."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need (N, D) features with N >= 2, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def psd_sqrt(sigma) -> np.ndarray:
    """The symmetric square root of a covariance matrix (round-off negative eigenvalues taken as 0)."""
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_gaussians(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2),
    a symmetric positive semi-definite matrix (it is similar to S1 S2). Taken that way the trace is
    real and stable even when fewer images than features make both covariances singular, where
    sqrtm(S1 S2), the reference code's way, picks up large imaginary parts.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    root1 = psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)  # symmetric up to round-off
    trace_covmean = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_covmean
    return float(max(distance, 0.0))  # round-off can leave -1e-12 for identical sets


def frechet_distance(features1, features2) -> float:
    return frechet_distance_gaussians(*gaussian(features1), *gaussian(features2))


def classifier_score(probs, eps=1e-12) -> float:
    """exp(mean over images of KL(p(y|x) || p(y))), p(y) the mean of p(y|x); 1 (worst) to num_classes (best)."""
    p = np.asarray(probs, np.float64)
    marginal = p.mean(axis=0, keepdims=True)
    kl = (p * (np.log(p + eps) - np.log(marginal + eps))).sum(axis=1)
    return float(np.exp(kl.mean()))


def label_accuracy(probs, labels, num_classes) -> tuple[float, list]:
    """(overall share correct, per-class shares as a list; None for a class with no images)."""
    predicted = np.asarray(probs).argmax(axis=1)
    labels = np.asarray(labels)
    correct = predicted == labels
    per_class = [float(correct[labels == k].mean()) if (labels == k).any() else None for k in range(num_classes)]
    return float(correct.mean()), per_class
