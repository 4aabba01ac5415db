"""trainer/sagemaker_stop.py: a SageMaker stop that script mode never passes on still checkpoints.

SageMaker (moto over real HTTP) holds the job; moto has no StopTrainingJob, so the test sets the
job's status to Stopping in moto's backend, as SageMaker does when `launcher stop` asks it to."""

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest

from tests.data_helpers import make_idx_dataset
from trainer import sagemaker_stop
from trainer.checkpoints import checkpoint_folders, problem

ROOT = Path(__file__).parents[1]
ACCOUNT, REGION = "123456789012", "us-east-1"


def training_job(status="InProgress") -> str:
    name = f"gan-mnist-cgan-{uuid.uuid4().hex[:8]}"
    boto3.client("sagemaker", region_name=REGION).create_training_job(
        TrainingJobName=name, RoleArn=f"arn:aws:iam::{ACCOUNT}:role/gankit-sagemaker",
        AlgorithmSpecification={"TrainingImage": "image", "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": "s3://b/o"}, StoppingCondition={"MaxRuntimeInSeconds": 3600},
        ResourceConfig={"InstanceType": "ml.p3.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30})
    set_status(name, status)
    return name


def set_status(name, status):
    from moto.sagemaker.models import sagemaker_backends

    sagemaker_backends[ACCOUNT][REGION].training_jobs[name].training_job_status = status


def test_a_job_sagemaker_is_stopping_gets_its_stop_once(aws_env):
    job, stopped, said, done = training_job(), threading.Event(), [], threading.Event()
    watcher = threading.Thread(target=sagemaker_stop.watch, args=(job, REGION, done),
                               kwargs={"every": 0.05, "on_stop": stopped.set, "log": said.append})
    watcher.start()
    try:
        assert not stopped.wait(0.5)  # InProgress: nothing happens
        set_status(job, "Stopping")
        assert stopped.wait(10)
        watcher.join(10)
        assert not watcher.is_alive() and said == [f"SageMaker is stopping {job}: writing a checkpoint"]
    finally:
        done.set()


def test_a_watch_sagemaker_refuses_says_so_once_and_training_goes_on(aws_env):
    stopped, said = [], []
    sagemaker_stop.watch("gan-no-such-job", REGION, threading.Event(), every=0.01, on_stop=lambda: stopped.append(1),
                         log=said.append)
    assert stopped == [] and len(said) == 1
    assert said[0].startswith("cannot ask SageMaker whether gan-no-such-job is stopping (AWS DescribeTrainingJob")
    assert said[0].endswith("a stop keeps only the last periodic checkpoint")


def test_off_sagemaker_nothing_watches():
    before = threading.active_count()
    with sagemaker_stop.stop_watcher(environ={}):
        assert threading.active_count() == before and "sagemaker-stop" not in {t.name for t in threading.enumerate()}


@pytest.mark.slow
def test_the_contract_checkpoints_and_stops_when_sagemaker_stops_the_job(aws_env, tmp_path):
    """The whole path: `train` under the contract, SageMaker's SIGTERM never delivered (as in script mode),
    the job set to Stopping: the trainer writes a checkpoint and exits 143 within the poll and a step."""
    job = training_job()
    data = make_idx_dataset(tmp_path / "mnist", n_train=64, n_test=32)
    root = tmp_path / "opt_ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(
        {"dataset": "mnist", "epochs": "5000", "batch_size": "16", "preset": "book", "checkpoint_minutes": "60"}))
    (root / "input" / "data").mkdir(parents=True)
    (root / "input" / "data" / "training").symlink_to(data, target_is_directory=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), GANKIT_SM_ROOT=str(root), TRAINING_JOB_NAME=job)
    proc = subprocess.Popen([sys.executable, "-m", "trainer.contract"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (root / "output" / "data" / "samples" / "epoch-0001.png").exists():
            time.sleep(0.1)
        set_status(job, "Stopping")
        _, err = proc.communicate(timeout=sagemaker_stop.POLL_SECONDS + 60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert f"SageMaker is stopping {job}: writing a checkpoint" in err and "stopped by SIGTERM at step" in err
    stopped_at = int(err.split("stopped by SIGTERM at step ")[1].split(";")[0])
    newest_step, newest = checkpoint_folders(root / "checkpoints")[0]
    assert newest_step == stopped_at > 4 and problem(newest) is None  # past epoch 1's, and whole
