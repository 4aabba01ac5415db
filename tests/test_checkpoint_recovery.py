"""Corrupt and stale checkpoints: never silently start over, never prune a good one, S3 is the record."""


import boto3
import numpy as np
import pytest

from tests.aws_helpers import mocked_bucket, refuse_call
from trainer import checkpoints, s3, run_storage
from trainer.errors import GankitError

BUCKET = "gankit-recovery"


class Payload(dict):
    """A checkpoint payload for either writer: arrays by name (the backend-neutral format) that can
    also write themselves as TensorFlow's two checkpoint files."""

    def write(self, prefix):
        open(prefix + ".index", "wb").write(b"index")
        open(prefix + ".data-00000-of-00001", "wb").write(self["w"].tobytes())


def write(directory, step, keep=10):
    return checkpoints.write_checkpoint(directory, step, Payload(w=np.full(2, step, np.float32)), {"step": step},
                                        keep=keep)


def corrupt(folder):
    payload = sorted(p for p in folder.iterdir() if p.name not in (checkpoints.STATE, checkpoints.MANIFEST))
    payload[-1].write_bytes(b"bit rot!")


def names(directory):
    return sorted(p.name for p in directory.iterdir())


def test_when_every_checkpoint_is_corrupt_training_stops_with_what_to_do(tmp_path, capsys):
    for step in (4, 5, 6):
        corrupt(write(tmp_path, step))
    with pytest.raises(GankitError) as e:
        checkpoints.latest_checkpoint(tmp_path)
    message = str(e.value)
    assert "\n" not in message and "no checkpoint" in message and "verifies" in message
    assert "delete" in message and ".corrupt" in message
    assert names(tmp_path) == ["ckpt-000000004.corrupt", "ckpt-000000005.corrupt", "ckpt-000000006.corrupt"]
    # A rerun stops again instead of starting over from step 0.
    with pytest.raises(GankitError):
        checkpoints.latest_checkpoint(tmp_path)


def test_a_corrupt_newest_is_set_aside_and_the_previous_one_resumes(tmp_path, capsys):
    write(tmp_path, 1)
    corrupt(write(tmp_path, 2))
    assert checkpoints.latest_checkpoint(tmp_path).name == "ckpt-000000001"
    assert names(tmp_path) == ["ckpt-000000001", "ckpt-000000002.corrupt"]
    assert "set aside" in capsys.readouterr().err


def test_pruning_keeps_good_checkpoints_when_newer_ones_are_corrupt(tmp_path):
    for step in (7, 8):
        corrupt(write(tmp_path, step))
    write(tmp_path, 1, keep=2)
    write(tmp_path, 2, keep=2)
    write(tmp_path, 3, keep=2)
    kept = [p.name for _, p in checkpoints.checkpoint_folders(tmp_path)]
    assert kept == ["ckpt-000000003", "ckpt-000000002"]
    assert "ckpt-000000007.corrupt" in names(tmp_path) and "ckpt-000000008.corrupt" in names(tmp_path)


# --- S3 -------------------------------------------------------------------------------------------

@pytest.fixture
def bucket(monkeypatch):
    with mocked_bucket(monkeypatch, BUCKET) as uri:
        yield uri


def remote_names(uri):
    return sorted({k.split("/", 1)[0] for k in s3.list_objects(uri)})


def test_s3_checkpoints_that_all_fail_to_verify_stop_the_run(bucket, tmp_path):
    uri = bucket + "/runs/c/checkpoints"
    for step in (3, 4):
        run_storage.push_checkpoint(write(tmp_path / "src", step), uri, keep=5)
        name = checkpoints.checkpoint_name(step)
        state_key = f"runs/c/checkpoints/{name}/{checkpoints.STATE}"
        boto3.client("s3").put_object(Bucket=BUCKET, Key=state_key,
                                      Body=b'{"step": %d}' % (step + 1))  # same size: only the digest tells
    with pytest.raises(GankitError) as e:
        run_storage.pull_latest_checkpoint(uri, tmp_path / "stage")
    assert "no checkpoint" in str(e.value) and uri in str(e.value) and "\n" not in str(e.value)
    assert remote_names(uri) == ["ckpt-000000003.corrupt", "ckpt-000000004.corrupt"]
    with pytest.raises(GankitError):  # and again on the next run
        run_storage.pull_latest_checkpoint(uri, tmp_path / "stage2")


@pytest.mark.parametrize("fails", ["payload", "manifest"])
def test_a_full_local_disk_stops_the_run_rather_than_start_over_without_the_s3_checkpoints(bucket, tmp_path,
                                                                                          monkeypatch, fails):
    # Each download failed on this side, was taken for an object that cannot be fetched now, and skipped:
    # the run started over at step 0, and its new checkpoints would have replaced the old run's in S3.
    uri = bucket + "/runs/f/checkpoints"
    for step in (4, 8):
        run_storage.push_checkpoint(write(tmp_path / "src", step), uri, keep=5)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(*((s3, "atomic_file") if fails == "payload" else (run_storage.Path, "write_bytes")), full_disk)
    with pytest.raises(GankitError, match="ckpt-000000008.*No space left on device") as e:
        run_storage.pull_latest_checkpoint(uri, tmp_path / "stage")
    assert "\n" not in str(e.value)
    assert remote_names(uri) == ["ckpt-000000004", "ckpt-000000008"]  # nothing set aside
    assert not (tmp_path / "stage").exists() or not list((tmp_path / "stage").iterdir())


# Sets the window's title and reverses the rest of the line: text a terminal must not be handed raw.
TERMINAL_CONTROL = "\x1b]2;pwned\x07\u202e"


def test_a_skipped_checkpoints_warning_shows_what_s3_said_escaped_on_one_line(bucket, tmp_path, capsys, monkeypatch):
    # The warning printed the S3 endpoint's error message raw: its controls reached the terminal of a run
    # started by hand with an s3:// --checkpoint-dir.
    uri = bucket + "/runs/h/checkpoints"
    run_storage.push_checkpoint(write(tmp_path / "src", 3), uri, keep=3)
    refuse_call(monkeypatch, "HeadObject", "AccessDenied", f"denied\n{TERMINAL_CONTROL}")
    assert run_storage.pull_latest_checkpoint(uri, tmp_path / "stage") is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "skipping checkpoint" in err and "cannot download its files" in err, err
    assert "\x1b" not in err and "\u202e" not in err and "denied \\x1b]2;pwned\\x07\\u202e" in err, err


def test_a_corrupt_checkpoints_warning_shows_its_folder_name_escaped_on_one_line(tmp_path, capsys):
    directory = tmp_path / f"run\n{TERMINAL_CONTROL}"  # a name as a file system allows it
    write(directory, 1)
    corrupt(write(directory, 2))
    assert checkpoints.latest_checkpoint(directory).name == "ckpt-000000001"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "skipping checkpoint" in err and "set aside" in err, err
    assert "\x1b" not in err and "\u202e" not in err and "run\\n\\x1b]2;pwned" in err, err


def test_s3_pruning_keeps_new_good_checkpoints(bucket, tmp_path):
    uri = bucket + "/runs/p/checkpoints"
    run_storage.push_checkpoint(write(tmp_path / "src", 9), uri, keep=5)
    boto3.client("s3").put_object(Bucket=BUCKET, Key="runs/p/checkpoints/ckpt-000000009/MANIFEST.json", Body=b"{broken")
    for step in (1, 2, 3):
        run_storage.push_checkpoint(write(tmp_path / "new", step), uri, keep=2)
    assert "ckpt-000000003" in remote_names(uri) and "ckpt-000000002" in remote_names(uri)
    assert "ckpt-000000001" not in remote_names(uri)


def test_a_local_checkpoint_newer_than_s3_is_uploaded_first(bucket, tmp_path, capsys):
    uri = bucket + "/runs/w/checkpoints"
    stage = tmp_path / "stage"
    write(stage, 10)  # left by an earlier run; the bucket has since been emptied
    got = run_storage.pull_latest_checkpoint(uri, stage)
    assert got.name == "ckpt-000000010"
    assert [n for _, n in run_storage.remote_checkpoints(uri)] == ["ckpt-000000010"]
    assert s3.read_bytes(uri + "/ckpt-000000010/MANIFEST.json") is not None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "newer than any in" in err and "uploading" in err


def test_a_local_checkpoint_newer_than_the_remote_ones_is_uploaded(bucket, tmp_path, capsys):
    uri = bucket + "/runs/x/checkpoints"
    run_storage.push_checkpoint(write(tmp_path / "src", 2), uri, keep=3)
    stage = tmp_path / "stage"
    write(stage, 5)  # an upload that was interrupted
    assert run_storage.pull_latest_checkpoint(uri, stage).name == "ckpt-000000005"
    assert [n for _, n in run_storage.remote_checkpoints(uri)] == ["ckpt-000000005", "ckpt-000000002"]


def test_a_local_checkpoint_as_new_as_s3_uploads_nothing(bucket, tmp_path, capsys, monkeypatch):
    uri = bucket + "/runs/y/checkpoints"
    run_storage.push_checkpoint(write(tmp_path / "src", 4), uri, keep=3)
    stage = tmp_path / "stage"
    write(stage, 4)
    monkeypatch.setattr(s3, "upload_file", lambda *a, **k: pytest.fail("nothing to upload"))
    assert run_storage.pull_latest_checkpoint(uri, stage).name == "ckpt-000000004"
    assert capsys.readouterr().err == ""


def test_stand_ins_are_keyed_by_endpoint_and_bucket(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    s3.client.cache_clear()
    a = run_storage.local_stand_in("s3://b1/runs/j/checkpoints", "checkpoints")
    b = run_storage.local_stand_in("s3://b2/runs/j/checkpoints", "checkpoints")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    s3.client.cache_clear()
    c = run_storage.local_stand_in("s3://b1/runs/j/checkpoints", "checkpoints")
    s3.client.cache_clear()
    assert len({a, b, c}) == 3


# A writer of checkpoints 4 (complete) and then 8 that is killed (SIGKILL: nothing of Python's clean-up runs)
# at one point of the second write: mid-way through weights.npz, between atomic_dir's two renames when step 8
# is written again (a re-written step), or mid-way through pruning step 4 away.
_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
import numpy as np
from trainer import checkpoints

directory, point = Path(sys.argv[1]), sys.argv[2]
arrays = {"w": np.arange(100_000, dtype=np.float32)}
replace, write_synced = os.replace, checkpoints._write_synced
checkpoints.write_checkpoint(directory, 4, arrays, {"step": 4}, keep=10)
if point == "between renames":
    checkpoints.write_checkpoint(directory, 8, arrays, {"step": 8}, keep=10)

def killed():
    os.kill(os.getpid(), signal.SIGKILL)

class Cut:
    def __init__(self, f):
        self.f, self.n = f, 0
    def write(self, data):
        self.f.write(data)
        self.n += len(data)
        if self.n > 200_000:
            self.f.flush()
            killed()
    def __getattr__(self, name):
        return getattr(self.f, name)

def cut_short(path, fill):
    if point == "mid-write" and path.name == checkpoints.WEIGHTS:
        return write_synced(path, lambda f: fill(Cut(f)))
    return write_synced(path, fill)

def renamed(a, b):
    b = Path(b)
    if point == "mid-drop" and b.name.endswith(checkpoints.DROPPED):
        replace(a, b)
        (b / checkpoints.WEIGHTS).unlink()
        killed()
    replace(a, b)
    if point == "between renames" and ".tmp-old-" in b.name:
        killed()

checkpoints._write_synced, os.replace = cut_short, renamed
checkpoints.write_checkpoint(directory, 8, arrays, {"step": 8}, keep=1)
"""


@pytest.mark.parametrize("point, resumed", [("mid-write", 4), ("between renames", 8), ("mid-drop", 8)])
def test_a_writer_killed_mid_checkpoint_leaves_the_last_complete_one_and_no_debris(tmp_path, point, resumed):
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(tmp_path), point],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    assert any(p.name.startswith(".") for p in tmp_path.iterdir())  # the kill left a temp or set-aside folder
    latest = checkpoints.latest_checkpoint(tmp_path)  # what the resumed run starts from
    assert latest.name == checkpoints.checkpoint_name(resumed) and checkpoints.problem(latest) is None
    assert json_step(latest) == resumed
    # The resumed run's checkpoints are at other steps: the killed write's temp folders (a whole checkpoint's
    # bytes each) must not stay behind for ever.
    write(tmp_path, 12, keep=1)
    assert names(tmp_path) == ["ckpt-000000012"]


def json_step(folder):
    import json

    return json.loads((folder / checkpoints.STATE).read_text())["step"]
