"""`submit --resume JOB`: it continues JOB's run (a resumed job's run is the one it continued), only once
JOB has ended, and only where JOB's checkpoints are. Shown with the toy backend (tests/toy_backend.py)."""

import json
import re

import pytest

from launcher import backends, jobs
from launcher.cli import _duration, main


@pytest.fixture
def toy(monkeypatch, tmp_path):
    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(backends.REGISTRY, "toy", "tests.toy_backend")
    return tmp_path / "home" / "bucket"


def run(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    out, err = capsys.readouterr()
    return stopped.value.code or 0, out, err


def submit(capsys, *extra):
    code, out, err = run(["submit", "--backend", "toy", "--dataset", "mnist", "--epochs", "1", "--detach", *extra],
                         capsys)
    assert code == 0, err
    return re.search(r"submitted (\S+)", out).group(1)


def planned_checkpoints(capsys, *extra) -> str:
    code, out, err = run(["submit", "--backend", "toy", "--dataset", "mnist", "--epochs", "2", "--dry-run", *extra],
                         capsys)
    assert code == 0, err
    return json.loads(out)["hyperparameters"]["checkpoint_dir"]


def test_a_running_job_cannot_be_resumed_and_a_resumed_job_resumes_its_run(toy, capsys, monkeypatch):
    from datetime import datetime, timedelta, timezone

    first = submit(capsys)
    code, _, err = run(["submit", "--backend", "toy", "--dataset", "mnist", "--resume", first], capsys)
    assert code == 2 and err.strip() == (f"error: job {first} is InProgress; `launcher stop {first}` (it "
                                         "checkpoints) or wait for it to end, then resume it")
    assert run(["stop", first], capsys)[0] == 0
    assert run(["stop", first], capsys)[:2] == (0, f"{first} has ended already (Stopped); nothing to stop\n")
    assert planned_checkpoints(capsys, "--resume", first) == f"{toy}/runs/{first}/checkpoints"

    later = datetime.now(timezone.utc) + timedelta(seconds=5)  # two names a few seconds apart, as two real submits get
    monkeypatch.setattr("launcher.spec.datetime", type("Clock", (), {"now": staticmethod(lambda tz=None: later)}))
    second = submit(capsys, "--resume", first)
    assert second != first
    assert run(["stop", second], capsys)[0] == 0
    # Resuming the second job continues the run both belong to: the first's checkpoints, not an empty folder.
    assert planned_checkpoints(capsys, "--resume", second) == f"{toy}/runs/{first}/checkpoints"


def test_a_run_another_job_is_still_continuing_cannot_be_resumed(toy, capsys, monkeypatch):
    # The first job had ended, so `--resume first` was let through while the second still wrote the run's
    # checkpoints: two jobs on one checkpoint prefix (locally the trainer's lock failed one; in S3 nothing does).
    from datetime import datetime, timedelta, timezone

    first = submit(capsys)
    run(["stop", first], capsys)
    later = datetime.now(timezone.utc) + timedelta(seconds=5)
    monkeypatch.setattr("launcher.spec.datetime", type("Clock", (), {"now": staticmethod(lambda tz=None: later)}))
    second = submit(capsys, "--resume", first)
    code, _, err = run(["submit", "--backend", "toy", "--dataset", "mnist", "--resume", first, "--dry-run"], capsys)
    assert code == 2 and f"error: job {second} is InProgress and continues the same run as {first}" in err
    assert len(err.strip().splitlines()) == 1 and f"`launcher stop {second}`" in err
    run(["stop", second], capsys)
    assert planned_checkpoints(capsys, "--resume", first) == f"{toy}/runs/{first}/checkpoints"


def test_two_resumes_of_one_run_at_once_start_one_job(toy, capsys, monkeypatch):
    # Each checked that no job continued the run, then submitted: both were let through (locally the trainer's
    # lock failed one after "submitted"; in S3 both wrote the run's checkpoints).
    import threading
    import time

    from launcher.cli import cli
    from tests import toy_backend
    from trainer.errors import UsageError

    first = submit(capsys)
    run(["stop", first], capsys)
    names = iter(["gan-mnist-cgan-20990101-000000-001", "gan-mnist-cgan-20990101-000000-002"])
    real_submit = toy_backend.submit

    def slow_submit(spec, dry_run=False):  # the staging and upload a real submit takes between check and record
        time.sleep(0.5)
        return real_submit(spec, dry_run)

    monkeypatch.setattr(toy_backend, "submit", slow_submit)
    monkeypatch.setattr("launcher.spec.job_name", lambda *a, **k: next(names))
    barrier, outcomes = threading.Barrier(2), []

    def resume():
        barrier.wait()
        try:  # not run_cli: its signal handlers are for the main thread
            cli.main(["submit", "--backend", "toy", "--dataset", "mnist", "--detach", "--resume", first],
                     standalone_mode=False)
            outcomes.append("submitted")
        except UsageError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=resume) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes)[1] == "submitted" and "is InProgress and continues the same run as" in sorted(outcomes)[0]
    assert len([r for r in jobs.all_jobs() if r.get("resume") == first]) == 1


def test_a_job_is_resumed_only_where_its_checkpoints_are(toy, capsys, monkeypatch):
    first = submit(capsys)
    run(["stop", first], capsys)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    code, _, err = run(["submit", "--backend", "sagemaker", "--bucket", "bkt", "--role",
                        "arn:aws:iam::123456789012:role/r", "--dataset", "mnist", "--resume", first, "--dry-run"],
                       capsys)
    assert code == 2 and f"job {first} keeps its checkpoints under {toy}, not s3://bkt" in err
    assert "--backend toy" in err


@pytest.mark.parametrize("argv, words", [
    (["--dataset", "mnist", "--model", "dcgan"], "that run trained --model cgan, not dcgan"),
    (["--dataset", "fashion-mnist"], "that run trained --dataset mnist, not zalando"),
])
def test_a_run_is_resumed_only_with_its_own_dataset_and_model(toy, capsys, argv, words):
    # `--model dcgan --resume JOB` of a cgan run started the job (in the cloud: an instance, billed), whose trainer
    # then refused the checkpoint, advising trainer flags (--checkpoint-dir) the launcher does not have.
    first = submit(capsys)
    run(["stop", first], capsys)
    code, out, err = run(["submit", "--backend", "toy", *argv, "--resume", first, "--dry-run"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and words in err, err
    assert f"--resume {first}: " in err and "resume it with --dataset mnist --model cgan" in err
    assert planned_checkpoints(capsys, "--resume", first) == f"{toy}/runs/{first}/checkpoints"  # the same: fine


@pytest.mark.parametrize("first_args, argv, words", [
    ([], ["--hp", "seed=7"], "that run trained with seed 0, not 7; resume it with --hp seed=0"),
    (["--hp", "ema=0.99"], ["--hp", "ema=0.999"], "that run trained with ema 0.99, not 0.999; resume it with --hp ema=0.99"),
    ([], ["--preset", "book"], "that run trained with preset sn-hinge, not book; resume it with --preset sn-hinge"),
    ([], ["--batch-size", "16"], "that run trained with batch_size 128, not 16; resume it with --batch-size 128"),
])
def test_a_run_is_resumed_only_with_its_own_recipe_before_anything_bills(toy, capsys, first_args, argv, words):
    # The trainer refuses a checkpoint trained with another seed, loss, EMA, preset or batch, but only once the
    # job has started: in the cloud, an instance billed for a job that could only fail.
    first = submit(capsys, *first_args)
    run(["stop", first], capsys)
    code, out, err = run(["submit", "--backend", "toy", "--dataset", "mnist", *argv, "--resume", first, "--dry-run"],
                         capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and words in err, err
    assert planned_checkpoints(capsys, *first_args, "--hp", "lr=1e-4", "--resume", first)  # the learning rate may change


@pytest.mark.parametrize("info", [
    {"status": "Failed", "started": "2026-12-06T10:00:00+00:00", "ended": None},  # ended when, nobody knows
    {"status": "InProgress", "started": "06/12/2026", "ended": None},  # a record edited by hand
    {"status": "Completed", "started": "2026-12-06T10:00:00+00:00", "ended": "yesterday"},
])
def test_a_duration_nobody_can_know_is_a_dash_not_a_traceback(info):
    assert _duration(info) == "-"
    assert _duration({"status": "Completed", "started": "2026-12-06T10:00:00+00:00",
                      "ended": "2026-12-06T11:30:00+00:00"}) == "1h30m"


def test_the_printed_resume_command_works_as_it_is_and_continues_the_job_as_it_was_asked(toy, capsys, monkeypatch):
    # `launcher stop`, the job's log and `status` say "`launcher submit --resume JOB` continues it"; pasted as it
    # is, that was refused for a missing --dataset, and with --dataset alone it trained 64 epochs at the preset's
    # rates: not the job that was stopped (here 1 epoch cut at step 7, at lr 1e-4).
    from trainer.contract import resume_hint

    first = submit(capsys, "--hp", "max_steps=7", "--hp", "lr=1e-4")
    run(["stop", first], capsys)
    printed = resume_hint(None, environ={"GANKIT_JOB": first}).split("`")[1]
    assert printed == f"launcher submit --resume {first}"
    monkeypatch.setenv("GANKIT_BACKEND", "sagemaker")  # the default since the job was submitted: not where it runs
    code, out, err = run([*printed.split()[1:], "--dry-run"], capsys)
    assert code == 0, err
    hyperparameters = json.loads(out)["hyperparameters"]
    assert {k: hyperparameters[k] for k in ("dataset", "model", "epochs", "max_steps", "lr")} == {
        "dataset": "mnist", "model": "cgan", "epochs": "1", "max_steps": "7", "lr": "1e-4"}
    assert hyperparameters["checkpoint_dir"] == f"{toy}/runs/{first}/checkpoints"
    # What is given again wins: "a larger max_steps resumes it", as `launcher status` says.
    code, out, err = run(["submit", "--backend", "toy", "--resume", first, "--hp", "max_steps=9", "--epochs", "2",
                          "--dry-run"], capsys)
    assert code == 0, err
    assert {k: json.loads(out)["hyperparameters"][k] for k in ("epochs", "max_steps", "lr")} == {
        "epochs": "2", "max_steps": "9", "lr": "1e-4"}
    # And an empty value drops what JOB set, for the trainer's default: its whole epochs, not step 7 again.
    code, out, err = run(["submit", "--backend", "toy", "--resume", first, "--hp", "max_steps=", "--dry-run"], capsys)
    assert code == 0, err
    resumed = json.loads(out)["hyperparameters"]
    assert "max_steps" not in resumed and resumed["lr"] == "1e-4"
    # An empty value names nothing to drop on a new job, or on a resume of a job that never set it: a slip.
    for argv in (["--dataset", "mnist"], ["--resume", first, "--hp", "lr="]):
        code, out, err = run(["submit", "--backend", "toy", *argv, "--hp", "smooth=", "--dry-run"], capsys)
        assert code == 2 and out == "" and err.strip() == (
            "error: --hp smooth= is empty; give it a value (--hp smooth=VALUE), or, with --resume JOB, leave it "
            "empty only to drop an option JOB set")


def test_a_new_job_still_needs_its_dataset(toy, capsys):
    code, out, err = run(["submit", "--backend", "toy", "--epochs", "1", "--dry-run"], capsys)
    assert code == 2 and out == "" and "Missing option '--dataset'" in err and len(err.strip().splitlines()) == 1


def test_a_folder_run_moved_elsewhere_resumes_from_its_new_place(toy, capsys, tmp_path):
    # A folder:PATH run whose pictures moved is resumed with --dataset folder:NEWPATH: the trainer compares the
    # folder's classes and image shape with the checkpoint's; the launcher must not refuse it for the path alone.
    import shutil

    from tests.data_helpers import make_image_folder

    before = make_image_folder(tmp_path / "pictures")
    first = run(["submit", "--backend", "toy", "--dataset", f"folder:{before}", "--epochs", "1", "--detach"],
                capsys)
    assert first[0] == 0, first[2]
    job = re.search(r"submitted (\S+)", first[1]).group(1)
    run(["stop", job], capsys)
    moved = shutil.move(before, tmp_path / "moved")
    code, out, err = run(["submit", "--backend", "toy", "--resume", job, "--dataset", f"folder:{moved}",
                          "--dry-run"], capsys)
    assert code == 0, err
    assert json.loads(out)["hyperparameters"]["checkpoint_dir"] == f"{toy}/runs/{job}/checkpoints"
    # Another kind of dataset is still refused.
    code, out, err = run(["submit", "--backend", "toy", "--resume", job, "--dataset", "mnist", "--dry-run"], capsys)
    assert code == 2 and f"that run trained --dataset folder:{before}, not mnist" in err


def test_a_job_not_started_yet_lists_when_it_was_submitted():
    # SageMaker says when a job started only once it has: until then `list` and `status` show its submission
    # time, not a dash as if nobody knew when it came.
    from launcher.cli import _row

    record = {"job": "gan-1", "backend": "sagemaker", "submitted_at": "2026-12-06T10:00:00+00:00",
              "instance_type": "ml.g5.xlarge", "instance_count": 1}
    assert _row(record, {"status": "InProgress", "started": None})["started"] == "2026-12-06 10:00:00"
    started = {"status": "InProgress", "started": "2026-12-06T10:04:00+00:00"}
    assert _row(record, started)["started"] == "2026-12-06 10:04:00"  # once it has started, when it did
