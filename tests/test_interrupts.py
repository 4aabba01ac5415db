"""SIGTERM and SIGHUP stop a launcher or trainer command as Ctrl-C does: its clean-up runs (no temp file left
where the user finds it), one line, exit 128 + the signal. Ctrl-C while `submit --wait` watches says the job
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
    if signum != signal.SIGINT:
        assert err.strip() == f"error: stopped by {signal.Signals(signum).name}", err
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
    def logs(record, follow, echo):
        echo("toy: epoch 1")
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
