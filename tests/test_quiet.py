"""TensorFlow's start-up chatter is hidden from what a launcher user reads, and kept in the job's log."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import quiet

ROOT = Path(__file__).parents[1]
# Lines TensorFlow 2.21 printed in a local job's log on this (GPU-less) machine.
CHATTER = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796109322.850199   22455 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.",
    "I0000 00:00:1796109322.850539   22455 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
    "I0000 00:00:1796109322.966829   22455 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.",
    "E0000 00:00:1796109330.700603   22455 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1796109333.171489   22455 meta_optimizer.cc:967] remapper failed: INVALID_ARGUMENT: Mutation::Apply error",
    "W0000 00:00:1796109333.171489   22455 gpu_device.cc:2342] Cannot dlopen some GPU libraries.",
    "WARNING:absl:Skipping variable loading for optimizer 'adam'",
    "WARNING:tensorflow:5 out of the last 5 calls to <function> triggered tf.function retracing.",
]
OURS = [
    "gankit: starting the trainer: train --dataset mnist --epochs 1",
    "training cgan/default on mnist (640 images, 28x28x1) for 4 steps of 16 on CPU, float32",
    "train  4/4 (100%)  ETA 0:00  epoch 1/1  d_loss 1.3844  g_loss 0.6938",
    "error: --batch-size 64 x 1 replica(s) is larger than the dataset (40 images); use a smaller batch",
    "Traceback (most recent call last):",
    "tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating tensor",
]


def test_the_chatter_is_noise_and_our_lines_are_not():
    assert all(quiet.is_noise(line) for line in CHATTER)
    assert not any(quiet.is_noise(line) for line in OURS)


def test_the_filter_joins_chunks_into_lines_and_drops_the_chatter():
    shown = []
    echo = quiet.LineFilter(lambda text: shown.append(text))
    text = "\n".join([OURS[0], CHATTER[1], OURS[1], CHATTER[5], OURS[2]]) + "\npartial"
    for i in range(0, len(text), 7):  # the local backend's raw chunks, cut anywhere
        echo(text[i:i + 7], nl=False)
    echo.flush()
    assert shown == OURS[:3] + ["partial"]
    shown.clear()
    per_line = quiet.LineFilter(lambda text: shown.append(text))
    for line in CHATTER + OURS:  # CloudWatch and EC2: one line per call
        per_line(line)
    per_line.flush()
    assert shown == OURS


def test_what_tensorflow_writes_to_descriptor_2_is_caught_and_the_rest_replayed():
    script = ("import os, sys\nfrom launcher.quiet import tensorflow_quietly\n"
              "with tensorflow_quietly():\n"
              f"    os.write(2, {(chr(10).join(CHATTER[:3]) + chr(10)).encode()!r})\n"
              "    print('a warning of ours', file=sys.stderr)\n"
              f"    os.write(2, {(CHATTER[5] + chr(10)).encode()!r})\n"
              "print('after', file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0 and done.stderr == "a warning of ours\nafter\n"


def test_trainer_subprocesses_get_the_users_tensorflow_logging(monkeypatch):
    monkeypatch.delenv(quiet.LEVEL, raising=False)
    monkeypatch.setattr(quiet, "_set_here", False)
    quiet.quiet_this_process()
    assert os.environ[quiet.LEVEL] == "2"
    assert quiet.LEVEL not in quiet.trainer_env(dict(os.environ))  # the job's log keeps everything
    monkeypatch.setenv(quiet.LEVEL, "0")
    monkeypatch.setattr(quiet, "_set_here", False)
    quiet.quiet_this_process()  # the user's own choice stands, here and in the trainer
    assert os.environ[quiet.LEVEL] == "0" and quiet.trainer_env(dict(os.environ))[quiet.LEVEL] == "0"


def fake_generator(folder, class_names=("t_shirt_top", "trouser")):
    folder.mkdir(parents=True)
    (folder / "generator.json").write_text(json.dumps({"z_dim": 4, "image_shape": [28, 28, 1], "conditional": True,
                                                       "class_names": list(class_names)}))
    (folder / "generator.keras").write_bytes(b"not loaded: the class is checked first")
    return folder


def run_without_tensorflow(args, tmp_path):
    """`launcher ARGS` in a fresh interpreter; its stderr, exit code and whether TensorFlow or Keras got imported."""
    script = ("import atexit, sys\n"
              "atexit.register(lambda: print('IMPORTED', 'tensorflow' in sys.modules or 'keras' in sys.modules))\n"
              f"from launcher.cli import main\nmain({list(args)!r})\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), GANKIT_HOME=str(tmp_path / "home")))
    return done, "IMPORTED False" in done.stdout


def test_an_unknown_class_is_refused_from_generator_json_alone(tmp_path):
    generator = fake_generator(tmp_path / "run" / "generator")
    done, untouched = run_without_tensorflow(["generate", str(generator), "--class", "dragon", "--out", "x.png"], tmp_path)
    assert done.returncode == 2 and untouched, done.stderr
    assert done.stderr.strip() == "error: unknown class 'dragon'; choose an index 0-1 or one of: t_shirt_top, trouser"
    done, untouched = run_without_tensorflow(["generate", str(tmp_path / "run"), "--class", "5", "--out", "x.png"], tmp_path)
    assert done.returncode == 2 and untouched and "out of range" in done.stderr
    assert not (tmp_path / "x.png").exists()


def test_a_repeat_pull_says_what_it_skipped_and_leaves_tensorflow_alone(tmp_path, monkeypatch):
    """A pulled folder whose generator last loaded as it is now: the second pull fetches and loads nothing."""
    from launcher import jobs, pull
    from trainer.errors import UsageError

    output = tmp_path / "bucket" / "runs" / "gan-j" / "output"
    fake_generator(output / "generator")
    (output / "metrics.jsonl").write_text("{}\n")
    dest = tmp_path / "gan-j"
    sm_root = jobs.jobs_dir() / "gan-j"  # where the local backend keeps its job's files
    record = {"job": "gan-j", "backend": "local", "output_uri": str(output),
              "pid": 2**22 + 1, "log": str(sm_root / "train.log"), "sm_root": str(sm_root)}  # a finished job
    loads, said = [], []

    def refuse(folder, what):
        loads.append(folder)
        raise UsageError("cannot load it")

    monkeypatch.setattr(pull, "check_generator", refuse)
    with pytest.raises(UsageError):
        pull.pull(record, dest, log=said.append)
    assert not (dest / pull.CHECKED).exists()  # a generator that did not load is checked again next time
    monkeypatch.setattr(pull, "check_generator", lambda folder, what: loads.append(said[-1]))
    pull.pull(record, dest, log=said.append)
    assert len(loads) == 2 and said[-2].startswith("skipped 3 files (")
    assert said[-1] == loads[1] == pull.LOADING  # said before the load, which takes TensorFlow's import: seconds of silence

    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))  # as run_without_tensorflow's launcher sees it
    jobs.save(record)
    done, untouched = run_without_tensorflow(["pull", "gan-j"], tmp_path)
    assert done.returncode == 0 and untouched, done.stderr
    assert "skipped 3 files (" in done.stdout and "already in gan-j, unchanged" in done.stdout
    assert "not loading it again" in done.stdout and "pulled gan-j to gan-j" in done.stdout
    assert pull.LOADING not in done.stdout

    (output / "generator" / "generator.keras").write_bytes(b"a new, longer file from a resumed run")
    pull.pull(record, dest, log=said.append)
    assert len(loads) == 3  # changed: loaded again



def test_a_full_disk_at_the_last_write_of_a_pull_is_one_line(tmp_path, monkeypatch):
    """Everything pulled and loaded, then .gankit-checked.json finds the disk full: it was a traceback."""
    import errno

    from launcher import jobs, pull
    from trainer.errors import GankitError

    output = tmp_path / "runs" / "gan-j" / "output"
    fake_generator(output / "generator")
    sm_root = jobs.jobs_dir() / "gan-j"  # where the local backend keeps its job's files
    record = {"job": "gan-j", "backend": "local", "output_uri": str(output),
              "pid": 2**22 + 1, "log": str(sm_root / "train.log"), "sm_root": str(sm_root)}  # a finished job
    monkeypatch.setattr(pull, "check_generator", lambda folder, what: None)

    def full(path, text, mode=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pull, "atomic_write_text", full)
    with pytest.raises(GankitError) as e:
        pull.pull(record, tmp_path / "gan-j", log=lambda line: None)
    assert str(e.value) == (f".gankit-checked.json could not be written in {tmp_path / 'gan-j'} (No space left on "
                            "device); free some space on that disk or choose another --dest, then run the same "
                            "command to resume")
    assert (tmp_path / "gan-j" / "generator" / "generator.json").is_file()  # what was pulled stays

@pytest.mark.slow  # imports TensorFlow
def test_starting_tensorflow_quietly_leaves_nothing_on_stderr(tmp_path):
    done = subprocess.run([sys.executable, "-c", "from launcher.quiet import start_tensorflow; start_tensorflow()"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0 and done.stderr == "", done.stderr
