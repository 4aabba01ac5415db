"""The EC2 backend against the moto server: submit, describe, logs, stop, resume, dry run,
and the job it submits run by the instance's runner here for real."""

import base64
import io
import json
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import boto3
import pytest

from launcher import instances, jobs, settings
from launcher.backends import ec2 as backend
from launcher.remote import train_job
from launcher.spec import JobSpec
from launcher.train_userdata import shutdown_minutes
from tests.data_helpers import make_idx_dataset
from tests.ec2_helpers import seed_dlami_parameters
from trainer import layout, s3
from trainer.errors import GankitError, UsageError
from trainer.dataset_staging import stage_dataset

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
HP = {"dataset": "mnist", "epochs": "1", "batch_size": "16", "max_steps": "4", "preset": "seed"}


def Spec(**fields):
    """A JobSpec as build_spec makes them for --backend ec2 (on demand unless told)."""
    return JobSpec(**{"backend": "ec2", "dataset": "mnist", "instance_type": "g5.xlarge", "spot": False,
                      "max_run": 3600, "region": REGION, **fields})


@pytest.fixture
def cloud(aws_env, monkeypatch, tmp_path):
    """A bucket with a staged tiny dataset, and what `launcher infra up` records."""
    monkeypatch.delenv("GANKIT_AMI", raising=False)
    bucket = f"gankit-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    root = f"s3://{bucket}"
    stage_dataset("mnist", layout.dataset_prefix(root, "mnist"),
                  data_dir=make_idx_dataset(tmp_path / "mnist", n_train=64, n_test=32), log=lambda m: None)
    iam, client = boto3.client("iam"), boto3.client("ec2")
    profile = f"gankit-{uuid.uuid4().hex[:6]}"
    iam.create_role(RoleName=profile, AssumeRolePolicyDocument="{}")
    iam.create_instance_profile(InstanceProfileName=profile)
    iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=profile)
    vpc = client.describe_vpcs()["Vpcs"][0]["VpcId"]
    group = client.create_security_group(GroupName=profile, Description="gankit", VpcId=vpc)["GroupId"]
    settings.update(bucket=bucket, region=REGION, instance_profile=profile, security_group=group)
    image = seed_dlami_parameters(REGION)
    return {"root": root, "image": image, "group": group, "profile": profile}


def _instance(iid):
    return boto3.client("ec2").describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def test_submit_launches_a_safe_self_terminating_instance_and_the_job_trains(cloud, tmp_path):
    spec = Spec(job="e1", root=cloud["root"], hyperparameters=HP, max_run=5400, spot=True, instance_type="p3.2xlarge")
    record = backend.submit(spec)
    assert jobs.load("e1")["instance_id"] == record["instance_id"]

    instance = _instance(record["instance_id"])
    assert instance["ImageId"] == cloud["image"] and instance["InstanceType"] == "p3.2xlarge"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{cloud['profile']}")
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [cloud["group"]]
    assert {"Key": "gankit:job", "Value": "e1"} in instance["Tags"]
    assert instance.get("InstanceLifecycle") == "spot"
    client = boto3.client("ec2")
    behaviour = client.describe_instance_attribute(InstanceId=record["instance_id"],
                                                   Attribute="instanceInitiatedShutdownBehavior")
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    user_data = base64.b64decode(client.describe_instance_attribute(
        InstanceId=record["instance_id"], Attribute="userData")["UserData"]["Value"]).decode()
    assert f"shutdown -h +{shutdown_minutes(5400)}" in user_data and "trap finish EXIT" in user_data
    assert record["job_uri"] in user_data and record["wheel_uri"] in user_data
    assert "testing" not in user_data  # no credentials travel in user data

    run = layout.run_prefix(cloud["root"], "e1")
    assert record["wheel_uri"].startswith(run + "/gankit-") and record["wheel_uri"].endswith(".whl")
    wheel = zipfile.ZipFile(io.BytesIO(s3.read_bytes(record["wheel_uri"])))  # what the instance installs
    assert {"launcher/remote/train_job.py", "trainer/contract.py", "trainer/cli.py"} <= set(wheel.namelist())
    job = json.loads(s3.read_bytes(record["job_uri"]))
    assert job["data_uri"] == f"{cloud['root']}/datasets/mnist"
    assert job["checkpoint_uri"] == f"{run}/checkpoints" and job["output_uri"] == f"{run}/output"

    assert backend.describe(record)["status"] == "InProgress"  # moto's instance runs at once

    # What the instance does with it: the runner, here, against the same S3.
    done = subprocess.run([sys.executable, "-m", "launcher.remote.train_job", "--job-uri", record["job_uri"]],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "generator/generator.json" in s3.list_objects(f"{run}/output")
    described = backend.describe(record)
    assert described["status"] == "Completed" and described["ended"]
    lines = []
    backend.logs(record, follow=True, print_line=lines.append)
    assert lines[-1] == "gankit: job e1 completed (exit code 0)"
    assert any("starting the trainer" in line for line in lines)


def test_resume_reuses_the_checkpoints_and_stop_terminates(cloud):
    spec = Spec(job="e2", root=cloud["root"], hyperparameters=HP, resume="e1")
    record = backend.submit(spec)
    job = json.loads(s3.read_bytes(record["job_uri"]))
    assert job["checkpoint_uri"] == layout.checkpoints_prefix(cloud["root"], "e1")
    assert record["log_uri"] == f"{layout.run_prefix(cloud['root'], 'e2')}/train.log"

    lines = []
    backend.logs(record, follow=False, print_line=lines.append)
    assert lines == ["no log yet for e2: the instance is still installing (a few minutes)"]

    backend.stop(record)
    assert _instance(record["instance_id"])["State"]["Name"] in ("shutting-down", "terminated")
    described = backend.describe(record)
    assert described["status"] == "Stopped" and "--resume e2" in described["failure_reason"]


def test_an_instance_gone_without_a_status_is_a_failure(cloud):
    record = backend.submit(Spec(job="e3", root=cloud["root"], hyperparameters=HP))
    instances.terminate(record["instance_id"], REGION)  # e.g. a spot interruption, before the runner reported
    described = backend.describe(record)
    assert described["status"] == "Failed" and "--resume e3" in described["failure_reason"]
    lines = []
    backend.logs(record, follow=True, print_line=lines.append)  # ends at once: the job has
    assert lines == ["no log for e3: it ended (Failed) before training wrote one; `launcher status e3` says why"]


def test_an_instance_aws_reclaimed_as_spot_is_described_as_a_spot_interruption(cloud):
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import StateReason

    record = backend.submit(Spec(job="e12", root=cloud["root"], hyperparameters=HP))
    instances.terminate(record["instance_id"], REGION)
    assert "spot interruption" not in backend.describe(record)["failure_reason"]  # a user's terminate is not one
    # What EC2 says of a spot instance it took back.
    ec2_backends["123456789012"][REGION].get_instance(record["instance_id"]).state_reason = StateReason(
        "Server.SpotInstanceTermination: A Spot Instance was terminated due to an increase in the Spot price.",
        "Server.SpotInstanceTermination")
    described = backend.describe(record)
    assert described["status"] == "Failed" and described["failure_reason"].startswith("spot interruption; ")
    assert "--resume e12" in described["failure_reason"]


def test_a_job_name_in_use_is_refused_not_overwritten(cloud):
    first = backend.submit(Spec(job="same-second", root=cloud["root"], hyperparameters={**HP, "lr": "1e-4"}))
    with pytest.raises(UsageError, match="job same-second exists already"):
        backend.submit(Spec(job="same-second", root=cloud["root"], hyperparameters={**HP, "lr": "3e-4"}))
    assert jobs.load("same-second")["instance_id"] == first["instance_id"]
    assert json.loads(s3.read_bytes(first["job_uri"]))["hyperparameters"]["lr"] == "1e-4"


def test_dry_run_sends_nothing(cloud):
    before = boto3.client("ec2").describe_instances()["Reservations"]
    answer = backend.submit(Spec(job="e4", root=cloud["root"], hyperparameters=HP, instance_type="g5.xlarge"),
                            dry_run=True)
    assert boto3.client("ec2").describe_instances()["Reservations"] == before
    assert s3.read_bytes(f"{layout.run_prefix(cloud['root'], 'e4')}/job.json") is None
    request = answer["run_instances"]
    assert request["ImageId"] == f"resolve:ssm:{instances.OPEN_DRIVER_PARAMETER}"
    assert request["MetadataOptions"]["HttpTokens"] == "required"
    assert request["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert answer["job_document"]["output_uri"].endswith("/runs/e4/output")


def test_bad_specs_are_refused(cloud, tmp_path):
    with pytest.raises(UsageError, match="needs a bucket"):
        backend.submit(Spec(job="x", root=str(tmp_path)))
    with pytest.raises(UsageError, match="one instance per job"):
        backend.submit(Spec(job="x", root=cloud["root"], instance_count=2), dry_run=True)


def test_launcher_submit_dry_run_through_the_cli(capsys, monkeypatch):
    from launcher.cli import cli
    from trainer.errors import run_cli

    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    settings.update(bucket="bk1", region=REGION, instance_profile="gankit-ec2", security_group="sg-1")
    with pytest.raises(SystemExit) as exited:
        run_cli(cli, ["submit", "--backend", "ec2", "--dataset", "zalando", "--epochs", "2", "--instance-type",
                      "g5.xlarge", "--max-run", "90m", "--dry-run"], prog_name="launcher")
    assert exited.value.code == 0
    answer = json.loads(capsys.readouterr().out)
    request = answer["run_instances"]
    assert request["InstanceType"] == "g5.xlarge" and request["IamInstanceProfile"] == {"Name": "gankit-ec2"}
    assert request["ImageId"] == f"resolve:ssm:{instances.OPEN_DRIVER_PARAMETER}"
    assert f"shutdown -h +{shutdown_minutes(90 * 60)}" in request["UserData"]
    assert answer["job_document"]["hyperparameters"]["epochs"] == "2"
    assert jobs.all_jobs() == []  # nothing recorded, nothing sent


@pytest.mark.parametrize("override, image", [("ami-0123456789abcdef0", "ami-0123456789abcdef0"),
                                             ("/my/dlami/ami-id", "resolve:ssm:/my/dlami/ami-id")])
def test_a_dry_run_prints_the_image_gankit_ami_picks(override, image, capsys, monkeypatch):
    """GANKIT_AMI picks the image a submit launches; the dry run's request must show that one, not the DLAMI."""
    from launcher.cli import cli
    from trainer.errors import run_cli

    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("GANKIT_AMI", override)
    settings.update(bucket="bk1", region=REGION, instance_profile="gankit-ec2", security_group="sg-1")
    with pytest.raises(SystemExit) as exited:
        run_cli(cli, ["submit", "--backend", "ec2", "--dataset", "zalando", "--instance-type", "p3.2xlarge",
                      "--dry-run"], prog_name="launcher")
    assert exited.value.code == 0
    assert json.loads(capsys.readouterr().out)["run_instances"]["ImageId"] == image


@pytest.fixture(scope="module")
def prebuilt_wheel(tmp_path_factory):
    return instances.build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def launches(cloud, monkeypatch, prebuilt_wheel):
    """Every RunInstances request the launcher sends, seen by botocore as it goes out, with the job
    records on disk at that moment; `fail_after` makes the call raise once EC2 has started the instance
    (a lost reply, a timeout), which is what the launcher must survive."""
    import shutil

    monkeypatch.setattr(instances, "build_wheel", lambda dest: Path(shutil.copy(prebuilt_wheel, dest)))
    seen = {"requests": [], "fail_after": False}
    real_client = instances.client

    def client(service, region=None):
        made = real_client(service, region)
        if service == "ec2":
            def before(params, **_):
                seen["requests"].append({"params": dict(params), "records": [dict(r) for r in jobs.all_jobs()]})

            def after(**_):
                if isinstance(seen["fail_after"], BaseException):  # Ctrl-C, a closed terminal
                    raise seen["fail_after"]
                if seen["fail_after"]:
                    raise ConnectionError("the connection dropped after the request was sent")

            made.meta.events.register("before-parameter-build.ec2.RunInstances", before)
            made.meta.events.register("after-call.ec2.RunInstances", after)
        return made

    monkeypatch.setattr(instances, "client", client)
    return seen


def _live(job):
    found = boto3.client("ec2").describe_instances(Filters=[{"Name": "tag:gankit:job", "Values": [job]}])
    return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] not in ("shutting-down", "terminated")]


def test_the_job_is_recorded_before_the_instance_is_launched_with_a_client_token(launches, cloud):
    record = backend.submit(Spec(job="r1", root=cloud["root"], hyperparameters=HP))
    [sent] = launches["requests"]
    [before] = [r for r in sent["records"] if r["job"] == "r1"]
    assert before["instance_id"] is None and before["client_token"] == sent["params"]["ClientToken"]
    assert len(sent["params"]["ClientToken"]) <= 64  # EC2's limit
    saved = jobs.load("r1")
    assert saved["instance_id"] == record["instance_id"] == _live("r1")[0]
    assert saved["client_token"] == sent["params"]["ClientToken"]
    # A record the launch never completed (the launcher killed mid-call) still finds its instance.
    interrupted = {**saved, "instance_id": None}
    assert backend.describe(interrupted)["instance_id"] == record["instance_id"]
    backend.stop(interrupted)
    assert _live("r1") == []


def test_two_submits_of_one_name_at_once_launch_one_instance_and_keep_its_record(launches, cloud):
    # Both checked that the name was free before either recorded it: both launched, and the second record
    # overwrote the first, whose instance then billed on where no `status` or `stop` could find it.
    import threading

    barrier, outcomes = threading.Barrier(2), []

    def submit(lr):
        barrier.wait()
        try:
            outcomes.append(backend.submit(Spec(job="same-ms", root=cloud["root"], hyperparameters={**HP, "lr": lr})))
        except UsageError as e:
            outcomes.append(e)

    threads = [threading.Thread(target=submit, args=(lr,)) for lr in ("1e-4", "3e-4")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [record] = [o for o in outcomes if isinstance(o, dict)]
    [refused] = [o for o in outcomes if isinstance(o, UsageError)]
    assert "job same-ms exists already" in str(refused)
    assert _live("same-ms") == [record["instance_id"]] and jobs.load("same-ms")["instance_id"] == record["instance_id"]
    assert json.loads(s3.read_bytes(record["job_uri"]))["hyperparameters"]["lr"] == record["hyperparameters"]["lr"]
    assert not (jobs.jobs_dir() / "same-ms").exists()  # the claim goes once the record holds the name


def test_a_failure_after_run_instances_terminates_the_instance_and_leaves_no_record(launches, cloud):
    launches["fail_after"] = True
    with pytest.raises(GankitError) as failed:
        backend.submit(Spec(job="r2", root=cloud["root"], hyperparameters=HP))
    assert "connection dropped" in str(failed.value) and "\n" not in str(failed.value)
    assert len(launches["requests"]) >= 1  # it did reach EC2 ...
    assert _live("r2") == []  # ... and what it started is terminated
    assert [r["job"] for r in jobs.all_jobs()] == []


def test_a_failure_saving_the_record_after_the_launch_terminates_the_instance(launches, cloud, monkeypatch):
    real_save = jobs.save

    def save(record):
        if record.get("instance_id"):
            raise OSError(28, "No space left on device")
        return real_save(record)

    monkeypatch.setattr(jobs, "save", save)
    with pytest.raises(GankitError) as failed:
        backend.submit(Spec(job="r3", root=cloud["root"], hyperparameters=HP))
    assert "No space left on device" in str(failed.value) and "terminated" in str(failed.value)
    assert _live("r3") == []
    assert [r["job"] for r in jobs.all_jobs()] == []


def test_an_unanswered_launch_whose_instance_is_not_listed_yet_keeps_the_record(launches, cloud, monkeypatch):
    """DescribeInstances is eventually consistent: just after RunInstances it may not list the new instance.
    If the launch got no answer, "not found" is not "not started": forgetting the job then left an instance
    training for its whole max run that no `status` or `stop` could reach."""
    import botocore.client

    real = botocore.client.BaseClient._make_api_call
    lagging = {"on": True}

    def make_api_call(self, name, params):
        if name == "DescribeInstances" and lagging["on"]:
            return {"Reservations": []}  # not listed yet
        return real(self, name, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", make_api_call)
    launches["fail_after"] = True
    with pytest.raises(GankitError) as failed:
        backend.submit(Spec(job="r4", root=cloud["root"], hyperparameters=HP))
    message = str(failed.value)
    assert "connection dropped" in message and "`launcher stop r4`" in message and "\n" not in message
    assert "did not start" not in message  # it may well have
    lagging["on"] = False  # EC2 lists it now
    [running] = _live("r4")
    backend.stop(jobs.load("r4"))  # the record kept is what still reaches it
    assert _live("r4") == []


@pytest.mark.parametrize("listed", [True, False])
def test_ctrl_c_as_the_instance_launches_says_what_became_of_it(launches, cloud, monkeypatch, listed):
    """The launcher terminated what it found, or kept the record where EC2 did not list the instance yet, and
    then said nothing at all (a bare exit 130): the user could not know a record was kept for an instance that
    may run."""
    import botocore.client

    from trainer.errors import Interrupted

    real = botocore.client.BaseClient._make_api_call

    def make_api_call(self, name, params):
        if name == "DescribeInstances" and not listed:
            return {"Reservations": []}  # not listed yet
        return real(self, name, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", make_api_call)
    launches["fail_after"] = KeyboardInterrupt()
    try:
        backend.submit(Spec(job="r6", root=cloud["root"], hyperparameters=HP))
    except BaseException as e:  # a KeyboardInterrupt that got out would stop pytest itself
        stopped = e
    assert isinstance(stopped, Interrupted), repr(stopped)
    message = str(stopped)
    assert stopped.exit_code == 130 and "\n" not in message
    assert message.startswith("Ctrl-C (SIGINT) stopped the submit of r6 as its instance was launched; ")
    if listed:
        assert "terminated i-" in message and _live("r6") == [] and not jobs.exists("r6")
    else:
        assert "`launcher stop r6`" in message and jobs.exists("r6")


def test_a_launch_ec2_refuses_leaves_no_record(launches, cloud, monkeypatch):
    from tests.aws_helpers import refuse_call

    refuse_call(monkeypatch, "RunInstances", "InsufficientInstanceCapacity", "no capacity")
    with pytest.raises(GankitError) as failed:
        backend.submit(Spec(job="r5", root=cloud["root"], hyperparameters=HP))
    assert "did not start" in str(failed.value) and "launcher stop" not in str(failed.value)
    assert [r["job"] for r in jobs.all_jobs()] == []


def _play_the_runner(record, monkeypatch, answer=True, setup_log_after=0.0):
    """The instance's runner as `stop` meets it: InProgress, then (`answer`) the final status the runner writes once
    it sees the request and its trainer has checkpointed, and `setup_log_after` seconds later the setup log its
    script ships as it ends. Returned: what it saw (whether the request was there and the instance still running
    when it answered, and when the setup log went), and its thread, to join before reading that."""
    import threading

    train_job.write_status(record["status_uri"], "InProgress", started="2026-12-07T10:00:00+00:00")
    seen = {}
    request = train_job.stop_uri(record["root"], record["job"])

    def runner():
        while not train_job.stop_requested(request):
            threading.Event().wait(0.05)
        seen["request"] = json.loads(s3.read_bytes(request))
        seen["state"] = _instance(record["instance_id"])["State"]["Name"]
        if answer:
            train_job.write_status(record["status_uri"], "Stopped", started="2026-12-07T10:00:00+00:00",
                                   failure_reason=f"{train_job.STOPPED_BY_LAUNCHER}; its checkpoints are kept: "
                                                  f"`launcher submit ... --resume {record['job']}` continues")
            threading.Event().wait(setup_log_after)
            seen["state at setup log"] = _instance(record["instance_id"])["State"]["Name"]
            s3.write_bytes(record["setup_log_uri"], b"gankit: running the job\n")

    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    monkeypatch.setattr(backend, "STOP_POLL_SECONDS", 0.1, raising=False)
    return seen, thread


def test_stop_asks_the_runner_waits_for_its_checkpoint_then_terminates(cloud, monkeypatch, capsys):
    # `stop` terminated the instance at once: the trainer never got SIGTERM, and its steps since the last periodic
    # checkpoint (--checkpoint-minutes, 10 by default) were lost.
    from launcher.cli import cli
    from trainer.errors import run_cli

    record = backend.submit(Spec(job="e7", root=cloud["root"], hyperparameters=HP))
    seen, _ = _play_the_runner(record, monkeypatch)  # it answers before `stop` goes on: nothing to join
    with pytest.raises(SystemExit) as exited:
        run_cli(cli, ["stop", "e7"], prog_name="launcher")
    out, err = capsys.readouterr()
    assert exited.value.code == 0 and out == "stopping e7\n", out + err
    assert seen.get("state") == "running" and seen["request"]["by"] == "launcher stop"  # terminated only after the answer
    assert _instance(record["instance_id"])["State"]["Name"] in ("shutting-down", "terminated")
    described = backend.describe(record)
    assert described["status"] == "Stopped"
    assert described["failure_reason"].startswith("stopped by `launcher stop`; its checkpoints are kept")
    assert "asked e7 to stop: its trainer writes a checkpoint to S3, then its instance is terminated" in err
    assert err.strip().splitlines()[-1] == f"e7: {described['failure_reason']}"


def test_stop_terminates_the_instance_once_its_setup_log_is_shipped(cloud, monkeypatch):
    # The instance's script ships setup.log after the runner's last word: `stop` terminated the instance at that
    # word, cutting the upload off (a second or two of the AWS CLI), so the job had no setup log.
    record = backend.submit(Spec(job="e11", root=cloud["root"], hyperparameters=HP))
    seen, runner = _play_the_runner(record, monkeypatch, setup_log_after=0.5)
    assert backend.stop(record) is None
    runner.join(10)
    assert seen["state at setup log"] == "running"
    assert _instance(record["instance_id"])["State"]["Name"] in ("shutting-down", "terminated")
    assert s3.read_bytes(record["setup_log_uri"]) == b"gankit: running the job\n"


def test_a_stop_the_runner_never_answers_terminates_after_the_wait(cloud, monkeypatch):
    record = backend.submit(Spec(job="e8", root=cloud["root"], hyperparameters=HP))
    seen, runner = _play_the_runner(record, monkeypatch, answer=False)
    # Seconds, not one: the request's time is written to the second, so a wait of 1 s could end at its first look,
    # before the runner (polling every 0.05 s) saw the request.
    monkeypatch.setattr(backend, "STOP_WAIT", 3, raising=False)
    assert backend.stop(record) is None
    runner.join(10)  # it may still be writing down what it saw when `stop` returns
    assert seen.get("state") == "running"  # asked, and left running until the wait was over
    assert _instance(record["instance_id"])["State"]["Name"] in ("shutting-down", "terminated")
    described = backend.describe(record)
    assert described["status"] == "Stopped" and "terminated by `launcher stop`" in described["failure_reason"]


def test_a_job_whose_runner_has_not_started_is_terminated_at_once(cloud, monkeypatch):
    record = backend.submit(Spec(job="e9", root=cloud["root"], hyperparameters=HP))  # installing: no status yet
    monkeypatch.setattr(backend.time, "sleep", lambda s: pytest.fail("waited for a runner that is not there"))
    assert backend.stop(record) is None
    assert _instance(record["instance_id"])["State"]["Name"] in ("shutting-down", "terminated")
    assert s3.read_bytes(layout.join(layout.run_prefix(cloud["root"], "e9"), "stop.json")) is None  # nothing asked


def test_ctrl_c_during_the_wait_says_the_job_stops_itself_and_a_second_stop_waits_only_the_rest(cloud, monkeypatch):
    from trainer.errors import Interrupted

    record = backend.submit(Spec(job="e10", root=cloud["root"], hyperparameters=HP))
    train_job.write_status(record["status_uri"], "InProgress", started="2026-12-07T10:00:00+00:00")

    def ctrl_c(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(backend.time, "sleep", ctrl_c)
    with pytest.raises(Interrupted) as interrupted:
        backend.stop(record)
    message = str(interrupted.value)
    assert interrupted.value.exit_code == 130 and "\n" not in message
    assert message.startswith("stopped waiting for e10 on Ctrl-C (SIGINT); it has the stop request and stops itself "
                              "within about 3 minutes")
    assert "`launcher stop e10` again waits for that and terminates its instance" in message
    assert _instance(record["instance_id"])["State"]["Name"] == "running"  # it stops itself, checkpoint first
    request = train_job.stop_uri(cloud["root"], "e10")
    assert train_job.stop_requested(request)

    # Again, once the runner's time is up: no second wait, the instance is terminated.
    earlier = json.loads(s3.read_bytes(request))
    s3.write_bytes(request, json.dumps({**earlier, "requested": "2026-12-07T10:00:00+00:00"}).encode())
    monkeypatch.setattr(backend.time, "sleep", lambda s: pytest.fail("waited again"))
    assert backend.stop(record) is None
    assert _instance(record["instance_id"])["State"]["Name"] in ("shutting-down", "terminated")
    assert backend.describe(record)["status"] == "Stopped"


def test_a_stop_s3_refuses_to_take_still_terminates_the_instance(cloud, monkeypatch, capsys):
    # `stop` wrote its request before terminating anything: S3 refusing it (a transient failure, or a user who may
    # terminate instances but not write runs/) ended `stop` in an error and left the GPU instance billing until its
    # max run. Before the request existed, `stop` terminated first and let a refused status write pass.
    from launcher.cli import cli
    from tests.aws_helpers import refuse_call
    from trainer.errors import run_cli

    record = backend.submit(Spec(job="e11", root=cloud["root"], hyperparameters=HP))
    train_job.write_status(record["status_uri"], "InProgress", started="2026-12-07T10:00:00+00:00")
    capsys.readouterr()  # the submit's upload line
    refuse_call(monkeypatch, "PutObject", "AccessDenied", "Access Denied")
    monkeypatch.setattr(backend.time, "sleep", lambda s: pytest.fail("waited for a request that was never written"))
    with pytest.raises(SystemExit) as exited:
        run_cli(cli, ["stop", "e11"], prog_name="launcher")
    out, err = capsys.readouterr()
    assert exited.value.code == 0 and out == "stopping e11\n", out + err
    assert _instance(record["instance_id"])["State"]["Name"] in ("shutting-down", "terminated")
    line, = err.strip().splitlines()
    assert line.startswith("could not ask e11 to stop (") and "AccessDenied" in line
    assert line.endswith("): terminating its instance; the checkpoints it wrote stay")


def test_the_logs_of_a_runner_that_died_after_training_show_its_error_from_the_setup_log(cloud):
    """The runner trained, then died before its last status (here its disk filled): status.json still
    says InProgress, the instance ends, and the failure reason points at `launcher logs` for the setup log. That log
    (the user data's output) repeats every training line the runner echoed; what it adds is the runner's own error."""
    record = backend.submit(Spec(job="e4", root=cloud["root"], hyperparameters=HP))
    training = "gankit: job e4 started 2024-01-01T00:00:00+00:00; max run 3600 s\nstep 4/4 d_loss=1.2\n"
    died = ('Traceback (most recent call last):\n  File "train_job.py", line 311, in run_job\n'
            "OSError: [Errno 28] No space left on device\n")
    train_job.write_status(record["status_uri"], "InProgress", started="2024-01-01T00:00:00+00:00")
    s3.write_bytes(record["log_uri"], training.encode())
    s3.write_bytes(record["setup_log_uri"], ("gankit: running the job\nstep 4/4 d_loss=1.2\n" + died).encode())
    instances.terminate(record["instance_id"], REGION)
    assert "includes the setup log" in backend.describe(record)["failure_reason"]

    lines = []
    backend.logs(record, False, lines.append)
    assert lines[:2] == training.splitlines()
    assert lines[-3:] == died.splitlines()  # the runner's error, at the end where a failure is looked for
    assert lines.count("step 4/4 d_loss=1.2") == 1  # the training lines it repeats are shown once
    assert "gankit: running the job" in lines
