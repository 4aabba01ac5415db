"""Atomic writes leave ordinary files: the umask's permissions, not mkstemp's private 0600/0700."""

import os
import stat

import pytest

from trainer.errors import UsageError
from trainer.fsutil import atomic_dir, atomic_file, atomic_write_bytes, atomic_write_text, ensure_writable_dir, umask
from trainer import evaluate, s3


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


def test_a_failed_atomic_dir_leaves_the_old_folder_whole_and_no_temp(tmp_path):
    # The export's promise: a write that fails half-way (a full disk while saving the model) leaves the
    # previous generator/ as it was, never a mix of old and new files nor a half-written one.
    generator = tmp_path / "run" / "generator"
    with atomic_dir(generator) as tmp:
        (tmp / "generator.keras").write_bytes(b"old model")
        (tmp / "generator.json").write_text('{"steps": 4}')
    with pytest.raises(OSError):
        with atomic_dir(generator) as tmp:
            (tmp / "generator.keras").write_bytes(b"half of the new")
            raise OSError(28, "No space left on device")
    assert (generator / "generator.keras").read_bytes() == b"old model"
    assert (generator / "generator.json").read_text() == '{"steps": 4}'
    assert sorted(p.name for p in generator.parent.iterdir()) == ["generator"]


def test_a_secret_keeps_the_mode_it_asks_for(tmp_path, mask):
    atomic_write_text(tmp_path / "cfg" / "jupyter_server_config.json", "{}", mode=0o600)
    assert mode(tmp_path / "cfg" / "jupyter_server_config.json") == 0o600


def test_a_crash_between_atomic_dirs_two_renames_loses_nothing(tmp_path, monkeypatch):
    """The old folder steps aside, then the process dies before the new one steps in: the next look
    (best_fcd) or write puts the old one back rather than sweeping it away with the temp folders."""
    best = tmp_path / evaluate.BEST_DIR
    with atomic_dir(best) as tmp:
        (tmp / "generator.json").write_text('{"fcd": 1.5, "fcd_samples": 20}')
    real_replace, calls = os.replace, []

    def die_after_the_first_rename(src, dst):
        real_replace(src, dst)
        calls.append(dst)
        raise SystemExit("killed")  # as os._exit would, but pytest lives on

    monkeypatch.setattr(os, "replace", die_after_the_first_rename)
    with pytest.raises(SystemExit):
        with atomic_dir(best) as tmp:
            (tmp / "generator.json").write_text('{"fcd": 9.0, "fcd_samples": 20}')
    monkeypatch.setattr(os, "replace", real_replace)
    assert not best.exists() and len(calls) == 1  # the moment a crash can leave behind
    assert evaluate.best_fcd(tmp_path, samples=20) == 1.5
    with atomic_dir(best) as tmp:
        (tmp / "generator.json").write_text('{"fcd": 1.0, "fcd_samples": 20}')
    assert evaluate.best_fcd(tmp_path, samples=20) == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [evaluate.BEST_DIR]


def test_the_hidden_temp_folders_of_atomic_writes_are_never_uploaded(tmp_path):
    (tmp_path / "generator").mkdir()
    (tmp_path / "generator" / "generator.json").write_text("{}")
    (tmp_path / ".generator-best.tmp-1x2y").mkdir()
    (tmp_path / ".generator-best.tmp-1x2y" / "generator.keras").write_text("half")
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / ".epoch_0001.png.abc").write_text("half")
    assert [rel for _, rel, _ in s3.changed_files(tmp_path)] == ["generator/generator.json"]


def test_an_upload_follows_symlinks_inside_its_folder_only(tmp_path):
    """A symlinked folder was never uploaded, while a symlinked file was, wherever it pointed."""
    out = tmp_path / "out"
    (out / "samples").mkdir(parents=True)
    (out / "samples" / "epoch-0001.png").write_text("png")
    (out / "latest").symlink_to(out / "samples")  # inside: uploaded as it reads
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret").write_text("not the run's")
    (out / "notes.txt").symlink_to(tmp_path / "elsewhere" / "secret")  # outside: never
    (out / "other").symlink_to(tmp_path / "elsewhere")
    (out / "samples" / "again").symlink_to(out)  # a loop: once
    assert [rel for _, rel, _ in s3.changed_files(out)] == ["latest/epoch-0001.png", "samples/epoch-0001.png"]


def test_an_upload_skips_a_symlink_that_leads_back_to_itself(tmp_path):
    # path.resolve() of such a link raised RuntimeError ("Symlink loop"): the upload walk ended in a traceback.
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    (out / "self").symlink_to(out / "self")
    (out / "b").symlink_to(out / "c")
    (out / "c").symlink_to(out / "b")
    assert [rel for _, rel, _ in s3.changed_files(out)] == ["metrics.jsonl"]


def test_an_output_folder_that_is_a_dangling_symlink_is_named_as_one(tmp_path):
    # mkdir said "File exists" of it, and the line read "--output-dir out is not writable (File exists)".
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    for path in (tmp_path / "out", tmp_path / "out" / "run"):
        with pytest.raises(UsageError, match=f"{tmp_path / 'out'} is a symlink to {tmp_path / 'gone'}, which does not "
                                             "exist; create that folder or choose another"):
            ensure_writable_dir(path, "--output-dir")
    assert not (tmp_path / "gone").exists()


def test_the_longest_name_inside_accepts_still_fits_a_temp_file_and_one_byte_more_is_refused(tmp_path):
    """The segment limit is what makes an accepted remote name writable: atomic_file's temp name
    (`.NAME.XXXXXXXX.part`) of the longest accepted segment still fits a file name (255 bytes)."""
    from trainer.errors import GankitError
    from trainer.fsutil import MAX_SEGMENT_BYTES, inside

    longest = "é" * (MAX_SEGMENT_BYTES // 2)  # two bytes each in UTF-8: the limit counts bytes, not characters
    target = inside(tmp_path, f"gen/{longest}", "s3://b/p")
    with atomic_file(target, suffix=".part") as f:
        f.write(b"x")
    assert target.read_bytes() == b"x"
    with pytest.raises(GankitError, match="longer than a local file name"):
        inside(tmp_path, f"gen/{longest}a", "s3://b/p")


def test_atomic_dir_refuses_a_symlink_and_leaves_what_it_points_to_alone(tmp_path):
    """generator/ linked to a folder elsewhere: the export replaced that folder whole, so a link to ~/thesis
    deleted the thesis. Nothing outside the run is gankit's to replace."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "generator").symlink_to(tmp_path / "mine")
    with pytest.raises(UsageError, match=f"{tmp_path / 'run' / 'generator'} is a symlink to {tmp_path / 'mine'}; "
                                         "gankit replaces generator/ whole .*remove the link"):
        with atomic_dir(tmp_path / "run" / "generator") as tmp:
            (tmp / "generator.json").write_text("{}")
    assert (tmp_path / "run" / "generator").is_symlink()
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["thesis.txt"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["generator"]  # no temp folder either


def test_atomic_dir_refuses_a_file_where_its_folder_goes(tmp_path):
    # os.replace set the file aside as hidden .generator.tmp-old-*, and rmtree (ignoring errors) left it there.
    (tmp_path / "generator").write_text("notes")
    with pytest.raises(UsageError, match="is a file where gankit writes a folder"):
        with atomic_dir(tmp_path / "generator") as tmp:
            (tmp / "generator.json").write_text("{}")
    assert (tmp_path / "generator").read_text() == "notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator"]


def test_a_symlink_an_older_gankit_set_aside_is_swept(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "generator").mkdir()
    (tmp_path / ".generator.tmp-old-123").symlink_to(tmp_path / "elsewhere")
    with atomic_dir(tmp_path / "generator") as tmp:
        (tmp / "generator.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "generator"]
    assert (tmp_path / "elsewhere").is_dir()


def test_a_symlink_loop_where_atomic_dir_writes_is_one_line_not_a_traceback(tmp_path):
    # Following the link raised RuntimeError ("Symlink loop") at a run's very end, from its export.
    (tmp_path / "generator").symlink_to(tmp_path / "generator")
    with pytest.raises(UsageError, match="is a symlink to .*remove the link"):
        with atomic_dir(tmp_path / "generator") as tmp:
            (tmp / "generator.json").write_text("{}")
    assert (tmp_path / "generator").is_symlink()  # the user's link, as it was


def test_a_fresh_run_forgets_an_earlier_best_that_a_kill_left_set_aside(tmp_path):
    """Killed between atomic_dir's two renames, a run leaves generator-best/ missing and its old copy aside. A fresh
    run in that folder (another --checkpoint-dir) saw no generator-best/ to remove, and its first evaluation put
    the earlier run's back: it competed with, and reported, another run's generator."""
    from trainer.run_setup import _forget_earlier_best

    aside = tmp_path / f".{evaluate.BEST_DIR}.tmp-old-4242"  # exactly what the kill leaves
    aside.mkdir()
    (aside / "generator.json").write_text('{"fcd": 1.5, "fcd_samples": 20}')
    (tmp_path / f".{evaluate.BEST_DIR}.tmp-1x2y").mkdir()  # the new copy that never stepped in
    lines = []
    _forget_earlier_best(tmp_path, log=lines.append)
    assert evaluate.best_fcd(tmp_path, samples=20) is None
    assert list(tmp_path.iterdir()) == []
    assert any(f"removed {evaluate.BEST_DIR}/" in line for line in lines)



def test_putting_back_a_set_aside_copy_leaves_a_dangling_link_of_the_users_alone(tmp_path):
    from trainer.fsutil import restore_set_aside

    (tmp_path / ".generator.tmp-old-123").mkdir()  # what a kill between atomic_dir's renames left
    (tmp_path / "generator").symlink_to(tmp_path / "gone")  # the user's, pointing nowhere yet
    restore_set_aside(tmp_path / "generator")
    assert (tmp_path / "generator").is_symlink() and os.readlink(tmp_path / "generator") == str(tmp_path / "gone")
    assert (tmp_path / ".generator.tmp-old-123").is_dir()


def test_of_two_set_aside_copies_the_newest_is_put_back(tmp_path):
    # By mtime, not by name: the pid in the name says nothing of which copy is newer ("10" sorts before "9").
    from trainer.fsutil import restore_set_aside

    for pid, written in (("9", 1_000_000), ("10", 2_000_000)):
        aside = tmp_path / f".generator.tmp-old-{pid}"
        aside.mkdir()
        (aside / "which").write_text(pid)
        os.utime(aside, (written, written))
    restore_set_aside(tmp_path / "generator")
    assert (tmp_path / "generator" / "which").read_text() == "10"
