"""Ctrl-C checkpoints and stops like SIGTERM; a signal during the export finishes it and says so."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import trainer
from tests.cli_helpers import signals_as_at_a_terminal
from trainer.config import TrainConfig
from trainer.errors import Stopped

pytestmark = pytest.mark.slow


def test_ctrl_c_writes_a_checkpoint_and_stops_in_one_line(tmp_path, mnist_dir):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "trainer", "train", "--dataset", "mnist", "--data-dir", str(mnist_dir),
           "--output-dir", str(out), "--epochs", "200", "--batch-size", "16", "--checkpoint-minutes", "60"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=signals_as_at_a_terminal)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((out / "checkpoints").glob("ckpt-*")):
        time.sleep(0.05)
    time.sleep(0.5)  # inside the training loop, past the first epoch's checkpoint
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    # One line says it, once (the run's own line said it again on stdout), and not as an error: it was asked for.
    lines = [line for line in (stdout + stderr).splitlines() if "at step" in line]
    assert len(lines) == 1 and lines[0].startswith("stopped by Ctrl-C") and "checkpoint" in lines[0], stdout + stderr
    assert not [line for line in stderr.splitlines() if line.startswith("error:")] and "Traceback" not in stderr
    bar = [line for line in stderr.splitlines() if line.startswith("train ")]
    assert "d_loss" in bar[-1] and "g_loss" in bar[-1], bar  # the stop's last line keeps the losses
    from trainer.checkpoints import latest_checkpoint

    latest = latest_checkpoint(out / "checkpoints")
    step = int(latest.name[5:])
    assert step > 4 and f"stopped by Ctrl-C (SIGINT) at step {step}" in lines[0]  # mid-run, not the epoch's


def test_sigterm_during_the_export_finishes_it_and_says_so(tmp_path, mnist_dir, monkeypatch, capsys):
    from trainer import export
    from trainer.cli import train_until_stopped

    real = export.export_generator

    def export_interrupted(model, meta, out_dir):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the export runs
        time.sleep(0.1)
        return real(model, meta, out_dir)

    monkeypatch.setattr(export, "export_generator", export_interrupted)
    cfg = TrainConfig(dataset="mnist", data_dir=str(mnist_dir), output_dir=str(tmp_path / "run"), epochs=1, batch_size=16)
    summary = train_until_stopped(cfg)
    assert not summary["stopped"] and summary["steps"] == 4
    assert trainer.load_generator(tmp_path / "run" / "generator").meta["steps"] == 4
    err = capsys.readouterr().err
    assert "SIGTERM arrived during the export" in err and "finished" in err and "complete" in err


def test_sigterm_still_stops_training(tmp_path, mnist_dir):
    from trainer.cli import train_until_stopped

    cfg = TrainConfig(dataset="mnist", data_dir=str(mnist_dir), output_dir=str(tmp_path / "run"), epochs=50,
                      batch_size=16)
    import threading

    def sigterm_once_training():  # after the first epoch's sample grid: inside the loop, whatever the machine's speed
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (tmp_path / "run" / "samples" / "epoch-0001.png").exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=sigterm_once_training, daemon=True).start()
    with pytest.raises(Stopped) as e:
        train_until_stopped(cfg)
    assert e.value.exit_code == 143 and "SIGTERM" in str(e.value)
    assert 4 <= int(str(e.value).split("at step ")[1].split(";")[0]) < 200  # mid-run: past epoch 1, not done


def test_a_closed_terminal_sighup_writes_a_checkpoint_and_stops(tmp_path, mnist_dir):
    """The terminal that ran `train` closes: SIGHUP, and writes to it fail from then on. The run checkpoints
    where it is and stops with 129, as SIGTERM would, rather than dying on the spot."""
    import pty

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "trainer", "train", "--dataset", "mnist", "--data-dir", str(mnist_dir),
           "--output-dir", str(out), "--epochs", "200", "--batch-size", "16", "--checkpoint-minutes", "60"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    master, terminal = pty.openpty()
    proc = subprocess.Popen(cmd, env=env, stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True,
                            preexec_fn=signals_as_at_a_terminal)
    os.close(terminal)
    reader = __import__("threading").Thread(target=lambda: _drain(master), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((out / "checkpoints").glob("ckpt-*")):
        time.sleep(0.05)
    time.sleep(0.5)  # inside the training loop, past the first epoch's checkpoint
    proc.send_signal(signal.SIGHUP)
    os.close(master)  # the terminal is gone
    assert proc.wait(timeout=120) == 129
    from trainer.checkpoints import latest_checkpoint

    assert int(latest_checkpoint(out / "checkpoints").name[5:]) > 4  # mid-run, not the first epoch's


def _drain(fd):
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass
