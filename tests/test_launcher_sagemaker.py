"""The SageMaker backend against moto: staging, the CreateTrainingJob request, describe, logs, stop, pull, generate."""

import base64
import dataclasses
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.stub import Stubber

from launcher import jobs
from launcher.backends import sagemaker
from launcher.spec import build_spec
from tests.aws_helpers import mocked_bucket
from tests.data_helpers import make_idx_dataset
from trainer import layout, s3
from trainer.errors import GankitError, UsageError

ROOT = Path(__file__).parents[1]
BUCKET, ROLE, REGION = "gankit-sm-test", "arn:aws:iam::123456789012:role/gankit-sagemaker", "us-east-1"


@pytest.fixture
def aws(monkeypatch):
    with mocked_bucket(monkeypatch, BUCKET, region=REGION):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_idx_dataset(tmp_path_factory.mktemp("mnist"), n_train=64, n_test=16)


def spec_for(data, hp=(), **options):
    return build_spec(dataset="mnist", epochs=2, hp=[f"data_dir={data}", *hp], backend="sagemaker", bucket=BUCKET,
                      role=ROLE, region=REGION, **options)


def test_your_own_copy_and_the_published_files_never_stand_in_for_each_other(aws, data, tmp_path):
    """--hp data_dir was staged to datasets/mnist/ only when that was empty: the first copy there won for good."""
    from trainer.dataset_staging import stage_dataset

    published = make_idx_dataset(tmp_path / "published", n_train=32, n_test=16, seed=1)
    canonical = layout.dataset_prefix(f"s3://{BUCKET}", "mnist")
    stage_dataset("mnist", canonical, data_dir=published, log=lambda m: None)
    before = s3.read_bytes(f"{canonical}/MANIFEST.json")

    own = sagemaker.submit(spec_for(data))["request"]["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    assert own != canonical + "/"
    assert s3.read_bytes(own + "train-images-idx3-ubyte.gz") == (data / "train-images-idx3-ubyte.gz").read_bytes()
    assert s3.read_bytes(f"{canonical}/MANIFEST.json") == before  # the published copy is untouched
    again = spec_for(data, job="gan-mnist-again")
    assert sagemaker.submit(again)["request"]["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == own


DEBIAN_ZALANDO = Path("/usr/share/datasets/fashion-mnist")


def _wrong_files(tmp_path):
    return json.dumps({"dataset": "zalando", "files": {"train-images-idx3-ubyte.gz": {"size": 1, "sha256": "0" * 64}}})


def _another_datasets(tmp_path):
    from trainer.dataset_staging import stage_dataset

    stage_dataset("mnist", layout.dataset_prefix(f"s3://{BUCKET}", "zalando"), log=lambda m: None,
                  data_dir=make_idx_dataset(tmp_path / "mnist", n_train=32, n_test=16))  # the same four file names


@pytest.mark.skipif(not DEBIAN_ZALANDO.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
@pytest.mark.parametrize("manifest", [lambda tmp_path: "{broken", _wrong_files, _another_datasets],
                         ids=["not JSON", "other files", "another dataset's"])
def test_a_prefix_whose_manifest_is_broken_or_not_the_datasets_is_staged_again(manifest, aws, tmp_path):
    """A cloud submit skipped staging wherever datasets/<name>/MANIFEST.json existed, while `trainer stage` and the
    local backend staged such a prefix again: jobs trained on what a broken or foreign manifest vouched for."""
    from trainer.dataset_staging import build_manifest, dataset_files

    canonical = layout.dataset_prefix(f"s3://{BUCKET}", "zalando")
    written = manifest(tmp_path)
    if written is not None:
        s3.write_bytes(f"{canonical}/MANIFEST.json", written.encode())
    spec = build_spec(dataset="zalando", epochs=1, backend="sagemaker", bucket=BUCKET, role=ROLE, region=REGION)
    sagemaker.submit(spec)
    staged = json.loads(s3.read_bytes(f"{canonical}/MANIFEST.json"))
    assert staged == build_manifest("zalando", dataset_files("zalando"))
    assert s3.list_objects(canonical)["train-images-idx3-ubyte.gz"] == staged["files"]["train-images-idx3-ubyte.gz"]["size"]


def test_submit_stages_the_data_and_sends_the_whole_request(aws, data):
    spec = spec_for(data, max_run="90m")
    record = sagemaker.submit(spec)
    request = record["request"]
    run = f"s3://{BUCKET}/runs/{spec.job}"
    assert request["TrainingJobName"] == spec.job and request["RoleArn"] == ROLE
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith("/tensorflow-training:2.21-gpu-py312")
    hp = request["HyperParameters"]
    assert all(isinstance(v, str) for v in hp.values())
    assert hp["dataset"] == "mnist" and hp["epochs"] == "2" and hp["output_dir"] == f"{run}/output"
    assert hp["sagemaker_program"] == "sagemaker_entry.py" and hp["sagemaker_submit_directory"].startswith(run)
    assert "data_dir" not in hp  # the data arrives as the training channel
    channel = request["InputDataConfig"][0]
    assert channel["ChannelName"] == "training"
    data_uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
    assert data_uri.startswith(f"s3://{BUCKET}/datasets/mnist-") and data_uri.endswith("/")  # named by content
    assert request["CheckpointConfig"] == {"S3Uri": f"{run}/checkpoints", "LocalPath": "/opt/ml/checkpoints"}
    assert request["OutputDataConfig"]["CompressionType"] == "NONE"
    assert request["ResourceConfig"] == {"InstanceType": "ml.p3.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert request["EnableManagedSpotTraining"] is True
    assert request["EnableInterContainerTrafficEncryption"] is True  # several hosts' gradients, encrypted
    assert request["StoppingCondition"]["MaxRuntimeInSeconds"] == 5400
    assert request["StoppingCondition"]["MaxWaitTimeInSeconds"] >= 5400
    assert request["Environment"]["GANKIT_JOB"] == spec.job  # moto drops Environment: checked on our request
    assert request["Environment"]["AWS_DEFAULT_REGION"] == spec.region  # where the trainer's stop watcher asks
    assert {"Key": "project", "Value": "gankit"} in request["Tags"]
    assert {"Key": "dataset", "Value": data_uri.rstrip("/").rsplit("/", 1)[-1]} in request["Tags"]

    # What AWS saw.
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName=spec.job)
    assert job["HyperParameters"] == hp and job["EnableManagedSpotTraining"] is True
    assert job["CheckpointConfig"]["S3Uri"] == f"{run}/checkpoints"
    staged = s3.list_objects(data_uri)
    assert "MANIFEST.json" in staged and "train-images-idx3-ubyte.gz" in staged
    with tarfile.open(fileobj=io.BytesIO(s3.read_bytes(hp["sagemaker_submit_directory"]))) as tar:
        names = tar.getnames()
    assert "sagemaker_entry.py" in names and "trainer/contract.py" in names and "requirements.txt" in names
    assert jobs.load(spec.job)["arn"] == job["TrainingJobArn"]


def test_a_spot_jobs_max_wait_is_twice_its_run_up_to_28_days(aws, data):
    """MaxWaitTimeInSeconds was twice --max-run whatever its length: 56 days for --max-run 28d, past the 30 days
    SageMaker documents as the most a training job lasts in all."""
    limit = 28 * 86400
    for max_run, wait in (("2h", 4 * 3600), ("14d", limit), ("20d", limit), ("28d", limit)):
        stopping = sagemaker.submit(spec_for(data, max_run=max_run), dry_run=True)["StoppingCondition"]
        assert stopping["MaxWaitTimeInSeconds"] == wait >= stopping["MaxRuntimeInSeconds"], (max_run, stopping)


def test_framework_jax_installs_jax_at_job_start_and_refuses_several_hosts(aws, data):
    spec = spec_for(data, hp=["framework=jax"])
    record = sagemaker.submit(spec)
    hp = record["request"]["HyperParameters"]
    assert hp["framework"] == "jax"
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName=spec.job)
    assert job["HyperParameters"]["framework"] == "jax"
    with tarfile.open(fileobj=io.BytesIO(s3.read_bytes(hp["sagemaker_submit_directory"]))) as tar:
        requirements = tar.extractfile("requirements.txt").read().decode().split()
    # The TensorFlow image's training toolkit pip-installs requirements.txt before the entry point runs.
    assert "jax[cuda12]>=0.4.30" in requirements and "click>=8.1" in requirements
    tf_spec = spec_for(data)
    assert "jax" not in sagemaker.requirements(tf_spec.framework)
    with pytest.raises(UsageError, match="framework=jax: JAX trains on one host"):
        spec_for(data, hp=["framework=jax"], instance_count=2)
    # One host cannot be a cluster: the trainer refused it once the instance was up and billing.
    with pytest.raises(UsageError, match="strategy=multiworker trains across several hosts.*--instance-count 2"):
        spec_for(data, hp=["strategy=multiworker"])
    assert spec_for(data, hp=["strategy=multiworker"], instance_count=2).instance_count == 2
    assert len(boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]) == 1  # nothing else sent


def test_own_image_and_on_demand_and_several_instances(aws, data):
    spec = spec_for(data, image="123456789012.dkr.ecr.us-east-1.amazonaws.com/gankit-trainer:0.1.0", spot=False,
                    instance_count=2, instance_type="ml.g5.12xlarge")
    request = sagemaker.submit(spec, dry_run=True)
    assert request["AlgorithmSpecification"]["TrainingImage"] == spec.image
    assert "sagemaker_program" not in request["HyperParameters"]  # the image's own `train` runs
    assert request["EnableManagedSpotTraining"] is False and "MaxWaitTimeInSeconds" not in request["StoppingCondition"]
    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert not s3.list_objects(f"s3://{BUCKET}/runs")  # a dry run writes nothing
    script_mode = sagemaker.build_request(spec_for(data, instance_count=2), "image")
    assert script_mode["HyperParameters"]["sagemaker_multi_worker_mirrored_strategy_enabled"] == "true"


def test_describe_reports_failure_and_spot_savings(aws, data):
    from moto.sagemaker.models import sagemaker_backends

    record = sagemaker.submit(spec_for(data))
    assert sagemaker.describe(record)["status"] in ("InProgress", "Completed")
    job = sagemaker_backends["123456789012"][REGION].training_jobs[record["job"]]
    job.training_job_status, job.failure_reason = "Failed", "AlgorithmError: out of memory"
    info = sagemaker.describe(record)
    assert info["status"] == "Failed" and info["failure_reason"] == "AlgorithmError: out of memory"
    # Spot: billed 300 s of 1000 s trained, so 70% saved; an on-demand job saves nothing, whatever it reports.
    job.billable_time_in_seconds, job.training_time_in_seconds = 300, 1000
    assert sagemaker.describe(record)["spot_savings"] == pytest.approx(0.7)
    assert "spot_savings" not in sagemaker.describe({**record, "spot": False})


def test_logs_read_every_stream_across_pages(aws, data, monkeypatch):
    monkeypatch.setattr(sagemaker, "PAGE", 7)
    record = sagemaker.submit(spec_for(data))
    cw = boto3.client("logs")
    cw.create_log_group(logGroupName=sagemaker.LOG_GROUP)
    now_ms = int(time.time() * 1000)  # CloudWatch (and moto) refuse events older than 14 days
    for host in (1, 2):
        stream = f"{record['job']}/algo-{host}-1700000000"
        cw.create_log_stream(logGroupName=sagemaker.LOG_GROUP, logStreamName=stream)
        cw.put_log_events(logGroupName=sagemaker.LOG_GROUP, logStreamName=stream,
                          logEvents=[{"timestamp": now_ms + i, "message": f"algo-{host} line {i}"} for i in range(20)])
    lines = []
    sagemaker.logs(record, follow=False, print_line=lines.append)
    assert lines == [f"algo-{h} line {i}" for h in (1, 2) for i in range(20)]


def test_logs_show_the_hosts_in_number_order_past_nine(aws, data):
    """Streams are `<job>/algo-<host>-<epoch seconds>`: by name, algo-10 and algo-11 would come between algo-1
    and algo-2, and a host's spot restart (a later stream of the same host) goes after its first one."""
    record = sagemaker.submit(spec_for(data))
    cw = boto3.client("logs")
    cw.create_log_group(logGroupName=sagemaker.LOG_GROUP)
    now_ms = int(time.time() * 1000)
    streams = [(host, 1700000000) for host in (11, 2, 10, 1)] + [(2, 1700003600)]
    for host, started in streams:
        stream = f"{record['job']}/algo-{host}-{started}"
        cw.create_log_stream(logGroupName=sagemaker.LOG_GROUP, logStreamName=stream)
        cw.put_log_events(logGroupName=sagemaker.LOG_GROUP, logStreamName=stream,
                          logEvents=[{"timestamp": now_ms, "message": f"algo-{host} from {started}"}])
    lines = []
    sagemaker.logs(record, False, lines.append)
    assert lines == ["algo-1 from 1700000000", "algo-2 from 1700000000", "algo-2 from 1700003600",
                     "algo-10 from 1700000000", "algo-11 from 1700000000"]


@pytest.mark.parametrize("follow", [False, True])
def test_logs_of_a_job_with_no_stream_yet_say_so_where_other_jobs_logged(follow, aws, data, monkeypatch):
    # "no logs yet" came only while the log group itself was missing, i.e. before the account's first job
    # ever logged; in the group every later job shares, a job still Starting printed nothing at all.
    monkeypatch.setattr(sagemaker, "POLL_SECONDS", 0)
    record = sagemaker.submit(spec_for(data))  # moto's job has ended (Completed) at once: -f reads and ends
    cw = boto3.client("logs")
    cw.create_log_group(logGroupName=sagemaker.LOG_GROUP)
    other = "gan-mnist-cgan-earlier/algo-1-1700000000"
    cw.create_log_stream(logGroupName=sagemaker.LOG_GROUP, logStreamName=other)
    cw.put_log_events(logGroupName=sagemaker.LOG_GROUP, logStreamName=other,
                      logEvents=[{"timestamp": int(time.time() * 1000), "message": "another job's line"}])
    lines = []
    sagemaker.logs(record, follow=follow, print_line=lines.append)
    assert lines == ["the job ended without logs" if follow else "no logs yet"]


def test_logs_follow_every_stream_until_the_job_ends_without_repeats(aws, data, monkeypatch):
    from moto.sagemaker.models import sagemaker_backends

    record = sagemaker.submit(spec_for(data, instance_count=2))
    moto_job = sagemaker_backends["123456789012"][REGION].training_jobs[record["job"]]
    moto_job.training_job_status = "InProgress"
    cw = boto3.client("logs")
    cw.create_log_group(logGroupName=sagemaker.LOG_GROUP)

    def put(host, *messages):
        stream = f"{record['job']}/algo-{host}-1700000000"
        if not cw.describe_log_streams(logGroupName=sagemaker.LOG_GROUP, logStreamNamePrefix=stream)["logStreams"]:
            cw.create_log_stream(logGroupName=sagemaker.LOG_GROUP, logStreamName=stream)
        now_ms = int(time.time() * 1000)
        cw.put_log_events(logGroupName=sagemaker.LOG_GROUP, logStreamName=stream,
                          logEvents=[{"timestamp": now_ms + i, "message": f"algo-{host} {m}"}
                                     for i, m in enumerate(messages)])

    put(1, "starting")  # the second host has not logged yet
    polls, real_sleep = [], time.sleep

    def poll(seconds):  # the job moves on while the launcher waits between polls
        if seconds != sagemaker.POLL_SECONDS:
            return real_sleep(seconds)
        polls.append(seconds)
        if len(polls) == 1:
            put(1, "epoch 1")
            put(2, "starting", "epoch 1")
        elif len(polls) == 2:
            put(1, "done")
            moto_job.training_job_status = "Completed"

    monkeypatch.setattr(time, "sleep", poll)
    lines = []
    sagemaker.logs(record, follow=True, print_line=lines.append)
    assert lines == ["algo-1 starting", "algo-1 epoch 1", "algo-2 starting", "algo-2 epoch 1", "algo-1 done"]
    assert len(polls) == 3  # it stopped once SageMaker said Completed, after the one pause for late lines


def test_logs_follow_reads_once_more_after_the_job_ends_for_lines_cloudwatch_gets_late(aws, data, monkeypatch):
    # A job's last lines (a failure's traceback, the trainer's last words) can reach CloudWatch after
    # DescribeTrainingJob says it ended (sagemaker-core's own log tailing pauses and reads once more for them):
    # `logs -f` read once as it saw the end and returned without them.
    from moto.sagemaker.models import sagemaker_backends

    record = sagemaker.submit(spec_for(data))
    moto_job = sagemaker_backends["123456789012"][REGION].training_jobs[record["job"]]
    moto_job.training_job_status = "InProgress"
    cw = boto3.client("logs")
    cw.create_log_group(logGroupName=sagemaker.LOG_GROUP)
    stream = f"{record['job']}/algo-1-1700000000"
    cw.create_log_stream(logGroupName=sagemaker.LOG_GROUP, logStreamName=stream)

    def put(message):
        cw.put_log_events(logGroupName=sagemaker.LOG_GROUP, logStreamName=stream,
                          logEvents=[{"timestamp": int(time.time() * 1000), "message": message}])

    put("epoch 1")
    polls, real_sleep = [], time.sleep

    def poll(seconds):
        if seconds != sagemaker.POLL_SECONDS:
            return real_sleep(seconds)
        polls.append(seconds)
        if len(polls) == 1:
            moto_job.training_job_status = "Failed"  # ended; its last line is still on its way to CloudWatch
        else:
            put("RuntimeError: out of memory")

    monkeypatch.setattr(time, "sleep", poll)
    lines = []
    sagemaker.logs(record, follow=True, print_line=lines.append)
    assert lines == ["epoch 1", "RuntimeError: out of memory"]
    assert len(polls) == 2


def test_dry_run_prints_exactly_what_submit_sends(aws, data, tmp_path, monkeypatch):
    from moto.moto_api import recorder

    spec = spec_for(data, max_run="2h")
    dry = sagemaker.submit(spec, dry_run=True)
    monkeypatch.chdir(tmp_path)  # moto's recorder writes ./moto_recording
    recorder.reset_recording()
    recorder.start_recording()
    try:
        record = sagemaker.submit(spec)
    finally:
        recorder.stop_recording()
    # What reached the API: the CreateTrainingJob body moto received, Environment and all (moto's model drops it).
    bodies = [json.loads(base64.b64decode(e["body"])) for e in map(json.loads, recorder.download_recording().splitlines())
              if e["headers"].get("X-Amz-Target") == "SageMaker.CreateTrainingJob"]
    assert bodies == [dry] == [record["request"]]
    assert dry["Environment"]["GANKIT_JOB"] == spec.job and dry["StoppingCondition"]["MaxRuntimeInSeconds"] == 7200


def sagemaker_client(monkeypatch):
    """The client sagemaker-core uses for the backend's calls (it caches one per session), for stubbing one call."""
    from sagemaker.core.resources import TrainingJob

    session = boto3.session.Session(region_name=REGION)
    monkeypatch.setattr(sagemaker, "_session", lambda region: session)
    return TrainingJob.get_sagemaker_client(session=session, region_name=REGION)


def test_stop_sends_stop_training_job(aws, data, monkeypatch):
    record = sagemaker.submit(spec_for(data))
    real = sagemaker_client(monkeypatch)
    calls = []
    # moto has no StopTrainingJob: only that call is stubbed (the describe before it is moto's).
    monkeypatch.setattr(real, "stop_training_job", lambda **kwargs: calls.append(kwargs) or {})
    sagemaker.stop(record)
    assert calls == [{"TrainingJobName": record["job"]}]
    with pytest.raises(GankitError, match="cannot describe gan-nobody: .*"):
        sagemaker.stop({**record, "job": "gan-nobody"})
    assert len(calls) == 1


def test_a_cloud_job_resumed_on_the_local_backend_is_told_where_its_checkpoints_are(aws, data, capsys):
    # `submit --resume JOB --backend local` took JOB's region along and was refused for a --region it was never
    # given ("--region is for a cloud job ... or drop it"), not for the checkpoints being in JOB's bucket.
    from launcher.cli import main

    record = sagemaker.submit(spec_for(data))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(["submit", "--resume", record["job"], "--backend", "local", "--dry-run"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1, err
    assert f"job {record['job']} keeps its checkpoints under s3://{BUCKET}" in err and "--backend sagemaker" in err


def test_the_printed_resume_command_runs_on_the_jobs_own_machines(aws, data, capsys):
    # `launcher submit --resume JOB` (as stop and the job's log print it) of a job on two ml.g5.12xlarge ran on one
    # ml.p3.2xlarge: half the global batch, which its trainer refused for the checkpoint, once the instance billed.
    from launcher.cli import main

    record = sagemaker.submit(spec_for(data, instance_count=2, instance_type="ml.g5.12xlarge", spot=False))
    resume = ["submit", "--resume", record["job"], "--bucket", BUCKET, "--role", ROLE, "--dry-run"]

    def machines(*given):
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:
            main([*resume, *given])
        out, err = capsys.readouterr()
        assert stopped.value.code in (0, None), err
        request = json.loads(out[out.index("{"):])
        config = request["ResourceConfig"]
        return config["InstanceType"], config["InstanceCount"], request["EnableManagedSpotTraining"]

    assert machines() == ("ml.g5.12xlarge", 2, False)  # an on-demand job stays on demand
    assert machines("--instance-count", "1", "--instance-type", "ml.p3.2xlarge", "--spot") == (
        "ml.p3.2xlarge", 1, True)  # given: wins


def test_a_job_whose_record_cannot_be_written_is_not_created(aws, data, monkeypatch):
    # A full disk under the records: the job was created, then a traceback left it billing with no record
    # that `launcher status` or `stop` could find. The record is written first now: no record, no job.
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jobs, "atomic_write_text", full_disk)
    spec = spec_for(data)
    with pytest.raises(GankitError) as e:
        sagemaker.submit(spec)
    line = str(e.value)
    assert "\n" not in line and f"the record of job {spec.job} could not be written" in line
    assert "No space left on device" in line and line.endswith("then submit again")
    assert boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
    assert not jobs.exists(spec.job)


def test_a_job_whose_second_record_cannot_be_written_keeps_the_first(aws, data, monkeypatch):
    # The disk fills between the record written before the create and the one with its ARN: the first finds it.
    real, writes = jobs.atomic_write_text, []

    def full_disk_after_one(*args, **kwargs):
        writes.append(args[0])
        if len(writes) > 1:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs, "atomic_write_text", full_disk_after_one)
    spec = spec_for(data)
    record = sagemaker.submit(spec)
    assert len(writes) == 2 and record["arn"]
    assert jobs.load(spec.job)["job"] == spec.job and sagemaker.describe(jobs.load(spec.job))["status"]  # found by name


def test_a_job_created_but_not_described_still_gets_its_record(aws, data, monkeypatch):
    from botocore.exceptions import ClientError

    real = sagemaker_client(monkeypatch)

    def throttled(**_):  # only the DescribeTrainingJob that TrainingJob.create makes after creating is stubbed
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "DescribeTrainingJob")

    monkeypatch.setattr(real, "describe_training_job", throttled)
    spec = spec_for(data)
    record = sagemaker.submit(spec)
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName=spec.job)
    assert jobs.load(spec.job)["arn"] == record["arn"] == job["TrainingJobArn"]
    assert record["request"]["TrainingJobName"] == spec.job


def test_a_refused_job_is_one_clear_error(aws, data, monkeypatch):
    stubber = Stubber(sagemaker_client(monkeypatch))
    stubber.add_client_error("create_training_job", "ResourceLimitExceeded", "The account-level service limit "
                             "'ml.p3.2xlarge for spot training job usage' is 0 Instances")
    spec = spec_for(data)
    with stubber, pytest.raises(GankitError, match="SageMaker refused the job: .*service limit") as refused:
        sagemaker.submit(spec)
    assert "\n" not in str(refused.value)
    assert not (jobs.jobs_dir() / f"{spec.job}.json").exists()  # no record of a job that does not exist


# --- the CLI end to end, in subprocesses, against a real HTTP moto ---------------------------------

def launcher(*args, env, check=True):
    done = subprocess.run([sys.executable, "-m", "launcher.cli", *args], capture_output=True, text=True, env=env,
                          cwd=env["WORK"], timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def exported_generator(folder: Path) -> Path:
    """A real (untrained) exported generator, without training one."""
    from trainer.export import export_generator
    from trainer.models import build_generator

    meta = {"dataset": "mnist", "class_names": [str(i) for i in range(10)], "conditional": True, "model": "cgan",
            "preset": "default", "z_dim": 8, "z_distribution": "normal", "image_shape": [28, 28, 1],
            "value_range": [-1.0, 1.0], "steps": 0, "trainer_version": "test"}
    return export_generator(build_generator("default", 8, (28, 28, 1), 10), meta, folder)


@pytest.mark.slow
def test_cli_submit_status_list_pull_generate_over_http(aws_env, data, tmp_path):
    from moto.sagemaker.models import sagemaker_backends

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    env = dict(os.environ, PYTHONPATH=str(ROOT), WORK=str(tmp_path))
    done = launcher("submit", "--dataset", "mnist", "--epochs", "2", "--hp", f"data_dir={data}", "--backend",
                    "sagemaker", "--bucket", BUCKET, "--role", ROLE, "--max-run", "1h", env=env)
    job = done.stdout.split("submitted ")[1].split()[0]
    assert "cost" in done.stdout and "spot" in done.stdout and "console.aws.amazon.com/sagemaker" in done.stdout
    assert f"s3://{BUCKET}/runs/{job}/output" in done.stdout

    listed = json.loads(launcher("list", "--json", env=env).stdout)
    assert [r["name"] for r in listed] == [job] and listed[0]["backend"] == "sagemaker"

    # The job publishes its outputs; SageMaker says it completed.
    output = layout.output_prefix(f"s3://{BUCKET}", job)
    s3.upload_dir(exported_generator(tmp_path / "exported"), f"{output}/generator", last=("generator.json",))
    s3.write_bytes(f"{output}/metrics.jsonl", b'{"epoch": 1}\n')
    sagemaker_backends["123456789012"][REGION].training_jobs[job].training_job_status = "Completed"
    status = json.loads(launcher("status", job, "--json", env=env).stdout)
    assert status["status"] == "Completed" and status["output_uri"] == output

    launcher("pull", job, "--dest", str(tmp_path / "pulled"), env=env)
    assert (tmp_path / "pulled" / "generator" / "generator.keras").exists()
    assert (tmp_path / "pulled" / "metrics.jsonl").read_text() == '{"epoch": 1}\n'
    launcher("generate", f"{output}/generator", "--class", "3", "--count", "5", "--out", "threes.npy", env=env)
    assert np.load(tmp_path / "threes.npy").shape == (5, 28, 28, 1)

    job_record = sagemaker_backends["123456789012"][REGION].training_jobs[job]
    job_record.training_job_status, job_record.failure_reason = "Failed", "ClientError: no space left on device"
    failed = launcher("status", job, env=env, check=False)
    assert failed.returncode == 1
    assert failed.stderr.strip() == f"error: job {job} failed: ClientError: no space left on device"


def _toolkit_command_line(hyperparameters: dict) -> str:
    """What sagemaker-training-toolkit runs in AWS's prebuilt image: mapping.to_cmd_args (sorted `--key value`,
    values as str, no quoting), then process.run_async's `" ".join(cmd)` into asyncio.create_subprocess_shell."""
    user = {k: v for k, v in hyperparameters.items() if not k.startswith("sagemaker_")}
    args = [part for key in sorted(user) for part in (f"--{key}", str(user[key]))]
    return " ".join([sys.executable, "-c", "'import json, sys; print(json.dumps(sys.argv[1:]))'", *args])


def _meant(hyperparameters: dict) -> list[str]:
    """The arguments that line means to pass."""
    user = {k: v for k, v in hyperparameters.items() if not k.startswith("sagemaker_")}
    return [part for key in sorted(user) for part in (f"--{key}", str(user[key]))]


@pytest.mark.parametrize("value", ["folder:/pics/My Pictures (2)", "folder:/pics/o'brien", "folder:/a;b",
                                   "folder:/pics/My Pictures", "folder:/pics/tab\there", "folder:/pics/a\\b",
                                   "folder:/pics/$HOME"])
def test_script_mode_refuses_hyperparameters_its_toolkit_would_break_on_the_shell_line(value, tmp_path):
    # The reproduction: the toolkit's shell line for such a value is not the command it means to run.
    hp = {"dataset": value, "epochs": "2"}
    done = subprocess.run(["/bin/sh", "-c", _toolkit_command_line(hp)], capture_output=True, text=True)
    assert done.returncode != 0 or json.loads(done.stdout) != _meant(hp)
    spec = build_spec(dataset="mnist", backend="sagemaker", bucket=BUCKET, role=ROLE, region=REGION)
    bad = type(spec)(**{**spec.__dict__, "hyperparameters": {**spec.hyperparameters, "dataset": value}})
    with pytest.raises(UsageError, match="--dataset .*--image"):
        sagemaker.check_spec(bad)
    # Your own image runs `train` with no shell line in between: the same value is fine there.
    sagemaker.check_spec(type(spec)(**{**bad.__dict__, "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/g:1"}))


def test_script_mode_passes_ordinary_hyperparameters_through_the_toolkit_shell_line(aws, data):
    spec = spec_for(data, hp=["lr=1e-4"])
    sagemaker.check_spec(spec)
    hp = sagemaker.hyperparameters(spec)
    assert not any(sagemaker.SHELL_SPECIAL.search(v) for v in hp.values())
    done = subprocess.run(["/bin/sh", "-c", _toolkit_command_line(hp)], capture_output=True, text=True)
    assert done.returncode == 0 and json.loads(done.stdout) == _meant(hp)


def test_script_mode_asks_for_what_the_trainer_extra_does_beyond_the_prebuilt_image():
    """The prebuilt image brings TensorFlow, numpy and boto3; everything else the trainer needs (the base
    requirements and the trainer extra, Keras' safe-mode floor included) goes in requirements.txt, or the job
    runs on whatever the image ships."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from packaging.requirements import Requirement

    from launcher.backends import sagemaker as sm

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    python = {"python_version": sm.PY_VERSION.removeprefix("py").replace("3", "3.", 1)}
    needed = [*project["dependencies"], *project["optional-dependencies"]["trainer"]]
    wanted = {f"{r.name}{r.specifier}" for r in map(Requirement, needed)
              if r.name not in ("tensorflow", "numpy", "boto3") and (r.marker is None or r.marker.evaluate(python))}
    assert set(sm.requirements("tensorflow").split()) == wanted


def test_a_job_name_in_use_is_refused_and_its_record_kept(aws, data):
    # Two submits that got one name (a sweep, one millisecond): the second overwrote the first's record, then
    # SageMaker refused its create (the name is taken) and it deleted the record, the first job's: it ran unseen.
    first = sagemaker.submit(spec_for(data, hp=["lr=1e-4"]))
    with pytest.raises(UsageError, match=f"job {first['job']} exists already; submit again"):
        sagemaker.submit(dataclasses.replace(spec_for(data, hp=["lr=3e-4"]), job=first["job"]))
    kept = jobs.load(first["job"])
    assert kept["arn"] == first["arn"] and kept["hyperparameters"]["lr"] == "1e-4"


def test_of_two_submits_of_one_name_at_once_only_one_gets_it(aws, data, monkeypatch):
    # The second comes while the first stages its data, before either is recorded: the name is claimed first.
    spec = spec_for(data)
    real, refused = sagemaker.ensure_dataset, []

    def meanwhile(s, *args, **kwargs):
        if not refused:
            refused.append(None)
            with pytest.raises(UsageError, match=f"job {spec.job} exists already"):
                sagemaker.submit(dataclasses.replace(spec, hyperparameters={**spec.hyperparameters, "lr": "3e-4"}))
        return real(s, *args, **kwargs)

    monkeypatch.setattr(sagemaker, "ensure_dataset", meanwhile)
    record = sagemaker.submit(spec)
    assert refused and jobs.load(spec.job)["arn"] == record["arn"]
    assert [j["TrainingJobName"] for j in boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]] \
        == [spec.job]
    assert not (jobs.jobs_dir() / spec.job).exists()  # the claim goes once the record holds the name


def test_a_resume_on_another_cloud_backend_keeps_its_own_instance_count(aws, data, capsys):
    # The job's instance count travels with a resume on its own backend only (its global batch): resumed on EC2,
    # which runs one instance, it was taken along and the resume refused for an --instance-count never given.
    from launcher import settings
    from launcher.cli import main

    record = sagemaker.submit(spec_for(data, instance_count=2, instance_type="ml.g5.12xlarge"))
    settings.update(instance_profile="gankit-ec2", security_group="sg-1")  # a dry run reads neither
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(["submit", "--resume", record["job"], "--backend", "ec2", "--instance-type", "g5.12xlarge",
              "--bucket", BUCKET, "--dry-run"])
    out, err = capsys.readouterr()
    assert stopped.value.code in (0, None), err
    request = json.loads(out[out.index("{"):])["run_instances"]
    assert (request["InstanceType"], request["MinCount"], request["MaxCount"]) == ("g5.12xlarge", 1, 1)
