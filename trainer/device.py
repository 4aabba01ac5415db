"""Choosing how to run on this machine: precision, XLA, determinism (TensorFlow or JAX)."""

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

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
        precision = _auto_precision(gpu_name, capability, framework)
    elif precision == "mixed_float16" and gpu_name is None:
        raise UsageError("--precision mixed_float16 needs a GPU and none is visible; "
                         "use --precision float32, mixed_bfloat16 or auto")
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


@contextlib.contextmanager
def float32_policy():
    """Keras' global precision policy at float32 for what is built inside (the judge, an export's float32
    twin), whatever precision the run trains in; put back afterwards."""
    import keras

    with policy_kept():
        keras.mixed_precision.set_global_policy("float32")
        yield


@contextlib.contextmanager
def policy_kept():
    """Whatever precision a run sets (`configure`), the caller's global policy afterwards: a run called in
    process (benchmarks, notebooks, tests) must not leave later models in mixed_bfloat16. Keras may not
    be imported yet (the backend is chosen inside the run); its policy then starts, and ends, at float32."""
    import sys

    keras = sys.modules.get("keras")
    previous = keras.mixed_precision.global_policy().name if keras else "float32"
    try:
        yield
    finally:
        if "keras" in sys.modules:
            sys.modules["keras"].mixed_precision.set_global_policy(previous)


def _auto_precision(gpu_name, capability, framework) -> str:
    """bfloat16 on Ampere and newer GPUs (no loss scaling), float16 on Volta/Turing (TensorFlow only: on JAX,
    float16 would need loss scaling, so older GPUs train in float32).

    On a CPU, bfloat16 only where the CPU multiplies it natively (AVX512-BF16 or AMX, with TensorFlow's
    oneDNN kernels): there it is faster, elsewhere half precision is slower than float32. XLA on CPU
    (JAX) stays in float32.
    """
    if gpu_name is None:
        return "mixed_bfloat16" if framework == "tensorflow" and cpu_has_bf16() else "float32"
    if capability >= (8, 0):
        return "mixed_bfloat16"
    if capability >= (7, 0):
        return "mixed_float16" if framework == "tensorflow" else "float32"
    return "float32"


def cpu_has_bf16(cpuinfo="/proc/cpuinfo") -> bool:
    """Whether this CPU has native bfloat16 arithmetic (x86 AVX512-BF16 or AMX-BF16; Linux's flags)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return bool({"avx512_bf16", "amx_bf16"} & set(line.split(":", 1)[-1].split()))
    except OSError:  # not Linux: no flags to read, so no claim
        pass
    return False


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
        return  # a read-only home, an old JAX: compile every time, train anyway
    _drop_damaged_entries(Path(folder))


JAX_CACHE_CHECKED = ".gankit-checked"  # in the JAX cache: its mtime is when the entries before it were read through
LIVE_WRITE_S = 60  # an entry younger than this may still be being written by another run: left for the next look


def _drop_damaged_entries(folder: Path):
    """Remove cache entries cut short by a kill. JAX writes an entry in place and never replaces one that
    exists, so a truncated one was refused, compiled again and not stored on every later run, with a warning
    each time; removed, the next compile stores it whole. Each entry is read once: those written since the
    last look (JAX never rewrites one), and old enough to be no other run's write in flight."""
    try:
        from jax._src.compilation_cache import decompress_executable
    except ImportError:  # a JAX that moved it: damaged entries are only recompiled, as before
        return
    checked = folder / JAX_CACHE_CHECKED
    since = checked.stat().st_mtime if checked.exists() else 0
    settled = time.time() - LIVE_WRITE_S
    for entry in folder.glob("*-cache"):
        with contextlib.suppress(OSError):
            if since <= entry.stat().st_mtime < settled and not _whole(entry, decompress_executable):
                entry.unlink()
                (folder / f"{entry.name[:-len('-cache')]}-atime").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        checked.touch()
        os.utime(checked, (settled, settled))


def _whole(entry: Path, decompress) -> bool:
    try:
        decompress(entry.read_bytes())
    except OSError:
        raise
    except Exception:  # zlib.error, zstd's ZstdError: a stream cut short
        return False
    return True
