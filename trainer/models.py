"""A preset's networks: the generator and discriminator its registry entry (trainer/presets.py) names.

The builders themselves are trainer/networks.py's.
"""

from trainer.networks import upsampling_plan  # noqa: F401  (re-exported: callers size images with it)
from trainer.presets import get_preset


def build_generator(preset, z_dim, image_shape, num_classes=0, sync_bn=False):
    """The generator of `preset` (a name or alias; unknown names are a usage error)."""
    return get_preset(preset).generator(z_dim, image_shape, num_classes, sync_bn)


def build_discriminator(preset, image_shape, num_classes=0, sync_bn=False, aux_weight=None):
    """The discriminator of `preset`; with a classifier head when conditional and
    `aux_weight` (default: the preset's) is above 0."""
    spec = get_preset(preset)
    aux = num_classes > 0 and (spec.aux_weight if aux_weight is None else aux_weight) > 0
    return spec.discriminator(image_shape, num_classes, sync_bn, aux)
