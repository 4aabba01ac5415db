"""The training step, written once, run by a backend: the networks it trains and the runner that runs it.

A *runner* (trainer/step_tf.py or trainer/step_jax.py, the only backend-specific
code) owns the compiled step (trainer/step_spec.py says what it computes) and
exposes the same small interface:

    runner.start_epoch(epoch, first, last)   this epoch's order of examples (a function of (seed, epoch))
    runner.run(first, n, step0) -> (n, 2)   n steps from batch `first` in one compiled call; each step's
                                             [d_loss, g_loss] (summed on the host in step order, so the
                                             figures do not depend on how steps were grouped into calls)
    runner.agree_stop(wanted) -> bool         whether any worker wants to stop (several hosts: a collective, so all
                                             stop after the same step); called after every call
    runner.sync()                            the networks' Keras variables hold the latest values (JAX keeps
                                             them as arrays between calls); call before sampling or saving

`make_runner` picks the framework's module; trainer/pacer.py says how many steps each call runs.
"""

import dataclasses

import numpy as np

from trainer.step_spec import StepSpec, spec_from  # noqa: F401  (spec_from: callers build the spec here too)

# A dataset lives on the accelerator when it takes at most this share of its memory
# (or, memory unknown, at most FALLBACK_RESIDENT_BYTES); larger ones are gathered on the host per call.
RESIDENT_SHARE = 0.25
FALLBACK_RESIDENT_BYTES = 4 << 30


@dataclasses.dataclass
class Nets:
    generator: object
    discriminator: object
    g_opt: object
    d_opt: object
    ema_generator: object | None = None  # same network as `generator`; its weights are the running average
    twin: object | None = None  # without EMA, the live generator's copy that is sampled (made when first needed)

    def sampler(self, standing_inputs):
        """The generator to sample, evaluate and export: the EMA one, or without EMA a copy of the live one,
        its batch-norm statistics measured on `standing_inputs` (trainer/standing_stats.py). Never the live
        generator itself: its moving statistics are training state, checkpointed and resumed."""
        from trainer.standing_stats import set_standing_statistics

        if self.ema_generator is not None:
            model = self.ema_generator
            for e, v in zip(model.non_trainable_variables, self.generator.non_trainable_variables):
                e.assign(v)  # what is not averaged (e.g. dropout's seed) follows the live generator
        else:
            if self.twin is None:
                from trainer.ema import ema_copy

                self.twin = ema_copy(self.generator)
            model = self.twin
            model.set_weights(self.generator.get_weights())
        set_standing_statistics(model, standing_inputs)
        return model

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
    beta2 = getattr(cfg, "beta2", None)
    beta2 = 0.999 if beta2 is None else float(beta2)  # not `or`: --beta2 0 is a valid choice, not "unset"
    g_lr, d_lr = learning_rates(cfg)
    g_opt = make_optimizer(g_lr, cfg.beta1, precision, beta2)
    d_opt = make_optimizer(d_lr, cfg.beta1, precision, beta2)
    g_opt.build(generator.trainable_variables)
    d_opt.build(discriminator.trainable_variables)
    ema = None
    if float(getattr(cfg, "ema", 0.0) or 0.0) > 0:
        from trainer.ema import ema_copy

        ema = ema_copy(generator)
    return Nets(generator, discriminator, g_opt, d_opt, ema)


def learning_rates(cfg) -> tuple[float, float]:
    """(G's, D's): D trains at --d-lr where one is set (TTUR), else at --lr like G."""
    return float(cfg.lr), float(getattr(cfg, "d_lr", None) or cfg.lr)


def keep_command_learning_rates(nets: Nets, cfg, step: int, log):
    """Keras keeps an optimizer's learning rate in a variable, so a checkpoint restores the rate it was
    written at; the command's --lr and --d-lr are what trains from here (a resume at a lower rate after a
    divergence, say), and a change is said."""
    from keras import ops

    for flag, opt, wanted in zip(("--lr", "--d-lr"), (nets.g_opt, nets.d_opt), learning_rates(cfg)):
        # Read as a checkpoint reads it: under tf.distribute the variable is a MirroredVariable, which float() refuses.
        restored = float(ops.convert_to_numpy(opt.learning_rate.value))
        if abs(restored - wanted) > 1e-6 * wanted:
            opt.learning_rate = wanted
            log(f"note: {flag} {wanted:g} from step {step} on (the checkpoint's was {restored:g})")


def make_optimizer(lr, beta1, precision, beta2=0.999):
    import keras

    opt = keras.optimizers.Adam(learning_rate=lr, beta_1=beta1, beta_2=beta2)
    if precision == "mixed_float16":
        # float16 gradients underflow without loss scaling; bfloat16 needs none.
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


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
