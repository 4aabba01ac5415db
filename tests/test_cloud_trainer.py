"""The trainer in the cloud: S3 in and out over real HTTP (moto), the /opt/ml contract, SIGTERM, SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import numpy as np
import pytest

import trainer
from tests.data_helpers import make_idx_dataset
from trainer import s3
from trainer.checkpoints import checkpoint_folders, problem

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[1]


def run(*args, timeout=300, env=None, check=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def trainer_cmd(*args):
    return [sys.executable, "-m", "trainer", *args]


@pytest.fixture(scope="module")
def synthetic_mnist(tmp_path_factory):
    return make_idx_dataset(tmp_path_factory.mktemp("mnist"), n_train=64, n_test=32)


@pytest.fixture
def bucket(aws_env):
    name = f"gankit-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


def test_stage_then_train_from_s3_to_s3(bucket, synthetic_mnist, tmp_path):
    data = f"{bucket}/datasets/mnist"
    first = run(*trainer_cmd("stage", "--dataset", "mnist", "--data-dir", str(synthetic_mnist), "--to", data))
    assert "staged mnist" in first.stdout
    again = run(*trainer_cmd("stage", "--dataset", "mnist", "--data-dir", str(synthetic_mnist), "--to", data))
    assert "already staged" in again.stdout
    manifest = json.loads(s3.read_bytes(f"{data}/MANIFEST.json"))
    assert set(manifest["files"]) == {p.name for p in Path(synthetic_mnist).iterdir()}

    out, ckpt = f"{bucket}/runs/j1/output", f"{bucket}/runs/j1/checkpoints"
    run(*trainer_cmd("train", "--dataset", "mnist", "--data-dir", data, "--output-dir", out, "--checkpoint-dir", ckpt,
                     "--epochs", "2", "--batch-size", "16"))
    keys = s3.list_objects(out)
    for key in ("metrics.jsonl", "losses.png", "run.json", "samples/epoch-0002.png", "samples/progress.gif",
                "generator/generator.json", "generator/generator.keras"):
        assert key in keys, key
    assert "losses.jsonl" in keys and any(k.startswith("tensorboard/events.out.tfevents.") for k in keys)
    assert any(k.endswith("/MANIFEST.json") for k in s3.list_objects(ckpt))
    local = s3.download_prefix(f"{out}/generator", tmp_path / "generator")
    images = trainer.load_generator(local).generate("3", count=4, seed=0)
    assert images.shape == (4, 28, 28, 1) and images.dtype == np.uint8


def test_killed_repeatedly_then_finishes_exactly_from_s3_checkpoints(bucket, synthetic_mnist, tmp_path):
    out, ckpt = f"{bucket}/runs/j2/output", f"{bucket}/runs/j2/checkpoints"
    cmd = trainer_cmd("train", "--dataset", "mnist", "--data-dir", str(synthetic_mnist), "--output-dir", out,
                      "--checkpoint-dir", ckpt, "--epochs", "5", "--batch-size", "16", "--checkpoint-minutes", "0.0001")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cache = Path(os.environ["GANKIT_CACHE"])
    for kill_at in (3, 9, 14):  # steps, each a different point in the run
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            steps = [int(n[5:14]) for n in s3.list_objects(ckpt) if n.endswith("MANIFEST.json")]
            if steps and max(steps) >= kill_at:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # A new machine each time: only S3 survives.
        for stand_in in (cache / "staging").glob("*"):
            subprocess.run(["rm", "-rf", str(stand_in)], check=True)
    done = run(*cmd)
    assert "resuming from" in done.stdout
    rows = [json.loads(line) for line in s3.read_bytes(f"{out}/metrics.jsonl").decode().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5] and rows[-1]["step"] == 20
    meta = json.loads(s3.read_bytes(f"{out}/generator/generator.json"))
    assert meta["steps"] == 20


def fake_sm_root(tmp_path, hyperparameters, data_dir):
    root = tmp_path / "opt_ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    training = root / "input" / "data" / "training"
    training.mkdir(parents=True)
    for f in Path(data_dir).iterdir():
        (training / f.name).write_bytes(f.read_bytes())
    return root


def test_train_entrypoint_runs_the_sagemaker_contract(bucket, tmp_path, synthetic_mnist):
    # SageMaker's SDK JSON-encodes string values; the API passes them plain. Both arrive.
    out = f"{bucket}/runs/sm/output"
    hp = {"dataset": '"mnist"', "epochs": "2", "batch_size": "16", "max_steps": "6", "preset": "seed",
          "sagemaker_program": "sagemaker_entry.py", "model_dir": "s3://somewhere/model", "output_dir": out}
    root = fake_sm_root(tmp_path, hp, synthetic_mnist)
    done = run("sh", "docker/train", env={"GANKIT_SM_ROOT": str(root)})
    assert "starting the trainer" in done.stdout
    gen = trainer.load_generator(root / "model")
    assert gen.meta["preset"] == "book" and gen.meta["steps"] == 6  # "seed" is an alias of book
    rows = [json.loads(line) for line in s3.read_bytes(f"{out}/metrics.jsonl").decode().splitlines()]
    assert [r["step"] for r in rows] == [4, 6]
    assert checkpoint_folders(root / "checkpoints")
    assert not (root / "output" / "failure").exists()
    # The shared layout got everything as it went, and it is the one copy: nothing in output/data for
    # SageMaker to store a second time. Only the generator is in model/ too (SageMaker's model artifact).
    assert {"metrics.jsonl", "generator/generator.keras", "samples/epoch-0001.png"} <= set(s3.list_objects(out))
    assert not (root / "output" / "data").exists()
    assert "--output-dir " + out in done.stdout and "--preset seed" in done.stdout  # what the trainer was given


def test_bad_hyperparameter_writes_the_failure_reason(tmp_path, synthetic_mnist):
    root = fake_sm_root(tmp_path, {"dataset": "mnist", "epochs": "zero"}, synthetic_mnist)
    done = run("sh", "docker/train", env={"GANKIT_SM_ROOT": str(root)}, check=False)
    assert done.returncode == 2
    failure = (root / "output" / "failure").read_text()
    assert "--epochs" in failure and "zero" in failure
    assert "Traceback" not in done.stderr


def test_a_failure_on_a_full_disk_keeps_its_exit_code_and_one_line(tmp_path, synthetic_mnist):
    # No room for output/failure (RLIMIT_FSIZE stands in for a full disk): the contract left it empty, then
    # tracebacked and exited 1, so a stopped local job (143) read as Failed with no reason.
    import resource

    root = fake_sm_root(tmp_path, {"dataset": "mnist", "epochs": "zero"}, synthetic_mnist)
    done = subprocess.run([sys.executable, "-m", "trainer.contract"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), GANKIT_SM_ROOT=str(root)), cwd=ROOT,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0)))
    assert done.returncode == 2 and "Traceback" not in done.stderr and "--epochs" in done.stderr
    assert not (root / "output" / "failure").exists()  # whole or not at all, never empty


# Training stands in (the copy into model/ is the subject): it ends having exported the generator that the test
# put in the run's output folder, and the disk is full from then on (RLIMIT_FSIZE stands in).
TRAINED_THEN_FULL = r'''
import resource, sys, trainer.train
def trained(cfg, stop_requested, resume_hint):
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
    return {"stopped": False, "chief": True, "steps": 4, "output_dir": cfg.output_dir}
trainer.train.train = trained
from trainer import contract
contract.main()
'''


def test_a_copy_into_model_cut_short_leaves_no_half_generator_there(tmp_path, synthetic_mnist):
    # copytree wrote generator.keras's first 1000 bytes beside a whole generator.json, which `launcher status`
    # of a local job whose wrapper died took for a completed export; and its shutil.Error was an internal error.
    root = fake_sm_root(tmp_path, {"dataset": "mnist", "output_dir": str(tmp_path / "out")}, synthetic_mnist)
    exported = tmp_path / "out" / "generator"
    exported.mkdir(parents=True)
    (exported / "generator.json").write_text('{"z_dim": 8}')
    (exported / "generator.keras").write_bytes(os.urandom(5000))
    done = run(sys.executable, "-c", TRAINED_THEN_FULL, env={"GANKIT_SM_ROOT": str(root)}, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "the generator could not be copied into" in (root / "output" / "failure").read_text()
    left = {p.name: p.read_bytes() for p in (root / "model").iterdir() if not p.name.startswith(".")}
    assert "generator.json" not in left  # it vouches for a whole copy only
    assert all(data == (exported / name).read_bytes() for name, data in left.items())  # each file whole or absent


def test_sigterm_checkpoints_at_once_and_exits(tmp_path, synthetic_mnist):
    out = tmp_path / "run"
    cmd = trainer_cmd("train", "--dataset", "mnist", "--data-dir", str(synthetic_mnist), "--output-dir", str(out),
                      "--epochs", "200", "--batch-size", "16", "--checkpoint-minutes", "60")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "samples" / "epoch-0001.png").exists():
        time.sleep(0.05)
    time.sleep(1.0)  # mid-epoch, away from the epoch-end checkpoint
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 143, stderr
    stopped_at = int(stderr.split("stopped by SIGTERM at step ")[1].split(";")[0])
    newest_step, newest = checkpoint_folders(out / "checkpoints")[0]
    assert newest_step == stopped_at and problem(newest) is None
    assert stopped_at > 4  # newer than the end of epoch 1
