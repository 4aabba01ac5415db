"""An exponential moving average of the generator's weights (`--ema DECAY`, 0: off).

The averaged generator is the one sampled, evaluated and exported: averaging
over the last ~1/(1-decay) steps smooths out the oscillation of adversarial
training, and costs one multiply-add per weight and step (Yazici et al., 2019;
Karras et al., 2018).

Backend-neutral: `ema_update` is a pure function of arrays in `keras.ops`, for a
compiled step on either backend to call; `ema_copy` makes the plain Keras twin
of the generator that holds the average.
"""

import keras
from keras import ops


def ema_update(ema_values, values, decay):
    """The new averages: decay * ema + (1 - decay) * value, weight by weight (lists in, list out).

    It averages what it is given: the trainable weights in a compiled step (batch
    norm's moving statistics are then copied from the live generator before
    sampling), or all weights.
    """
    return [ops.add(ops.multiply(e, decay), ops.multiply(ops.cast(v, e.dtype), 1.0 - decay))
            for e, v in zip(ema_values, values)]


def ema_copy(generator):
    """A twin of `generator` (same architecture, its current weights) to hold the average."""
    twin = keras.models.clone_model(generator)
    twin.set_weights(generator.get_weights())
    return twin
