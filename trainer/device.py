"""Choosing how to run on this machine: precision, XLA, determinism (TensorFlow or JAX)."""

import os
from dataclasses import dataclass

from trainer.errors import UsageError


@dataclass(frozen=True)
class DeviceSetup:
    device: str  # "GPU: <name>" or "CPU"
    precision: str
    jit_compile: bool
    memory_bytes: int | None = None  # the accelerator's memory, when known (decides if the dataset lives there)


def configure(precision: str, xla: str, seed: int, framework: str = "tensorflow") -> DeviceSetup:
    import keras

    gpu_name, capability, memory = (_jax_gpu() if framework == "jax" else _tf_gpu())
    if precision == "auto":
        # bfloat16 on Ampere and newer (no loss scaling), float16 on Volta/Turing,
        # full precision on CPUs, where half precision is slower, not faster.
        # On JAX, float16 (which needs loss scaling) is not offered: older GPUs train in float32.
        half = "mixed_float16" if framework == "tensorflow" else "float32"
        precision = "mixed_bfloat16" if capability >= (8, 0) else half if capability >= (7, 0) else "float32"
    elif precision != "float32" and gpu_name is None:
        raise UsageError(f"--precision {precision} needs a GPU and none is visible; use --precision float32 or auto")
    elif precision == "mixed_float16" and framework == "jax":
        raise UsageError("--precision mixed_float16 needs loss scaling, which gankit does only on TensorFlow; "
                         "use --precision mixed_bfloat16 (Ampere or newer) or float32 with --framework jax")
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(seed)
    if framework == "tensorflow":
        if gpu_name is None:
            import tensorflow as tf

            # Same seed, same result on CPU; GPUs keep their faster kernels.
            tf.config.experimental.enable_op_determinism()
        jit = xla == "on" or (xla == "auto" and gpu_name is not None)
    else:
        jit = True  # JAX always compiles with XLA
        _enable_compilation_cache()
    return DeviceSetup(device=f"GPU: {gpu_name}" if gpu_name else "CPU", precision=precision, jit_compile=jit,
                       memory_bytes=memory)


def _tf_gpu():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None, (0, 0), None
    for gpu in gpus:
        # Share the card politely (notebooks, a second job) instead of taking it all.
        tf.config.experimental.set_memory_growth(gpu, True)
    details = tf.config.experimental.get_device_details(gpus[0])
    return details.get("device_name", "unknown"), tuple(details.get("compute_capability", (0, 0))), None


def _jax_gpu():
    import jax

    devices = [d for d in jax.devices() if d.platform == "gpu"]
    if not devices:
        return None, (0, 0), None
    d = devices[0]
    try:
        capability = tuple(int(x) for x in str(getattr(d, "compute_capability", "0.0")).split("."))
    except ValueError:
        capability = (0, 0)
    try:
        memory = int(d.memory_stats().get("bytes_limit"))
    except Exception:  # not every runtime reports it
        memory = None
    return getattr(d, "device_kind", "unknown"), capability, memory


def _enable_compilation_cache():
    """JAX's persistent compilation cache under $GANKIT_CACHE/jax: a second run of the same shapes skips most compiling."""
    import jax

    from trainer.fsutil import cache_root

    folder = os.environ.get("GANKIT_JAX_CACHE") or str(cache_root() / "jax")
    try:
        os.makedirs(folder, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except (OSError, AttributeError):
        pass  # a read-only home, an old JAX: compile every time, train anyway
