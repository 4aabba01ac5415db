"""Which Keras backend trains: TensorFlow (the default) or JAX.

Keras fixes its backend when it is first imported, from KERAS_BACKEND, so
`select()` must run before anything imports keras; once keras is loaded, asking
for another backend is a one-line error rather than a silent mismatch.
"""

import os
import sys

from trainer.errors import UsageError

FRAMEWORKS = ("tensorflow", "jax")


def default_framework() -> str:
    """KERAS_BACKEND if it names one we support, else TensorFlow."""
    value = os.environ.get("KERAS_BACKEND", "").strip().lower()
    return value if value in FRAMEWORKS else "tensorflow"


def select(framework: str):
    """Make `framework` Keras' backend in this process (before keras is imported)."""
    if "keras" in sys.modules:
        import keras

        current = keras.backend.backend()
        if current != framework:
            raise UsageError(f"--framework {framework}: Keras is already loaded with the {current} backend in this "
                             f"process; set KERAS_BACKEND={framework} before starting Python")
        return
    os.environ["KERAS_BACKEND"] = framework
    cpus = int(os.environ.get("GANKIT_CPU_DEVICES") or 0)
    if framework == "jax" and cpus > 1 and "jax" not in sys.modules:
        # Tests and benchmarks: N logical CPU devices, as distribute.split_cpu() gives TensorFlow.
        flag = f"--xla_force_host_platform_device_count={cpus}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


def version(framework: str) -> str:
    if framework == "jax":
        import jax

        return jax.__version__
    import tensorflow as tf

    return tf.__version__
