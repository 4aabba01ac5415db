"""The EC2 job's runner, run here for real against the moto S3 server with the trainer."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from launcher.remote import train_job
from tests.data_helpers import make_idx_dataset
from trainer import layout, s3
from trainer.stage import stage_dataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bucket(aws_env):
    name = f"gankit-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture
def staged(bucket, tmp_path):
    data = layout.dataset_prefix(bucket, "mnist")
    stage_dataset("mnist", data, data_dir=make_idx_dataset(tmp_path / "mnist", n_train=64, n_test=32), log=lambda m: None)
    return data


def write_job(root, name, data_uri, max_run=600, **hyperparameters):
    job = {"job": name, "root": root, "data_uri": data_uri, "max_run": max_run, "region": "us-east-1",
           "checkpoint_uri": layout.checkpoints_prefix(root, name), "output_uri": layout.output_prefix(root, name),
           "hyperparameters": {"dataset": "mnist", "epochs": "1", "batch_size": "16", "max_steps": "4",
                               "preset": "seed", **hyperparameters}}
    uri = train_job.job_uri(root, name)
    s3.write_bytes(uri, json.dumps(job).encode())
    return uri


def run_runner(uri, tmp_path, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "launcher.remote.train_job", "--job-uri", uri,
                           "--work-dir", str(tmp_path / "work")], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=tmp_path)


def status_of(root, name):
    return json.loads(s3.read_bytes(train_job.status_uri(root, name)))


def test_runner_trains_and_leaves_outputs_and_log_under_the_run_prefix(bucket, staged, tmp_path):
    uri = write_job(bucket, "ec2-j1", staged)
    done = run_runner(uri, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = s3.list_objects(layout.output_prefix(bucket, "ec2-j1"))
    assert {"metrics.jsonl", "generator/generator.json", "generator/generator.keras"} <= set(outputs)
    assert any(k.endswith("MANIFEST.json") for k in s3.list_objects(layout.checkpoints_prefix(bucket, "ec2-j1")))
    metrics = [json.loads(line) for line in s3.read_bytes(f"{layout.output_prefix(bucket, 'ec2-j1')}/metrics.jsonl")
               .decode().splitlines()]
    assert metrics[-1]["step"] == 4
    log = s3.read_bytes(train_job.log_uri(bucket, "ec2-j1")).decode()
    assert "starting the trainer" in log and "job ec2-j1 completed (exit code 0)" in log
    status = status_of(bucket, "ec2-j1")
    assert status["status"] == "Completed" and status["failure_reason"] is None and status["ended"] >= status["started"]


def test_runner_reports_a_failed_trainer(bucket, staged, tmp_path):
    uri = write_job(bucket, "ec2-bad", staged, epochs="zero")
    done = run_runner(uri, tmp_path)
    assert done.returncode == 1
    status = status_of(bucket, "ec2-bad")
    assert status["status"] == "Failed" and "epochs" in status["failure_reason"]
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in done.stderr
    assert "failed (exit code" in s3.read_bytes(train_job.log_uri(bucket, "ec2-bad")).decode()


def test_runner_stops_the_trainer_at_max_run(bucket, staged, tmp_path):
    uri = write_job(bucket, "ec2-slow", staged, max_run=2, epochs="1000", max_steps="100000")
    done = run_runner(uri, tmp_path)
    assert done.returncode == 1
    status = status_of(bucket, "ec2-slow")
    assert status["status"] == "Stopped" and "max run reached" in status["failure_reason"]
    assert "--resume ec2-slow" in status["failure_reason"]
    assert "max run of 2 s reached" in s3.read_bytes(train_job.log_uri(bucket, "ec2-slow")).decode()


def test_runner_refuses_a_missing_job(bucket, tmp_path):
    done = run_runner(f"{bucket}/runs/nope/job.json", tmp_path)
    assert done.returncode == 2 and "does not exist" in done.stderr
