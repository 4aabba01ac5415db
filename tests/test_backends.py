"""Both Keras backends: TensorFlow (this process) and JAX (subprocesses: the backend is fixed per process).

Each backend trains, is stopped by SIGTERM and resumes to exactly the run it
would have made; a run checkpointed on one backend resumes on the other, and a
generator exported by either loads under both; from the same weights, batch
and noise the two backends' first steps agree; and the JAX path never imports
TensorFlow or boto3 (they are blocked in its subprocess).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import trainer
from tests.data_helpers import make_idx_dataset
from trainer.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
# 16x16 images, batch 8: XLA on CPU computes Conv2DTranspose's kernel gradient slowly, so JAX runs stay tiny.
SMALL = ["--image-size", "16"]
# As if they were not installed (the GPU machine has neither): their import fails, and nothing lands in
# sys.modules (a None entry there made Keras' preprocessing layers believe TensorFlow was loaded).
BLOCKER = """import sys


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tensorflow", "boto3", "botocore"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_idx_dataset(tmp_path_factory.mktemp("mnist"), num_classes=4, n_train=32, n_test=16)  # 4 steps/epoch


@pytest.fixture(scope="module")
def blocker(tmp_path_factory):
    """A sitecustomize that makes `import tensorflow` (and boto3) fail in every subprocess that has it on its path."""
    folder = tmp_path_factory.mktemp("block")
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return folder


def env_for(framework, blocker=None):
    path = [str(blocker)] if blocker and framework == "jax" else []
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path + [str(ROOT)]), KERAS_BACKEND=framework)


def train_cmd(data, out, framework, *extra, batch="8"):
    return [sys.executable, "-m", "trainer", "train", "--dataset", "mnist", "--data-dir", str(data),
            "--output-dir", str(out), "--framework", framework, *SMALL, "--batch-size", batch, *extra]


_straight = {}


def straight_run(framework, tmp_path_factory, data, blocker):
    """One uninterrupted 2-epoch run per backend, shared by the tests that compare against it."""
    if framework not in _straight:
        out = tmp_path_factory.mktemp(f"straight-{framework}")
        run(train_cmd(data, out, framework, "--epochs", "2"), env_for(framework, blocker))
        _straight[framework] = out
    return _straight[framework]


def run(cmd, env):
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir):
    return trainer.load_generator(Path(run_dir) / "generator").model.get_weights()


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["tensorflow", "jax"])
def test_sigterm_then_resume_matches_an_uninterrupted_run(tmp_path, tmp_path_factory, data, blocker, framework):
    epochs = "2"
    env = env_for(framework, blocker)
    straight, stopped = straight_run(framework, tmp_path_factory, data, blocker), tmp_path / "stopped"
    total = int(epochs) * 4

    cmd = train_cmd(data, stopped, framework, "--epochs", epochs, "--checkpoint-minutes", "0.0001")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list((stopped / "checkpoints").glob("ckpt-*")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    step = max(int(p.name[5:]) for p in (stopped / "checkpoints").glob("ckpt-*"))
    assert 1 <= step < total and not (stopped / "generator").exists()

    resumed = run(cmd, env)
    assert f"at step {step}" in resumed.stdout
    for a, b in zip(weights(straight), weights(stopped)):
        np.testing.assert_array_equal(a, b)  # same data order, same noise, same steps: the same run
    key = lambda rows: [(r["epoch"], r["step"], r["d_loss"], r["g_loss"]) for r in rows]  # noqa: E731
    assert key(metrics(straight)) == key(metrics(stopped)) and metrics(stopped)[-1]["step"] == total
    run_info = json.loads((stopped / "run.json").read_text())
    assert run_info["framework"] == framework and run_info[framework]


@pytest.mark.slow
def test_jax_data_parallel_on_two_devices_computes_the_single_device_run(tmp_path, tmp_path_factory, data, blocker):
    single = straight_run("jax", tmp_path_factory, data, blocker)  # batch 8 on one device
    out = tmp_path / "parallel"
    done = run(train_cmd(data, out, "jax", "--epochs", "2", "--strategy", "mirrored", batch="4"),
               dict(env_for("jax", blocker), GANKIT_CPU_DEVICES="2"))
    assert "2 replicas (DataParallel" in done.stdout
    info = json.loads((out / "run.json").read_text())
    assert info["replicas"] == 2 and info["global_batch_size"] == 8 and info["strategy"] == "DataParallel"
    # Same global batch, same noise, batch norm over the whole batch: the same run up to float rounding.
    diff = np.concatenate([np.abs(a - b).ravel() for a, b in zip(weights(single), weights(out))])
    assert diff.mean() < 2e-5, diff.mean()
    for a, b in zip(metrics(single), metrics(out)):
        assert a["step"] == b["step"] and a["d_loss"] == pytest.approx(b["d_loss"], rel=1e-4)


@pytest.mark.slow
def test_checkpoints_and_generators_cross_backends(tmp_path, data, blocker):
    out = tmp_path / "run"
    jax_env, tf_env = env_for("jax", blocker), env_for("tensorflow")
    # JAX (with TensorFlow and boto3 unimportable) checkpoints at step 3 of epoch 1 ...
    run(train_cmd(data, out, "jax", "--epochs", "2", "--max-steps", "3"), jax_env)
    # ... TensorFlow resumes it, finishes epoch 1 and stops at step 6 ...
    tf_run = run(train_cmd(data, out, "tensorflow", "--epochs", "2", "--max-steps", "6"), tf_env)
    assert "at step 3" in tf_run.stdout
    assert "JAX on a CPU" not in tf_run.stdout
    tf_export = tmp_path / "tf-generator"
    (out / "generator").rename(tf_export)
    # ... and JAX resumes that to the end.
    jax_run = run(train_cmd(data, out, "jax", "--epochs", "2"), jax_env)
    assert "at step 6" in jax_run.stdout
    # XLA:CPU's transposed-convolution gradients are ~50x TensorFlow's: a JAX run on a CPU says which to use.
    assert "note: JAX on a CPU trains these generators about 50x slower than TensorFlow" in jax_run.stdout
    rows = metrics(out)
    assert [(r["epoch"], r["step"]) for r in rows] == [(1, 4), (2, 8)] and all(np.isfinite(r["d_loss"]) for r in rows)
    assert json.loads((out / "generator" / "generator.json").read_text())["steps"] == 8

    # Each export loads under the other backend and makes the same images as under its own.
    jax_made = tmp_path / "jax-made.npy"
    run([sys.executable, "-m", "trainer", "generate", str(tf_export), "--class", "2", "--count", "6", "--seed", "3",
         "--out", str(jax_made)], jax_env)
    here = trainer.load_generator(tf_export).generate(2, count=6, seed=3)  # this process: TensorFlow
    assert np.abs(np.load(jax_made).astype(int) - here).max() <= 1  # float32 rounding may move a pixel by one level
    assert trainer.load_generator(out / "generator").generate(1, count=3, seed=0).shape == (3, 16, 16, 1)

    # The judge trains and scores on JAX alone too (what benchmarks/gpu_session.py does on the GPU machine);
    # 16 samples, fewer than the judge's 128 features, still give a finite distance.
    scored = run([sys.executable, "-m", "trainer", "evaluate", str(out / "generator"), "--data-dir", str(data),
                  "--samples", "16"], dict(jax_env, GANKIT_CACHE=str(tmp_path / "cache")))
    figures = json.loads((out / "evaluation.json").read_text())
    assert np.isfinite(figures["frechet_classifier_distance"]) and figures["samples"] == 16, scored.stdout


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["projection", "sn-hinge"])
def test_first_step_is_the_same_on_both_backends(tmp_path, preset):
    """From the same weights, batch and noise, the backends' first steps agree.

    With `sn-hinge` this includes Keras' SpectralNormalization, which writes W/sigma into its
    kernel on every training call: both steps run D stateless, so that write stays inside the
    call on TensorFlow as on JAX, and both train W with the gradient through sigma.

    Tolerance: Adam's first update is lr * g / (|g| + 1e-7), about lr * sign(g), so
    every weight moves by ~2e-4 whatever its gradient. Agreement to 2e-6 (1% of that
    step) catches a missing or reordered update, a wrong loss or a sign error, and
    leaves room for float32 reassociation between TensorFlow's and XLA's kernels
    (measured: at most 3e-7). Only where |g| is near Adam's epsilon does the step
    follow g itself, and there reassociation moves it further: so a few weights in
    10,000 may differ by up to 1e-5 (5% of the step; `sn-hinge` measured 2 of
    425,984 of G's first kernel, at most 3.1e-6). The losses come from identical
    arithmetic on identical inputs, so they agree to float32 precision. The step
    runs with an EMA generator, so its update (after G's) is compared too.
    """
    from tests.backend_step import first_step

    before, losses, after = first_step(preset=preset)
    np.savez(tmp_path / "init.npz", **before)
    run([sys.executable, "-m", "tests.backend_step", str(tmp_path / "init.npz"), str(tmp_path / "jax.npz"), preset],
        env_for("jax"))
    with np.load(tmp_path / "jax.npz") as jax_out:
        np.testing.assert_allclose(jax_out["losses"], losses, rtol=1e-5)
        moved = 0
        for name, value in after.items():
            off = np.abs(jax_out[name] - value) - 1e-4 * np.abs(value)
            np.testing.assert_array_less(off, 1e-5, err_msg=name)
            assert np.mean(off > 2e-6) <= 1e-4, (name, np.sum(off > 2e-6), off.size)
            moved += name.startswith(("generator/", "discriminator/")) and not np.array_equal(value, before[name])
    assert moved >= 10  # both networks' weights changed: the comparison is not of untouched arrays
    # The EMA generator moved 1 - decay of the way from the initial G to the updated G; at step 0 the
    # warm-up makes the decay min(EMA, 1/10).
    from tests.backend_step import EMA, trainable_before_after

    decay = min(EMA, 0.1)
    g_before, g_after, ema_after = trainable_before_after(before, after, preset)
    for b, a, e in zip(g_before, g_after, ema_after):
        np.testing.assert_allclose(e, decay * b + (1 - decay) * a, rtol=1e-5, atol=1e-7)


# Steps 0, 1 and 2 in the EMA's warm-up (decay 0.1, 0.18, 0.25), then step 100, past it (decay EMA = 0.9).
SOME_STEPS = (0, 1, 2, 100)
# XLA:CPU's slow transposed-convolution gradients: even at batch 4, JAX takes ~10 s a step of `book`.
TINY_BATCH = 4


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["book", "projection", "sn-hinge"])
def test_a_few_steps_are_the_same_on_both_backends(tmp_path, preset):
    """From the same weights, batches and noise, a few steps leave the same state on both backends:
    G, D, the EMA generator, both optimizers' moments and step counts, and what no gradient trains
    (batch-norm moving statistics, spectral norm's power-iteration vectors, dropout's seed states),
    none of which the first step alone shows (the EMA is still in warm-up, the moments and statistics
    have moved once). JAX loads TensorFlow's initial arrays as a checkpoint would, seed states
    (int64 there, uint32 here) included. Dropout draws the same masks on both (same_dropout_masks):
    each backend's own RNG would draw others.

    Tolerance, per array, against its largest change over the steps on either backend: a defect (an
    update or state write missing on one backend, another loss or decay) is off by the order of that
    change across the whole array. Float32 reassociation between TensorFlow's and XLA's kernels is off
    by ~1e-7 relative per operation, which Adam turns into a step-sized difference only where a
    gradient is within rounding of zero (it divides by sqrt(v) + 1e-7): a few elements in 100,000.
    So every element within 3% of the change (measured: at most 1.2%, book's EMA'd dense kernel) and
    99.9% of them within 0.1% (measured: 99.9% within 0.007%). Biases that feed batch norm have no
    gradient at all, only rounding noise that Adam scales up (inert_arrays): they are left out. The
    losses come from the same arithmetic on weights that agree to that, so to 1e-5. Integer state
    (seed states, step counts) agrees exactly.
    """
    from tests.backend_step import inert_arrays, non_trainable_arrays, train_steps

    before, losses, after = train_steps(None, preset, TINY_BATCH, SOME_STEPS)
    np.savez(tmp_path / "init.npz", **before)
    run([sys.executable, "-m", "tests.backend_step", str(tmp_path / "init.npz"), str(tmp_path / "jax.npz"), preset,
         str(TINY_BATCH), ",".join(map(str, SOME_STEPS))], env_for("jax"))
    with np.load(tmp_path / "jax.npz") as npz:
        jax_after = {k: npz[k] for k in npz.files}
    np.testing.assert_allclose(jax_after.pop("losses"), losses, rtol=1e-5)
    assert set(jax_after) == set(after)
    inert = inert_arrays(preset)
    for name, value in after.items():
        other = jax_after[name]
        if value.dtype.kind != "f":
            np.testing.assert_array_equal(other.astype(np.int64), value, err_msg=name)
        elif name not in inert:
            change = max(np.abs(value - before[name]).max(), np.abs(other - before[name]).max())
            off = np.abs(other - value)
            assert off.max() <= 0.03 * change, (name, off.max(), change)
            assert np.mean(off > 1e-3 * change) <= 1e-3, (name, np.sum(off > 1e-3 * change), off.size)
    # None of it is a comparison of untouched arrays: every piece of state moved.
    for name in non_trainable_arrays(preset):
        assert not np.array_equal(after[name], before[name]), name
    for group in ("generator", "discriminator", "g_opt", "d_opt", "ema_generator"):
        names = [k for k in after if k.startswith(group + "/") and k not in inert]
        # All but a few: Adam's learning rate, and what has no gradient on these batches (a hinge logit's bias
        # while every logit is inside the margin, and that bias's moments).
        assert sum(not np.array_equal(after[k], before[k]) for k in names) >= 0.8 * len(names), group


# One JAX runner: a step, two syncs, another step and a sync; how many Keras variables got a new array each time.
SYNC_TWICE = """
import json, types
import numpy as np
from tests.backend_step import BATCH, CLASSES, SHAPE, build, config
from trainer.step_jax import JaxRunner
from trainer.steps import spec_from

cfg = config("projection")
nets = build(cfg)
images, labels = np.zeros((2 * BATCH, *SHAPE), np.uint8), np.zeros(2 * BATCH, np.int64)
runner = JaxRunner(nets, spec_from(cfg, CLASSES, BATCH), images, labels, types.SimpleNamespace(replicas=1), True)
variables = [v for group in runner.groups for v in group]
held = lambda: [id(v.value) for v in variables]
runner.start_epoch(0, 0, 2)
runner.run(0, 1, 0)
runner.sync()
synced = held()
runner.sync()
again = held()
runner.run(1, 1, 1)
runner.sync()
print(json.dumps({"variables": len(synced), "copied_again": sum(a != b for a, b in zip(synced, again)),
                  "copied_after_step": sum(a != b for a, b in zip(again, held()))}))
"""


@pytest.mark.slow
def test_jax_sync_copies_the_state_once_per_step(blocker):
    """An epoch's end synced the JAX runner's state into the Keras variables for its sampling and again for its
    checkpoint (and the run's end once more), with no step between: every variable and Adam moment copied
    twice (12 ms a time for sn-hinge on a 2-core CPU). The second sync now copies nothing; one after a step does."""
    done = run([sys.executable, "-c", SYNC_TWICE], env_for("jax", blocker))
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["variables"] > 0
    assert counts["copied_again"] == 0
    assert counts["copied_after_step"] == counts["variables"]


# The judge scores 1,000 images twice (two batches of 500 each time); how often its feature layer's Python ran.
JUDGE_TWICE = """
import json
import numpy as np
from trainer.judge import FEATURES_LAYER, Judge, build_classifier

model = build_classifier((28, 28, 1), 10)
judge = Judge(model, {"class_names": [str(k) for k in range(10)], "test_accuracy": 0.0})
layer, runs = model.get_layer(FEATURES_LAYER), []
call = layer.call
layer.call = lambda *a, **k: runs.append(1) or call(*a, **k)
images = np.random.default_rng(0).integers(0, 256, (1000, 28, 28, 1)).astype(np.uint8)
features, probabilities = judge.outputs(images)
reversed_features, _ = judge.outputs(images[::-1])
print(json.dumps({"layer_runs": len(runs), "shapes": [list(features.shape), list(probabilities.shape)],
                  "same": bool(np.allclose(reversed_features[::-1], features, atol=1e-4))}))
"""


@pytest.mark.slow
def test_the_judge_scores_in_compiled_calls_on_jax(blocker):
    """On JAX the judge ran eagerly, op by op, for every batch of every evaluation (338 ms for 1,000 images on a
    2-core CPU, 43 ms compiled); now, like the generator, one compiled call per batch shape: its layers' Python
    runs once, when the call is traced, and the figures are the same."""
    done = run([sys.executable, "-c", JUDGE_TWICE], env_for("jax", blocker))
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"layer_runs": 1, "shapes": [[1000, 128], [1000, 10]], "same": True}


def test_framework_comes_from_the_flag_then_keras_backend(monkeypatch):
    from trainer.config import TrainConfig

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert TrainConfig(dataset="mnist", output_dir="x").resolve().framework == "jax"
    monkeypatch.delenv("KERAS_BACKEND")
    assert TrainConfig(dataset="mnist", output_dir="x").resolve().framework == "tensorflow"
    with pytest.raises(UsageError, match="--framework torch: choose one of: tensorflow, jax"):
        TrainConfig(dataset="mnist", output_dir="x", framework="torch").resolve()


def test_another_backend_than_the_loaded_one_is_a_one_line_error():
    import keras

    from trainer.backend import select

    assert keras.backend.backend() == "tensorflow"
    with pytest.raises(UsageError, match="already loaded with the tensorflow backend.*KERAS_BACKEND=jax"):
        select("jax")
    select("tensorflow")  # the loaded one is fine


def test_launcher_accepts_framework_as_a_hyperparameter():
    from launcher.spec import check_hyperparameters

    check_hyperparameters({"dataset": "zalando", "framework": "jax"})
    with pytest.raises(UsageError, match="framework"):
        check_hyperparameters({"dataset": "zalando", "framework": "torch"})


def test_jax_refuses_several_hosts_in_one_line(tmp_path, monkeypatch):
    from trainer.distribute import choose_jax_placement

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}))
    with pytest.raises(UsageError, match="one host only.*--framework tensorflow"):
        choose_jax_placement("auto", tmp_path)
    monkeypatch.delenv("TF_CONFIG")
    with pytest.raises(UsageError, match="one host only"):
        choose_jax_placement("multiworker", tmp_path)
