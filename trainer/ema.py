"""An exponential moving average of the generator's weights (`--ema DECAY`, 0: off).

The averaged generator is the one sampled, evaluated and exported: averaging
over the last ~1/(1-decay) steps smooths out the oscillation of adversarial
training, and costs one multiply-add per weight and step (Yazici et al., 2019;
Karras et al., 2018).

Backend-neutral: `ema_update` is a pure function of arrays in `keras.ops`, for a
compiled step on either backend to call; `ema_copy` and `assign_ema` keep a
plain Keras twin of the generator that holds the average.
"""

import keras
from keras import ops


def ema_update(ema_values, values, decay):
    """The new averages: decay * ema + (1 - decay) * value, weight by weight (lists in, list out).

    It averages what it is given: the trainable weights in a compiled step (batch
    norm's moving statistics are then copied from the live generator before
    sampling), or all weights, as `assign_ema` does.
    """
    return [ops.add(ops.multiply(e, decay), ops.multiply(ops.cast(v, e.dtype), 1.0 - decay))
            for e, v in zip(ema_values, values)]


def ema_copy(generator):
    """A twin of `generator` (same architecture, its current weights) to hold the average."""
    twin = keras.models.clone_model(generator)
    twin.set_weights(generator.get_weights())
    return twin


def assign_ema(twin, generator, decay):
    """One EMA step in place, eagerly (for loops that do it outside the compiled step)."""
    new = ema_update([v.value for v in twin.weights], [v.value for v in generator.weights], decay)
    for variable, value in zip(twin.weights, new):
        variable.assign(value)


def sampling_generator(generator, twin):
    """The generator to sample, evaluate and export: the average when there is one."""
    return twin if twin is not None else generator
