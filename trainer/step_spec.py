"""What one training step computes, whichever backend runs it (trainer/step_tf.py, trainer/step_jax.py).

One step updates D, then G, reusing G's forward pass: G's update backpropagates
through the *updated* D into that same forward pass (same z, G unchanged in
between), which is what the book's alternating updates compute, minus a second
pass. The noise of a step is a pure function of (seed, step) and the data order
of an epoch of (seed, epoch), so a resumed run computes what the uninterrupted
one would have. Images stay uint8 until the device scales them to [-1, 1].

Options issue #12 added (StepSpec's defaults reproduce the original step):
`loss` ("bce" | "hinge"), `d_lr` (None: `lr`), `beta2`, `aux_weight` (> 0: the
discriminator returns [logit, class_logits]; D adds aux_weight x the classifier's
cross-entropy on real images, G aux_g_weight x it on fakes) and `ema` (decay of
the generator's weight average, updated in the compiled step after G; 0: off).

Both step modules import this one and nothing above it (trainer/steps.py picks between them).
"""

import dataclasses

import numpy as np

from trainer import losses

@dataclasses.dataclass(frozen=True)
class StepSpec:
    seed: int
    z_dim: int
    num_classes: int
    smooth: float
    z_distribution: str
    batch: int  # global batch (per-replica batch x replicas)
    loss: str = "bce"
    aux_weight: float = 0.0
    aux_g_weight: float = 0.0
    ema: float = 0.0

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0


def spec_from(cfg, num_classes: int, global_batch: int) -> StepSpec:
    """The step a resolved config asks for (TrainConfig.resolve has filled every preset value)."""
    return StepSpec(seed=cfg.seed, z_dim=cfg.z_dim, num_classes=num_classes, smooth=cfg.smooth,
                    z_distribution=cfg.z_distribution, batch=global_batch, loss=cfg.loss,
                    aux_weight=float(cfg.aux_weight), aux_g_weight=float(cfg.aux_g_weight), ema=float(cfg.ema))


def d_objective(real_out, fake_out, onehot, spec: StepSpec):
    """D's loss (trainer.losses): with a classifier head, aux_weight x its cross-entropy on the real images."""
    return losses.discriminator_objective(real_out, fake_out, onehot, smooth=spec.smooth, kind=spec.loss,
                                          aux_weight=spec.aux_weight)


def g_objective(fake_out, onehot, spec: StepSpec):
    """G's loss (trainer.losses): with a classifier head, aux_g_weight x its cross-entropy on the fakes."""
    return losses.generator_objective(fake_out, onehot, kind=spec.loss, aux_g_weight=spec.aux_g_weight)


def ema_decay(decay, step):
    """The EMA's decay at (0-based) `step`: min(decay, (1 + step) / (10 + step)), so that early in a run
    the average follows the generator instead of staying near its random start (the warm-up of
    tf.train.ExponentialMovingAverage's num_updates); after ~10 / (1 - decay) steps it is `decay`."""
    from keras import ops

    return ops.minimum(decay, (1.0 + step) / (10.0 + step))


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the examples in `epoch`: the same on every backend, worker and resume."""
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)

