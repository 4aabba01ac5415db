"""Bad input: one line naming the problem, exit 2, no traceback, nothing written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data_helpers import make_idx_dataset

ROOT = Path(__file__).parents[1]


def trainer_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def assert_usage_error(result, *words):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_idx_dataset(tmp_path_factory.mktemp("mnist"), n_train=32, n_test=16)


@pytest.mark.parametrize("args, words", [
    (["--dataset", "imagenet"], ["imagenet"]),
    (["--dataset", "mnist", "--epochs", "0"], ["--epochs", "positive"]),
    (["--dataset", "mnist", "--batch-size", "-3"], ["--batch-size"]),
    (["--dataset", "mnist", "--lr", "5"], ["--lr"]),
    (["--dataset", "mnist", "--image-size", "30"], ["--image-size", "multiple of 4"]),
    (["--dataset", "mnist", "--epochs", "many"], ["--epochs"]),
    (["--dataset", "mnist", "--batch-size", "1000"], ["--batch-size", "larger than the dataset"]),
])
def test_bad_training_options(tmp_path, data_dir, args, words):
    out = tmp_path / "run"
    result = trainer_cli("train", "--output-dir", str(out), "--data-dir", str(data_dir), *args)
    assert_usage_error(result, *words)
    assert not (out / "generator").exists() and not (out / "metrics.jsonl").exists()


def test_a_check_made_once_the_backend_loads_leaves_no_empty_folders_either(tmp_path, data_dir):
    # mixed_float16 under JAX is refused wherever it runs (no GPU here; no loss scaling on a GPU), after the
    # backend loads: the output and checkpoint folders made before it used to stay behind, empty.
    out = tmp_path / "new" / "run"
    result = trainer_cli("train", "--dataset", "mnist", "--data-dir", str(data_dir), "--output-dir", str(out),
                         "--batch-size", "8", "--framework", "jax", "--precision", "mixed_float16")
    assert_usage_error(result, "--precision mixed_float16")
    assert not (tmp_path / "new").exists()


def test_jax_on_several_hosts_is_refused_before_any_data_is_read(tmp_path):
    # The refusal came from the placement, after the dataset was staged and loaded (downloaded, where none was
    # given): an empty --data-dir, which would fail to load, shows which check comes first.
    empty = tmp_path / "empty"
    empty.mkdir()
    two_hosts = json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}})
    train = [sys.executable, "-m", "trainer", "train", "--dataset", "mnist", "--data-dir", str(empty),
             "--output-dir", str(tmp_path / "out"), "--framework", "jax"]
    for extra, tf_config in (([], two_hosts), (["--strategy", "multiworker"], "")):
        result = subprocess.run([*train, *extra], capture_output=True, text=True, timeout=120,
                                env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CONFIG=tf_config))
        assert_usage_error(result, "--framework jax trains on one host only", "--framework tensorflow")
        assert not (tmp_path / "out").exists()


def test_multiworker_without_a_cluster_is_refused_before_any_data_is_read(tmp_path):
    # As JAX on several hosts (above): the refusal came after the data was loaded, and the backend imported.
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-m", "trainer", "train", "--dataset", "mnist", "--data-dir", str(empty),
                             "--output-dir", str(tmp_path / "out"), "--strategy", "multiworker"],
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CONFIG="", SM_HOSTS="", GANKIT_SM_ROOT=str(tmp_path)))
    assert_usage_error(result, "--strategy multiworker needs TF_CONFIG", "--strategy auto")
    assert not (tmp_path / "out").exists()


def test_unwritable_output_dir(tmp_path, data_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = trainer_cli("train", "--dataset", "mnist", "--data-dir", str(data_dir), "--output-dir", str(blocker / "run"))
    assert_usage_error(result, "--output-dir", f"{blocker} is a file, not a folder")


def test_missing_and_corrupt_data_files(tmp_path, data_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = trainer_cli("train", "--dataset", "mnist", "--data-dir", str(empty), "--output-dir", str(tmp_path / "a"))
    assert_usage_error(result, str(empty))
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in Path(data_dir).iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    result = trainer_cli("train", "--dataset", "mnist", "--data-dir", str(broken), "--output-dir", str(tmp_path / "b"))
    assert_usage_error(result, "train-images-idx3-ubyte.gz")


def test_generate_from_a_folder_that_is_not_a_generator(tmp_path):
    result = trainer_cli("generate", str(tmp_path), "--out", str(tmp_path / "x.png"))
    assert_usage_error(result, "not an exported generator")
    assert not (tmp_path / "x.png").exists()


def test_generate_needs_npy_or_png(tmp_path):
    result = trainer_cli("generate", str(tmp_path), "--out", str(tmp_path / "x.gif"))
    assert_usage_error(result, ".npy", ".png")


def test_usage_errors_are_one_line_too():
    assert_usage_error(trainer_cli("train"), "--dataset")


@pytest.mark.parametrize("to, words", [
    ("", "--to is empty"), (" ", "--to is empty"),
    ("s3://", "--to s3:// is not an S3 URI"), ("s3:/bucket/datasets", "--to s3:/bucket/datasets is not an S3 URI"),
    ("afile", "afile is a file, not a folder"), ("afile/sub", "afile is a file, not a folder"),  # were exit 1
])
def test_stage_to_an_empty_or_broken_target_writes_nothing(mnist_dir, tmp_path, capsys, monkeypatch, to, words):
    # `--to ""` staged MNIST into the filesystem's root (joined with '/'), `--to s3://` into a local folder `s3:`.
    from tests.cli_helpers import assert_one_line, run_trainer
    from trainer import dataset_staging

    written = []  # where it would have written: recorded, not written (the old code's target was /)
    monkeypatch.setattr(dataset_staging, "_put", lambda path, uri, callback: written.append(uri))
    monkeypatch.setattr(dataset_staging, "_write", lambda uri, data: written.append(uri))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("mine")
    code, captured = run_trainer(capsys, "stage", "--dataset", "mnist", "--data-dir", mnist_dir, "--to", to)
    assert_one_line(code, captured, words)
    assert written == [] and list(tmp_path.iterdir()) == [tmp_path / "afile"]


def test_a_folder_name_that_is_not_utf8_is_printed_not_a_traceback(tmp_path):
    # Python holds a Latin-1 name as surrogates; a UTF-8 locale's stdout (errors=strict, as in en_US.UTF-8)
    # refused it: `stage` copied every picture, then died printing "staged <folder>" with a traceback.
    from tests.data_helpers import make_image_folder

    folder = make_image_folder(Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9")), classes=(), n=2)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8:strict")
    result = subprocess.run([sys.executable, "-m", "trainer", "stage", "--dataset", f"folder:{folder}",
                             "--to", str(tmp_path / "staged")], capture_output=True, env=env, timeout=120)
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    assert f"staged {tmp_path}/caf\\udce9 at".encode() in result.stdout


LONG = "x" * 300  # one name longer than any Linux file system allows (255 bytes): ENAMETOOLONG


@pytest.mark.parametrize("argv", [
    ["train", "--dataset", "mnist", "--data-dir", "{data}", "--output-dir", "{tmp}/" + LONG],
    ["train", "--dataset", "mnist", "--data-dir", LONG, "--output-dir", "{tmp}/run"],
    ["train", "--dataset", "mnist", "--data-dir", "{data}", "--output-dir", "{tmp}/run", "--checkpoint-dir", LONG],
    ["generate", LONG, "--out", "{tmp}/x.npy"],
    ["generate", "{tmp}", "--out", "{tmp}/" + LONG + ".npy"],
    ["report", LONG],
    ["evaluate", LONG],
    ["stage", "--dataset", "mnist", "--data-dir", "{data}", "--to", "{tmp}/" + LONG],
])
def test_a_path_with_a_name_too_long_is_one_line(tmp_path, mnist_dir, capsys, argv):
    """Each was an OSError traceback (File name too long) from whichever call met the path first."""
    from tests.cli_helpers import assert_one_line, run_trainer

    (tmp_path / "keep").mkdir()
    argv = [a.format(data=mnist_dir, tmp=tmp_path / "keep") for a in argv]
    code, captured = run_trainer(capsys, *argv)
    assert_one_line(code, captured, "longer than the file system allows", "shorter path")
    assert list((tmp_path / "keep").iterdir()) == []


def test_launcher_hp_data_dir_too_long_is_one_line(monkeypatch, tmp_path, capsys):
    from launcher.cli import main
    from tests.cli_helpers import assert_one_line

    monkeypatch.setenv("GANKIT_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        main(["submit", "--dataset", "mnist", "--backend", "sagemaker", "--bucket", "bkt", "--role",
              "arn:aws:iam::123456789012:role/r", "--region", "us-east-1", "--dry-run", "--hp", f"data_dir={LONG}"])
    assert_one_line(e.value.code, capsys.readouterr(), "longer than the file system allows")


def test_a_value_with_a_line_break_stays_on_the_one_line(tmp_path, mnist_dir, capsys):
    # `--data-dir $'data\nset'` printed "error: --data-dir data" and then "set is not a folder; ..." on a line of its own.
    from tests.cli_helpers import assert_one_line, run_trainer

    code, captured = run_trainer(capsys, "train", "--dataset", "mnist", "--data-dir", "data\nset",
                                 "--output-dir", tmp_path / "run")
    assert_one_line(code, captured, "--data-dir data\\nset is not a folder")
    assert not (tmp_path / "run").exists()


def _link_to_a_folder(target):
    target.mkdir()
    (target / "thesis.txt").write_text("precious")
    return target


def _link_to_a_file(target):
    target.write_text("precious")
    return target


@pytest.mark.parametrize("name", ["generator", "generator-best"])
@pytest.mark.parametrize("make", [_link_to_a_folder, _link_to_a_file])
def test_a_symlinked_export_folder_is_refused_before_training_and_what_it_points_to_is_kept(tmp_path, data_dir,
                                                                                            name, make):
    """The export replaced what a symlinked generator/ pointed to (a link to a user's folder deleted it), a fresh
    run deleted what generator-best/ pointed to, and a link to a file ended the run in a NotADirectoryError."""
    out = tmp_path / "run"
    out.mkdir()
    target = make(tmp_path / "mine")
    (out / name).symlink_to(target)
    result = trainer_cli("train", "--dataset", "mnist", "--data-dir", str(data_dir), "--output-dir", str(out),
                         "--batch-size", "8", "--max-steps", "1")
    assert_usage_error(result, f"{out / name} is a symlink to {target}", "remove the link", "--output-dir")
    assert (out / name).is_symlink()
    assert (target / "thesis.txt" if target.is_dir() else target).read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_a_stop_asked_for_is_said_without_error_and_still_recorded(capsys):
    # `launcher status` says Stopped; the log's last line said "error: stopped by SIGTERM ...". The contract's
    # on_error still hears it: a local job whose exit status went unrecorded is told apart by that file.
    import click

    from trainer.errors import Stopped, run_cli

    @click.command()
    def stopped():
        raise Stopped("stopped by SIGTERM at step 7; a checkpoint is written and the same command resumes")

    heard = []
    with pytest.raises(SystemExit) as exited:
        run_cli(stopped, [], on_error=heard.append)
    err = capsys.readouterr().err
    assert exited.value.code == 143
    assert err == "stopped by SIGTERM at step 7; a checkpoint is written and the same command resumes\n"
    assert heard == [err.strip()]
