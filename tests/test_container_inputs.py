"""One writer of the trainer's container inputs for every backend (launcher.backends.base), read back by
the trainer's contract; and one output transport on EC2: the trainer publishes outputs and checkpoints to
the run's prefixes itself, and the instance's runner and user data copy nothing of them again."""

import contextlib
import json
import sys

import boto3
import pytest

from launcher.backends import base, ec2, local, sagemaker
from launcher.remote import train_job
from launcher.spec import build_spec
from launcher.train_userdata import TrainBoot, render
from trainer import contract, layout, s3

HP = ("epochs=1", "batch_size=16", "data_dir=/somewhere/mnist")


def spec_for(backend, hp=HP, **options):
    cloud = {} if backend == "local" else {"bucket": "my-gankit", "role": "arn:aws:iam::123456789012:role/sm",
                                           "region": "us-east-1"}
    return build_spec(dataset="mnist", hp=hp, backend=backend, job="j1", **cloud, **options)


def test_every_backend_hands_the_trainer_the_same_hyperparameters(tmp_path):
    from tests.data_helpers import make_idx_dataset

    here = (*HP[:-1], f"data_dir={make_idx_dataset(tmp_path / 'mnist')}")  # a local dry run checks the files
    local_spec, sm_spec, ec2_spec = spec_for("local", here), spec_for("sagemaker", image="my/image:1"), spec_for("ec2")
    own = {"dataset": "mnist", "model": "cgan", "epochs": "1", "batch_size": "16"}
    assert local.submit(local_spec, dry_run=True)["hyperparameters"] == {
        **own, "output_dir": local_spec.output_uri, "checkpoint_dir": local_spec.checkpoint_uri}
    # SageMaker syncs /opt/ml/checkpoints itself (CheckpointConfig), and brings the data as the channel.
    assert sagemaker.hyperparameters(sm_spec) == {**own, "output_dir": "s3://my-gankit/runs/j1/output"}
    script_mode = sagemaker.hyperparameters(spec_for("sagemaker"))
    assert {k: v for k, v in script_mode.items() if not k.startswith("sagemaker_")} == sagemaker.hyperparameters(sm_spec)
    # EC2 reads its data from S3: the instance's runner names it.
    job = json.loads(json.dumps(ec2.job_document(ec2_spec)))  # as the instance reads job.json
    assert base.container_inputs(job["hyperparameters"], data_uri=job["data_uri"], output_uri=job["output_uri"],
                                 checkpoint_uri=job["checkpoint_uri"]) == {
        **own, "data_dir": "s3://my-gankit/datasets/mnist", "output_dir": "s3://my-gankit/runs/j1/output",
        "checkpoint_dir": "s3://my-gankit/runs/j1/checkpoints"}


def test_values_become_strings_and_data_dir_is_never_passed_through():
    assert base.container_inputs({"epochs": 3, "data_dir": "/mine", "ema": 0.99}, output_uri="o") == {
        "epochs": "3", "ema": "0.99", "output_dir": "o"}


def test_the_contract_reads_what_the_writer_writes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    inputs = base.container_inputs({"dataset": "mnist", "epochs": "2"}, output_uri=str(tmp_path / "out"),
                                   checkpoint_uri=str(tmp_path / "ck"))
    base.write_container_inputs(tmp_path / "ml", inputs, data)
    assert (tmp_path / "ml" / "input" / "data" / "training").resolve() == data.resolve()
    assert (tmp_path / "ml" / "output").is_dir()
    cfg = contract.read_config(tmp_path / "ml")
    assert (cfg.dataset, cfg.epochs) == ("mnist", 2)
    assert (cfg.data_dir, cfg.output_dir, cfg.checkpoint_dir) == (
        str(tmp_path / "ml" / "input" / "data" / "training"), str(tmp_path / "out"), str(tmp_path / "ck"))


def test_a_damaged_staged_copy_in_a_job_says_how_to_stage_it_again(tmp_path):
    """In a job the training channel is the launcher's staged copy: the advice for a --data-dir of one's own
    ("drop --data-dir to use gankit's cache") named a flag the job's user never gave and cannot drop."""
    import shutil

    from tests.data_helpers import make_idx_dataset
    from trainer.errors import UsageError

    channel = make_idx_dataset(tmp_path / "staged", n_train=32, n_test=16, seed=1)
    other = make_idx_dataset(tmp_path / "other", n_train=64, n_test=16, seed=2)
    shutil.copy(other / "train-images-idx3-ubyte.gz", channel)  # half of a staging cut short by an older gankit
    root = tmp_path / "bucket"
    inputs = base.container_inputs({"dataset": "mnist", "epochs": "1", "batch_size": "16"},
                                   output_uri=layout.output_prefix(str(root), "j1"))
    base.write_container_inputs(tmp_path / "ml", inputs, channel)
    with pytest.raises(UsageError) as e:
        contract.run_contract(tmp_path / "ml")
    assert "holds 64 images but" in str(e.value) and "--data-dir" not in str(e.value)
    assert str(e.value).endswith(f"delete the MANIFEST.json of its copy in {root}/datasets/ and submit the job "
                                 "again; the launcher then stages it anew")


def test_a_staged_copy_that_is_not_what_its_manifest_lists_is_refused_before_training(tmp_path):
    """The job read its channel as it found it: a file at the prefix replaced after staging (by hand, by another
    tool) with one of the same shape was trained on, though the manifest there lists other checksums."""
    import shutil

    from tests.data_helpers import make_idx_dataset
    from trainer.dataset_staging import stage_dataset
    from trainer.errors import UsageError

    root = tmp_path / "bucket"
    staged = layout.dataset_prefix(str(root), "mnist")
    stage_dataset("mnist", staged, data_dir=make_idx_dataset(tmp_path / "mnist", n_train=32, n_test=16, seed=1),
                  log=lambda m: None)
    other = make_idx_dataset(tmp_path / "other", n_train=32, n_test=16, seed=2)
    shutil.copy(other / "train-labels-idx1-ubyte.gz", staged)  # 32 labels still, but not the staged ones
    inputs = base.container_inputs({"dataset": "mnist", "epochs": "1", "batch_size": "16", "max_steps": "1"},
                                   output_uri=layout.output_prefix(str(root), "j1"))
    base.write_container_inputs(tmp_path / "ml", inputs, staged)
    with pytest.raises(UsageError) as e:
        contract.run_contract(tmp_path / "ml")
    message = str(e.value)
    assert "train-labels-idx1-ubyte.gz" in message and "MANIFEST.json" in message and "\n" not in message
    assert message.endswith(f"delete the MANIFEST.json of its copy in {root}/datasets/ and submit the job again; "
                            "the launcher then stages it anew")
    assert not (root / "runs" / "j1" / "output").exists()  # refused before the run began


def test_the_ec2_runner_lays_out_the_contract_with_the_runs_s3_paths(tmp_path):
    job = ec2.job_document(spec_for("ec2"))
    train_job.write_contract(tmp_path / "ml", job)
    cfg = contract.read_config(tmp_path / "ml")
    assert (cfg.dataset, cfg.model, cfg.epochs, cfg.batch_size) == ("mnist", "cgan", 1, 16)
    assert (cfg.data_dir, cfg.output_dir, cfg.checkpoint_dir) == (
        "s3://my-gankit/datasets/mnist", "s3://my-gankit/runs/j1/output", "s3://my-gankit/runs/j1/checkpoints")
    assert not (tmp_path / "ml" / "input" / "data").exists()  # no channel: the trainer stages from S3


@pytest.mark.parametrize("environ, job", [({}, "j1"), ({"TRAINING_JOB_NAME": "j2"}, "j2"), ({"GANKIT_JOB": "j3"}, "j3")])
def test_a_stopped_job_says_to_resume_it_with_the_launcher(tmp_path, monkeypatch, environ, job):
    # A job's log said "run the same command to resume": the launcher ran that command, not the user.
    from trainer.errors import Stopped
    from trainer.stopping import train_until_stopped

    hints = []

    def stopped_run(cfg, stop_requested, resume_hint):
        hints.append(resume_hint)  # what the run records as how it resumes (run.json, its report)
        return {"stopped": True, "steps": 7, "chief": True}

    monkeypatch.setattr("trainer.train.train", stopped_run)
    for key in ("TRAINING_JOB_NAME", "GANKIT_JOB"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    train_job.write_contract(tmp_path / "ml", ec2.job_document(spec_for("ec2")))  # the run of job j1
    monkeypatch.setattr(contract, "stop_watcher", contextlib.nullcontext)  # it would ask SageMaker about the job
    with pytest.raises(Stopped) as stopped:
        contract.run_contract(tmp_path / "ml")
    advice = f"`launcher submit --resume {job}` continues it"
    assert hints == [advice] and str(stopped.value).endswith(f"a checkpoint is written and {advice}")

    # By hand, `python -m trainer train` says what it always said.
    with pytest.raises(Stopped) as stopped:
        train_until_stopped(contract.read_config(tmp_path / "ml"))
    assert hints[1] == "run the same command to resume"
    assert str(stopped.value) == "stopped by SIGTERM at step 7; a checkpoint is written and the same command resumes"


# A stand-in for the trainer's contract (the runner is the subject): it publishes to the output prefix
# as the trainer does, then leaves its copies in the /opt/ml tree as the contract does after training.
FAKE_TRAINER = r'''
import json, os, pathlib, boto3
root = pathlib.Path(os.environ["GANKIT_SM_ROOT"])
hp = json.loads((root / "input" / "config" / "hyperparameters.json").read_text())
bucket, _, key = hp["output_dir"].removeprefix("s3://").partition("/")
boto3.client("s3").put_object(Bucket=bucket, Key=key + "/generator/generator.json", Body=b"{}")
for folder in ("model", "output/data/generator"):
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / "generator.json").write_text("{}")
'''


def test_on_ec2_only_the_trainer_publishes_outputs(aws_env, monkeypatch, tmp_path):
    boto3.client("s3").create_bucket(Bucket="gankit-one-copy")  # the moto server: the trainer is a subprocess
    bucket = "s3://gankit-one-copy"
    spec = build_spec(dataset="mnist", backend="ec2", bucket=bucket, region="us-east-1", job="e1")
    uri = train_job.job_uri(bucket, "e1")
    s3.write_bytes(uri, json.dumps(ec2.job_document(spec)).encode())
    monkeypatch.setattr(train_job, "trainer_command", lambda job, root: [sys.executable, "-c", FAKE_TRAINER])
    assert train_job.run_job(uri, tmp_path)["status"] == "Completed", (tmp_path / "train.log").read_text()
    # The runner adds its log and status; the outputs are the trainer's one copy, nothing else.
    assert sorted(s3.list_objects(layout.run_prefix(bucket, "e1"))) == [
        "job.json", "output/generator/generator.json", "status.json", "train.log"]


def test_the_ec2_user_data_copies_no_outputs():
    script = render(TrainBoot(job_uri="s3://b/runs/e1/job.json", wheel_uri="s3://b/runs/e1/gankit-1-py3-none-any.whl",
                              wheel_sha256="0" * 64, setup_log_uri="s3://b/runs/e1/setup.log", region="us-east-1",
                              max_run=3600))
    copies = [line.strip() for line in script.splitlines() if "aws s3" in line]
    assert len(copies) == 2 and "sync" not in script
    assert copies[0].startswith("finish() { aws s3 cp --only-show-errors /var/log/gankit-job.log s3://b/runs/e1/setup.log")
    assert copies[1] == ("aws s3 cp --only-show-errors s3://b/runs/e1/gankit-1-py3-none-any.whl "
                         "/opt/gankit-job/gankit-1-py3-none-any.whl")
