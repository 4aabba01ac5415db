"""The training configuration: one dataclass and one validation (presets: trainer/presets.py).

Every value a user can set is a field here; a field left as None takes its
preset's value in `resolve()`. The CLI and the SageMaker hyperparameters both
end up in `TrainConfig`, so validation lives in one place.
"""

import dataclasses
import math
from dataclasses import dataclass

from trainer.backend import FRAMEWORKS, default_framework
from trainer.distribute import STRATEGIES
from trainer.errors import UsageError

MODELS = ("cgan", "dcgan")
MAX_Z_DIM = 4096  # far above any useful noise length; a typo like 100000000 would exhaust memory


from trainer.presets import (  # noqa: F401  (re-exported: the presets used to live here)
    ALIASES,
    DEFAULT_PRESET,
    LOSSES,
    PRESET_FIELDS,
    PRESET_NAMES,
    PRESETS,
    RECORDED_BEFORE_RENAME,
    Preset,
    canonical_preset,
    check_resumed_preset,
    get_preset,
)


@dataclass
class TrainConfig:
    dataset: str
    output_dir: str
    data_dir: str | None = None
    model: str = "cgan"
    preset: str = DEFAULT_PRESET
    epochs: int = 64
    batch_size: int | None = None
    z_dim: int | None = None
    lr: float | None = None
    d_lr: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    smooth: float | None = None
    loss: str | None = None
    aux_weight: float | None = None
    aux_g_weight: float | None = None
    ema: float | None = None
    seed: int = 0
    max_steps: int | None = None
    checkpoint_dir: str | None = None
    checkpoint_minutes: float = 10.0
    keep_checkpoints: int = 3
    image_size: int | None = None
    channels: int | None = None
    precision: str = "auto"  # auto | float32 | mixed_float16 | mixed_bfloat16
    xla: str = "auto"  # auto | on | off
    strategy: str = "auto"  # auto | default | mirrored | multiworker (trainer/distribute.py)
    eval_every: int | None = None  # score quality every K epochs (trainer.evaluate); None: off
    framework: str | None = None  # tensorflow | jax (trainer/backend.py); None: KERAS_BACKEND, else tensorflow

    def resolve(self) -> "TrainConfig":
        """Fill preset values, then validate; returns a new, complete config."""
        name = canonical_preset(self.preset)
        preset = PRESETS[name]
        filled = {f: getattr(preset, f) if getattr(self, f) is None else getattr(self, f) for f in PRESET_FIELDS}
        cfg = dataclasses.replace(self, preset=name, **filled)
        if cfg.d_lr is None:
            cfg = dataclasses.replace(cfg, d_lr=cfg.lr)
        if self.aux_g_weight is None and (preset.aux_g_weight is None or cfg.aux_weight == 0):
            # G's share follows D's unless set: no head (--aux-weight 0) means no term in G either.
            cfg = dataclasses.replace(cfg, aux_g_weight=cfg.aux_weight)
        if cfg.framework is None:
            cfg = dataclasses.replace(cfg, framework=default_framework())
        if cfg.checkpoint_dir is None:
            cfg = dataclasses.replace(cfg, checkpoint_dir=_join(cfg.output_dir, "checkpoints"))
        cfg.validate()
        return cfg

    @property
    def z_distribution(self) -> str:
        return get_preset(self.preset).z_distribution

    def validate(self):
        def need(ok, flag, value, rule):
            if not ok:
                raise UsageError(f"--{flag} {value}: {rule}")

        need(self.model in MODELS, "model", self.model, f"choose one of: {', '.join(MODELS)}")
        need(self.epochs >= 1, "epochs", self.epochs, "must be a positive whole number")
        need(self.batch_size >= 1, "batch-size", self.batch_size, "must be a positive whole number")
        need(1 <= self.z_dim <= MAX_Z_DIM, "z-dim", self.z_dim, f"must be a whole number between 1 and {MAX_Z_DIM}")
        need(math.isfinite(self.lr) and 0 < self.lr < 1, "lr", self.lr, "must be between 0 and 1, e.g. 2e-4")
        need(math.isfinite(self.d_lr) and 0 < self.d_lr < 1, "d-lr", self.d_lr, "must be between 0 and 1, e.g. 4e-4")
        need(0 <= self.beta1 < 1, "beta1", self.beta1, "must be in [0, 1), e.g. 0.5")
        need(0 <= self.beta2 < 1, "beta2", self.beta2, "must be in [0, 1), e.g. 0.999")
        need(self.loss in LOSSES, "loss", self.loss, f"choose one of: {', '.join(LOSSES)}")
        need(math.isfinite(self.aux_weight) and 0 <= self.aux_weight <= 10, "aux-weight", self.aux_weight,
             "must be between 0 (no classifier head) and 10, e.g. 0.3")
        need(math.isfinite(self.aux_g_weight) and 0 <= self.aux_g_weight <= 10, "aux-g-weight", self.aux_g_weight,
             "must be between 0 and 10, e.g. 0.1")
        need(self.aux_g_weight == 0 or self.aux_weight > 0, "aux-g-weight", self.aux_g_weight,
             "needs the classifier head: set --aux-weight above 0 too")
        need(0 <= self.ema < 1, "ema", self.ema, "must be in [0, 1): a decay such as 0.999, or 0 to turn EMA off")
        need(0 <= self.smooth < 0.5, "smooth", self.smooth, "must be in [0, 0.5), e.g. 0.1")
        need(self.seed >= 0, "seed", self.seed, "must be zero or positive")
        need(self.max_steps is None or self.max_steps >= 1, "max-steps", self.max_steps, "must be positive")
        need(self.checkpoint_minutes > 0, "checkpoint-minutes", self.checkpoint_minutes, "must be positive")
        need(self.keep_checkpoints >= 1, "keep-checkpoints", self.keep_checkpoints, "must be at least 1")
        need(
            self.image_size is None or (16 <= self.image_size <= 256 and self.image_size % 4 == 0),
            "image-size", self.image_size, "must be a multiple of 4 between 16 and 256, e.g. 64",
        )
        need(self.channels in (None, 1, 3), "channels", self.channels, "must be 1 (grey) or 3 (RGB)")
        need(
            self.precision in ("auto", "float32", "mixed_float16", "mixed_bfloat16"),
            "precision", self.precision, "choose auto, float32, mixed_float16 or mixed_bfloat16",
        )
        need(self.eval_every is None or self.eval_every >= 1, "eval-every", self.eval_every,
             "must be a positive number of epochs (leave it out to skip evaluation)")
        need(self.xla in ("auto", "on", "off"), "xla", self.xla, "choose auto, on or off")
        need(self.framework in FRAMEWORKS, "framework", self.framework, f"choose one of: {', '.join(FRAMEWORKS)}")
        need(self.strategy in STRATEGIES, "strategy", self.strategy, f"choose one of: {', '.join(STRATEGIES)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _join(base: str, name: str) -> str:
    # Works for local paths and s3:// URIs alike.
    return base.rstrip("/") + "/" + name
