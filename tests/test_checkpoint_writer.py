"""Checkpoints written beside training keep every guarantee of a synchronous write.

A checkpoint is complete or invisible; a stop's checkpoint is on disk (and on S3 when mirrored)
before train() returns; a failing disk stops the run with one line; pruning counts only verified
checkpoints; a run resumes from what the writer wrote.
"""

import json
import threading
import time

import numpy as np
import pytest

from tests.aws_helpers import mocked_bucket
from tests.cli_helpers import assert_training_fails_with_one_line
from trainer import checkpoints, run_storage, s3
from trainer.errors import GankitError


def arrays(value):
    return {"generator/0000": np.full(4, value, np.float32), "g_opt/0000": np.array(int(value), np.int64)}


def folders(directory):
    return [p.name for _, p in checkpoints.checkpoint_folders(directory)]


@pytest.fixture
def gated(monkeypatch):
    """write_checkpoint held until the test opens the gate: a write still pending when it looks."""
    gate, real = threading.Event(), checkpoints.write_checkpoint

    def held(*args, **kwargs):
        assert gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "write_checkpoint", held)
    yield gate
    gate.set()


def test_save_returns_at_once_and_wait_leaves_the_checkpoint_as_it_was_handed_over(tmp_path, gated):
    writer = checkpoints.CheckpointWriter(tmp_path, keep=3)
    state = {"step": 5, "history": [{"epoch": 1}]}
    writer.save(5, arrays(5.0), state)
    assert checkpoints.latest_checkpoint(tmp_path) is None  # still being written: invisible
    state["step"], state["history"] = 6, []  # the loop goes on changing its state
    gated.set()
    assert writer.wait() == tmp_path / "ckpt-000000005"
    restored, saved = checkpoints.read_checkpoint(checkpoints.latest_checkpoint(tmp_path))
    assert saved == {"step": 5, "history": [{"epoch": 1}]}
    assert restored["generator/0000"].tolist() == [5.0] * 4
    assert checkpoints.problem(tmp_path / "ckpt-000000005") is None  # digests taken while writing match the disk


def test_a_borrowed_array_is_copied_before_the_loop_can_change_it(tmp_path, gated):
    writer = checkpoints.CheckpointWriter(tmp_path, keep=3)
    buffer = np.zeros(8, np.float32)
    writer.save(1, {"generator/0000": buffer[:4], "g_opt/0000": np.array(1)}, {"step": 1})  # a view
    buffer[:] = 9.0
    gated.set()
    restored, _ = checkpoints.read_checkpoint(writer.wait())
    assert restored["generator/0000"].tolist() == [0.0] * 4


def test_a_failing_disk_surfaces_on_the_next_wait_and_save_as_one_line(tmp_path, monkeypatch):
    real_fsync = checkpoints.os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    writer = checkpoints.CheckpointWriter(tmp_path, keep=3)
    writer.save(1, arrays(1.0), {"step": 1})
    writer.wait()
    monkeypatch.setattr(checkpoints.os, "fsync", full_disk)
    writer.save(2, arrays(2.0), {"step": 2})
    with pytest.raises(GankitError) as failed:
        writer.wait()
    message = str(failed.value)
    assert "\n" not in message and "No space left on device" in message and "--checkpoint-dir" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000000001"]  # nothing half-written is visible

    writer.save(3, arrays(3.0), {"step": 3})  # fails in the background again ...
    with pytest.raises(GankitError, match="No space left"):
        writer.save(4, arrays(4.0), {"step": 4})  # ... and the next save says so before starting another
    monkeypatch.setattr(checkpoints.os, "fsync", real_fsync)
    assert checkpoints.latest_checkpoint(tmp_path).name == "ckpt-000000001"


def test_pruning_under_the_writer_counts_only_verified_checkpoints(tmp_path):
    writer = checkpoints.CheckpointWriter(tmp_path, keep=2)
    for step in (1, 2, 3, 4):
        writer.save(step, arrays(step), {"step": step})
    writer.wait()
    assert folders(tmp_path) == ["ckpt-000000004", "ckpt-000000003"]
    (tmp_path / "ckpt-000000004" / checkpoints.WEIGHTS).write_bytes(b"bit rot!")  # after it was verified
    writer.save(5, arrays(5), {"step": 5})
    writer.wait()
    assert folders(tmp_path) == ["ckpt-000000005", "ckpt-000000003"]  # the rotten one does not count
    assert (tmp_path / "ckpt-000000004.corrupt").is_dir()


def test_a_mirrored_checkpoint_is_on_s3_when_wait_returns(tmp_path, monkeypatch):
    with mocked_bucket(monkeypatch, "gankit-writer") as bucket:
        uri = bucket + "/runs/w/checkpoints"
        writer = checkpoints.CheckpointWriter(tmp_path, keep=2,
                                              after=lambda folder: run_storage.push_checkpoint(folder, uri, 2))
        for step in (1, 2, 3):
            writer.save(step, arrays(step), {"step": step})
        writer.wait()
        assert [name for _, name in run_storage.remote_checkpoints(uri)] == ["ckpt-000000003", "ckpt-000000002"]
        manifest = json.loads(s3.read_bytes(s3.join(uri, "ckpt-000000003", checkpoints.MANIFEST)))
        assert checkpoints.manifest_problem(manifest, 3) is None


# --- the training loop with the writer --------------------------------------------------------

def slow_writes(monkeypatch, seconds=1.0):
    real = checkpoints.write_checkpoint

    def slow(*args, **kwargs):
        time.sleep(seconds)  # a big checkpoint on a slow disk: the stop arrives while it is pending
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "write_checkpoint", slow)


@pytest.mark.slow
def test_a_stop_during_a_pending_write_ends_with_a_complete_newest_checkpoint_and_resumes(
        tmp_path, mnist_dir, monkeypatch):
    from trainer.config import TrainConfig
    from trainer.train import train

    slow_writes(monkeypatch)
    cfg = TrainConfig(dataset="mnist", data_dir=str(mnist_dir), output_dir=str(tmp_path / "run"), epochs=3,
                      batch_size=16)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    polls = {"n": 0}

    def stop_after_the_first_epoch():
        polls["n"] += 1
        pending = any(t.name.startswith("checkpoint-") for t in threading.enumerate())
        return polls["n"] > 1 and pending  # the first epoch's checkpoint is still being written

    first = train(cfg, stop_requested=stop_after_the_first_epoch, log=lambda *a: None)
    assert first["stopped"] and 4 < first["steps"] < 12
    assert not [t for t in threading.enumerate() if t.name.startswith("checkpoint-")]  # nothing left in flight
    newest = checkpoints.latest_checkpoint(ckpt_dir)
    assert newest.name == checkpoints.checkpoint_name(first["steps"]) and checkpoints.problem(newest) is None
    assert "ckpt-000000004" in folders(ckpt_dir)  # the epoch's write that was pending when the stop came

    messages = []
    resumed = train(cfg, log=messages.append)
    assert any(f"resuming from {newest} at step {first['steps']}" in m for m in messages)
    assert resumed["steps"] == 12 and not resumed["stopped"]
    assert checkpoints.latest_checkpoint(ckpt_dir).name == "ckpt-000000012"


@pytest.mark.slow
def test_a_disk_that_fails_mid_run_stops_it_with_one_line(tmp_path, mnist_dir, monkeypatch, capsys):
    def full_disk(path, fill):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "_write_synced", full_disk)
    assert_training_fails_with_one_line(capsys, mnist_dir, tmp_path / "run", "No space left on device",
                                        "--checkpoint-dir")
    assert checkpoints.latest_checkpoint(tmp_path / "run" / "checkpoints") is None
