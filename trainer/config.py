"""The training configuration: one dataclass, two presets, one validation.

Every value a user can set is a field here; a field left as None takes its
preset's value in `resolve()`. The CLI and the SageMaker hyperparameters both
end up in `TrainConfig`, so validation lives in one place.
"""

import dataclasses
import math
from dataclasses import dataclass

from trainer.distribute import STRATEGIES
from trainer.errors import UsageError

MODELS = ("cgan", "dcgan")
MAX_Z_DIM = 4096  # far above any useful noise length; a typo like 100000000 would exhaust memory


@dataclass(frozen=True)
class Preset:
    batch_size: int
    z_dim: int
    lr: float
    beta1: float
    smooth: float
    z_distribution: str  # "uniform" (U(-1, 1)) or "normal"


PRESETS = {
    # The book's network and hyperparameters, reproduced faithfully.
    "seed": Preset(batch_size=32, z_dim=96, lr=2e-4, beta1=0.35, smooth=0.1, z_distribution="uniform"),
    # Ours (see trainer/models.py for why): a leaner generator without dropout, a
    # projection discriminator without batch norm, and a larger batch that keeps
    # a GPU busy.
    "default": Preset(batch_size=128, z_dim=100, lr=2e-4, beta1=0.5, smooth=0.1, z_distribution="normal"),
}


@dataclass
class TrainConfig:
    dataset: str
    output_dir: str
    data_dir: str | None = None
    model: str = "cgan"
    preset: str = "default"
    epochs: int = 64
    batch_size: int | None = None
    z_dim: int | None = None
    lr: float | None = None
    beta1: float | None = None
    smooth: float | None = None
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

    def resolve(self) -> "TrainConfig":
        """Fill preset values, then validate; returns a new, complete config."""
        if self.preset not in PRESETS:
            raise UsageError(f"unknown preset '{self.preset}'; choose one of: {', '.join(PRESETS)}")
        preset = PRESETS[self.preset]
        filled = {
            f: getattr(preset, f) if getattr(self, f) is None else getattr(self, f)
            for f in ("batch_size", "z_dim", "lr", "beta1", "smooth")
        }
        cfg = dataclasses.replace(self, **filled)
        if cfg.checkpoint_dir is None:
            cfg = dataclasses.replace(cfg, checkpoint_dir=_join(cfg.output_dir, "checkpoints"))
        cfg.validate()
        return cfg

    @property
    def z_distribution(self) -> str:
        return PRESETS[self.preset].z_distribution

    def validate(self):
        def need(ok, flag, value, rule):
            if not ok:
                raise UsageError(f"--{flag} {value}: {rule}")

        need(self.model in MODELS, "model", self.model, f"choose one of: {', '.join(MODELS)}")
        need(self.epochs >= 1, "epochs", self.epochs, "must be a positive whole number")
        need(self.batch_size >= 1, "batch-size", self.batch_size, "must be a positive whole number")
        need(1 <= self.z_dim <= MAX_Z_DIM, "z-dim", self.z_dim, f"must be a whole number between 1 and {MAX_Z_DIM}")
        need(math.isfinite(self.lr) and 0 < self.lr < 1, "lr", self.lr, "must be between 0 and 1, e.g. 2e-4")
        need(0 <= self.beta1 < 1, "beta1", self.beta1, "must be in [0, 1), e.g. 0.5")
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
        need(self.strategy in STRATEGIES, "strategy", self.strategy, f"choose one of: {', '.join(STRATEGIES)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _join(base: str, name: str) -> str:
    # Works for local paths and s3:// URIs alike.
    return base.rstrip("/") + "/" + name
