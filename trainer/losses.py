"""GAN losses on discriminator logits, in keras.ops so both backends share them.

`bce` is the non-saturating loss of Goodfellow et al.; `hinge` the hinge loss of
SAGAN/BigGAN. `aux_loss` is the AC-GAN auxiliary classifier's cross-entropy.
"""

from keras import ops


def _bce(target, logits):
    # sigmoid cross-entropy, computed stably as TensorFlow's sigmoid_cross_entropy_with_logits does:
    # max(x, 0) - x * z + log(1 + exp(-|x|)).
    logits = ops.cast(logits, "float32")
    return ops.mean(ops.maximum(logits, 0.0) - logits * target + ops.log1p(ops.exp(-ops.abs(logits))))


def discriminator_loss(real_logits, fake_logits, smooth=0.0, kind="bce"):
    if kind == "hinge":
        real, fake = ops.cast(real_logits, "float32"), ops.cast(fake_logits, "float32")
        return ops.mean(ops.relu(1.0 - real)) + ops.mean(ops.relu(1.0 + fake))
    # One-sided label smoothing: real targets become 1 - smooth, fakes stay 0,
    # which keeps D from growing over-confident (Salimans et al., 2016).
    return _bce(1.0 - smooth, real_logits) + _bce(0.0, fake_logits)


def generator_loss(fake_logits, kind="bce"):
    if kind == "hinge":
        return -ops.mean(ops.cast(fake_logits, "float32"))
    return _bce(1.0, fake_logits)


def aux_loss(class_logits, onehot):
    """Categorical cross-entropy of the auxiliary classifier's logits against the one-hot labels."""
    return ops.mean(ops.categorical_crossentropy(onehot, ops.cast(class_logits, "float32"), from_logits=True))
