"""GAN losses on discriminator outputs, in `keras.ops` so both Keras backends share them.

- "bce": the non-saturating loss of Goodfellow et al. on logits, with one-sided
  label smoothing for D.
- "hinge": D = mean(relu(1 - real)) + mean(relu(1 + fake)), G = -mean(fake)
  (Lim & Ye, 2017; Miyato et al., 2018), the usual partner of spectral norm.
- `aux_loss`: the auxiliary classifier's cross-entropy (AC-GAN, Odena et al., 2017).

`discriminator_objective` / `generator_objective` put them together for a step,
whether D returns one output (the logit) or two (`[logit, class_logits]`).
"""

from keras import ops

KINDS = ("bce", "hinge")


def _bce(targets, logits):
    # log(1 + exp(x)) - t * x, in the form that cannot overflow.
    logits = ops.cast(logits, "float32")
    return ops.mean(ops.relu(logits) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits))))


def discriminator_loss(real_logits, fake_logits, smooth=0.0, kind="bce"):
    if kind == "hinge":
        real_logits, fake_logits = ops.cast(real_logits, "float32"), ops.cast(fake_logits, "float32")
        return ops.mean(ops.relu(1.0 - real_logits)) + ops.mean(ops.relu(1.0 + fake_logits))
    _check(kind)
    # One-sided label smoothing: real targets become 1 - smooth, fakes stay 0,
    # which keeps D from growing over-confident (Salimans et al., 2016).
    return _bce(1.0 - smooth, real_logits) + _bce(0.0, fake_logits)


def generator_loss(fake_logits, kind="bce"):
    if kind == "hinge":
        return -ops.mean(ops.cast(fake_logits, "float32"))
    _check(kind)
    return _bce(1.0, fake_logits)


def aux_loss(class_logits, onehot):
    """Mean categorical cross-entropy of the classifier head's logits against one-hot labels."""
    log_probs = ops.log_softmax(ops.cast(class_logits, "float32"), axis=-1)
    return -ops.mean(ops.sum(ops.cast(onehot, "float32") * log_probs, axis=-1))


def split_outputs(outputs):
    """D's outputs -> (logit, class_logits or None)."""
    if isinstance(outputs, (list, tuple)):
        return outputs[0], outputs[1]
    return outputs, None


def discriminator_objective(real_outputs, fake_outputs, onehot, *, smooth, kind, aux_weight):
    """D's loss: the adversarial term plus aux_weight x the classifier's loss on *real* images.

    The classifier learns from real images only: classifying fakes too (the AC-GAN
    loss) rewards G for easily classified, less varied images, which is where FCD
    went up in issue 12's ablation.
    """
    real_logits, real_classes = split_outputs(real_outputs)
    fake_logits, _ = split_outputs(fake_outputs)
    loss = discriminator_loss(real_logits, fake_logits, smooth, kind)
    if real_classes is not None and aux_weight:
        loss = loss + aux_weight * aux_loss(real_classes, onehot)
    return loss


def generator_objective(fake_outputs, onehot, *, kind, aux_g_weight):
    """G's loss: the adversarial term plus aux_g_weight x the classifier's loss on its images."""
    fake_logits, fake_classes = split_outputs(fake_outputs)
    loss = generator_loss(fake_logits, kind)
    if fake_classes is not None and aux_g_weight:
        loss = loss + aux_g_weight * aux_loss(fake_classes, onehot)
    return loss


def _check(kind):
    if kind != "bce":
        raise ValueError(f"unknown loss {kind!r}; choose one of: {', '.join(KINDS)}")
