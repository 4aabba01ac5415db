"""Atomic writes leave ordinary files: the umask's permissions, not mkstemp's private 0600/0700."""

import os
import stat

import pytest

from trainer.fsutil import atomic_dir, atomic_file, atomic_write_bytes, atomic_write_text, umask


@pytest.fixture(params=[0o022, 0o027])
def mask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_and_folders_follow_the_umask(tmp_path, mask):
    assert umask() == mask
    atomic_write_bytes(tmp_path / "a.png", b"x")
    atomic_write_text(tmp_path / "b.json", "{}")
    with atomic_dir(tmp_path / "generator") as tmp:
        (tmp / "generator.json").write_text("{}")
    assert mode(tmp_path / "a.png") == mode(tmp_path / "b.json") == 0o666 & ~mask
    assert mode(tmp_path / "generator") == 0o777 & ~mask
    assert mode(tmp_path / "generator" / "generator.json") == 0o666 & ~mask


def test_a_failed_atomic_file_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "data" / "train.idx.gz"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(target, suffix=".part") as f:
            f.write(b"half of the new")
            raise RuntimeError("download cut off")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["train.idx.gz"]
    with atomic_file(target, suffix=".part") as f:
        f.write(b"new")
        assert target.read_bytes() == b"old"  # invisible until the block ends
    assert target.read_bytes() == b"new" and sorted(p.name for p in target.parent.iterdir()) == ["train.idx.gz"]


def test_a_secret_keeps_the_mode_it_asks_for(tmp_path, mask):
    atomic_write_text(tmp_path / "cfg" / "jupyter_server_config.json", "{}", mode=0o600)
    assert mode(tmp_path / "cfg" / "jupyter_server_config.json") == 0o600
