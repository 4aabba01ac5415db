"""GAN losses on discriminator logits (the non-saturating loss of Goodfellow et al.)."""

import tensorflow as tf


def _bce(labels, logits):
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def discriminator_loss(real_logits, fake_logits, smooth=0.0):
    # One-sided label smoothing: real targets become 1 - smooth, fakes stay 0,
    # which keeps D from growing over-confident (Salimans et al., 2016).
    real = _bce(tf.fill(tf.shape(real_logits), 1.0 - smooth), real_logits)
    fake = _bce(tf.zeros_like(fake_logits), fake_logits)
    return real + fake


def generator_loss(fake_logits):
    return _bce(tf.ones_like(fake_logits), fake_logits)
