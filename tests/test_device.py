"""Which precision a run picks on which machine (trainer/device.py)."""

import os
import subprocess
import sys

import keras
import pytest

from trainer import device
from trainer.errors import UsageError

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx512f amx_tile amx_bf16 amx_int8\n"
SKYLAKE = "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"


@pytest.mark.parametrize("cpuinfo, native", [(ZEN4, True), (SAPPHIRE_RAPIDS, True), (SKYLAKE, False), ("", False)])
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path, cpuinfo, native):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    assert device.cpu_has_bf16(str(path)) is native


def test_no_cpuinfo_claims_nothing(tmp_path):
    assert device.cpu_has_bf16(str(tmp_path / "missing")) is False


@pytest.mark.parametrize("gpu, capability, framework, bf16_cpu, expected", [
    (None, (0, 0), "tensorflow", True, "mixed_bfloat16"),   # AVX512-BF16 / AMX CPU: oneDNN's bf16 kernels
    (None, (0, 0), "tensorflow", False, "float32"),         # other CPUs: half precision is slower
    (None, (0, 0), "jax", True, "float32"),                 # XLA on CPU stays in float32
    ("H100", (9, 0), "jax", False, "mixed_bfloat16"),
    ("A10G", (8, 6), "tensorflow", False, "mixed_bfloat16"),
    ("V100", (7, 0), "tensorflow", False, "mixed_float16"),
    ("V100", (7, 0), "jax", False, "float32"),              # float16 needs loss scaling, TF only
    ("K80", (3, 7), "tensorflow", False, "float32"),
])
def test_auto_precision(monkeypatch, gpu, capability, framework, bf16_cpu, expected):
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: bf16_cpu)
    assert device._auto_precision(gpu, capability, framework) == expected


@pytest.fixture
def restore_policy():
    before = keras.mixed_precision.global_policy().name
    yield
    keras.mixed_precision.set_global_policy(before)


def test_explicit_bfloat16_runs_on_a_cpu_and_float16_is_refused(restore_policy):
    setup = device.configure("mixed_bfloat16", "auto", 0)
    assert (setup.device, setup.precision, setup.jit_compile) == ("CPU", "mixed_bfloat16", False)
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    with pytest.raises(UsageError, match="mixed_float16 needs a GPU.*--precision float32, mixed_bfloat16 or auto"):
        device.configure("mixed_float16", "auto", 0)


def test_the_judge_trains_in_float32_whatever_the_run_trains_in(restore_policy, monkeypatch):
    import numpy as np

    from trainer import judge

    monkeypatch.setattr(judge, "MIN_STEPS", 2)
    monkeypatch.setattr(judge, "EPOCHS", 1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 8, 8, 1)).astype(np.uint8)
    labels = np.arange(16) % 2
    splits = judge.Splits("tiny", ("a", "b"), images, labels, images, labels)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # as a bf16 run with --eval-every has it when it scores
    model, _ = judge.train_judge(splits, log=lambda *a: None)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"  # the run's policy is put back


COMPILE_ONCE = """
import jax, jax.numpy as jnp
from trainer.device import _enable_compilation_cache
_enable_compilation_cache()
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
print(float(jax.jit(lambda x: jnp.sin(x) @ x.T + 1)(jnp.ones((8, 8))).sum()))
"""


def _compile_in_a_fresh_process(cache):
    env = dict(os.environ, GANKIT_JAX_CACHE=str(cache), KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", COMPILE_ONCE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_a_jax_cache_entry_cut_short_by_a_kill_is_stored_whole_again(tmp_path):
    cache = tmp_path / "jax"
    _compile_in_a_fresh_process(cache)
    entry = next(cache.glob("jit__lambda-*-cache"))
    whole = entry.stat().st_size
    entry.write_bytes(entry.read_bytes()[:20])  # what a run killed while JAX wrote it leaves
    for path in cache.iterdir():  # an hour later: no run's write is in flight
        earlier = path.stat().st_mtime - 3600
        os.utime(path, (earlier, earlier))
    assert "Error reading persistent compilation cache" not in _compile_in_a_fresh_process(cache)
    # JAX never replaced it: every run compiled it again, with a warning. Not byte for byte the first entry: an
    # entry is a compressed executable, and two compilations' differ by a few bytes (3,601 against 3,608 seen);
    # that the next run reads it without an error (below) says it is whole.
    assert entry.stat().st_size > whole // 2
    assert "Error reading persistent compilation cache" not in _compile_in_a_fresh_process(cache)
