"""Each AWS call made under a cloud role, recorded from the code that makes it, against that role in
infra/base.yaml. moto does not enforce IAM: without this, a missing permission shows only on real AWS."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from tests import iam_helpers
from tests.iam_helpers import ACCOUNT, denied, recording, role_statements

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
NB_SHA = "cd" * 32  # a notebook's sha256


def test_the_checker_refuses_what_the_roles_do_not_grant():
    """The evaluator itself: a call outside the bucket, a foreign training job, an unknown call."""
    role = role_statements("SageMakerRole", "my-gankit")
    put = {"service": "s3", "operation": "PutObject", "region": REGION, "params": {"Bucket": "other", "Key": "k"}}
    ok = {**put, "params": {"Bucket": "my-gankit", "Key": "runs/j/output/x"}}
    assert denied(role, [put]) == ["s3:PutObject on arn:aws:s3:::other/k (s3:PutObject)"]
    assert denied(role, [ok]) == []
    describe = {"service": "sagemaker", "operation": "DescribeTrainingJob", "region": REGION,
                "params": {"TrainingJobName": "someone-elses-job"}}
    assert denied(role, [describe]) and not denied(role, [{**describe, "params": {"TrainingJobName": "gan-x-cgan-1"}}])
    listing = {"service": "s3", "operation": "ListObjectsV2", "region": REGION, "params": {"Bucket": "my-gankit"}}
    assert denied(role_statements("InstanceRole", "my-gankit"), [listing]) != []  # the whole bucket
    runs = {**listing, "params": {"Bucket": "my-gankit", "Prefix": "runs/gan-a/checkpoints/"}}
    assert denied(role_statements("InstanceRole", "my-gankit"), [runs]) == []
    with pytest.raises(AssertionError, match="does not know"):
        denied(role, [{"service": "ec2", "operation": "StopInstances", "region": REGION, "params": {}}])


# --- which prefixes each role may touch ----------------------------------------------------------------

def _object(action, key):
    return (action, f"arn:aws:s3:::my-gankit/{key}", {})


def assert_grants(statements, may, may_not):
    """Every request of `may` allowed, and each of `may_not` refused on its own (a list refused as a whole
    would pass with one request refused and the others allowed)."""
    assert iam_helpers.refused(statements, may) == []
    assert [w for w in may_not if not iam_helpers.refused(statements, [w])] == []


@pytest.mark.parametrize("prefix", ["", "team-a/"], ids=["bucket-root", "bucket-prefix"])
@pytest.mark.parametrize("role", ["SageMakerRole", "InstanceRole"])
def test_the_job_roles_write_only_runs_and_delete_only_checkpoints(role, prefix):
    """A job reads datasets/ and runs/, writes runs/, deletes pruned checkpoints; the same below a bucket
    prefix of the user's (bucket set as NAME/PREFIX). Datasets, the Jupyter setup files and outputs stay as
    the launcher and the trainer wrote them."""
    statements = role_statements(role, "my-gankit")
    may = [_object("s3:GetObject", f"{prefix}datasets/mnist/train-images-idx3-ubyte.gz"),
           _object("s3:GetObject", f"{prefix}runs/gan-a/job.json"),
           _object("s3:PutObject", f"{prefix}runs/gan-a/output/generator/generator.json"),
           _object("s3:PutObject", f"{prefix}runs/gan-a/checkpoints/ckpt-000000004/state.json"),
           _object("s3:DeleteObject", f"{prefix}runs/gan-a/checkpoints/ckpt-000000002/state.json")]
    may_not = [_object("s3:PutObject", f"{prefix}datasets/mnist/MANIFEST.json"),
               _object("s3:DeleteObject", f"{prefix}datasets/mnist/MANIFEST.json"),
               _object("s3:PutObject", f"{prefix}jupyter/alice/pull_and_generate.ipynb"),
               _object("s3:PutObject", f"{prefix}jupyter/alice/instance.json"),
               _object("s3:PutObject", f"{prefix}elsewhere/x"),
               _object("s3:DeleteObject", f"{prefix}runs/gan-a/output/generator/generator.json"),
               _object("s3:DeleteObject", f"{prefix}runs/gan-a/job.json"),
               _object("s3:GetObject", f"{prefix}elsewhere/x")]
    assert_grants(statements, may, may_not)


@pytest.mark.parametrize("role", ["SageMakerRole", "InstanceRole"])
def test_a_runs_segment_inside_the_staged_data_or_jupyter_files_gives_no_write(role):
    """*/runs/* (for a NAME/PREFIX bucket) spans slashes: a class folder named runs, or an IAM user named runs
    (jupyter/runs/...), must not turn the bucket's datasets/ or jupyter/ writable."""
    statements = role_statements(role, "my-gankit")
    may_not = [_object("s3:PutObject", "datasets/folder-pets/runs/x.png"),
               _object("s3:DeleteObject", "datasets/fashion-mnist/runs/checkpoints/x"),
               _object("s3:PutObject", "jupyter/runs/instance.json"),
               _object("s3:DeleteObject", "jupyter/runs/checkpoints/x")]
    assert_grants(statements, [], may_not)


def _listing(prefix):
    return ("s3:ListBucket", "arn:aws:s3:::my-gankit", {"s3:prefix": prefix})


@pytest.mark.parametrize("prefix", ["", "team-a/"], ids=["bucket-root", "bucket-prefix"])
@pytest.mark.parametrize("role", ["SageMakerRole", "InstanceRole"])
def test_the_job_roles_list_only_datasets_and_runs(role, prefix):
    """What a job lists: a dataset (and the earlier stagings beside it), a run's checkpoints; below a bucket
    prefix of the user's too. Not the bucket's root, not jupyter/ (every user's owner name), nothing else."""
    statements = role_statements(role, "my-gankit")
    may = [_listing(f"{prefix}datasets/mnist/"), _listing(f"{prefix}datasets/zalando-"),
           _listing(f"{prefix}runs/gan-a/checkpoints/"), _listing(f"{prefix}runs/")]
    may_not = [_listing(prefix), _listing(f"{prefix}jupyter/"), _listing(f"{prefix}elsewhere/"),
               ("s3:ListBucket", "arn:aws:s3:::my-gankit", {})]  # no prefix at all: the whole bucket
    assert_grants(statements, may, may_not)


def test_only_the_jupyter_role_reads_the_jupyter_setup_files():
    notebook = _object("s3:GetObject", "jupyter/alice/pull_and_generate.ipynb")
    assert iam_helpers.refused(role_statements("JupyterRole", "my-gankit"), [notebook]) == []
    assert iam_helpers.refused(role_statements("InstanceRole", "my-gankit"), [notebook]) != []
    assert iam_helpers.refused(role_statements("SageMakerRole", "my-gankit"), [notebook]) != []


@pytest.mark.parametrize("prefix", ["", "team-a/"], ids=["bucket-root", "bucket-prefix"])
def test_the_jupyter_role_lists_and_reads_runs_and_writes_nothing(prefix):
    """A notebook lists runs/ and pulls a generator from one; the setup reads jupyter/. It may not alter a run
    (the training instances' role, which Jupyter shared, could), nor read datasets/ or list jupyter/."""
    statements = role_statements("JupyterRole", "my-gankit")
    may = [_listing(f"{prefix}runs/"), _listing(f"{prefix}runs/gan-a/output/generator/"),
           _object("s3:GetObject", f"{prefix}runs/gan-a/output/generator/generator.json"),
           _object("s3:GetObject", f"{prefix}jupyter/alice/gankit-0.1.0-py3-none-any.whl")]
    may_not = [_object("s3:PutObject", f"{prefix}runs/gan-a/output/generator/generator.json"),
               _object("s3:PutObject", f"{prefix}runs/gan-a/checkpoints/ckpt-000000004/state.json"),
               _object("s3:DeleteObject", f"{prefix}runs/gan-a/checkpoints/ckpt-000000002/state.json"),
               _object("s3:PutObject", f"{prefix}jupyter/alice/instance.json"),
               _object("s3:GetObject", f"{prefix}datasets/mnist/MANIFEST.json"),
               _listing(f"{prefix}jupyter/"), _listing(f"{prefix}datasets/")]
    assert_grants(statements, may, may_not)


# --- the EC2 training instance ---------------------------------------------------------------------

@pytest.mark.slow
def test_the_ec2_runner_and_its_trainer_call_only_what_the_instance_role_allows(aws_env, tmp_path, monkeypatch):
    """The runner on the instance (job, status, log, its look for a stop request) and the trainer it starts (data, checkpoints with their
    pruning, outputs); then a resume's checkpoint restore, which sets a broken checkpoint aside (a copy and a
    delete) and downloads the one before it."""
    from launcher.remote import train_job
    from tests.data_helpers import make_idx_dataset
    from trainer import layout, run_storage, s3
    from trainer.dataset_staging import stage_dataset

    bucket = f"gankit-{uuid.uuid4().hex[:8]}"
    root = f"s3://{bucket}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    data = layout.dataset_prefix(root, "mnist")
    stage_dataset("mnist", data, data_dir=make_idx_dataset(tmp_path / "mnist", n_train=64, n_test=32), log=lambda m: None)
    checkpoints = layout.checkpoints_prefix(root, "gan-iam")
    document = {"job": "gan-iam", "root": root, "data_uri": data, "max_run": 600, "region": REGION,
                "checkpoint_uri": checkpoints, "output_uri": layout.output_prefix(root, "gan-iam"),
                "hyperparameters": {"dataset": "mnist", "epochs": "2", "batch_size": "16", "max_steps": "8",
                                    "preset": "seed", "checkpoint_minutes": "0.0001", "keep_checkpoints": "2"}}
    s3.write_bytes(train_job.job_uri(root, "gan-iam"), json.dumps(document).encode())
    with recording(tmp_path, monkeypatch) as calls:
        done = subprocess.run([sys.executable, "-m", "launcher.remote.train_job", "--job-uri",
                               train_job.job_uri(root, "gan-iam"), "--work-dir", str(tmp_path / "work")],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path, env={
                                  **os.environ, "PYTHONPATH": os.pathsep.join([str(iam_helpers.RECORDER_PATH), str(ROOT)])})
        assert done.returncode == 0, done.stderr[-3000:]
        (newest, name), _ = run_storage.remote_checkpoints(checkpoints)[:2]
        broken = next(k for k in s3.list_objects(checkpoints) if k.startswith(name + "/") and "MANIFEST" not in k)
        s3.write_bytes(s3.join(checkpoints, broken), b"not what the manifest says")
        assert run_storage.pull_latest_checkpoint(checkpoints, tmp_path / "restored") is not None
    operations = {(c["service"], c["operation"]) for c in calls}
    # The runner's own calls, recorded in its process (the job document is read there only).
    assert any(c["operation"] == "GetObject" and c["params"]["Key"].endswith("gan-iam/job.json") for c in calls)
    # Its look for `launcher stop`'s request: a listing of that one key (a read of a missing key may be a 403).
    assert any(c["operation"] == "ListObjectsV2" and c["params"]["Prefix"].endswith("gan-iam/stop.json") for c in calls)
    # What the paths did (so the check below had something to check): read, write, list, prune, set aside.
    assert {("s3", "GetObject"), ("s3", "HeadObject"), ("s3", "PutObject"), ("s3", "ListObjectsV2"),
            ("s3", "DeleteObjects"), ("s3", "CopyObject")} <= operations
    assert denied(role_statements("InstanceRole", bucket), calls, deny=iam_helpers.bucket_policy(bucket)) == []
    # The same trainer publishes and prunes a SageMaker job's run, under the execution role.
    assert denied(role_statements("SageMakerRole", bucket), calls, deny=iam_helpers.bucket_policy(bucket)) == []


def test_the_instance_user_data_reads_and_writes_only_the_bucket():
    """`aws s3 cp` in the training and the Jupyter bootstraps: the wheel, the notebook, the setup log."""
    from launcher import jupyter_userdata, train_userdata

    bucket = "my-gankit"
    run = f"s3://{bucket}/runs/gan-x"
    train = train_userdata.render(train_userdata.TrainBoot(
        job_uri=f"{run}/job.json", wheel_uri=f"{run}/gankit-0.1.0-py3-none-any.whl", wheel_sha256="0" * 64,
        setup_log_uri=f"{run}/setup.log", region=REGION, max_run=600))
    jupyter = jupyter_userdata.render(jupyter_userdata.JupyterBoot(
        token_parameter="/gankit/jupyter/alice/token", region=REGION,
        wheel_uri=f"s3://{bucket}/jupyter/alice/gankit-0.1.0-py3-none-any.whl", wheel_sha256="0" * 64,
        notebook_uri=f"s3://{bucket}/jupyter/alice/pull_and_generate.ipynb", notebook_sha256=NB_SHA, bucket=bucket))
    wanted = iam_helpers.aws_cli_calls(train) + iam_helpers.aws_cli_calls(jupyter)
    assert {action for action, _, _ in wanted} == {"s3:GetObject", "s3:PutObject"}
    assert iam_helpers.refused(role_statements("InstanceRole", bucket), iam_helpers.aws_cli_calls(train)) == []
    assert iam_helpers.refused(role_statements("JupyterRole", bucket), iam_helpers.aws_cli_calls(jupyter)) == []


def test_an_image_job_logs_in_to_ecr_and_pulls_with_the_instance_role(monkeypatch, tmp_path):
    from launcher.remote import train_job
    from tests.aws_helpers import mocked_bucket

    image = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/gankit-trainer:0.1.0"
    monkeypatch.setattr(train_job.subprocess, "run", lambda *a, **k: None)  # no docker here
    with mocked_bucket(monkeypatch, "my-gankit"), recording(tmp_path) as calls:
        train_job.ecr_login(image, REGION)
    assert [(c["service"], c["operation"]) for c in calls] == [("ecr", "GetAuthorizationToken")]
    role = role_statements("InstanceRole", "my-gankit")
    assert denied(role, calls) == []
    assert iam_helpers.refused(role, iam_helpers.image_pull(image)) == []


# --- the Jupyter instance --------------------------------------------------------------------------

def test_the_jupyter_instance_reads_its_own_token_and_no_other(monkeypatch, tmp_path):
    """The launcher tags the token with the instance's ARN; the role's condition compares that tag with the
    ARN EC2 puts on the instance's credentials (ec2:SourceInstanceARN). Both Jupyter's start and the idle
    check read it with `jupyter_start.read_token`."""
    from launcher.jupyter import tokens
    from launcher.remote import jupyter_start
    from tests.aws_helpers import mocked_bucket

    with mocked_bucket(monkeypatch, "my-gankit"):
        ec2, ssm = boto3.client("ec2", REGION), boto3.client("ssm", REGION)
        mine, other = [ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
                       for _ in range(2)]
        tokens.rotate_token(ssm, "alice")
        tokens.bind_token(ssm, REGION, "alice", mine)
        tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=tokens.token_parameter("alice"))["TagList"]
        with recording(tmp_path) as calls:
            assert jupyter_start.read_token(tokens.token_parameter("alice"), REGION)
    assert [(c["service"], c["operation"]) for c in calls] == [("ssm", "GetParameter")]
    resource_tags = {f"aws:ResourceTag/{t['Key']}": t["Value"] for t in tags}
    role = role_statements("JupyterRole", "my-gankit")

    def as_instance(iid):
        return {**resource_tags, "ec2:SourceInstanceARN": f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{iid}"}

    assert denied(role, calls, as_instance(mine)) == []
    assert denied(role, calls, as_instance(other)) != []  # another instance (another user's Jupyter) may not
    # A training instance may not either, not even with the token bound to it: its role has no SSM at all.
    assert denied(role_statements("InstanceRole", "my-gankit"), calls, as_instance(mine)) != []


# --- the SageMaker job -----------------------------------------------------------------------------

def _sagemaker_spec(image=None):
    from launcher.spec import build_spec

    return build_spec(dataset="mnist", epochs=2, backend="sagemaker", bucket="my-gankit", image=image,
                      role=f"arn:aws:iam::{ACCOUNT}:role/gankit-sagemaker", region=REGION)


def test_the_trainers_stop_watcher_may_describe_the_job_the_launcher_names(monkeypatch, tmp_path):
    """The trainer asks DescribeTrainingJob about the job named in its environment (the launcher's request),
    which the SageMaker role allows for gan-* jobs only."""
    import threading

    from launcher.backends import sagemaker
    from tests.aws_helpers import mocked_bucket
    from trainer import sagemaker_stop

    spec = _sagemaker_spec()
    environment = sagemaker.training_job_args(spec, "image")["environment"]
    said = threading.Event()
    with mocked_bucket(monkeypatch, "my-gankit"), recording(tmp_path) as calls:
        with sagemaker_stop.stop_watcher({**environment, "TRAINING_JOB_NAME": spec.job}, every=0.01,
                                         log=lambda message: said.set()):
            assert said.wait(30)  # moto has no such job: one question, then the watch ends
    assert [(c["service"], c["operation"]) for c in calls] == [("sagemaker", "DescribeTrainingJob")]
    assert calls[0]["params"]["TrainingJobName"] == spec.job
    assert denied(role_statements("SageMakerRole", "my-gankit"), calls) == []


def sagemaker_service_requests(request: dict) -> list[tuple[str, str, dict]]:
    """What SageMaker itself does with the execution role for a CreateTrainingJob request (AWS's "CreateTrainingJob
    API: Execution Role Permissions"): pull the training image, read the input channels (and script mode's source
    tarball), sync the checkpoint prefix both ways, write the output path, the job's logs and its metrics."""

    def obj(uri):
        return "arn:aws:s3:::" + uri[len("s3://"):]

    def listing(uri):
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        return ("s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": prefix})

    job = request["TrainingJobName"]
    wanted = iam_helpers.image_pull(request["AlgorithmSpecification"]["TrainingImage"])
    for channel in request["InputDataConfig"]:
        uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
        wanted += [listing(uri), ("s3:GetObject", obj(uri.rstrip("/") + "/MANIFEST.json"), {})]
    source = request["HyperParameters"].get("sagemaker_submit_directory")
    if source:
        wanted.append(("s3:GetObject", obj(source.strip('"')), {}))
    checkpoints = request["CheckpointConfig"]["S3Uri"]
    wanted += [listing(checkpoints), ("s3:GetObject", obj(checkpoints + "/ckpt-000000004/state.json"), {}),
               ("s3:PutObject", obj(checkpoints + "/ckpt-000000004/state.json"), {})]
    wanted.append(("s3:PutObject", obj(f"{request['OutputDataConfig']['S3OutputPath']}/{job}/output/model/x"), {}))
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/TrainingJobs"
    wanted += [("logs:CreateLogGroup", group, {}), ("logs:DescribeLogStreams", f"{group}:log-stream:", {})]
    wanted += [(action, f"{group}:log-stream:{job}/algo-1-1700000000", {})
               for action in ("logs:CreateLogStream", "logs:PutLogEvents")]
    wanted.append(("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}))
    return wanted


@pytest.mark.parametrize("image", [None, f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/gankit-trainer:0.1.0"],
                         ids=["script-mode", "own-image"])
def test_the_sagemaker_role_allows_what_sagemaker_does_for_the_launchers_request(image):
    from launcher.backends import sagemaker

    spec = _sagemaker_spec(image)
    request = sagemaker.build_request(spec, image or sagemaker.prebuilt_image(REGION, spec.instance_type))
    role = role_statements("SageMakerRole", "my-gankit", prebuilt_account=sagemaker.prebuilt_image_account(REGION))
    assert iam_helpers.refused(role, sagemaker_service_requests(request),
                               deny=iam_helpers.bucket_policy("my-gankit")) == []


# --- and the reverse: nothing granted that nothing uses ---------------------------------------------

# Session Manager's agent on the Jupyter instance (its tunnel), not gankit's code: AWS's list for its profile.
SESSION_MANAGER = [("ssm:UpdateInstanceInformation", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0", {})] + [
    (f"ssmmessages:{a}", "*", {}) for a in ("CreateControlChannel", "CreateDataChannel", "OpenControlChannel",
                                             "OpenDataChannel")]
# boto3's transfer manager aborts a multipart upload that failed (the tests' objects are too small to be one).
ABORTED_UPLOAD = [("s3:AbortMultipartUpload", "arn:aws:s3:::my-gankit/runs/j/checkpoints/big", {})]
# Kept though no recorded call needs it: cheap, read-only, and what S3 tools ask before a transfer.
NOT_EXERCISED = {"s3:GetBucketLocation"}


def test_the_roles_grant_nothing_their_calls_do_not_need():
    from launcher.backends import sagemaker

    spec = _sagemaker_spec()
    request = sagemaker.build_request(spec, sagemaker.prebuilt_image(REGION, spec.instance_type))
    # Every kind of call the code paths above record, as one request each.
    s3_object = "arn:aws:s3:::my-gankit/runs/j/x"
    code = [("s3:ListBucket", "arn:aws:s3:::my-gankit", {}), ("s3:GetObject", s3_object, {}),
            ("s3:PutObject", s3_object, {}), ("s3:DeleteObject", s3_object, {})] + ABORTED_UPLOAD
    sagemaker_role = role_statements("SageMakerRole", "my-gankit")
    assert set(iam_helpers.unused(sagemaker_role, code + sagemaker_service_requests(request) + [
        ("sagemaker:DescribeTrainingJob", f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{spec.job}", {})])
               ) <= NOT_EXERCISED
    instance_role = role_statements("InstanceRole", "my-gankit")
    image = iam_helpers.image_pull(f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/gankit-trainer:0.1.0")
    assert set(iam_helpers.unused(instance_role, code + image)) <= NOT_EXERCISED
    # Jupyter: the notebook's listing and reads, the setup's reads, its token, Session Manager; nothing else.
    jupyter_role = role_statements("JupyterRole", "my-gankit")
    notebook = [("s3:ListBucket", "arn:aws:s3:::my-gankit", {}), ("s3:GetObject", s3_object, {})]
    token = [("ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/gankit/jupyter/alice/token", {})]
    assert iam_helpers.unused(jupyter_role, notebook + token + SESSION_MANAGER) == []


# --- an image the roles cannot pull is refused at submit, not when AWS starts the job -------------------

@pytest.mark.parametrize("image", [
    f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/gankit-trainer:0.1.0",
    f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/gankit/trainer@sha256:{'a' * 64}",
    f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/my-trainer:1",
    f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/team/gankit-trainer:1",
    f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/gankit-trainer:1",
])
@pytest.mark.parametrize("backend, role", [("sagemaker", "SageMakerRole"), ("ec2", "InstanceRole")])
def test_submit_takes_exactly_the_ecr_images_the_job_role_can_pull(image, backend, role, monkeypatch):
    from launcher.spec import build_spec
    from trainer.errors import UsageError

    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("GANKIT_ROLE", f"arn:aws:iam::{ACCOUNT}:role/gankit-sagemaker")  # as `infra up` records it
    pullable = not iam_helpers.refused(role_statements(role, "my-gankit"), iam_helpers.image_pull(image))
    options = dict(dataset="mnist", backend=backend, bucket="my-gankit", image=image, region=REGION)
    if pullable:
        assert build_spec(**options).image == image
    else:
        with pytest.raises(UsageError, match="--image"):
            build_spec(**options)
    if backend == "sagemaker":  # a role of one's own is trusted to pull what it was given
        assert build_spec(**options, role=f"arn:aws:iam::{ACCOUNT}:role/my-own").image == image


def test_an_unpullable_image_is_one_line_and_a_usage_exit_before_anything_is_sent(capsys, monkeypatch):
    from launcher.cli import main

    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: any call would fail otherwise
    monkeypatch.setenv("GANKIT_ROLE", f"arn:aws:iam::{ACCOUNT}:role/gankit-sagemaker")
    with pytest.raises(SystemExit) as exit_:
        main(["submit", "--dataset", "mnist", "--backend", "sagemaker", "--bucket", "bkt", "--dry-run",
              "--image", f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mine:1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "pull only gankit*" in err and "gankit-mine" in err, err
