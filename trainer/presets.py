"""The presets: a registry of named recipes, each naming its networks' builder functions.

A new preset is one entry in PRESETS (a new network, one builder function in
trainer/networks.py): `--preset` and its help in both CLIs, the launcher's
checks, generator.json's `preset` and the resume check all read this registry.
Importing this module loads no Keras (the builders import it when they run).
"""

from collections.abc import Callable
from dataclasses import dataclass

from trainer import networks
from trainer.errors import UsageError


@dataclass(frozen=True)
class Preset:
    """A named recipe: its networks' builder functions (trainer/networks.py) and their hyperparameters."""

    what: str  # one line for --help and the README
    generator: Callable  # (z_dim, image_shape, num_classes, sync_bn) -> keras.Model
    discriminator: Callable  # (image_shape, num_classes, sync_bn, aux) -> keras.Model
    batch_size: int
    z_dim: int
    lr: float  # the generator's Adam learning rate
    beta1: float
    smooth: float  # one-sided label smoothing (bce only; hinge has no targets to smooth)
    z_distribution: str  # "uniform" (U(-1, 1)) or "normal"
    d_lr: float | None = None  # the discriminator's; None: the same as lr
    beta2: float = 0.999
    loss: str = "bce"  # "bce" (non-saturating) or "hinge"
    aux_weight: float = 0.0  # auxiliary classifier on D's real images; 0: no classifier head
    aux_g_weight: float | None = None  # its weight in G's loss on fakes; None: aux_weight
    ema: float = 0.999  # decay of the generator's weight average (sampled, evaluated, exported); 0: off


PRESETS = {
    # The book's network and hyperparameters, reproduced faithfully (plus EMA, as every preset).
    "book": Preset(what="the book's CGAN, faithfully", generator=networks.book_generator,
                   discriminator=networks.book_discriminator,
                   batch_size=32, z_dim=96, lr=2e-4, beta1=0.35, smooth=0.1, z_distribution="uniform"),
    # A leaner generator without dropout, a projection discriminator without batch
    # norm, and a batch that keeps a GPU busy (trainer/networks.py says why).
    "projection": Preset(what="lean G, projection D without batch norm, batch 128",
                         generator=networks.lean_generator, discriminator=networks.projection_discriminator,
                         batch_size=128, z_dim=100, lr=2e-4, beta1=0.5, smooth=0.1, z_distribution="normal"),
    # The projection recipe with a spectral-norm D one 3x3 conv deeper, hinge loss and
    # TTUR (issue 12's ablation: FCD 2.67 -> 1.08 at 64 epochs), plus an auxiliary
    # classifier trained on real images only and felt weakly by G, for label accuracy
    # without the FCD an AC-GAN loss on both networks gives back (README, "Presets").
    # G's lr is 2e-4, not that ablation's 1e-4: on the CPU it reached at epoch 3 what 1e-4
    # reached only at epoch 7, and led at 1 and 8 epochs (README, "Image quality per preset"),
    # and again at 8 once TensorFlow trained spectral norm as JAX does (FCD 0.47 against 1.63).
    # Issue 12's 1e-4 was measured at 64 epochs, so the GPU session re-checks it there.
    "sn-hinge": Preset(what="spectral-norm projection D + classifier head, hinge, TTUR, EMA",
                       generator=networks.lean_generator, discriminator=networks.sn_projection_discriminator,
                       batch_size=128, z_dim=100, lr=2e-4, d_lr=4e-4, beta1=0.0, beta2=0.9, smooth=0.0,
                       z_distribution="normal", loss="hinge", aux_weight=0.3, aux_g_weight=0.1),
}
DEFAULT_PRESET = "sn-hinge"
# Old or generic names still accepted; run.json and generator.json record the canonical one.
ALIASES = {"seed": "book", "default": DEFAULT_PRESET}
PRESET_NAMES = (*PRESETS, *ALIASES)
LOSSES = ("bce", "hinge")
PRESET_FIELDS = ("batch_size", "z_dim", "lr", "d_lr", "beta1", "beta2", "smooth", "loss", "aux_weight",
                 "aux_g_weight", "ema")


def canonical_preset(name: str) -> str:
    """A preset name or alias -> the preset's canonical name; anything else is a usage error."""
    name = ALIASES.get(name, name)
    if name not in PRESETS:
        raise UsageError(f"--preset {name}: unknown preset; choose one of: {', '.join(PRESET_NAMES)}")
    return name


def get_preset(name: str) -> Preset:
    return PRESETS[canonical_preset(name)]


# What run.json recorded before the rename: its "default" was today's projection.
RECORDED_BEFORE_RENAME = {"seed": "book", "default": "projection"}


def check_resumed_preset(recorded: str | None, preset: str):
    """A resumed run must keep its preset (the checkpoint holds that preset's networks)."""
    if recorded is None:
        return
    was = RECORDED_BEFORE_RENAME.get(recorded, recorded)
    if was != preset:
        renamed = f" (recorded as '{recorded}', its name before issue 12)" if recorded != was else ""
        raise UsageError(f"--preset {preset}: this run's checkpoints hold preset {was}{renamed}; "
                         f"resume with --preset {was}, or start a new run in another --output-dir")
