"""An exponential moving average of the generator's weights (`--ema DECAY`, 0: off).

The averaged generator is the one sampled, evaluated and exported: averaging
over the last ~1/(1-decay) steps smooths out the oscillation of adversarial
training, and costs one multiply-add per weight and step (Yazici et al., 2019;
Karras et al., 2018).

`ema_copy` makes the plain Keras twin of the generator that holds the average;
each backend's compiled step (trainer/step_tf.py, trainer/step_jax.py) updates
its trainable weights, with the warm-up decay of trainer/step_spec.py.
"""

import keras


def ema_copy(generator):
    """A twin of `generator` (same architecture, its current weights) to hold the average."""
    twin = keras.models.clone_model(generator)
    twin.set_weights(generator.get_weights())
    return twin
