"""Choosing how to run on this machine: precision, XLA, determinism."""

from dataclasses import dataclass

from trainer.errors import UsageError


@dataclass(frozen=True)
class DeviceSetup:
    device: str  # "GPU: <name>" or "CPU"
    precision: str
    jit_compile: bool


def configure(precision: str, xla: str, seed: int) -> DeviceSetup:
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # Share the card politely (notebooks, a second job) instead of taking it all.
        tf.config.experimental.set_memory_growth(gpu, True)
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0)) if gpus else (0, 0)
    if precision == "auto":
        # bfloat16 on Ampere and newer (no loss scaling), float16 on Volta/Turing,
        # full precision on CPUs, where half precision is slower, not faster.
        precision = "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16" if capability >= (7, 0) else "float32"
    elif precision != "float32" and not gpus:
        raise UsageError(f"--precision {precision} needs a GPU and none is visible; use --precision float32 or auto")
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(seed)
    if not gpus:
        # Same seed, same result on CPU; GPUs keep their faster kernels.
        tf.config.experimental.enable_op_determinism()
    jit = xla == "on" or (xla == "auto" and bool(gpus))
    name = f"GPU: {tf.config.experimental.get_device_details(gpus[0]).get('device_name', 'unknown')}" if gpus else "CPU"
    return DeviceSetup(device=name, precision=precision, jit_compile=jit)
