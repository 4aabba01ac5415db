"""An epoch's files (grid, GIF, plots, logs) are written beside the next epoch's steps, and keep
every guarantee of a synchronous write: complete when train() returns, a failing disk one line."""

import json
import threading
import time
from pathlib import Path

import pytest

from tests.cli_helpers import assert_training_fails_with_one_line, run_trainer
from trainer import checkpoints, events, plots
from trainer.config import TrainConfig
from trainer.train import train

pytestmark = pytest.mark.slow
STEPS_PER_EPOCH = 4  # 64 images at batch 16


def test_an_epochs_files_are_written_while_the_next_epoch_trains(tmp_path, mnist_dir, monkeypatch):
    out = tmp_path / "run"
    real, seen = plots.append_progress_gif, {}

    def held(samples_dir, epoch, *args, **kwargs):
        if epoch == 1:  # epoch 1's GIF frame waits until epoch 2's steps have run: a synchronous loop never gets there
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(
                    r["step"] > STEPS_PER_EPOCH for r in events.read_losses(out)):
                time.sleep(0.05)
            seen["steps"] = max(r["step"] for r in events.read_losses(out))
            seen["thread"] = threading.current_thread().name
        return real(samples_dir, epoch, *args, **kwargs)

    monkeypatch.setattr(plots, "append_progress_gif", held)
    cfg = TrainConfig(dataset="mnist", data_dir=str(mnist_dir), output_dir=str(out), epochs=2, batch_size=16)
    summary = train(cfg, log=lambda *a: None)
    assert seen["steps"] > STEPS_PER_EPOCH and seen["thread"] == "epoch-files"
    # All there when train() returns: both grids, both GIF frames, both rows, the plot, TensorBoard.
    assert summary["steps"] == 2 * STEPS_PER_EPOCH
    assert [p.name for p in sorted((out / "samples").glob("epoch-*.png"))] == ["epoch-0001.png", "epoch-0002.png"]
    with plots.Image.open(out / "samples" / "progress.gif") as gif:
        assert gif.n_frames == 2
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (out / "losses.png").is_file() and any((out / "tensorboard").iterdir())


def test_a_stopped_runs_loss_plot_shows_every_epoch(tmp_path, mnist_dir, monkeypatch):
    # The plot is drawn at most every LOSS_PLOT_SECONDS, and was not at a stop: a pulled stopped run showed
    # a plot epochs behind its metrics (or none at all).
    from trainer import train as train_module

    monkeypatch.setattr(train_module, "LOSS_PLOT_SECONDS", 1e9)
    drawn, real = [], plots.save_loss_plot
    monkeypatch.setattr(plots, "save_loss_plot", lambda rows, *a, **k: drawn.append(len(rows)) or real(rows, *a, **k))
    out = tmp_path / "run"
    cfg = TrainConfig(dataset="mnist", data_dir=str(mnist_dir), output_dir=str(out), epochs=5, batch_size=16)
    summary = train(cfg, stop_requested=lambda: (out / "samples" / "epoch-0002.png").is_file(), log=lambda *a: None)
    epochs = len((out / "metrics.jsonl").read_text().splitlines())
    assert summary["stopped"] and summary["steps"] < 5 * STEPS_PER_EPOCH and epochs >= 2
    assert drawn == [epochs] and (out / "losses.png").is_file()


def test_a_disk_that_fails_under_an_epochs_files_stops_the_run_with_one_line(tmp_path, mnist_dir, monkeypatch,
                                                                            capsys):
    real = plots.save_epoch_grid

    def full_from_epoch_2(picture, samples_dir, epoch):
        if epoch >= 2:
            raise OSError(28, "No space left on device")
        return real(picture, samples_dir, epoch)

    monkeypatch.setattr(plots, "save_epoch_grid", full_from_epoch_2)
    assert_training_fails_with_one_line(capsys, mnist_dir, tmp_path / "run", "epoch 2's outputs",
                                        "No space left on device", "--output-dir")
    # The checkpoints written are complete, so the same command resumes once there is room.
    newest = checkpoints.latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert newest is not None and checkpoints.verifies(newest)


def _full_disk(*args, **kwargs):
    raise OSError(28, "No space left on device")


def _losses_full(file, mode="r", *args, **kwargs):
    if str(file).endswith(events.LOSSES_FILE) and "a" in mode and events.read_losses(Path(file).parent):
        raise OSError(28, "No space left on device")  # the disk fills up once the run has recorded a point
    return open(file, mode, *args, **kwargs)


@pytest.mark.parametrize("where", ["run.json", "loss point", "export"])
def test_a_disk_that_fails_outside_the_epochs_files_stops_the_run_with_one_line(tmp_path, mnist_dir, monkeypatch,
                                                                               capsys, where):
    from trainer import export, run_info

    if where == "run.json":
        monkeypatch.setattr(run_info, "atomic_write_text", _full_disk)
    elif where == "loss point":
        monkeypatch.setattr(events, "open", _losses_full, raising=False)
    else:
        monkeypatch.setattr(export, "export_generator", _full_disk)
    out = tmp_path / "run"
    assert_training_fails_with_one_line(capsys, mnist_dir, out, "No space left on device", str(out), "--output-dir")
    if where == "export":  # every step is in the last checkpoint: with room again, the same command exports
        monkeypatch.undo()
        code, captured = run_trainer(capsys, "train", "--dataset", "mnist", "--data-dir", mnist_dir, "--output-dir",
                                     out, "--epochs", 3, "--batch-size", 16)
        assert code == 0, captured.err
        assert export.read_meta(out / "generator")["steps"] == 3 * STEPS_PER_EPOCH


@pytest.mark.parametrize("where", ["run.json", "checkpoint"])
def test_a_jobs_full_disk_says_how_the_launcher_resumes_it(tmp_path, mnist_dir, monkeypatch, where):
    """A job's disk-full line said "run the same command to resume": the launcher ran that command, not the user."""
    from trainer import run_info
    from trainer.errors import GankitError

    if where == "run.json":
        monkeypatch.setattr(run_info, "atomic_write_text", _full_disk)
    else:
        monkeypatch.setattr(checkpoints, "_write_synced", _full_disk)
    cfg = TrainConfig(dataset="mnist", data_dir=str(mnist_dir), output_dir=str(tmp_path / "run"), epochs=1,
                      batch_size=16)
    with pytest.raises(GankitError) as failed:
        train(cfg, log=lambda *a: None, resume_hint="`launcher submit --resume j1` continues it")
    assert "No space left on device" in str(failed.value) and "same command" not in str(failed.value)
    assert str(failed.value).endswith(", then `launcher submit --resume j1` continues it")
