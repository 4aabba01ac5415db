"""The training configuration: one dataclass and one validation (presets: trainer/presets.py).

Every value a user can set is a field here; a field left as None takes its
preset's value in `resolve()`. `TrainConfig` is the schema: each field's
metadata is its `train` option (help, choices; the type is the annotation),
`python -m trainer train` builds its options from them (`options()`), and
SageMaker's string hyperparameters convert to and from a config here
(`from_hyperparameters`, `to_hyperparameters`), so the launcher's `--hp`
check, the container contract and the CLI share one parsing and one validation.
"""

import dataclasses
import functools
import json
import math
import re
import struct
import typing
from dataclasses import dataclass, field

from trainer import layout
from trainer.backend import FRAMEWORKS, default_framework
from trainer.distribute import STRATEGIES
from trainer.errors import UsageError
from trainer.presets import (  # noqa: F401  (re-exported: the presets used to live here)
    ALIASES,
    DEFAULT_PRESET,
    LOSSES,
    PRESET_FIELDS,
    PRESET_NAMES,
    PRESETS,
    canonical_preset,
    check_resumed_preset,
    get_preset,
)

MODELS = ("cgan", "dcgan")
MAX_Z_DIM = 4096  # far above any useful noise length; a typo like 100000000 would exhaust memory


def _per_preset(name: str, unset: str = "") -> str:
    """'[preset: book 32, projection 128, ...]' for a field's help (`unset` names a preset's None)."""
    values = ", ".join(f"{preset} {unset if value is None else value}" for preset, p in PRESETS.items()
                       for value in [getattr(p, name)])
    return f"[preset: {values}]"


def _option(help: str | None = None, *, choices=None, show_default: bool = False) -> dict:
    """A field's metadata as the `train` option (and the hyperparameter) it is; see `Option`."""
    return {"option": {"help": help, "choices": tuple(choices) if choices else None, "show_default": show_default}}


PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
XLA = ("auto", "on", "off")


@dataclass
class TrainConfig:
    """Every setting of a run. Each field is a `train` flag (--batch-size) and a hyperparameter (batch_size)."""

    dataset: str = field(metadata=_option("mnist, zalando (fashion-mnist), emnist, or folder:PATH."))
    output_dir: str = field(metadata=_option("Where metrics, samples, plots and generator/ go."))
    data_dir: str | None = field(default=None, metadata=_option(
        "Folder with the dataset's canonical files (default: cache, system copy, download)."))
    model: str = field(default="cgan", metadata=_option("cgan (conditional) or dcgan.", choices=MODELS,
                                                        show_default=True))
    preset: str = field(default=DEFAULT_PRESET, metadata=_option(
        "; ".join(f"{name}: {p.what}" for name, p in PRESETS.items())
        + "; " + ", ".join(f"{alias} = {name}" for alias, name in ALIASES.items()) + ".",
        choices=PRESET_NAMES, show_default=True))
    epochs: int = field(default=64, metadata=_option("Passes over the training set.", show_default=True))
    batch_size: int | None = field(default=None, metadata=_option(f"Images per step {_per_preset('batch_size')}."))
    z_dim: int | None = field(default=None, metadata=_option(f"Length of the noise vector {_per_preset('z_dim')}."))
    lr: float | None = field(default=None, metadata=_option(
        f"The generator's Adam learning rate {_per_preset('lr')}."))
    d_lr: float | None = field(default=None, metadata=_option(
        f"The discriminator's learning rate (unset: --lr) {_per_preset('d_lr', '= --lr')}."))
    beta1: float | None = field(default=None, metadata=_option(f"Adam beta1 {_per_preset('beta1')}."))
    beta2: float | None = field(default=None, metadata=_option(f"Adam beta2 {_per_preset('beta2')}."))
    smooth: float | None = field(default=None, metadata=_option(
        f"One-sided label smoothing, bce loss only {_per_preset('smooth')}."))
    loss: str | None = field(default=None, metadata=_option(
        f"bce (non-saturating) or hinge {_per_preset('loss')}.", choices=LOSSES))
    aux_weight: float | None = field(default=None, metadata=_option(
        f"Auxiliary classifier head on D, its loss weight on real images; 0: no head {_per_preset('aux_weight')}."))
    aux_g_weight: float | None = field(default=None, metadata=_option(
        "That classifier's loss weight in G's loss (unset: --aux-weight) "
        f"{_per_preset('aux_g_weight', '= --aux-weight')}."))
    ema: float | None = field(default=None, metadata=_option(
        f"Decay of the generator's weight average, the one sampled and exported; 0: off {_per_preset('ema')}."))
    seed: int = field(default=0, metadata=_option("Random seed (results repeat exactly on CPU).", show_default=True))
    max_steps: int | None = field(default=None, metadata=_option(
        "Stop after this many steps in all (across resumes)."))
    checkpoint_dir: str | None = field(default=None, metadata=_option(
        "Where checkpoints go, a folder or s3:// prefix [default: OUTPUT_DIR/checkpoints]."))
    checkpoint_minutes: float = field(default=10.0, metadata=_option("Checkpoint at least this often.",
                                                                     show_default=True))
    keep_checkpoints: int = field(default=3, metadata=_option("How many of the newest checkpoints to keep.",
                                                             show_default=True))
    image_size: int | None = field(default=None, metadata=_option(
        "Resize images to this square size (folder datasets: default 64)."))
    channels: int | None = field(default=None, metadata=_option("1 (grey) or 3 (RGB) (folder datasets: default 3)."))
    precision: str = field(default="auto", metadata=_option(
        "auto: mixed precision on GPUs that support it; on CPU, bfloat16 with TensorFlow where the CPU "
        "has it natively (AVX512-BF16, AMX), else float32.", choices=PRECISIONS, show_default=True))
    xla: str = field(default="auto", metadata=_option("Compile the step with XLA (auto: on GPUs).", choices=XLA,
                                                      show_default=True))
    strategy: str = field(default="auto", metadata=_option(  # trainer/distribute.py
        "tf.distribute strategy (auto: several hosts -> multiworker, several GPUs -> mirrored). "
        "--batch-size is per replica.", choices=STRATEGIES, show_default=True))
    eval_every: int | None = field(default=None, metadata=_option(  # trainer.evaluate
        "Score image quality every K epochs (1,000 samples) and at the end (10,000); default: off."))
    framework: str | None = field(default=None, metadata=_option(  # trainer/backend.py
        "Keras backend that trains [default: $KERAS_BACKEND, else tensorflow]. Checkpoints and the "
        "exported generator load under either.", choices=FRAMEWORKS))

    @classmethod
    def from_hyperparameters(cls, hyperparameters: dict, source: str = "hyperparameter") -> "TrainConfig":
        """SageMaker-style hyperparameters (keys with underscores, values strings, perhaps JSON-quoted as the
        SageMaker SDK sends them) -> a typed, unresolved config. Bad input is a one-line UsageError;
        `source` names where an unknown key came from (`--hp` in the launcher)."""
        known = options()
        values = {}
        for key, raw in hyperparameters.items():
            name = str(key).replace("-", "_")
            if name not in known:
                shown = key if re.fullmatch(r"[\w-]+", str(key)) else repr(key)
                raise UsageError(f"{source} {shown}: the trainer has no such option; "
                                 "see `python -m trainer train --help`")
            values[name] = known[name].parse(_plain(raw))
        for option in known.values():
            if option.required and option.name not in values:
                raise UsageError(f"Missing option '{option.flag}'. {IN_HYPERPARAMETERS}")
        return cls(**values)

    def to_hyperparameters(self) -> dict[str, str]:
        """The reverse of `from_hyperparameters`: every value that is not its default, as a string."""
        return {o.name: _string(value) for o in options().values()
                for value in [getattr(self, o.name)] if o.required or value != o.default}

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
        # Flags this run would drop without a word: say so instead (presets' own values are never refused).
        if self.smooth and cfg.loss == "hinge":
            raise UsageError(f"--smooth {self.smooth:g} applies to --loss bce only (hinge loss has no targets to "
                             f"smooth, and preset {name} uses hinge); drop --smooth, or add --loss bce")
        for flag, value in (("aux-weight", self.aux_weight), ("aux-g-weight", self.aux_g_weight)):
            if value and cfg.model == "dcgan":
                raise UsageError(f"--{flag} {value:g} needs classes to predict, and --model dcgan is unconditional; "
                                 f"drop --{flag}, or use --model cgan")
        if cfg.framework is None:
            cfg = dataclasses.replace(cfg, framework=default_framework())
        if cfg.checkpoint_dir is None:
            cfg = dataclasses.replace(cfg, checkpoint_dir=layout.join(cfg.output_dir, "checkpoints"))
        cfg.validate()
        return cfg

    @property
    def z_distribution(self) -> str:
        return get_preset(self.preset).z_distribution

    def validate(self):
        def need(ok, flag, value, rule):
            if not ok:
                raise UsageError(f"--{flag} {value}: {rule}")

        for flag, path in (("output-dir", self.output_dir), ("checkpoint-dir", self.checkpoint_dir),
                           ("data-dir", self.data_dir)):
            problem = None if path is None else _path_problem(path)
            need(problem is None, flag, repr(path), problem)
        need(self.model in MODELS, "model", self.model, f"choose one of: {', '.join(MODELS)}")
        need(self.epochs >= 1, "epochs", self.epochs, "must be a positive whole number")
        need(self.batch_size >= 1, "batch-size", self.batch_size, "must be a positive whole number")
        need(1 <= self.z_dim <= MAX_Z_DIM, "z-dim", self.z_dim, f"must be a whole number between 1 and {MAX_Z_DIM}")
        need(math.isfinite(self.lr) and 0 < self.lr < 1, "lr", self.lr, "must be between 0 and 1, e.g. 2e-4")
        need(math.isfinite(self.d_lr) and 0 < self.d_lr < 1, "d-lr", self.d_lr, "must be between 0 and 1, e.g. 4e-4")
        for flag, rate, example in (("lr", self.lr, "2e-4"), ("d-lr", self.d_lr, "4e-4")):  # 1e-320 trained at 0
            need(_float32(rate) > 0, flag, rate, f"is 0 to the optimizer, which keeps it as a float32; e.g. {example}")
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
        need(0 <= self.seed < 2**32, "seed", self.seed, "must be between 0 and 4294967295 (numpy's seeds)")
        need(self.max_steps is None or self.max_steps >= 1, "max-steps", self.max_steps, "must be positive")
        need(self.checkpoint_minutes > 0, "checkpoint-minutes", self.checkpoint_minutes, "must be positive")
        need(self.keep_checkpoints >= 1, "keep-checkpoints", self.keep_checkpoints, "must be at least 1")
        need(
            self.image_size is None or (16 <= self.image_size <= 256 and self.image_size % 4 == 0),
            "image-size", self.image_size, "must be a multiple of 4 between 16 and 256, e.g. 64",
        )
        need(self.channels in (None, 1, 3), "channels", self.channels, "must be 1 (grey) or 3 (RGB)")
        need(
            self.precision in PRECISIONS,
            "precision", self.precision, "choose auto, float32, mixed_float16 or mixed_bfloat16",
        )
        need(self.eval_every is None or self.eval_every >= 1, "eval-every", self.eval_every,
             "must be a positive number of epochs (leave it out to skip evaluation)")
        need(self.xla in XLA, "xla", self.xla, "choose auto, on or off")
        need(self.framework in FRAMEWORKS, "framework", self.framework, f"choose one of: {', '.join(FRAMEWORKS)}")
        need(self.strategy in STRATEGIES, "strategy", self.strategy, f"choose one of: {', '.join(STRATEGIES)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _float32(value: float) -> float:
    """`value` as a float32 holds it (a value in (0, 1) here: no overflow)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def _path_problem(path: str) -> str | None:
    """Why `path` (a folder or an s3:// prefix) cannot be used, or None. An empty one would be the current
    folder, and `--output-dir ""` put its checkpoints in /checkpoints; `s3://` alone has no bucket, and its
    checkpoints went to a local folder named s3:."""
    if not path.strip():
        return "is empty; name a folder (or an s3://BUCKET/PREFIX)"
    if "\x00" in path:
        return "holds a NUL character, which no file name can; name a folder"
    if path.startswith("s3://") and not path[len("s3://"):].split("/", 1)[0]:
        return "is not an S3 URI; write s3://BUCKET/PREFIX"
    return None


IN_HYPERPARAMETERS = "(in the job's hyperparameters)"
_KINDS = {int: "integer", float: "float"}  # Click's words, so both ways in say the same


@dataclass(frozen=True)
class Option:
    """One TrainConfig field as a flag and a hyperparameter: the schema both CLIs and the contract read."""

    name: str  # the field, and the hyperparameter's key
    type: type  # str, int or float (the field's annotation without None)
    default: object  # dataclasses.MISSING: required
    help: str | None
    choices: tuple | None
    show_default: bool

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    def parse(self, text: str):
        """A hyperparameter's string -> the field's type, or a one-line UsageError as Click words it."""
        value = text
        if self.type is not str:
            try:
                value = self.type(text)
            except ValueError:
                raise UsageError(f"Invalid value for '{self.flag}': {text!r} is not a valid {_KINDS[self.type]}. "
                                 f"{IN_HYPERPARAMETERS}") from None
        if self.choices and value not in self.choices:
            raise UsageError(f"Invalid value for '{self.flag}': {text!r} is not one of "
                             f"{', '.join(map(repr, self.choices))}. {IN_HYPERPARAMETERS}")
        return value


@functools.cache
def options() -> dict[str, Option]:
    """TrainConfig's fields as options, in the order `train --help` lists them."""
    found = {}
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata["option"]
        kind = next(t for t in typing.get_args(f.type) or (f.type,) if t is not type(None))
        found[f.name] = Option(f.name, kind, f.default, meta["help"], meta["choices"], meta["show_default"])
    return found


def _string(value) -> str:
    # A value that itself looks JSON-quoted is quoted once more, so `_plain` gives it back unchanged.
    text = str(value)
    return json.dumps(text) if text.startswith('"') and text.endswith('"') else text


def _plain(value) -> str:
    # The SageMaker SDK JSON-encodes values ('"zalando"'); the API passes them as is; a hand-written
    # hyperparameters.json may hold numbers.
    if isinstance(value, str) and value.startswith('"') and value.endswith('"'):
        try:
            return str(json.loads(value))
        except ValueError:
            pass
    return str(value)
