"""Scale-out: strategy choice, TF_CONFIG from SageMaker's host list, and real multi-replica runs on this CPU.

Equality with one device: with the same global batch, the same data order and
the same noise rows (trainer/step_tf.py's replica_step slices the global batch's noise), N
replicas compute what one device computes, up to the order of float sums in
the gradient all-reduce. Adam moves every weight by about lr per step whatever
its gradient's size, so that reordering noise in a near-zero gradient can turn a
weight's step around: the drift grows with lr x steps. The tolerance is a mean
absolute weight difference of 5% of lr x steps (measured in float32: two workers
against one device 2.3-2.8%, MirroredStrategy 0.7%; a one-device run on half the
batch, the same steps, 26%), and per-epoch losses within 3e-4 of their scale in
the first epoch, 1e-2 after it (assert_same_run says why).
"""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.data_helpers import make_idx_dataset
from trainer.distribute import export_tf_config, sagemaker_hosts, tf_config
from trainer.errors import UsageError

ROOT = Path(__file__).parents[1]
HOSTS = ["algo-1", "algo-2"]


def test_tf_config_makes_every_host_a_worker_and_the_first_the_chief():
    assert tf_config(HOSTS, "algo-2") == {"cluster": {"worker": ["algo-1:7777", "algo-2:7777"]},
                                         "task": {"type": "worker", "index": 1}}
    local = tf_config(HOSTS, "algo-1", addresses={"algo-1": "127.0.0.1:5000", "algo-2": "127.0.0.1:5001"})
    assert local["cluster"]["worker"] == ["127.0.0.1:5000", "127.0.0.1:5001"] and local["task"]["index"] == 0
    with pytest.raises(UsageError, match="algo-3"):
        tf_config(HOSTS, "algo-3")


def test_hosts_come_from_resourceconfig_then_sm_hosts(tmp_path, monkeypatch):
    monkeypatch.delenv("SM_HOSTS", raising=False)
    monkeypatch.setenv("TF_CONFIG", "")  # empty counts as unset; monkeypatch removes what the code sets
    assert sagemaker_hosts(tmp_path) is None
    monkeypatch.setenv("SM_HOSTS", json.dumps(["algo-1"]))
    monkeypatch.setenv("SM_CURRENT_HOST", "algo-1")
    assert sagemaker_hosts(tmp_path) == (["algo-1"], "algo-1")
    assert export_tf_config(tmp_path) == 0 and not os.environ["TF_CONFIG"]  # one host: nothing to distribute
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "resourceconfig.json").write_text(json.dumps({"hosts": HOSTS, "current_host": "algo-2"}))
    assert sagemaker_hosts(tmp_path) == (HOSTS, "algo-2")
    assert export_tf_config(tmp_path) == 2
    assert json.loads(os.environ["TF_CONFIG"])["task"] == {"type": "worker", "index": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_idx_dataset(tmp_path_factory.mktemp("mnist"), n_train=64, n_test=16)


def env_with(**extra):
    return dict(os.environ, PYTHONPATH=str(ROOT), **extra)


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_workers(base: Path, hyperparameters: dict) -> list[str]:
    """Two SageMaker-style hosts on loopback, each with its own fake /opt/ml; returns their logs."""
    addresses = json.dumps({h: f"127.0.0.1:{p}" for h, p in zip(HOSTS, free_ports(2))})
    procs, log_files = [], []
    for host in HOSTS:
        config = base / host / "input" / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
        (config / "resourceconfig.json").write_text(json.dumps({"hosts": HOSTS, "current_host": host}))
        env = env_with(GANKIT_SM_ROOT=str(base / host), GANKIT_WORKER_ADDRESSES=addresses)
        log_files.append(base / f"{host}.log")
        with open(log_files[-1], "w") as log:  # files, not pipes: a full pipe would stall the lockstep
            procs.append(subprocess.Popen([sys.executable, "-m", "trainer.contract"], env=env, cwd=ROOT,
                                          stdout=log, stderr=subprocess.STDOUT))
    try:
        for p in procs:
            p.wait(timeout=300)
    finally:
        for p in procs:  # one worker failing leaves the other waiting for it forever
            p.kill()
    logs = [f.read_text() for f in log_files]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return logs


def fingerprint(log: str) -> str:
    return re.search(r"weights ([0-9a-f]{16})", log).group(1)


def weights(generator_dir):
    import keras

    return keras.saving.load_model(Path(generator_dir) / "generator.keras").get_weights()


def assert_same_run(a_dir, b_dir):
    a, b = weights(a_dir / "generator"), weights(b_dir / "generator")
    diff = np.concatenate([np.abs(x - y).ravel() for x, y in zip(a, b)])
    rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (a_dir, b_dir)]
    assert [r["step"] for r in rows[0]] == [r["step"] for r in rows[1]]
    lr = json.loads((b_dir / "run.json").read_text())["config"]["lr"]  # the generator's
    assert diff.mean() < 0.05 * lr * rows[1][-1]["step"], (diff.mean(), lr)
    for epoch, (ra, rb) in enumerate(zip(*rows)):
        # Float32 gradient sums in another order let the runs drift apart, and a GAN's updates amplify that
        # drift step by step: the first epoch agrees to 3e-4 of the losses' scale (the two-worker run measured
        # 5e-5 with sn-hinge), later ones to 1e-2 (its second epoch, four steps on, measured 3e-3). A wrong
        # update breaks the first epoch already. Relative to each loss alone would not do: the hinge G loss
        # (-mean of D's logits on fakes) can sit near zero.
        scale = (3e-4 if epoch == 0 else 1e-2) * max(1.0, abs(ra["d_loss"]), abs(ra["g_loss"]))
        assert ra["d_loss"] == pytest.approx(rb["d_loss"], abs=scale) and ra["g_loss"] == pytest.approx(rb["g_loss"], abs=scale)


@pytest.mark.slow
def test_two_workers_train_in_lockstep_only_the_chief_writes_and_both_resume(tmp_path, data):
    shared_checkpoints = tmp_path / "checkpoints"  # what SageMaker restores on every host from S3
    # float32 (not bfloat16, which --precision auto picks on CPUs that have it): the comparison below
    # is to float32's reordering noise.
    hp = {"dataset": "mnist", "data_dir": str(data), "epochs": "2", "batch_size": "8",
          "checkpoint_dir": str(shared_checkpoints), "precision": "float32"}
    logs = run_workers(tmp_path / "cluster", hp)
    assert all("2 replicas" in log for log in logs)
    assert fingerprint(logs[0]) == fingerprint(logs[1])  # the same weights on both workers

    chief, other = tmp_path / "cluster" / "algo-1", tmp_path / "cluster" / "algo-2"
    assert (chief / "model" / "generator.keras").exists() and (chief / "output" / "data" / "metrics.jsonl").exists()
    assert not any(p.is_file() for p in other.joinpath("output").rglob("*")) and not (other / "model").exists()
    assert not (chief / "output" / "failure").exists()  # the join's foretold reason is taken back once all joined
    scratch = re.search(r"generator in (\S+)/generator", logs[1]).group(1)
    assert "gankit-worker1-" in scratch and not Path(scratch).exists()  # the non-chief's temporary saves are gone
    assert sorted(p.name for p in shared_checkpoints.iterdir()) == ["ckpt-000000004", "ckpt-000000008"]

    # One process with the same global batch (2 x 8) computes the same run.
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "trainer", "train", "--dataset", "mnist", "--data-dir", str(data),
                    "--output-dir", str(single), "--epochs", "2", "--batch-size", "16", "--precision", "float32"],
                   env=env_with(), cwd=ROOT, check=True, capture_output=True)
    assert_same_run(chief / "output" / "data", single)

    # A restart (spot interruption) resumes every worker from the chief's checkpoint.
    logs = run_workers(tmp_path / "cluster", dict(hp, epochs="3"))
    assert all("at step 8" in log and "done: 12 steps" in log for log in logs)
    assert fingerprint(logs[0]) == fingerprint(logs[1])


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_trains_and_exports(tmp_path, data):
    out, single = tmp_path / "mirrored", tmp_path / "single"
    args = [sys.executable, "-m", "trainer", "train", "--dataset", "mnist", "--data-dir", str(data), "--epochs", "1",
            "--precision", "float32"]  # compared to float32's reordering noise below
    done = subprocess.run([*args, "--output-dir", str(out), "--batch-size", "8", "--strategy", "mirrored"],
                          env=env_with(GANKIT_CPU_DEVICES="2"), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 replicas (MirroredStrategy" in done.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["replicas"] == 2 and run["global_batch_size"] == 16 and run["steps_per_epoch"] == 4
    import trainer

    assert trainer.load_generator(out / "generator").generate("3", count=2, seed=0).shape == (2, 28, 28, 1)
    subprocess.run([*args, "--output-dir", str(single), "--batch-size", "16"], env=env_with(), cwd=ROOT, check=True,
                   capture_output=True)
    assert_same_run(out, single)


SIGNAL_CHECK = """
import json, os, signal, sys, time
from pathlib import Path
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": ["127.0.0.1:%d"]}, "task": {"type": "worker", "index": 0}})
got = []
signal.signal(signal.SIGTERM, lambda *a: got.append(1))
from trainer.distribute import choose_strategy
choose_strategy("multiworker", Path("/nonexistent"))
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.5)
print("handled" if got else "swallowed")
"""


@pytest.mark.slow
def test_multiworker_strategy_leaves_our_sigterm_handler_in_place():
    # MultiWorkerMirroredStrategy's coordination service installed its own SIGTERM handler over
    # trainer/stopping.py's: a stopped multi-host job went on training and wrote no checkpoint.
    done = subprocess.run([sys.executable, "-c", SIGNAL_CHECK % free_ports(1)[0]], env=env_with(), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1:] == ["handled"], done.stderr[-2000:]


@pytest.mark.slow
def test_sigterm_to_one_worker_stops_every_worker_at_the_same_step(tmp_path, data):
    """A stop reaches hosts at different moments (each polls SageMaker on its own); the workers agree on it, so
    all stop after the same step, the chief writes that step's checkpoint and none waits forever in a collective."""
    import signal
    import time

    base = tmp_path / "cluster"
    hp = {"dataset": "mnist", "data_dir": str(data), "epochs": "20", "batch_size": "8", "precision": "float32",
          "checkpoint_dir": str(tmp_path / "checkpoints")}
    addresses = json.dumps({h: f"127.0.0.1:{p}" for h, p in zip(HOSTS, free_ports(2))})
    procs, log_files = [], []
    for host in HOSTS:
        config = base / host / "input" / "config"
        config.mkdir(parents=True)
        (config / "hyperparameters.json").write_text(json.dumps(hp))
        (config / "resourceconfig.json").write_text(json.dumps({"hosts": HOSTS, "current_host": host}))
        log_files.append(base / f"{host}.log")
        with open(log_files[-1], "w") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "trainer.contract"], cwd=ROOT, stdout=log,
                                          stderr=subprocess.STDOUT,
                                          env=env_with(GANKIT_SM_ROOT=str(base / host), GANKIT_WORKER_ADDRESSES=addresses,
                                                       PYTHONUNBUFFERED="1")))
    try:
        deadline = time.monotonic() + 240
        while not re.search(r"^train +\d+/", log_files[1].read_text(), re.M) and time.monotonic() < deadline:  # past the first step
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)  # the other worker only
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            p.kill()
    logs = [f.read_text() for f in log_files]
    steps = [re.search(r"^stopped by SIGTERM at step (\d+)", log, re.M) for log in logs]
    assert all(steps), [log[-2000:] for log in logs]
    assert steps[0].group(1) == steps[1].group(1) and [p.returncode for p in procs] == [143, 143]
    step = int(steps[0].group(1))
    assert step < 80 and (tmp_path / "checkpoints" / f"ckpt-{step:09d}" / "MANIFEST.json").exists()


@pytest.mark.slow
def test_a_worker_whose_peer_never_starts_exits_after_the_join_limit(tmp_path, data):
    """A worker that died at start left the other waiting in MultiWorkerMirroredStrategy forever (SIGTERM ignored,
    the GIL held): it now exits after GANKIT_JOIN_SECONDS, its last line saying why."""
    import time

    base = tmp_path / "cluster"
    addresses = json.dumps({h: f"127.0.0.1:{p}" for h, p in zip(HOSTS, free_ports(2))})
    config = base / "algo-1" / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({"dataset": "mnist", "data_dir": str(data), "epochs": "1",
                                                               "batch_size": "8", "precision": "float32"}))
    (config / "resourceconfig.json").write_text(json.dumps({"hosts": HOSTS, "current_host": "algo-1"}))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "trainer.contract"], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env=env_with(GANKIT_SM_ROOT=str(base / "algo-1"), GANKIT_WORKER_ADDRESSES=addresses,
                                                    GANKIT_JOIN_SECONDS="5"))
    assert done.returncode == 1 and time.monotonic() - started < 200, done.stderr[-2000:]
    assert "if one has not within 5 s (it failed to start: see its log), this worker exits" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    # SageMaker's FailureReason: the exit wrote none, so a job whose peer never came failed without a reason.
    failure = (base / "algo-1" / "output" / "failure").read_text()
    assert failure.count("\n") == 1 and "did not all join within 5 s" in failure, failure
