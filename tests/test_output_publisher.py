"""Outputs mirrored to S3 beside training: the epoch's snapshot, generator.json last, never blocking, errors kept."""

import threading

import pytest

from tests.aws_helpers import mocked_bucket
from trainer import run_storage, s3
from trainer.errors import GankitError


@pytest.fixture
def bucket(monkeypatch):
    with mocked_bucket(monkeypatch, "gankit-publish") as uri:
        yield uri


@pytest.fixture
def gated(monkeypatch):
    """s3.upload_file held until the test opens the gate; records the order of uploads."""
    gate, real, order = threading.Event(), s3.upload_file, []

    def held(local, uri, callback=None):
        assert gate.wait(30)
        order.append(uri.rsplit("/out/", 1)[1])
        return real(local, uri)

    monkeypatch.setattr(s3, "upload_file", held)
    yield gate, order
    gate.set()


def storage(tmp_path, uri):
    out = tmp_path / "out"
    (out / "generator").mkdir(parents=True)
    (out / "checkpoints" / "ckpt-000000001").mkdir(parents=True)
    (out / "generator" / "generator.keras").write_text("weights v1")
    (out / "generator" / "generator.json").write_text('{"v": 1}')
    (out / "metrics.jsonl").write_text("epoch 1\n")
    (out / "checkpoints" / "ckpt-000000001" / "weights.npz").write_text("mid-write")
    return run_storage.Storage(None, str(out), str(out / "checkpoints"), uri + "/out", None)


def test_publish_returns_at_once_and_sends_the_epochs_snapshot_generator_json_last(bucket, tmp_path, gated):
    gate, order = gated
    st = storage(tmp_path, bucket)
    publisher = run_storage.OutputPublisher(st)
    assert publisher.publish() is True  # returned with every upload still held
    out = tmp_path / "out"
    # The next epoch rewrites files while the upload runs: S3 gets the moment of the publish.
    (out / "generator" / "generator.keras").write_text("weights v2")
    (out / "metrics.jsonl").write_text("epoch 1\nepoch 2\n")
    gate.set()
    publisher.wait()
    assert order == ["generator/generator.keras", "metrics.jsonl", "generator/generator.json"]
    assert s3.read_bytes(bucket + "/out/generator/generator.keras") == b"weights v1"
    assert s3.read_bytes(bucket + "/out/metrics.jsonl") == b"epoch 1\n"
    assert s3.read_bytes(bucket + "/out/checkpoints/ckpt-000000001/weights.npz") is None  # the writer's own push
    assert not publisher.snapshot.exists()
    # The next publish sends only what changed since, as it is now.
    order.clear()
    publisher.publish()
    publisher.wait()
    assert order == ["generator/generator.keras", "metrics.jsonl"]
    assert s3.read_bytes(bucket + "/out/metrics.jsonl") == b"epoch 1\nepoch 2\n"


def test_a_publish_while_the_last_upload_runs_is_skipped_and_its_changes_go_with_the_next(bucket, tmp_path, gated):
    gate, order = gated
    st = storage(tmp_path, bucket)
    publisher = run_storage.OutputPublisher(st)
    publisher.publish()
    (tmp_path / "out" / "losses.jsonl").write_text("{}\n")
    assert publisher.publish() is False  # training is not held up by a slow S3
    gate.set()
    publisher.wait()
    assert "losses.jsonl" not in order
    assert publisher.publish() is True
    publisher.wait()
    assert order[-1] == "losses.jsonl" and s3.read_bytes(bucket + "/out/losses.jsonl") == b"{}\n"


def test_a_failed_upload_raises_on_the_next_call_and_is_sent_again(bucket, tmp_path, monkeypatch):
    st = storage(tmp_path, bucket)
    publisher = run_storage.OutputPublisher(st)
    real = s3.upload_file

    def broken(local, uri, callback=None):
        raise GankitError(f"upload to {uri} failed after 5 attempts: SlowDown")

    monkeypatch.setattr(s3, "upload_file", broken)
    publisher.publish()
    with pytest.raises(GankitError, match="failed after 5 attempts"):
        publisher.wait()
    publisher.wait()  # raised once, then cleared
    monkeypatch.setattr(s3, "upload_file", real)
    st.publish_outputs()  # the end of the run: nothing was marked sent, so everything goes
    assert s3.read_bytes(bucket + "/out/generator/generator.json") == b'{"v": 1}'
    assert s3.read_bytes(bucket + "/out/metrics.jsonl") == b"epoch 1\n"


def test_without_an_s3_output_nothing_is_copied_or_started(tmp_path):
    st = storage(tmp_path, "s3://unused")
    st.output_uri = None
    publisher = run_storage.OutputPublisher(st)
    assert publisher.publish() is False
    publisher.wait()
    assert not publisher.snapshot.exists()


def test_an_output_dir_of_dot_publishes_from_a_snapshot_beside_it(bucket, tmp_path, monkeypatch):
    # `python -m trainer train --output-dir .` died at its first step: Path('.') has no name to put
    # ".publishing" after, and the traceback came after run.json and friends were already written.
    run = tmp_path / "run"
    (run / "generator").mkdir(parents=True)
    (run / "generator" / "generator.json").write_text('{"v": 1}')
    (run / "metrics.jsonl").write_text("epoch 1\n")
    monkeypatch.chdir(run)
    publisher = run_storage.OutputPublisher(run_storage.Storage(None, ".", "checkpoints", bucket + "/out", None))
    assert publisher.snapshot == tmp_path / "run.publishing"  # beside the folder, never inside it
    assert publisher.publish() is True
    publisher.wait()
    assert s3.read_bytes(bucket + "/out/metrics.jsonl") == b"epoch 1\n"
    assert s3.read_bytes(bucket + "/out/generator/generator.json") == b'{"v": 1}'


def test_a_full_disk_under_the_snapshot_is_one_line_and_leaves_no_half_snapshot(bucket, tmp_path, monkeypatch):
    real = run_storage.shutil.copy2

    def full_after_one(src, dst):
        if list(publisher.snapshot.rglob("*.*")):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    publisher = run_storage.OutputPublisher(storage(tmp_path, bucket))
    monkeypatch.setattr(run_storage.shutil, "copy2", full_after_one)
    with pytest.raises(GankitError, match="could not be written in .*No space left on device") as e:
        publisher.publish()
    assert "\n" not in str(e.value) and not publisher.snapshot.exists()
    assert s3.list_objects(bucket + "/out") == {}  # nothing half-sent either
