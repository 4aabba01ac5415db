"""SIGTERM and SIGHUP stop a launcher or trainer command as Ctrl-C does: its clean-up runs (no temp file left
where the user finds it), one line (for a pull, how to fetch the rest), exit 128 + the signal. Ctrl-C while `submit --wait` watches says the job
runs on and how to stop, watch or pull it."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from launcher import jobs
from tests.cli_helpers import signals_as_at_a_terminal

ROOT = Path(__file__).parents[1]


def hidden_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob(".*") if p.is_file())


def local_record(tmp_path, job="j1") -> Path:
    """A finished local job whose output folder holds a generator-less run (pull copies it, then says so)."""
    out = tmp_path / "bucket" / "runs" / job / "output"
    (out / "samples").mkdir(parents=True)
    (out / "metrics.jsonl").write_text("{}\n")
    (out / "samples" / "big.bin").write_bytes(b"x" * (1 << 20))
    sm_root = jobs.jobs_dir() / job  # where the local backend keeps its job's files
    jobs.save({"job": job, "backend": "local", "output_uri": str(out), "pid": 1, "log": str(sm_root / "train.log"),
               "sm_root": str(sm_root)})
    return out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_mid_pull_leaves_no_temp_file_and_says_so(tmp_path, signum):
    local_record(tmp_path)
    dest, ready = tmp_path / "dest", tmp_path / "ready"
    # The copy of big.bin writes half its bytes into its temp file, says it is there, and waits for the signal.
    script = textwrap.dedent(f"""
        import pathlib, shutil, time
        copy = shutil.copyfileobj
        def copy_half(src, dst, *args, **kwargs):
            if not src.name.endswith("big.bin"):
                return copy(src, dst, *args, **kwargs)
            dst.write(src.read(1 << 19)); dst.flush()
            pathlib.Path({str(ready)!r}).touch()
            time.sleep(120)
        shutil.copyfileobj = copy_half
        from launcher.cli import main
        main(["pull", "j1", "--dest", {str(dest)!r}])
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=signals_as_at_a_terminal)
    deadline = time.monotonic() + 60
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), proc.communicate(timeout=10)
    assert [p for p in hidden_files(dest) if p.startswith("samples/")]  # the half-written copy, mid-pull
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    name = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name
    assert err.strip() == f"error: the pull of j1 stopped on {name}; `launcher pull j1 --dest {dest}` fetches the rest", err
    assert hidden_files(dest) == []  # the partial copy is gone; what is there is complete


def test_a_signal_someone_ignored_stays_ignored(tmp_path):
    """`nohup launcher pull ...`: SIGHUP was set to be ignored, and the launcher leaves it so."""
    from trainer.errors import terminate_as_interrupt

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with terminate_as_interrupt():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back after the command
    finally:
        signal.signal(signal.SIGHUP, previous)


@pytest.fixture
def toy(monkeypatch, tmp_path):
    from launcher import backends

    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(backends.REGISTRY, "toy", "tests.toy_backend")
    from tests import toy_backend

    return toy_backend


def run(argv, capsys):
    from launcher.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(argv)
    out, err = capsys.readouterr()
    return stopped.value.code or 0, out, err


def test_ctrl_c_while_submit_waits_says_the_job_runs_on_and_how_to_stop_it(toy, monkeypatch, capsys, tmp_path):
    def logs(record, follow, print_line):
        print_line("toy: epoch 1")
        raise KeyboardInterrupt

    monkeypatch.setattr(toy, "logs", logs)
    code, out, err = run(["submit", "--backend", "toy", "--dataset", "mnist", "--wait", "--dest",
                          str(tmp_path / "d")], capsys)
    job = out.split("submitted ")[1].split()[0]
    assert code == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: stopped watching {job} on Ctrl-C"), err
    assert f"`launcher stop {job}`" in err and f"`launcher logs {job} --follow`" in err
    assert f"`launcher pull {job} --dest {tmp_path / 'd'}`" in err
    assert "Traceback" not in err


def test_ctrl_c_while_logs_follows_says_the_job_runs_on_and_how_to_stop_it(toy, monkeypatch, capsys):
    def logs(*args, **kwargs):
        raise KeyboardInterrupt

    code, out, err = run(["submit", "--backend", "toy", "--dataset", "mnist", "--detach"], capsys)
    job = out.split("submitted ")[1].split()[0]
    monkeypatch.setattr(toy, "logs", logs)
    monkeypatch.setattr(toy, "CLOUD", True)  # followed as a cloud job's log: it bills on
    code, out, err = run(["logs", job, "--follow"], capsys)
    assert code == 130, err
    assert err.strip() == (f"error: stopped watching {job} on Ctrl-C (SIGINT); the job runs on (and bills): "
                           f"`launcher stop {job}` stops it, `launcher logs {job} --follow` watches it again, "
                           f"`launcher pull {job}` fetches its outputs once it completes"), err


def test_sigterm_while_submit_pulls_says_the_pull_resumes(toy, monkeypatch, capsys, tmp_path):
    from launcher import pull
    from trainer.errors import Terminated

    monkeypatch.setattr(toy, "describe", lambda record: {"status": "Completed"})

    def pull_stopped(record, dest, log):
        raise Terminated(signal.SIGTERM)

    monkeypatch.setattr(pull, "pull", pull_stopped)
    code, out, err = run(["submit", "--backend", "toy", "--dataset", "mnist", "--wait", "--dest",
                          str(tmp_path / "d")], capsys)
    job = out.split("submitted ")[1].split()[0]
    assert code == 143, err
    assert err.strip() == (f"error: the pull of {job} stopped on SIGTERM; the job has completed, and "
                           f"`launcher pull {job} --dest {tmp_path / 'd'}` fetches the rest"), err


# Ctrl-C the moment the CLI's imports reach Click (~0.1 s in, of ~0.25 s): what a user pressing it at once hits.
CTRL_C_IN_IMPORTS = """
import importlib.abc, os, signal, sys
class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "click":
            os.kill(os.getpid(), signal.SIGINT)
sys.meta_path.insert(0, CtrlC())
"""


@pytest.mark.parametrize("start", ["console script", "python -m launcher", "python -m trainer"])
def test_ctrl_c_while_the_cli_imports_exits_130_without_a_traceback(start):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the dev extra's tomli is the same parser
        import tomli as tomllib

    if start == "console script":  # what pip's `launcher` script runs
        module, _, attr = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["launcher"].partition(":")
        run = f"from {module} import {attr}\nsys.exit({attr}())"
    else:
        run = f"import runpy\nrunpy.run_module({start.split()[-1]!r}, run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", CTRL_C_IN_IMPORTS + run, "--help"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=signals_as_at_a_terminal, timeout=60)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert "Commands:" not in proc.stdout  # stopped before the help


# --- a cloud submit interrupted as its job is created -----------------------------------------------

@pytest.fixture
def moto_bucket(monkeypatch):
    from tests.aws_helpers import mocked_bucket

    with mocked_bucket(monkeypatch, "gankit-interrupts") as root:
        yield root


def sagemaker_submit_interrupted(moto_bucket, monkeypatch, tmp_path, capsys, hook, interrupt=KeyboardInterrupt):
    """`launcher submit --backend sagemaker`, with Ctrl-C raised by a botocore hook at `hook` of its
    CreateTrainingJob (`before-send`: moto receives the request first, as SageMaker would): (exit code, stderr,
    the jobs SageMaker has)."""
    import boto3
    from moto.core.models import botocore_stubber

    from tests.data_helpers import make_idx_dataset
    from tests.test_launcher_sagemaker import sagemaker_client

    def ctrl_c(event_name, **kwargs):
        if event_name.startswith("before-send"):
            botocore_stubber(event_name=event_name, request=kwargs["request"])  # SageMaker gets it...
        raise interrupt()  # ...and the launcher is stopped before the reply is read

    sagemaker_client(monkeypatch).meta.events.register(f"{hook}.sagemaker.CreateTrainingJob", ctrl_c)
    data = make_idx_dataset(tmp_path / "mnist", n_train=64, n_test=16)
    code, _, err = run(["submit", "--backend", "sagemaker", "--dataset", "mnist", "--epochs", "1", "--hp",
                        f"data_dir={data}", "--bucket", moto_bucket.removeprefix("s3://"), "--region", "us-east-1",
                        "--role", "arn:aws:iam::123456789012:role/gankit-sagemaker"], capsys)
    created = boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    return code, err, [job["TrainingJobName"] for job in created]


def test_ctrl_c_as_a_sagemaker_job_is_created_leaves_its_record_and_says_how_to_stop_it(moto_bucket, monkeypatch,
                                                                                        tmp_path, capsys):
    # The job was created, the launcher stopped before its reply was read: no record was kept, so the job
    # trained and billed where `launcher list`, `status` and `stop` never looked, and nothing was said.
    code, err, created = sagemaker_submit_interrupted(moto_bucket, monkeypatch, tmp_path, capsys, "before-send")
    assert len(created) == 1 and code == 130, err
    job = created[0]
    assert [record["job"] for record in jobs.all_jobs()] == [job]
    assert jobs.load(job)["arn"].endswith(f"training-job/{job}")
    lines = err.strip().splitlines()
    assert lines[-1] == (f"error: Ctrl-C (SIGINT) stopped the submit of {job} after SageMaker created it: it runs "
                         f"(and bills) up to its max run; `launcher stop {job}` stops it, `launcher logs {job} "
                         f"--follow` watches it"), err
    assert "Traceback" not in err


def test_a_closed_terminal_as_a_sagemaker_job_is_created_says_so_too(moto_bucket, monkeypatch, tmp_path, capsys):
    from trainer.errors import Terminated

    code, err, created = sagemaker_submit_interrupted(moto_bucket, monkeypatch, tmp_path, capsys, "before-send",
                                                      interrupt=lambda: Terminated(signal.SIGHUP))
    assert code == 129 and [record["job"] for record in jobs.all_jobs()] == created, err
    assert err.strip().splitlines()[-1].startswith(f"error: SIGHUP stopped the submit of {created[0]} after")


def test_ctrl_c_as_a_sagemaker_job_is_created_keeps_its_record_when_sagemaker_cannot_say(moto_bucket, monkeypatch,
                                                                                      tmp_path, capsys):
    # Only "no such job" (ValidationException) means nothing runs: a describe refused for another reason (access,
    # credentials, throttling) says nothing of the job, which may run and bill; its record is all that finds it.
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    from launcher.backends import sagemaker

    monkeypatch.setattr(sagemaker, "CREATE_SETTLE_SECONDS", 0)
    real = BaseClient._make_api_call

    def refuse_describe(self, operation, params):
        if operation == "DescribeTrainingJob":
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}, operation)
        return real(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", refuse_describe)
    code, err, _ = sagemaker_submit_interrupted(moto_bucket, monkeypatch, tmp_path, capsys, "before-call")
    (record,) = jobs.all_jobs()
    assert code == 130 and record["arn"] is None, err
    assert err.strip().splitlines()[-1] == (
        f"error: Ctrl-C (SIGINT) stopped the submit of {record['job']} as SageMaker was asked to create it, and "
        f"whether it did is unknown; `launcher status {record['job']}` says, `launcher stop {record['job']}` stops "
        "it if it runs"), err


def test_ctrl_c_before_a_sagemaker_job_is_created_leaves_no_record(moto_bucket, monkeypatch, tmp_path, capsys):
    from launcher.backends import sagemaker

    monkeypatch.setattr(sagemaker, "CREATE_SETTLE_SECONDS", 0)
    code, err, created = sagemaker_submit_interrupted(moto_bucket, monkeypatch, tmp_path, capsys, "before-call")
    assert code == 130 and created == [] and jobs.all_jobs() == [], err
    assert "error:" not in err and "Traceback" not in err  # nothing runs: Ctrl-C speaks for itself
