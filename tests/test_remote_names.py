"""Hostile and stale remote content: an S3 key or manifest entry never writes outside its folder,
and a changed remote file is downloaded again even at the same size."""

import json

import boto3
import pytest

from tests.aws_helpers import mocked_bucket
from trainer import checkpoints, s3, run_storage
from trainer.errors import GankitError, UsageError
from trainer import fsutil

BUCKET = "gankit-hostile"


@pytest.fixture
def bucket(monkeypatch):
    with mocked_bucket(monkeypatch, BUCKET) as uri:
        yield boto3.client("s3")


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "a//b", ".", "..", "", "a/./b", "a/../b"])
def test_inside_refuses_names_that_leave_or_blur_the_folder(tmp_path, name):
    with pytest.raises(GankitError, match="refusing"):
        fsutil.inside(tmp_path, name, "s3://b/p")


def test_a_name_with_a_nul_byte_is_refused_in_one_line_not_a_traceback(tmp_path):
    # S3 keys and manifest entries may hold U+0000, which no local file name can: resolving it raised
    # ValueError ("embedded null byte"), a traceback instead of the refusal.
    with pytest.raises(GankitError, match="refusing"):
        fsutil.inside(tmp_path, "gen/a\0b.png", "s3://b/p")


def test_inside_refuses_a_symlink_that_points_out(tmp_path):
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "link").symlink_to(tmp_path)
    with pytest.raises(GankitError, match="outside"):
        fsutil.inside(tmp_path / "dest", "link/x", "s3://b/p")
    assert fsutil.inside(tmp_path / "dest", "a/b.png", "s3://b/p") == tmp_path / "dest" / "a" / "b.png"



def test_a_symlink_loop_in_the_destination_is_one_line_not_a_traceback(tmp_path):
    # resolve() raised RuntimeError ("Symlink loop"): a pull into such a folder ended in a traceback.
    from launcher.pull import copy_tree

    (tmp_path / "run" / "generator").mkdir(parents=True)
    (tmp_path / "run" / "generator" / "generator.json").write_text("{}")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "generator").symlink_to(tmp_path / "dest" / "generator")
    with pytest.raises(UsageError, match="a symlink there leads back to itself"):
        copy_tree(tmp_path / "run", tmp_path / "dest", label="pulling")
    with pytest.raises(UsageError, match="a symlink there leads back to itself"):
        fsutil.inside(tmp_path / "dest", "generator/generator.json", "s3://b/p")
    assert (tmp_path / "dest" / "generator").is_symlink()

def test_a_local_pull_leaves_out_what_symlinks_lead_to_outside_the_run_as_the_upload_does(tmp_path):
    """copy_tree copied a symlinked file wherever it pointed (a link to ~/notes landed in the pulled folder),
    while the upload (s3.changed_files) never sends it: a local job's pull held what a cloud job's would not."""
    from launcher.pull import copy_tree

    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    (run / "samples" / "epoch-0001.png").write_text("png")
    (tmp_path / "home" / "shots").mkdir(parents=True)
    (tmp_path / "home" / "notes").write_text("private")
    (tmp_path / "home" / "shots" / "x.png").write_text("private")
    (run / "notes.txt").symlink_to(tmp_path / "home" / "notes")
    (run / "tensorboard").symlink_to(tmp_path / "home" / "shots")
    (run / "loop").symlink_to(run / "loop")
    (run / "copy.png").symlink_to(run / "samples" / "epoch-0001.png")  # inside: as the upload, kept
    copy_tree(run, tmp_path / "dest", label="pulling")
    pulled = sorted(p.relative_to(tmp_path / "dest").as_posix() for p in (tmp_path / "dest").rglob("*") if p.is_file())
    assert pulled == ["copy.png", "samples/epoch-0001.png"]
    assert set(pulled) <= {rel for _, rel, _ in s3.changed_files(run)}


HOSTILE = ["gen/../../../../.bashrc", "gen/../../../../../../.bashrc", "gen//x", "gen/a/../../../y"]


@pytest.mark.parametrize("key", HOSTILE)
def test_launcher_generate_refuses_a_hostile_key(bucket, tmp_path, monkeypatch, capsys, key):
    from launcher.cli import main

    cache = tmp_path / "a" / "b" / "c" / "d" / "cache"
    monkeypatch.setenv("GANKIT_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    bucket.put_object(Bucket=BUCKET, Key="gen/generator.json", Body=b"{}")  # a whole generator, and a key beside it
    bucket.put_object(Bucket=BUCKET, Key="gen/generator.keras", Body=b"model")
    bucket.put_object(Bucket=BUCKET, Key=key, Body=b"echo pwned")
    with pytest.raises(SystemExit) as e:
        main(["generate", f"s3://{BUCKET}/gen", "--out", str(tmp_path / "out.png")])
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: refusing") and "Traceback" not in err
    assert files_under(tmp_path) == []  # nothing at all was downloaded, inside or out


def test_launcher_pull_refuses_a_hostile_key(bucket, tmp_path, monkeypatch, capsys):
    from launcher import jobs
    from launcher.cli import main

    jobs.save({"job": "j1", "output_uri": f"s3://{BUCKET}/runs/j1/output", "backend": "sagemaker"})
    bucket.put_object(Bucket=BUCKET, Key="runs/j1/output/metrics.jsonl", Body=b"")
    bucket.put_object(Bucket=BUCKET, Key="runs/j1/output/../../../evil", Body=b"x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["pull", "j1", "--dest", str(tmp_path / "dest" / "j1")])
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing" in err and "../../../evil" in err
    assert not (tmp_path / "evil").exists() and files_under(tmp_path) == []


def test_data_dir_staging_refuses_a_hostile_key(bucket, tmp_path):
    bucket.put_object(Bucket=BUCKET, Key="data/../../../../../../escaped", Body=b"x")
    with pytest.raises(GankitError, match="refusing"):
        s3.download_prefix(f"s3://{BUCKET}/data", tmp_path / "a" / "b" / "stage")
    assert files_under(tmp_path) == []


def push(bucket, prefix, name, manifest_files, objects):
    for key, body in objects.items():
        bucket.put_object(Bucket=BUCKET, Key=f"{prefix}/{name}/{key}", Body=body)
    manifest = {"format": 1, "step": int(name[5:]), "files": manifest_files}
    bucket.put_object(Bucket=BUCKET, Key=f"{prefix}/{name}/{checkpoints.MANIFEST}", Body=json.dumps(manifest).encode())


def meta(body):
    import hashlib

    return {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def push_good(bucket, prefix, name="ckpt-000000001"):
    push(bucket, prefix, name, {"state.json": meta(b"{}"), "tf.index": meta(b"i")}, {"state.json": b"{}", "tf.index": b"i"})


def test_a_manifest_naming_a_path_is_refused_and_nothing_escapes(bucket, tmp_path, capsys):
    prefix = "runs/j/checkpoints"
    push_good(bucket, prefix)
    body = b"x"
    # The objects exist where the manifest says, so a naive reader would fetch them.
    push(bucket, prefix, "ckpt-000000002", {"state.json": meta(b"{}"), "../../../escaped": meta(body)},
         {"state.json": b"{}", "../../../escaped": body})
    stage = tmp_path / "deep" / "er" / "stage"
    assert run_storage.pull_latest_checkpoint(f"s3://{BUCKET}/{prefix}", stage).name == "ckpt-000000001"
    err = capsys.readouterr().err
    assert "ckpt-000000002" in err and "not a plain file name" in err and err.count("\n") == 1
    assert files_under(tmp_path) == ["deep/er/stage/ckpt-000000001/" + n for n in ("MANIFEST.json", "state.json", "tf.index")]


def test_a_local_manifest_naming_a_path_does_not_verify(tmp_path):
    folder = tmp_path / "c" / "ckpt-000000001"
    folder.mkdir(parents=True)
    (tmp_path / "secret").write_bytes(b"s")
    (folder / "state.json").write_text("{}")
    (folder / checkpoints.MANIFEST).write_text(json.dumps(
        {"step": 1, "files": {"state.json": meta(b"{}"), "../../secret": meta(b"s")}}))
    assert "not a plain file name" in checkpoints.problem(folder)


def test_a_manifest_without_a_payload_does_not_verify(bucket, tmp_path, capsys):
    prefix = "runs/k/checkpoints"
    push_good(bucket, prefix)
    push(bucket, prefix, "ckpt-000000003", {"state.json": meta(b"{}")}, {"state.json": b"{}"})
    assert run_storage.pull_latest_checkpoint(f"s3://{BUCKET}/{prefix}", tmp_path / "stage").name == "ckpt-000000001"
    assert "lists no checkpoint payload" in capsys.readouterr().err


def test_an_s3_checkpoint_with_missing_files_is_skipped_in_one_line(bucket, tmp_path, capsys):
    prefix = "runs/m/checkpoints"
    push_good(bucket, prefix)
    push(bucket, prefix, "ckpt-000000004", {"state.json": meta(b"{}"), "tf.index": meta(b"i")}, {"state.json": b"{}"})
    assert run_storage.pull_latest_checkpoint(f"s3://{BUCKET}/{prefix}", tmp_path / "stage").name == "ckpt-000000001"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ckpt-000000004: missing file tf.index" in err and "attempts" not in err
    assert not any("ckpt-000000004" in f for f in files_under(tmp_path))


# --- stale copies ---------------------------------------------------------------------------------

def test_generate_cache_downloads_a_changed_generator_of_the_same_size(bucket, tmp_path):
    from launcher.pull import generator_dir

    uri = f"s3://{BUCKET}/runs/j/output/generator"
    bucket.put_object(Bucket=BUCKET, Key="runs/j/output/generator/generator.json", Body=b"{}")  # a generator's pair
    bucket.put_object(Bucket=BUCKET, Key="runs/j/output/generator/generator.keras", Body=b"A" * 64)
    first = generator_dir(uri)
    assert (first / "generator.keras").read_bytes() == b"A" * 64
    bucket.put_object(Bucket=BUCKET, Key="runs/j/output/generator/generator.keras", Body=b"B" * 64)
    second = generator_dir(uri)
    assert second == first and (second / "generator.keras").read_bytes() == b"B" * 64


def test_pull_downloads_a_changed_file_of_the_same_size(bucket, tmp_path):
    from launcher.pull import fetch

    uri = f"s3://{BUCKET}/runs/j/output"
    bucket.put_object(Bucket=BUCKET, Key="runs/j/output/generator/generator.keras", Body=b"A" * 64)
    fetch(uri, tmp_path / "j", "pull")
    bucket.put_object(Bucket=BUCKET, Key="runs/j/output/generator/generator.keras", Body=b"B" * 64)
    fetch(uri, tmp_path / "j", "pull")
    assert (tmp_path / "j" / "generator" / "generator.keras").read_bytes() == b"B" * 64
    # A file changed locally is replaced by the remote one too.
    (tmp_path / "j" / "generator" / "generator.keras").write_bytes(b"C" * 64)
    fetch(uri, tmp_path / "j", "pull")
    assert (tmp_path / "j" / "generator" / "generator.keras").read_bytes() == b"B" * 64


def test_pull_from_a_local_run_copies_a_changed_file_of_the_same_size(tmp_path):
    from launcher.pull import fetch

    src = tmp_path / "run"
    (src / "generator").mkdir(parents=True)
    (src / "generator" / "generator.keras").write_bytes(b"A" * 64)
    fetch(str(src), tmp_path / "j", "pull")
    (src / "generator" / "generator.keras").write_bytes(b"B" * 64)
    fetch(str(src), tmp_path / "j", "pull")
    assert (tmp_path / "j" / "generator" / "generator.keras").read_bytes() == b"B" * 64


def test_pull_of_a_running_local_job_that_replaces_a_folder_as_it_is_read_is_no_traceback(tmp_path):
    # A running job exports generator-best/ whole (atomic_dir: a hidden temp folder, two renames) at each better
    # FCD: a `launcher pull` at that moment listed, then could not stat or open, files already gone.
    import threading
    import time

    from launcher.pull import fetch

    src = tmp_path / "run"
    (src / "samples").mkdir(parents=True)
    (src / "samples" / "epoch-0001.png").write_bytes(b"PNG" * 100)
    done = threading.Event()

    def export_again_and_again():
        while not done.is_set():
            with fsutil.atomic_dir(src / "generator-best") as tmp:
                for i in range(20):
                    (tmp / f"part-{i}").write_bytes(b"w" * 5000)

    exporter = threading.Thread(target=export_again_and_again)
    exporter.start()
    try:
        end = time.monotonic() + 4
        while time.monotonic() < end:
            fetch(str(src), tmp_path / "j", "pull")
    finally:
        done.set()
        exporter.join()
    assert (tmp_path / "j" / "samples" / "epoch-0001.png").read_bytes() == b"PNG" * 100
    assert all(p.read_bytes() == b"w" * 5000 for p in (tmp_path / "j" / "generator-best").iterdir())


def test_pull_from_a_local_run_leaves_out_the_temp_files_of_cut_short_writes(tmp_path):
    # A trainer killed mid-write (or still writing) leaves atomic writes' hidden temp files in its output;
    # the S3 mirror never sends them, and a local pull brought them home beside the outputs.
    from launcher.pull import fetch

    src = tmp_path / "run"
    (src / "samples").mkdir(parents=True)
    (src / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (src / ".metrics.jsonl.k2j3abcd").write_text('{"epo')
    (src / ".generator.tmp-x1y2").mkdir()
    (src / ".generator.tmp-x1y2" / "generator.keras").write_bytes(b"PK half")
    (src / "samples" / ".epoch-0002.png.q8w9").write_bytes(b"PNG half")
    fetch(str(src), tmp_path / "j", "pull")
    assert files_under(tmp_path / "j") == ["metrics.jsonl"]


def test_unchanged_files_are_not_downloaded_again(bucket, tmp_path, monkeypatch):
    uri = f"s3://{BUCKET}/runs/j/output"
    bucket.put_object(Bucket=BUCKET, Key="runs/j/output/a.bin", Body=b"A" * 64)
    s3.download_prefix(uri, tmp_path / "j")
    calls = []
    monkeypatch.setattr(s3, "download_file", lambda *a, **k: calls.append(a))
    s3.download_prefix(uri, tmp_path / "j")
    assert calls == []


@pytest.mark.parametrize("keys", [["gen/generator.json", "gen/generator.json/x"], ["gen/a/b", "gen/a"]])
def test_a_key_that_is_also_a_folder_is_refused_before_anything_is_written(bucket, tmp_path, keys):
    for key in keys:
        bucket.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    with pytest.raises(GankitError, match="both a file and the folder of other files"):
        s3.download_prefix(f"s3://{BUCKET}/gen", tmp_path / "dest")
    assert files_under(tmp_path) == []


def test_a_key_segment_longer_than_a_file_name_is_refused(bucket, tmp_path):
    bucket.put_object(Bucket=BUCKET, Key="gen/generator.json", Body=b"{}")
    bucket.put_object(Bucket=BUCKET, Key="gen/" + "a" * 300, Body=b"x")
    with pytest.raises(GankitError, match="longer than a local file name"):
        s3.download_prefix(f"s3://{BUCKET}/gen", tmp_path / "dest")
    assert files_under(tmp_path) == []


def test_a_local_file_in_the_way_of_a_download_is_one_line(bucket, tmp_path):
    bucket.put_object(Bucket=BUCKET, Key="gen/sub/x", Body=b"x")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "sub").write_bytes(b"mine")  # a file where the download needs a folder
    with pytest.raises(GankitError, match="download of .*gen/sub/x .* failed") as e:
        s3.download_prefix(f"s3://{BUCKET}/gen", tmp_path / "dest")
    assert "\n" not in str(e.value)
    assert (tmp_path / "dest" / "sub").read_bytes() == b"mine"


@pytest.mark.parametrize("dest", ["afile", "afile/sub"])
def test_pull_into_a_file_is_one_line_and_writes_nothing(bucket, tmp_path, monkeypatch, capsys, dest):
    from launcher import jobs
    from launcher.cli import main

    jobs.save({"job": "j2", "output_uri": f"s3://{BUCKET}/runs/j2/output", "backend": "sagemaker"})
    bucket.put_object(Bucket=BUCKET, Key="runs/j2/output/metrics.jsonl", Body=b"")
    (tmp_path / "afile").write_bytes(b"mine")
    with pytest.raises(SystemExit) as e:
        main(["pull", "j2", "--dest", str(tmp_path / dest)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "is a file, not a folder" in err, err
    assert (tmp_path / "afile").read_bytes() == b"mine"


def test_a_pull_that_finds_nothing_leaves_no_empty_folder(tmp_path, capsys):
    from launcher import jobs
    from launcher.cli import main

    sm_root = jobs.jobs_dir() / "j3"  # where the local backend keeps its job's files
    jobs.save({"job": "j3", "output_uri": str(tmp_path / "bucket" / "runs" / "j3" / "output"), "backend": "local",
               "pid": 1, "log": str(sm_root / "train.log"), "sm_root": str(sm_root)})
    with pytest.raises(SystemExit) as e:
        main(["pull", "j3", "--dest", str(tmp_path / "out" / "j3")])
    assert e.value.code == 1 and "nothing at" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_pull_of_a_job_that_published_no_file_leaves_no_empty_folder(tmp_path, capsys):
    # A trainer killed before its first epoch leaves its output folder empty: the pull said why, and left an empty
    # ./JOB behind, which `launcher generate JOB` then took for a generator folder rather than the job.
    from launcher.cli import main

    _ended_local_job(tmp_path, "j7", -9)
    (tmp_path / "bucket" / "runs" / "j7" / "output").mkdir(parents=True)
    with pytest.raises(SystemExit) as e:
        main(["pull", "j7", "--dest", str(tmp_path / "out" / "j7")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "j7 has no exported generator: job j7 failed" in err, err
    assert not (tmp_path / "out").exists()


def test_generate_from_a_job_without_a_generator_says_so_of_the_job(tmp_path, capsys):
    # It named a folder the user never typed (the run's generator/, or for S3 a cache folder) and told them to
    # "point at the generator/ folder of a finished run".
    from launcher.cli import main

    _ended_local_job(tmp_path, "j8", 2, failure="out of memory", published=["metrics.jsonl"])
    with pytest.raises(SystemExit) as e:
        main(["generate", "j8", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1, err
    assert "error: j8 has no exported generator: job j8 failed" in err and "out of memory" in err, err
    assert not (tmp_path / "x.png").exists()


def test_generate_from_an_s3_prefix_without_a_generator_names_the_prefix_not_the_cache(bucket, tmp_path, capsys):
    # It said "<cache>/generators/9091e9b6fc7c9668 is not an exported generator": a folder the user never named.
    from launcher.cli import main

    bucket.put_object(Bucket=BUCKET, Key="runs/j/output/metrics.jsonl", Body=b"{}\n")
    for source in (f"s3://{BUCKET}/runs/j/output/generator", f"s3://{BUCKET}/runs/nothing/generator"):
        with pytest.raises(SystemExit) as e:
            main(["generate", source, "--out", str(tmp_path / "x.png")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: {source} is not an exported generator") and "cache" not in err, err


def test_generate_from_a_job_whose_s3_output_has_no_generator_says_so_of_the_job(bucket, tmp_path, capsys):
    from launcher import jobs
    from launcher.cli import main

    _ended_local_job(tmp_path, "j9", 143)  # stopped before its export; its outputs went to S3
    jobs.save({**jobs.load("j9"), "output_uri": f"s3://{BUCKET}/runs/j9/output"})
    bucket.put_object(Bucket=BUCKET, Key="runs/j9/output/metrics.jsonl", Body=b"{}\n")
    with pytest.raises(SystemExit) as e:
        main(["generate", "j9", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1, err
    assert err.startswith("error: j9 has no exported generator: job j9 was stopped") and "--resume j9" in err, err


def test_generate_from_a_job_whose_generator_is_on_s3_lists_its_prefix_once(bucket, tmp_path, capsys):
    # It listed runs/JOB/output/generator/ to see that generator.json was there, then again to download it.
    from launcher import jobs
    from launcher.cli import main

    _ended_local_job(tmp_path, "j10", 0)
    jobs.save({**jobs.load("j10"), "output_uri": f"s3://{BUCKET}/runs/j10/output"})
    meta = {"z_dim": 8, "image_shape": [28, 28, 1], "class_names": ["a", "b"]}
    bucket.put_object(Bucket=BUCKET, Key="runs/j10/output/generator/generator.json", Body=json.dumps(meta).encode())
    bucket.put_object(Bucket=BUCKET, Key="runs/j10/output/generator/generator.keras", Body=b"not loaded")
    listed = []
    s3.client().meta.events.register("provide-client-params.s3.ListObjectsV2",
                                     lambda params, **_: listed.append(params["Prefix"]))
    with pytest.raises(SystemExit) as e:  # the class is checked once the generator is here, before Keras loads it
        main(["generate", "j10", "--class", "c", "--out", str(tmp_path / "x.png")])
    assert e.value.code == 2 and "unknown class 'c'" in capsys.readouterr().err
    assert listed == ["runs/j10/output/generator/"]


def test_generate_from_a_job_whose_s3_generator_lacks_its_model_says_so_of_the_job(bucket, tmp_path, capsys):
    from launcher import jobs
    from launcher.cli import main

    _ended_local_job(tmp_path, "j11", 143)
    jobs.save({**jobs.load("j11"), "output_uri": f"s3://{BUCKET}/runs/j11/output"})
    bucket.put_object(Bucket=BUCKET, Key="runs/j11/output/generator/generator.json", Body=b"{}")
    with pytest.raises(SystemExit) as e:
        main(["generate", "j11", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith("error: j11 has no exported generator: job j11 was stopped"), err


def _ended_local_job(tmp_path, job, code, failure=None, published=()):
    """A local job whose trainer has exited with `code`, having published the files `published`."""
    from launcher import jobs

    sm_root, output = jobs.jobs_dir() / job, tmp_path / "bucket" / "runs" / job / "output"
    (sm_root / "output").mkdir(parents=True)
    (sm_root / "exit_code").write_text(f"{code}\n")
    if failure:
        (sm_root / "output" / "failure").write_text(failure)
    for name in published:
        (output / name).parent.mkdir(parents=True, exist_ok=True)
        (output / name).write_text("{}\n")
    jobs.save({"job": job, "output_uri": str(output), "backend": "local", "pid": 1, "log": str(sm_root / "train.log"),
               "sm_root": str(sm_root)})


def test_pulling_a_failed_job_says_it_failed_and_why_not_to_try_again_later(tmp_path, capsys):
    # A failed job never publishes its outputs: "try again later" sent its owner waiting for nothing.
    from launcher.cli import main

    _ended_local_job(tmp_path, "j4", 2, failure="image folder /x does not exist; give folder:PATH the folder")
    with pytest.raises(SystemExit) as e:
        main(["pull", "j4", "--dest", str(tmp_path / "out" / "j4")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1, err
    assert "job j4 failed" in err and "image folder /x does not exist" in err and "later" not in err, err
    assert not (tmp_path / "out").exists()


def test_pulling_a_job_stopped_before_its_export_says_how_to_continue_it(tmp_path, capsys):
    from launcher.cli import main

    _ended_local_job(tmp_path, "j5", 143, published=["metrics.jsonl", "run.json"])
    with pytest.raises(SystemExit) as e:
        main(["pull", "j5", "--dest", str(tmp_path / "j5")])
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar of what it did publish
    assert e.value.code == 1 and err.startswith("error: "), err
    assert "j5 has no exported generator: job j5 was stopped" in err and "--resume j5" in err, err
    assert "pull again when it has completed" not in err
    assert (tmp_path / "j5" / "metrics.jsonl").exists()  # what it did publish came home, and the line says where
    assert str(tmp_path / "j5") in err


@pytest.mark.parametrize("in_the_way", ["file", "folder"])
def test_a_local_pull_with_something_in_the_way_is_one_line(tmp_path, capsys, in_the_way):
    # S3's mirror said so in one line; the local backend's copy traced back.
    from launcher.cli import main

    _ended_local_job(tmp_path, "j6", 0, published=["generator/generator.json", "report.html"])
    dest = tmp_path / "j6"
    if in_the_way == "file":
        dest.mkdir()
        (dest / "generator").write_text("mine")  # where the generator's folder must go
    else:
        (dest / "report.html").mkdir(parents=True)  # where a file must go
    with pytest.raises(SystemExit) as e:
        main(["pull", "j6", "--dest", str(dest)])
    err = capsys.readouterr().err.splitlines()[-1]
    assert e.value.code == 1 and err.startswith("error: copy of ") and "failed" in err and "Traceback" not in err, err
    assert not [p.name for p in dest.rglob("*.part")]  # nothing half-written left beside it


TERMINAL_CONTROL = "\x1b]2;pwned\x07\x1b[2J\x9b1m\u202e"  # sets the title, clears the screen, reverses the text


def test_a_hostile_key_is_named_without_its_terminal_controls(bucket, tmp_path, monkeypatch, capsys):
    """A key that holds escape sequences reached the terminal as they were: its refusal (or any error naming a
    remote name) could retitle the window, clear the screen, or hide and reorder the text of the line."""
    from launcher.cli import main

    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "cache"))
    bucket.put_object(Bucket=BUCKET, Key="gen/generator.json", Body=b"{}")
    bucket.put_object(Bucket=BUCKET, Key="gen/generator.keras", Body=b"model")
    bucket.put_object(Bucket=BUCKET, Key=f"gen/../{TERMINAL_CONTROL}", Body=b"x")
    with pytest.raises(SystemExit) as e:
        main(["generate", f"s3://{BUCKET}/gen", "--out", str(tmp_path / "out.png")])
    err = capsys.readouterr().err
    assert e.value.code != 0 and err.startswith("error: refusing") and err.count("\n") == 1, err
    assert not any(ch in err for ch in "\x1b\x07\x9b\u202e"), repr(err)
    assert "\\x1b]2;pwned\\x07" in err  # named all the same, as text


CASE_PAIRS = [["gen/A.png", "gen/a.png"], ["gen/Cat/1.png", "gen/cat/2.png"], ["gen/Shirt", "gen/shirt/x.png"],
              ["gen/caf\u00e9.png", "gen/cafe\u0301.png"]]


@pytest.mark.parametrize("keys", CASE_PAIRS)
def test_keys_one_but_for_case_are_refused_where_the_file_system_ignores_case(bucket, tmp_path, monkeypatch, keys):
    # On macOS and Windows A.png and a.png are one file (as are Cat/ and cat/, and é composed or not): the second
    # download overwrote the first, or two class folders became one, without a word.
    for key in keys:
        bucket.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    monkeypatch.setattr(fsutil, "_ignores_case", lambda dest: True)  # this Linux file system keeps them apart
    with pytest.raises(GankitError, match="only in case .* takes the two for one") as e:
        s3.download_prefix(f"s3://{BUCKET}/gen", tmp_path / "dest")
    assert "\n" not in str(e.value)
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("keys", CASE_PAIRS)
def test_keys_one_but_for_case_are_both_kept_where_the_file_system_tells_them_apart(bucket, tmp_path, keys):
    for key in keys:
        bucket.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    s3.download_prefix(f"s3://{BUCKET}/gen", tmp_path / "dest")
    assert files_under(tmp_path / "dest") == sorted([s3.ETAGS, *(k[len("gen/"):] for k in keys)])
    assert sorted((tmp_path / "dest" / k[len("gen/"):]).read_text() for k in keys) == sorted(keys)
    assert not fsutil._ignores_case(tmp_path)  # the probe itself: Linux's file systems keep case
    assert [p.name for p in tmp_path.iterdir()] == ["dest"]  # and it leaves nothing behind
