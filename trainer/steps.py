"""The training step, written once, run by a backend: what both backends share.

A *runner* (trainer/step_tf.py or trainer/step_jax.py, the only backend-specific
code) owns the compiled step and exposes the same small interface:

    runner.start_epoch(epoch, first, last)   this epoch's order of examples (a function of (seed, epoch))
    runner.run(first, n, step0) -> (n, 2)   n steps from batch `first` in one compiled call; each step's
                                             [d_loss, g_loss] (summed on the host in step order, so the
                                             figures do not depend on how steps were grouped into calls)
    runner.sync()                            the networks' Keras variables hold the latest values (JAX keeps
                                             them as arrays between calls); call before sampling or saving

One step updates D, then G, reusing G's forward pass: G's update backpropagates
through the *updated* D into that same forward pass (same z, G unchanged in
between), which is what the book's alternating updates compute, minus a second
pass. The noise of a step is a pure function of (seed, step) and the data order
of an epoch of (seed, epoch), so a resumed run computes what the uninterrupted
one would have. Images stay uint8 until the device scales them to [-1, 1].

Options issue #12 adds (read with defaults that reproduce the original step):
`loss` ("bce" | "hinge"), `d_lr` (None: `lr`), `beta2`, `aux_weight` (> 0: the
discriminator returns [logit, class_logits]; D adds aux_weight x the classifier's
cross-entropy on real images, G aux_g_weight x it on fakes) and `ema` (decay of
the generator's weight average, updated in the compiled step after G; 0: off).
"""

import dataclasses
import time

import numpy as np

from trainer import losses

# Steps per compiled call are chosen so that one call takes about this long:
# long enough that Python is off the hot path, short enough that SIGTERM and
# --checkpoint-minutes are answered within seconds.
TARGET_CALL_SECONDS = 1.0
MAX_STEPS_PER_CALL = 4096
# A dataset lives on the accelerator when it takes at most this share of its memory
# (or, memory unknown, at most FALLBACK_RESIDENT_BYTES); larger ones are gathered on the host per call.
RESIDENT_SHARE = 0.25
FALLBACK_RESIDENT_BYTES = 4 << 30


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
    aux_weight = float(getattr(cfg, "aux_weight", 0.0) or 0.0)
    aux_g_weight = getattr(cfg, "aux_g_weight", None)
    return StepSpec(seed=cfg.seed, z_dim=cfg.z_dim, num_classes=num_classes, smooth=cfg.smooth,
                    z_distribution=cfg.z_distribution, batch=global_batch, loss=getattr(cfg, "loss", "bce") or "bce",
                    aux_weight=aux_weight, aux_g_weight=aux_weight if aux_g_weight is None else float(aux_g_weight),
                    ema=float(getattr(cfg, "ema", 0.0) or 0.0))


@dataclasses.dataclass
class Nets:
    generator: object
    discriminator: object
    g_opt: object
    d_opt: object
    ema_generator: object | None = None  # same network as `generator`; its weights are the running average

    def sampler(self):
        """The generator to sample, evaluate and export: the EMA one when there is one."""
        if self.ema_generator is None:
            return self.generator
        # Batch-norm statistics are not averaged: the EMA generator uses the live ones.
        for e, v in zip(self.ema_generator.non_trainable_variables, self.generator.non_trainable_variables):
            e.assign(v)
        return self.ema_generator

    def groups(self) -> dict:
        """Every variable a checkpoint holds, by group, in a fixed order (the same on both backends)."""
        groups = {"generator": self.generator.variables, "discriminator": self.discriminator.variables,
                  "g_opt": self.g_opt.variables, "d_opt": self.d_opt.variables}
        if self.ema_generator is not None:
            groups["ema_generator"] = self.ema_generator.trainable_variables
        return groups


def build_nets(cfg, image_shape, num_classes, precision, sync_bn=False) -> Nets:
    from trainer.models import build_discriminator, build_generator

    generator = build_generator(cfg.preset, cfg.z_dim, image_shape, num_classes, sync_bn=sync_bn)
    discriminator = build_discriminator(cfg.preset, image_shape, num_classes, sync_bn=sync_bn,
                                        aux_weight=getattr(cfg, "aux_weight", None))
    beta2 = float(getattr(cfg, "beta2", 0.999) or 0.999)
    d_lr = getattr(cfg, "d_lr", None) or cfg.lr
    g_opt = make_optimizer(cfg.lr, cfg.beta1, precision, beta2)
    d_opt = make_optimizer(d_lr, cfg.beta1, precision, beta2)
    g_opt.build(generator.trainable_variables)
    d_opt.build(discriminator.trainable_variables)
    ema = None
    if float(getattr(cfg, "ema", 0.0) or 0.0) > 0:
        from trainer.ema import ema_copy

        ema = ema_copy(generator)
    return Nets(generator, discriminator, g_opt, d_opt, ema)


def make_optimizer(lr, beta1, precision, beta2=0.999):
    import keras

    opt = keras.optimizers.Adam(learning_rate=lr, beta_1=beta1, beta_2=beta2)
    if precision == "mixed_float16":
        # float16 gradients underflow without loss scaling; bfloat16 needs none.
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


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


def resident(images: np.ndarray, memory_bytes: int | None) -> bool:
    """Whether the uint8 dataset lives on the accelerator (else batches are gathered on the host each call)."""
    limit = memory_bytes * RESIDENT_SHARE if memory_bytes else FALLBACK_RESIDENT_BYTES
    return images.nbytes <= limit


def make_runner(framework, nets: Nets, spec: StepSpec, data, placement, setup):
    labels = data.labels if data.labels is not None else np.zeros(len(data.images), np.int64)
    keep = resident(data.images, setup.memory_bytes)
    if framework == "jax":
        from trainer.step_jax import JaxRunner

        return JaxRunner(nets, spec, data.images, labels, placement, keep)
    from trainer.step_tf import TFRunner

    return TFRunner(nets, spec, data.images, labels, placement, setup.jit_compile and placement.replicas == 1, keep)


class Pacer:
    """How many steps the next compiled call runs: about TARGET_CALL_SECONDS of work, in powers of two."""

    def __init__(self, target=TARGET_CALL_SECONDS, cap=MAX_STEPS_PER_CALL):
        self.target, self.cap = target, cap
        self.seconds_per_step = None
        self.calls = 0

    def steps(self, left: int, seconds_left: float | None = None) -> int:
        """Steps for the next call: never past `left` steps, nor (roughly) past `seconds_left`."""
        if self.seconds_per_step is None:
            n = 1  # the first call compiles: measure before growing
        else:
            budget = self.target if seconds_left is None else max(0.0, min(self.target, seconds_left))
            n = _power_of_two(max(1, int(budget / max(self.seconds_per_step, 1e-9))))
        return max(1, min(n, left, self.cap))

    def record(self, n: int, seconds: float):
        self.calls += 1
        if self.calls >= 2 or n > 1:  # the first call's time is mostly compilation
            rate = seconds / n
            self.seconds_per_step = rate if self.seconds_per_step is None else 0.5 * (self.seconds_per_step + rate)

    def timed(self, fn, n):
        t0 = time.monotonic()
        out = fn()
        self.record(n, time.monotonic() - t0)
        return out


def _power_of_two(n: int) -> int:
    return 1 << (n.bit_length() - 1)
