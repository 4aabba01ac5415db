"""Checkpoints are complete or invisible, and broken ones are skipped for the previous."""

import json
import os

import numpy as np
import pytest

from trainer import checkpoints
from trainer.errors import UsageError


def arrays(value):
    return {"generator/0000": np.array([value, value], np.float32), "g_opt/0000": np.array(3, np.int64)}


def write(directory, step, keep=3, value=None):
    return checkpoints.write_checkpoint(directory, step, arrays(float(step if value is None else value)), {"step": step}, keep)


def test_round_trip_restores_arrays_and_state(tmp_path):
    folder = write(tmp_path, 7, value=3.5)
    restored, state = checkpoints.read_checkpoint(folder)
    assert state == {"step": 7}
    assert restored["generator/0000"].tolist() == [3.5, 3.5] and restored["generator/0000"].dtype == np.float32
    assert int(restored["g_opt/0000"]) == 3
    manifest = json.loads((folder / checkpoints.MANIFEST).read_text())
    assert set(manifest["files"]) == {p.name for p in folder.iterdir()} - {checkpoints.MANIFEST}
    assert checkpoints.problem(folder) is None  # the digests taken in memory match the files on disk


def test_an_old_tensorflow_format_checkpoint_is_a_one_line_error(tmp_path):
    folder = write(tmp_path, 1)
    (folder / checkpoints.WEIGHTS).unlink()
    with pytest.raises(UsageError, match="older gankit"):
        checkpoints.read_checkpoint(folder)


def test_latest_is_newest_complete_and_old_ones_are_pruned(tmp_path):
    for step in (1, 2, 3, 4, 5):
        write(tmp_path, step, keep=2)
    assert [s for s, _ in checkpoints.checkpoint_folders(tmp_path)] == [5, 4]
    assert checkpoints.latest_checkpoint(tmp_path).name == "ckpt-000000005"


@pytest.mark.parametrize("damage, reason", [
    (lambda f: (f / checkpoints.MANIFEST).unlink(), "no manifest"),
    (lambda f: (f / checkpoints.MANIFEST).write_text("{not json"), "corrupted manifest"),
    (lambda f: (f / "weights.npz").unlink(), "missing file weights.npz"),
    (lambda f: (f / checkpoints.STATE).write_text('{"step": 999}'), "does not match"),
])
def test_broken_newest_checkpoint_is_skipped_with_a_warning(tmp_path, capsys, damage, reason):
    write(tmp_path, 1)
    damage(write(tmp_path, 2))
    assert checkpoints.latest_checkpoint(tmp_path).name == "ckpt-000000001"
    assert reason in capsys.readouterr().err


def test_a_crash_while_writing_leaves_nothing_visible(tmp_path):
    write(tmp_path, 1)

    class Boom(Exception):
        pass

    class Exploding:
        def __array__(self, *args, **kwargs):
            raise Boom()

    with pytest.raises(Boom):
        checkpoints.write_checkpoint(tmp_path, 2, {"generator/0000": Exploding()}, {"step": 2}, keep=3)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000001"]
    assert checkpoints.latest_checkpoint(tmp_path).name == "ckpt-000000001"


def test_no_checkpoints_means_none(tmp_path):
    assert checkpoints.latest_checkpoint(tmp_path / "missing") is None


def test_a_prune_killed_mid_delete_leaves_no_half_deleted_checkpoint_visible(tmp_path, monkeypatch):
    for step in (1, 2, 3):
        write(tmp_path, step)
    real_rmtree = checkpoints.shutil.rmtree

    def killed_after_one_file(path, ignore_errors=False):
        if not path.exists():
            return real_rmtree(path, ignore_errors=ignore_errors)
        next(p for p in sorted(path.iterdir()) if p.is_file()).unlink()  # a kill lands after the first file
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.shutil, "rmtree", killed_after_one_file)
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path, 4, keep=3)  # prunes ckpt-1
    monkeypatch.setattr(checkpoints.shutil, "rmtree", real_rmtree)
    assert [step for step, _ in checkpoints.checkpoint_folders(tmp_path)] == [4, 3, 2]
    assert all(checkpoints.problem(f) is None for _, f in checkpoints.checkpoint_folders(tmp_path))
    write(tmp_path, 5, keep=3)  # the next prune sweeps what the killed one left
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoints.checkpoint_name(s) for s in (3, 4, 5)]


def test_a_checkpoint_under_another_steps_name_does_not_verify(tmp_path):
    """A folder renamed (or copied) to a newer step's name must not be resumed as that step."""
    folder = write(tmp_path, 3)
    renamed = folder.rename(tmp_path / checkpoints.checkpoint_name(9))
    assert checkpoints.problem(renamed) == "manifest names another step"
    assert checkpoints.latest_checkpoint(tmp_path, warn=False) is None


@pytest.mark.parametrize("name", ["ckpt-000000001\n", "ckpt-\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0661",
                                  "ckpt-00000001", "ckpt-000000001.tmp", "xckpt-000000001"])
def test_only_a_checkpoints_own_name_has_a_step(name):
    """A remote key's folder name becomes a local folder: ckpt- and nine ASCII digits, nothing before or after
    (a trailing newline passed `$`, and \\d took Arabic-Indic digits)."""
    assert checkpoints.checkpoint_step(name) is None
    assert checkpoints.checkpoint_step(checkpoints.checkpoint_name(42)) == 42


def test_a_manifest_that_lists_no_state_json_does_not_verify(tmp_path):
    """A resume reads state.json beside the weights: a checkpoint without it was a FileNotFoundError traceback."""
    write(tmp_path, 1)
    folder = write(tmp_path, 2)
    (folder / checkpoints.STATE).unlink()
    (folder / "extra.bin").write_bytes(b"x")
    files = {name: (p.stat().st_size, checkpoints.file_digest(p))
             for name, p in ((p.name, p) for p in folder.iterdir() if p.name != checkpoints.MANIFEST)}
    (folder / checkpoints.MANIFEST).write_text(json.dumps(checkpoints.manifest_of(files, 2)))
    assert checkpoints.problem(folder) == "manifest lists no state.json"
    assert checkpoints.latest_checkpoint(tmp_path, warn=False).name == "ckpt-000000001"


def test_a_checkpoint_without_a_manifest_is_incomplete_not_corrupt(tmp_path, capsys):
    """Only a checkpoint whose manifest disagrees is set aside (and, when none verifies, stops the run): one without
    a manifest is a write that never finished, left where it is, and the run starts afresh."""
    folder = write(tmp_path, 1)
    (folder / checkpoints.MANIFEST).unlink()
    assert checkpoints.latest_checkpoint(tmp_path) is None
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000001"]
    assert "no manifest" in capsys.readouterr().err


def test_a_checkpoint_changed_in_place_after_it_verified_no_longer_counts_towards_keep(tmp_path):
    """verifies() remembers what it hashed by each file's size and mtime: bytes changed at the same size (a bad
    copy, bit rot mended by hand) must be hashed again, or the prune keeps it and drops the last good one."""
    write(tmp_path, 1, keep=2)
    second = write(tmp_path, 2, keep=2)
    weights = second / checkpoints.WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    stat = weights.stat()
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    write(tmp_path, 3, keep=2)
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["ckpt-000000001", "ckpt-000000002.corrupt",
                                                             "ckpt-000000003"]
