"""S3 transfers and checkpoint mirroring against moto: manifest last, retries, broken uploads skipped."""

import json
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.awsrequest import AWSResponse

from tests.aws_helpers import mocked_bucket
from trainer import checkpoints, s3, run_storage
from trainer.errors import GankitError

BUCKET = "gankit-test"


@pytest.fixture
def bucket(monkeypatch):
    with mocked_bucket(monkeypatch, BUCKET) as uri:
        yield uri


def make_checkpoint(directory, step):
    return checkpoints.write_checkpoint(directory, step, {"generator/0000": np.full(3, step, np.float32)},
                                        {"step": step}, keep=10)


def keys(uri):
    return sorted(s3.list_objects(uri))


def test_push_puts_the_manifest_last_and_prunes(bucket, tmp_path, monkeypatch):
    uploaded = []
    real_upload = s3.upload_file
    monkeypatch.setattr(s3, "upload_file", lambda local, uri, callback=None: (uploaded.append(uri), real_upload(local, uri))[1])
    uri = bucket + "/runs/j1/checkpoints"
    for step in (1, 2, 3):
        run_storage.push_checkpoint(make_checkpoint(tmp_path, step), uri, keep=2)
    assert uploaded[2].endswith("ckpt-000000001/MANIFEST.json")  # after state.json and weights.npz
    assert [n for _, n in run_storage.remote_checkpoints(uri)] == ["ckpt-000000003", "ckpt-000000002"]


def test_pull_takes_the_newest_complete_checkpoint(bucket, tmp_path, capsys):
    uri = bucket + "/runs/j2/checkpoints"
    for step in (1, 2, 3, 4):
        run_storage.push_checkpoint(make_checkpoint(tmp_path / "src", step), uri, keep=10)
    client = boto3.client("s3")
    prefix = "runs/j2/checkpoints"
    client.delete_object(Bucket=BUCKET, Key=f"{prefix}/ckpt-000000004/MANIFEST.json")  # upload cut short
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/ckpt-000000003/MANIFEST.json", Body=b"{broken")
    client.delete_object(Bucket=BUCKET, Key=f"{prefix}/ckpt-000000002/weights.npz")  # a file gone missing
    got = run_storage.pull_latest_checkpoint(uri, tmp_path / "dst")
    assert got.name == "ckpt-000000001"
    assert checkpoints.problem(got) is None
    assert json.loads((got / "state.json").read_text()) == {"step": 1}
    err = capsys.readouterr().err
    assert "ckpt-000000004: no manifest" in err and "ckpt-000000003: corrupted manifest" in err
    assert "ckpt-000000002: missing file" in err
    # Nothing partial was left behind locally.
    assert [p.name for p in (tmp_path / "dst").iterdir()] == ["ckpt-000000001"]


def test_pull_keeps_a_newer_local_checkpoint(bucket, tmp_path):
    uri = bucket + "/runs/j3/checkpoints"
    run_storage.push_checkpoint(make_checkpoint(tmp_path / "src", 1), uri, keep=3)
    local = make_checkpoint(tmp_path / "dst", 5)
    assert run_storage.pull_latest_checkpoint(uri, tmp_path / "dst") == local


def answer_503_first(client, times, operation="PutObject"):
    calls = {"n": 0}

    class Raw:
        def stream(self, **_):
            yield b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"

    def handler(request, **_):
        calls["n"] += 1
        if calls["n"] <= times:
            return AWSResponse(request.url, 503, {}, Raw())
        return None

    client.meta.events.register(f"before-send.s3.{operation}", handler)
    return calls


def test_throttled_uploads_are_retried(bucket, tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 1000)
    calls = answer_503_first(s3.client(), times=3)
    s3.upload_file(src, bucket + "/a/f.bin")
    assert calls["n"] == 4
    assert s3.read_bytes(bucket + "/a/f.bin") == b"x" * 1000


def test_uploads_fail_clearly_after_retries_and_leave_local_checkpoint(bucket, tmp_path, monkeypatch):
    monkeypatch.setattr(s3, "MAX_ATTEMPTS", 2)
    s3.client.cache_clear()
    folder = make_checkpoint(tmp_path, 7)
    answer_503_first(s3.client(), times=100)
    with pytest.raises(GankitError, match="failed after 2 attempts"):
        run_storage.push_checkpoint(folder, bucket + "/runs/j4/checkpoints", keep=3)
    assert checkpoints.problem(folder) is None


def test_download_prefix_mirrors_and_skips_what_is_there(bucket, tmp_path):
    client = boto3.client("s3")
    for name in ("a.gz", "sub/b.gz"):
        client.put_object(Bucket=BUCKET, Key=f"datasets/x/{name}", Body=name.encode())
    local = s3.download_prefix(bucket + "/datasets/x", tmp_path / "x")
    assert (local / "sub" / "b.gz").read_bytes() == b"sub/b.gz"
    calls = answer_503_first(s3.client(), times=0, operation="GetObject")
    s3.download_prefix(bucket + "/datasets/x", tmp_path / "x")
    assert calls["n"] == 0  # nothing fetched twice


def test_missing_object_reads_as_none(bucket):
    assert s3.read_bytes(bucket + "/nothing/here") is None
    assert keys(bucket + "/nothing") == []


def test_two_processes_mirroring_one_prefix_into_a_cache_fetch_it_once(bucket, tmp_path, monkeypatch):
    """Two `generate`s of one s3:// generator at once each downloaded all of it into the same cache folder,
    and the ETags file was whichever wrote last; now the second waits and finds the files there."""
    import threading

    client = boto3.client("s3")
    for name in ("generator.json", "generator.keras"):
        client.put_object(Bucket=BUCKET, Key=f"runs/j/output/generator/{name}", Body=name.encode())
    fetched, first_started, release = [], threading.Event(), threading.Event()
    real_download = s3.download_file

    def slow_download(uri, local, callback=None):
        fetched.append(uri)
        first_started.set()
        release.wait(5)  # the first download is still going when the second process arrives
        real_download(uri, local, callback)

    monkeypatch.setattr(s3, "download_file", slow_download)
    cache = tmp_path / "cache" / "generators" / "g"
    runs = [threading.Thread(target=s3.mirror_into_cache, args=(bucket + "/runs/j/output/generator", cache))
            for _ in range(2)]
    runs[0].start()
    first_started.wait(5)
    runs[1].start()
    release.set()
    for run in runs:
        run.join(30)
    assert sorted(fetched) == sorted(f"{bucket}/runs/j/output/generator/{n}" for n in ("generator.json", "generator.keras"))
    assert (cache / "generator.keras").read_bytes() == b"generator.keras"


def test_s3_data_is_staged_as_it_is_now_not_as_it_was(bucket, tmp_path):
    """`--data-dir s3://...` trains on a cache copy of the prefix, made again for each run: a class folder
    deleted there since the last run stayed in the copy and was trained as a class still, and the temp file
    of a download killed midway was never removed."""
    from types import SimpleNamespace

    from trainer.data.folder import list_folder

    client = boto3.client("s3")
    for name in ("cats/1.png", "dogs/1.png"):
        client.put_object(Bucket=BUCKET, Key=f"pictures/{name}", Body=name.encode())
    cfg = SimpleNamespace(data_dir=bucket + "/pictures", output_dir=str(tmp_path / "out"),
                          checkpoint_dir=str(tmp_path / "ckpt"), keep_checkpoints=3)
    staged = Path(run_storage.prepare(cfg).data_dir)
    assert list_folder(staged)[2] == ("cats", "dogs")
    (staged / "cats" / ".2.png.x8k2m1").write_bytes(b"half a picture")  # a run killed while it downloaded 2.png
    client.delete_object(Bucket=BUCKET, Key="pictures/dogs/1.png")
    assert Path(run_storage.prepare(cfg).data_dir) == staged
    assert list_folder(staged)[2] == ("cats",)
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*")) == [
        ".gankit-etags.json", "cats", "cats/1.png"]


def test_a_restaging_cut_short_leaves_no_manifest_vouching_for_the_mix(bucket, tmp_path, monkeypatch):
    """`trainer stage --to` over an earlier staging, stopped after its first upload, left the earlier manifest in
    place: the prefix read as staged (cloud submits skip staging then), its files half one copy, half the other."""
    from tests.data_helpers import make_idx_dataset
    from trainer.dataset_staging import is_staged, stage_dataset

    to = bucket + "/datasets/mnist"
    stage_dataset("mnist", to, data_dir=make_idx_dataset(tmp_path / "old", n_train=32, seed=1), log=lambda m: None)
    real, sent = s3.upload_file, []

    def upload_then_ctrl_c(local, uri, callback=None):
        if sent:
            raise KeyboardInterrupt
        sent.append(uri)
        real(local, uri, callback)

    monkeypatch.setattr(s3, "upload_file", upload_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        stage_dataset("mnist", to, data_dir=make_idx_dataset(tmp_path / "new", n_train=64, seed=2), log=lambda m: None)
    assert len(sent) == 1 and not is_staged(to, "mnist")


@pytest.mark.parametrize("text", ["[]", '"x"', "{broken", ""])
def test_a_mangled_etags_file_means_nothing_was_downloaded_yet(tmp_path, text):
    """Then everything is fetched again, rather than a traceback from a list or a string where a dict was kept."""
    (tmp_path / s3.ETAGS).write_text(text)
    assert s3._read_etags(tmp_path) == {}
