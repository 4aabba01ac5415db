"""From CLI options to one validated job spec: names, hyperparameters, durations, prices, and one-line errors."""

from datetime import datetime, timezone

import pytest

from launcher import settings
from launcher.cli import main
from launcher.durations import parse_duration
from launcher.pricing import GPU_INSTANCE_TYPES, check_instance_type, estimate, price_per_hour
from launcher.spec import build_spec, job_name, parse_hp
from trainer.errors import UsageError

NOW = datetime(2026, 11, 22, 18, 0, 5, tzinfo=timezone.utc)
ROLE_ARN = "arn:aws:iam::123456789012:role/gankit-sagemaker"


def test_job_names_follow_sagemakers_rule():
    assert job_name("zalando", "cgan", NOW) == "gan-zalando-cgan-20261122-180005-000"
    long = job_name("folder:/data/" + "very_long_name" * 8, "dcgan", NOW)
    assert len(long) <= 63 and long.startswith("gan-folder-very-long") and long.endswith("-dcgan-20261122-180005-000")
    assert all(c.isalnum() or c == "-" for c in long) and "--" not in long


def test_a_sweep_submitting_twice_in_one_second_gets_two_names():
    later = NOW.replace(microsecond=1_000)  # one millisecond on
    assert job_name("zalando", "cgan", later) == "gan-zalando-cgan-20261122-180005-001" != job_name("zalando", "cgan", NOW)


def test_the_local_backend_claims_a_name_once_and_a_refused_job_leaves_no_folder(tmp_path, monkeypatch):
    from launcher.backends import local

    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))
    spec = build_spec(dataset="mnist", hp=[f"data_dir={tmp_path / 'missing'}"], now=NOW)
    with pytest.raises(UsageError, match="missing"):
        local.submit(spec)
    assert not local.job_root(spec.job).exists()  # the refused job's folder is gone, name free again
    local.job_root(spec.job).mkdir(parents=True)  # another submit got this name first
    (local.job_root(spec.job) / "theirs").write_text("kept")
    with pytest.raises(UsageError, match=f"job {spec.job} exists already; submit again"):
        local.submit(spec)
    assert (local.job_root(spec.job) / "theirs").read_text() == "kept"


def test_a_local_dry_run_checks_hp_data_dir_as_the_cloud_ones_do(tmp_path, monkeypatch):
    # It printed its plan and exited 0 for a data_dir that does not exist; the real submit then refused it.
    from launcher.backends import local
    from tests.data_helpers import make_idx_dataset

    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))
    spec = build_spec(dataset="mnist", hp=[f"data_dir={tmp_path / 'missing'}"], now=NOW)
    with pytest.raises(UsageError, match=r"--hp data_dir .*missing"):
        local.submit(spec, dry_run=True)
    assert not (tmp_path / "home").exists()
    good = build_spec(dataset="mnist", hp=[f"data_dir={make_idx_dataset(tmp_path / 'mnist', n_train=16, n_test=8)}"],
                      now=NOW)
    assert local.submit(good, dry_run=True)["backend"] == "local"


def test_a_local_job_whose_record_cannot_be_written_is_one_line_and_does_not_run_on_unseen(tmp_path, monkeypatch):
    # The trainer was started, then the record failed (a full disk): a traceback, and a trainer nobody could
    # list, stop or pull ran on detached.
    import subprocess
    import sys

    from launcher import jobs
    from launcher.backends import local
    from tests.data_helpers import make_idx_dataset
    from trainer.errors import GankitError

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    started, popen = [], subprocess.Popen

    def recorded(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(local, "_command", lambda exit_file, max_run: [sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setattr(subprocess, "Popen", recorded)
    monkeypatch.setattr(jobs, "atomic_write_text", full_disk)
    spec = build_spec(dataset="mnist", hp=[f"data_dir={make_idx_dataset(tmp_path / 'mnist', n_train=16, n_test=8)}"],
                      now=NOW)
    try:
        with pytest.raises(GankitError, match="could not be written .*No space left on device.*trainer was stopped") as e:
            local.submit(spec)
        assert "\n" not in str(e.value) and spec.job in str(e.value)
        assert len(started) == 1 and started[0].poll() is not None  # the trainer is gone
        assert not local.job_root(spec.job).exists()
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def test_a_local_job_whose_inputs_cannot_be_written_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch):
    from launcher.backends import local
    from tests.data_helpers import make_idx_dataset
    from trainer import fsutil
    from trainer.errors import GankitError

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(fsutil, "atomic_write_text", full_disk)  # hyperparameters.json, beside the record
    spec = build_spec(dataset="mnist", hp=[f"data_dir={make_idx_dataset(tmp_path / 'mnist', n_train=16, n_test=8)}"],
                      now=NOW)
    with pytest.raises(GankitError, match=f"job {spec.job} could not be written .*No space left on device") as e:
        local.submit(spec)
    assert "\n" not in str(e.value) and not local.job_root(spec.job).exists()


def test_a_relative_gankit_home_is_recorded_as_the_folder_it_names_now(tmp_path, monkeypatch):
    # A job submitted with GANKIT_HOME=rel recorded rel/bucket/...: `launcher pull JOB` run from any other folder
    # said "nothing at rel/bucket/runs/JOB/output, yet job JOB completed", and --resume found no checkpoints.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GANKIT_HOME", "rel")
    spec = build_spec(dataset="mnist", now=NOW)
    assert spec.output_uri == f"{tmp_path}/rel/bucket/runs/{spec.job}/output"
    assert spec.checkpoint_uri == f"{tmp_path}/rel/bucket/runs/{spec.job}/checkpoints"


def test_hyperparameters_are_strings_checked_by_the_trainer_itself():
    spec = build_spec(dataset="fashion-mnist", epochs=3, hp=["lr=1e-4", "max-steps=10"], now=NOW)
    assert spec.backend == "local" and spec.dataset == "zalando"
    assert spec.hyperparameters == {"dataset": "zalando", "model": "cgan", "epochs": "3", "lr": "1e-4", "max_steps": "10"}
    assert spec.output_uri == f"{settings.local_root()}/runs/{spec.job}/output"
    with pytest.raises(UsageError, match="malformed"):
        parse_hp(["lr"])
    with pytest.raises(UsageError, match="no such option"):
        build_spec(dataset="mnist", hp=["learning_rate=1"])
    with pytest.raises(UsageError, match="lr"):
        build_spec(dataset="mnist", hp=["lr=2"])
    with pytest.raises(UsageError, match="layout decides"):
        build_spec(dataset="mnist", hp=["output_dir=/tmp/x"])
    with pytest.raises(UsageError, match="batch-size"):
        build_spec(dataset="mnist", batch_size=0)
    with pytest.raises(UsageError, match="--data-dir 's3://': is not an S3 URI"):  # once a dry run's plan
        build_spec(dataset="mnist", hp=["data_dir=s3://"])


@pytest.mark.parametrize("argv, words", [
    (["--hp", "lr=1e-4", "--hp", "lr=2e-4"], "--hp lr is given twice (1e-4 and 2e-4)"),
    (["--hp", "max-steps=3", "--hp", "max_steps=4"], "--hp max_steps is given twice"),
    (["--epochs", "5", "--hp", "epochs=3"], "--epochs 5 and --hp epochs=3 both set epochs"),
    (["--preset", "projection", "--hp", "preset=book"], "--preset projection and --hp preset=book"),
    (["--batch-size", "16", "--hp", "batch-size=8"], "--batch-size 16 and --hp batch_size=8"),
])
def test_a_value_given_twice_is_refused_rather_than_the_last_one_winning(capsys, argv, words):
    # `--epochs 5 --hp epochs=3` submitted a 3-epoch job, and of two --hp lr= the last one won, without a word.
    with pytest.raises(SystemExit) as e:
        main(["submit", "--dataset", "mnist", *argv, "--dry-run"])
    captured = capsys.readouterr()
    assert e.value.code == 2 and captured.err.count("\n") == 1 and words in captured.err, captured.err
    assert "give it once" in captured.err and captured.out == ""
    assert build_spec(dataset="mnist", hp=["lr=1e-4", "lr=1e-4"], now=NOW).hyperparameters["lr"] == "1e-4"


def test_resume_continues_the_named_runs_prefixes():
    spec = build_spec(dataset="mnist", resume="gan-mnist-cgan-1", now=NOW)
    assert spec.checkpoint_uri.endswith("/runs/gan-mnist-cgan-1/checkpoints") and spec.job != "gan-mnist-cgan-1"



def test_a_resume_inherits_the_runs_hyperparameters_but_never_the_ones_the_launcher_sets():
    # A record's hyperparameters are a file in the user's folder: an output_dir there (an edit, an older record)
    # would send the resumed job's outputs elsewhere, and its dataset would override the one this command names.
    inherited = {"dataset": "zalando", "model": "cgan", "lr": "1e-4", "output_dir": "/elsewhere",
                 "checkpoint_dir": "/elsewhere/ckpt"}
    spec = build_spec(dataset="mnist", resume="gan-mnist-cgan-1", inherited=inherited, now=NOW)
    assert spec.hyperparameters == {"dataset": "mnist", "model": "cgan", "lr": "1e-4"}

def test_a_local_job_has_a_max_run_only_when_one_is_given():
    # A local job once took --max-run, checked it and ignored it, while `submit --help` said "it is stopped after".
    from launcher.backends import local

    assert build_spec(dataset="mnist", now=NOW).max_run is None  # the laptop default: run until done
    spec = build_spec(dataset="mnist", max_run="90s", now=NOW)
    assert spec.max_run == 90
    assert local.submit(spec, dry_run=True)["max_run"] == 90
    assert local.plan_rows(spec) == [("max run", "1m30s, then it is stopped with a checkpoint (--resume continues it)")]


def test_the_local_backend_refuses_several_instances(capsys):
    # It ran one trainer while `status` showed "local x2".
    with pytest.raises(SystemExit) as e:
        main(["submit", "--dataset", "mnist", "--instance-count", "2", "--dry-run"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "local backend runs one trainer" in err, err


@pytest.mark.parametrize("argv, words", [
    (["--bucket", "my-gankit", "--role", ROLE_ARN], "--bucket, --role are for a cloud job"),
    (["--instance-type", "ml.g5.xlarge"], "--instance-type is for a cloud job"),
    (["--image", "123456789012.dkr.ecr.us-east-1.amazonaws.com/gankit:1", "--region", "us-east-1"],
     "--image, --region are for a cloud job"),
])
def test_cloud_flags_on_the_local_backend_are_refused_not_ignored(capsys, argv, words):
    # Without `infra up` the default backend is local: `submit --bucket B --role R --instance-type ml.g5.xlarge`
    # ignored all three and trained on this machine, for hours on a laptop CPU.
    with pytest.raises(SystemExit) as e:
        main(["submit", "--dataset", "mnist", *argv, "--dry-run"])
    captured = capsys.readouterr()
    assert e.value.code == 2 and captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert words in captured.err and "on the local backend; add --backend sagemaker (or ec2)" in captured.err
    settings.update(instance_type="ml.g5.xlarge", region="us-east-1")  # settings are for whichever backend runs
    assert build_spec(dataset="mnist", now=NOW).backend == "local"


@pytest.mark.parametrize("count", ["0", "-1"])
def test_no_instances_is_refused_on_every_backend(capsys, count):
    for backend in ("local", "sagemaker"):
        with pytest.raises(SystemExit) as e:
            main(["submit", "--dataset", "mnist", "--backend", backend, "--instance-count", count, "--dry-run"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err == f"error: --instance-count {count}: must be at least 1\n", err


def test_cloud_specs_need_a_bucket_a_role_and_a_gpu(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with pytest.raises(UsageError, match="launcher infra up"):
        build_spec(dataset="mnist", backend="sagemaker")
    with pytest.raises(UsageError, match="--role"):
        build_spec(dataset="mnist", backend="sagemaker", bucket="bkt")
    spec = build_spec(dataset="mnist", backend="sagemaker", bucket="bkt", role=ROLE_ARN, now=NOW)
    assert (spec.root, spec.instance_type, spec.spot, spec.max_run, spec.region) == (
        "s3://bkt", "ml.p3.2xlarge", True, 7200, "eu-west-1")
    assert spec.max_wait >= spec.max_run
    assert build_spec(dataset="mnist", backend="ec2", bucket="bkt", instance_type="ml.g5.xlarge").instance_type == "g5.xlarge"
    with pytest.raises(UsageError, match="choose one of ml.p3.2xlarge, "):
        build_spec(dataset="mnist", backend="sagemaker", bucket="bkt", role="r", instance_type="ml.m5.large")
    with pytest.raises(UsageError, match="2h"):
        build_spec(dataset="mnist", backend="sagemaker", bucket="bkt", role="r", max_run="two hours")
    settings.update(bucket="from-config", role=ROLE_ARN)
    assert settings.default_backend() == "sagemaker"  # AWS configured: the cloud is the default
    assert build_spec(dataset="mnist").root == "s3://from-config"


def test_durations_and_prices():
    assert [parse_duration(t) for t in ("2h", "90m", "1h30m", "45s", "3600")] == [7200, 5400, 5400, 45, 3600]
    for bad in ("", "0", "2 hours", "-1h", "h", "29d", "2419201", "1" * 400):
        with pytest.raises(UsageError):
            parse_duration(bad)
    assert parse_duration("28d") == parse_duration("2419200") == 28 * 86400
    assert check_instance_type("ml.g6.xlarge", "sagemaker") == "ml.g6.xlarge"
    with pytest.raises(UsageError, match="ml.p3.2xlarge"):
        check_instance_type("p3.2xlarge", "sagemaker")
    # The refusal itself names every type it would take (it once sent users to a --help that lists none).
    for backend, good in GPU_INSTANCE_TYPES.items():
        with pytest.raises(UsageError) as refused:
            check_instance_type("x9.huge", backend)
        assert str(refused.value).endswith(f"choose one of {', '.join(good)}") and "--help" not in str(refused.value)
    assert estimate("ml.p3.2xlarge", 2, False, 1800) == pytest.approx(price_per_hour("ml.p3.2xlarge", False))
    assert 0 < price_per_hour("ml.p3.2xlarge", True) < price_per_hour("ml.p3.2xlarge", False)


@pytest.mark.parametrize("argv, code, message", [
    (["submit", "--dataset", "cifar"], 2, "unknown dataset"),
    (["submit", "--dataset", "mnist", "--hp", "lr"], 2, "--hp 'lr' is malformed"),
    (["submit", "--dataset", "mnist", "--max-run", "soon"], 2, "is not a duration"),
    # SageMaker's own ceiling, for every backend (EC2's `shutdown -h +minutes` too).
    (["submit", "--dataset", "mnist", "--max-run", "99999999d"], 2, "is longer than 28 days, the most"),
    (["submit", "--dataset", "mnist", "--backend", "ec2", "--max-run", "28d1s"], 2, "is longer than 28 days"),
    (["submit", "--dataset", "mnist", "--max-run", "9" * 400 + "d"], 2, "is longer than 28 days"),
    (["submit", "--dataset", "mnist", "--backend", "sagemaker"], 2, "launcher infra up"),
    (["submit", "--dataset", "mnist", "--backend", "sagemaker", "--bucket", "bkt", "--role", ROLE_ARN,
      "--instance-type", "ml.t3.medium"], 2, "unknown GPU instance type"),
    (["status", "gan-nope"], 2, "unknown job gan-nope;"),
    (["config", "set", "colour", "blue"], 2, "unknown setting colour"),
    (["config", "set", "backend-x", "ec2"], 2, "unknown setting backend-x;"),  # as typed, not as backend_x
])
def test_bad_input_is_one_line_and_a_usage_exit(argv, code, message, capsys, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == code and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_no_region_and_no_credentials_are_named(capsys, monkeypatch, tmp_path):
    for var in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with pytest.raises(SystemExit):
        main(["submit", "--dataset", "mnist", "--backend", "sagemaker", "--bucket", "bkt", "--role", ROLE_ARN])
    assert "no AWS region" in capsys.readouterr().err
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(SystemExit) as exit_:
        main(["submit", "--dataset", "mnist", "--backend", "sagemaker", "--bucket", "bkt", "--role", ROLE_ARN,
              "--image", "123.dkr.ecr.us-east-1.amazonaws.com/gankit:1"])
    assert exit_.value.code == 2 and "no AWS credentials" in capsys.readouterr().err


def test_a_dest_that_is_a_file_is_refused_before_the_job_starts(capsys, tmp_path):
    from launcher import jobs

    (tmp_path / "afile").write_bytes(b"mine")
    with pytest.raises(SystemExit) as exit_:
        main(["submit", "--dataset", "mnist", "--backend", "local", "--wait", "--dest", str(tmp_path / "afile" / "run"),
              "--hp", f"data_dir={tmp_path / 'data'}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "--dest" in err and "is a file" in err, err
    assert jobs.all_jobs() == []  # nothing was submitted
    assert (tmp_path / "afile").read_bytes() == b"mine"


@pytest.mark.parametrize("role", ["r", "arn:aws:iam::123:role/x", "arn:aws:iam::123456789012:user/x",
                                  "role=arn:aws:iam::123456789012:role/x", "arn:aws:iam::123456789012:role/x y"])
def test_a_role_that_is_not_a_role_arn_is_refused_before_the_plan(capsys, monkeypatch, role):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: any call would fail otherwise
    with pytest.raises(SystemExit) as exit_:
        main(["submit", "--dataset", "mnist", "--backend", "sagemaker", "--bucket", "bkt", "--role", role])
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and "is not an IAM role ARN" in captured.err and captured.err.count("\n") == 1
    assert "cost" not in captured.out  # no plan printed for a job that cannot start


@pytest.mark.parametrize("where", ["environment", "config file"])
def test_a_bad_role_setting_is_named_as_the_setting_not_as_a_flag(capsys, monkeypatch, where):
    # It was reported as "--role 'r'", a flag the user never passed.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: any call would fail otherwise
    if where == "environment":
        monkeypatch.setenv("GANKIT_ROLE", "r")
    else:
        settings.config_path().parent.mkdir(parents=True, exist_ok=True)
        settings.config_path().write_text('{"role": "r"}')  # by hand: `config set` refuses it
    with pytest.raises(SystemExit) as exit_:
        main(["submit", "--dataset", "mnist", "--backend", "sagemaker", "--bucket", "bkt", "--dry-run"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: the role setting (GANKIT_ROLE or `launcher config`) 'r' is not an IAM role ARN"), err


@pytest.mark.parametrize("backend", ["ec2", "sagemaker"])
@pytest.mark.parametrize("where", ["flag", "environment"])
def test_an_image_that_is_not_an_image_reference_is_refused_before_the_plan(capsys, monkeypatch, backend, where):
    # An EC2 instance handed it to `docker run`, which read `--privileged` as one of its own options; either
    # backend failed on a typo only once the job had started, after its files were uploaded.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: any call would fail otherwise
    argv = ["submit", "--dataset", "mnist", "--backend", backend, "--bucket", "bkt", "--role", ROLE_ARN, "--dry-run"]
    if where == "flag":
        argv.append("--image=--privileged")
    else:
        monkeypatch.setenv("GANKIT_IMAGE", "--privileged")
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    captured = capsys.readouterr()
    source = "--image" if where == "flag" else "the image setting (GANKIT_IMAGE or `launcher config`)"
    assert exit_.value.code == 2 and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"error: {source} '--privileged' is not a container image reference"), captured.err
    assert "cost" not in captured.out  # no plan printed for a job that cannot start


@pytest.mark.parametrize("backend, value, flag", [("sagemaker", "foo", True), ("sagemaker", "foo", False),
                                                  ("ec2", "ml.foo", False)])
def test_an_unknown_instance_type_is_shown_as_it_was_set(monkeypatch, backend, value, flag):
    # GANKIT_INSTANCE_TYPE=foo was reported as 'ml.foo', a name the user never wrote.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    if not flag:
        monkeypatch.setenv("GANKIT_INSTANCE_TYPE", value)
    with pytest.raises(UsageError) as refused:
        build_spec(dataset="mnist", backend=backend, bucket="bkt", role=ROLE_ARN,
                   instance_type=value if flag else None)
    assert str(refused.value).startswith(f"unknown GPU instance type {value!r} for {backend}"), refused.value
    assert ("GANKIT_INSTANCE_TYPE or `launcher config`" in str(refused.value)) == (not flag)


def test_hp_cannot_contradict_dataset_or_model(capsys):
    for key in ("dataset=zalando", "model=dcgan"):
        with pytest.raises(UsageError, match=f"--hp {key.split('=')[0]} cannot be set: use --"):
            build_spec(dataset="mnist", hp=[key], now=NOW)


def test_the_ec2_cost_ceiling_counts_the_setup_its_instance_may_bill(capsys, monkeypatch):
    from launcher.backends import ec2
    from launcher.cli import _plan_rows

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    spec = build_spec(dataset="mnist", backend="ec2", bucket="bkt", instance_type="g5.xlarge", spot=False,
                      max_run="2h", now=NOW)
    cost = dict(_plan_rows(spec, ec2))["cost"]
    assert f"at most ${estimate('g5.xlarge', 1, False, 2 * 3600 + 30 * 60):,.2f} on-demand for 2h30m " in cost
    assert "(--max-run + up to 30 min of setup)" in cost
