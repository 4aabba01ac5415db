"""Bad training input, trainer side: one line, exit 2, and no empty run folders left behind."""

import pytest

from tests.cli_helpers import assert_one_line, run_trainer
from tests.data_helpers import make_idx_dataset, make_image_folder
from trainer.config import canonical_preset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_idx_dataset(tmp_path_factory.mktemp("mnist"), n_train=32, n_test=16)


def run_train(capsys, *argv):
    return run_trainer(capsys, "train", *argv)



@pytest.mark.parametrize("z_dim", ["100000000", "4097"])
def test_an_enormous_z_dim_is_refused_before_anything_is_built(tmp_path, data_dir, capsys, z_dim):
    code, captured = run_train(capsys, "--dataset", "mnist", "--data-dir", data_dir, "--output-dir", tmp_path / "run",
                               "--z-dim", z_dim)
    assert_one_line(code, captured, "--z-dim", "4096")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [
    ["--batch-size", "1000"],  # larger than the dataset: found after the data is read
    ["--dataset", "folder:{folder}"],  # unconditional pictures for a cgan
    ["--data-dir", "{empty}"],  # the dataset's files are missing
])
def test_a_run_that_fails_validation_leaves_no_folders(tmp_path, data_dir, capsys, args):
    make_image_folder(tmp_path / "faces", classes=(), n=4)
    (tmp_path / "empty").mkdir()
    args = [a.format(folder=tmp_path / "faces", empty=tmp_path / "empty") for a in args]
    base = {"--dataset": "mnist", "--data-dir": str(data_dir)}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = [x for pair in base.items() for x in pair]
    code, captured = run_train(capsys, *argv, "--output-dir", tmp_path / "deep" / "run",
                               "--checkpoint-dir", tmp_path / "ck" / "points", *[a for a in args if a not in argv])
    assert_one_line(code, captured)
    assert not (tmp_path / "deep").exists() and not (tmp_path / "ck").exists()


def test_validation_failure_keeps_a_folder_that_was_there(tmp_path, data_dir, capsys):
    (tmp_path / "run").mkdir()
    code, captured = run_train(capsys, "--dataset", "mnist", "--data-dir", data_dir, "--output-dir", tmp_path / "run",
                               "--batch-size", "1000")
    assert_one_line(code, captured, "--batch-size")
    assert (tmp_path / "run").is_dir() and not (tmp_path / "run" / "checkpoints").exists()


def test_a_dangling_symlink_in_an_image_folder_is_one_line(tmp_path, capsys):
    pets = make_image_folder(tmp_path / "pets", classes=("cats", "dogs"), n=4)
    (pets / "dogs" / "gone.png").symlink_to(tmp_path / "deleted.png")
    code, captured = run_train(capsys, "--dataset", f"folder:{pets}", "--output-dir", tmp_path / "run")
    assert_one_line(code, captured, "gone.png", "dangling")
    assert not (tmp_path / "run").exists()


def test_a_dangling_symlinked_class_folder_is_one_line(tmp_path, capsys):
    pets = make_image_folder(tmp_path / "pets", classes=("cats", "dogs"), n=4)
    (pets / "birds").symlink_to(tmp_path / "no-such-folder")
    code, captured = run_train(capsys, "--dataset", f"folder:{pets}", "--output-dir", tmp_path / "run")
    assert_one_line(code, captured, "birds", "dangling")


@pytest.mark.slow
@pytest.mark.parametrize("change, words", [
    (["--z-dim", "12"], ["another architecture", "start fresh", "--z-dim 16", "--z-dim 12"]),
    # config.check_resumed_preset words this one (it also knows presets recorded under their old names)
    (["--preset", "seed", "--batch-size", "16"], ["--preset " + canonical_preset("seed"), canonical_preset("default"),
                                                  "another --output-dir"]),
    # The same files read as Zalando: networks of the same shapes, but a digit's label is now a garment's.
    (["--dataset", "zalando"], ["another architecture", "classes 0, 1, 2, ...", "classes t_shirt_top, trouser, "]),
])
def test_resuming_with_another_architecture_is_one_line(tmp_path, data_dir, capsys, change, words):
    from trainer.checkpoints import checkpoint_folders

    base = ["--dataset", "mnist", "--data-dir", data_dir, "--output-dir", tmp_path / "run", "--epochs", "1",
            "--batch-size", "16", "--z-dim", "16"]
    code, captured = run_train(capsys, *base, "--max-steps", "1")
    assert code == 0, captured.err
    before = [p.name for _, p in checkpoint_folders(tmp_path / "run" / "checkpoints")]
    argv = [str(a) for a in base]
    for flag, value in zip(change[::2], change[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    code, captured = run_train(capsys, *argv)
    assert_one_line(code, captured, *words)
    assert [p.name for _, p in checkpoint_folders(tmp_path / "run" / "checkpoints")] == before  # untouched


def _files(folder):
    """Every file under `folder` with its bytes' digest: what "untouched" means."""
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("change, words", [
    # Each was taken without a word: the steps after the resume were another experiment under the run's name
    # (another data order, noise and sample-grid noise for --seed; another loss or weight average for the rest).
    (["--seed", "7"], ["--seed 7: this run was trained with --seed 0", "resume with --seed 0"]),
    (["--loss", "hinge"], ["--loss hinge: this run was trained with --loss bce", "resume with --loss bce"]),
    (["--ema", "0.9"], ["--ema 0.9: this run was trained with --ema 0.999", "resume with --ema 0.999"]),
    (["--beta1", "0.1"], ["--beta1 0.1: this run was trained with --beta1 0.5", "resume with --beta1 0.5"]),
    # These two were refused, but only once the backend had built the networks, naming a variable, not the option.
    (["--ema", "0"], ["--ema 0: this run was trained with --ema 0.999"]),
    (["--aux-weight", "0.3"], ["--aux-weight 0.3: this run was trained with --aux-weight 0"]),
])
def test_resuming_with_another_recipe_is_one_line_and_touches_nothing(tmp_path, data_dir, capsys, change, words):
    base = ["--dataset", "mnist", "--data-dir", data_dir, "--output-dir", tmp_path / "run", "--epochs", "2",
            "--batch-size", "16", "--preset", "projection"]
    code, captured = run_train(capsys, *base, "--max-steps", "1")
    assert code == 0, captured.err
    before = _files(tmp_path / "run")
    code, captured = run_train(capsys, *base, *change)
    assert_one_line(code, captured, *words, "another --output-dir")
    assert _files(tmp_path / "run") == before  # checkpoints, metrics.jsonl, samples, run.json: as they were
    code, captured = run_train(capsys, *base, "--lr", "1e-4")  # the rates are free to change: it resumes
    assert code == 0, captured.err


def _as_before_the_recipe_was_recorded(checkpoint):
    """The checkpoint as gankit wrote it before 599c48d: its state.json has no recipe (the manifest says so too)."""
    import hashlib
    import json

    from trainer.checkpoints import MANIFEST, STATE

    state = json.loads((checkpoint / STATE).read_text())
    del state["recipe"]
    data = json.dumps(state).encode()
    (checkpoint / STATE).write_bytes(data)
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    manifest["files"][STATE] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.slow
@pytest.mark.parametrize("change, words", [
    (["--seed", "7"], ["--seed 7: this run was trained with --seed 0", "its run.json records it", "resume with --seed 0"]),
    (["--ema", "0.9"], ["--ema 0.9: this run was trained with --ema 0.999", "from an older gankit"]),
])
def test_an_older_checkpoint_without_a_recipe_is_checked_against_its_run_json(tmp_path, data_dir, capsys, change,
                                                                             words):
    """A checkpoint from before the recipe was recorded resumed with any --seed, --loss or --ema without a word:
    its run's run.json, which every gankit wrote, records the recipe the run trained with."""
    from trainer.checkpoints import checkpoint_folders

    base = ["--dataset", "mnist", "--data-dir", data_dir, "--output-dir", tmp_path / "run", "--epochs", "2",
            "--batch-size", "16", "--preset", "projection"]
    code, captured = run_train(capsys, *base, "--max-steps", "1")
    assert code == 0, captured.err
    [(_, checkpoint)] = checkpoint_folders(tmp_path / "run" / "checkpoints")
    _as_before_the_recipe_was_recorded(checkpoint)
    before = _files(tmp_path / "run")
    code, captured = run_train(capsys, *base, *change)
    assert_one_line(code, captured, *words, "another --output-dir")
    assert _files(tmp_path / "run") == before
    code, captured = run_train(capsys, *base)  # its own recipe: it resumes, and its next checkpoint records it
    assert code == 0, captured.err


@pytest.mark.slow
def test_a_command_asking_for_fewer_steps_than_done_is_one_line_and_touches_nothing(tmp_path, data_dir, capsys):
    # It exited 0 with "done: 4 steps" on a 2-step command: the step-4 generator exported again, run.json and the
    # report saying 2 total steps (the bar at 200%), as if the run had been this command's.
    base = ["--dataset", "mnist", "--data-dir", data_dir, "--output-dir", tmp_path / "run", "--batch-size", "16"]
    code, captured = run_train(capsys, *base, "--epochs", "2")  # 32 images of 16: 2 steps an epoch, 4 in all
    assert code == 0, captured.err
    before = _files(tmp_path / "run")
    for fewer in (["--epochs", "1"], ["--epochs", "2", "--max-steps", "3"]):
        code, captured = run_train(capsys, *base, *fewer)
        assert_one_line(code, captured, "is at step 4 (epoch 2), past the", "rerun with --epochs 2 or more")
        assert _files(tmp_path / "run") == before
    code, captured = run_train(capsys, *base, "--epochs", "2")  # the same command: the run is done, it re-exports
    assert code == 0 and "done: 4 steps" in captured.out, captured.err


def test_a_second_run_on_a_checkpoint_folder_in_use_is_refused_and_touches_nothing(tmp_path, data_dir, capsys):
    # Two runs in one --checkpoint-dir swept each other's writes in flight: one died with "checkpoint could not
    # be written (No such file or directory); free some space", and a start cleared the other's temp folders.
    import subprocess
    import sys

    out = tmp_path / "run"
    in_flight = out / "checkpoints" / ".ckpt-000000004.tmp-abc123"  # the first run's checkpoint being written
    in_flight.mkdir(parents=True)
    (in_flight / "weights.npz").write_bytes(b"half")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(out / "checkpoints")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        code, captured = run_train(capsys, "--dataset", "mnist", "--data-dir", data_dir, "--output-dir", out,
                                   "--epochs", "1", "--max-steps", "1", "--batch-size", "16")
        assert_one_line(code, captured, f"--checkpoint-dir {out / 'checkpoints'} is in use by another run")
        assert (in_flight / "weights.npz").read_bytes() == b"half"
    finally:
        holder.kill()
        holder.wait()
    # Free again once that run has ended: the next run gets past the lock (and here, validation stops it).
    code, captured = run_train(capsys, "--dataset", "mnist", "--data-dir", data_dir, "--output-dir", out,
                               "--batch-size", "1000")
    assert_one_line(code, captured, "--batch-size")


@pytest.mark.parametrize("flags, flag", [
    ({"output_dir": ""}, "--output-dir"),  # its checkpoints went to /checkpoints, its outputs to the current folder
    ({"output_dir": " "}, "--output-dir"),
    ({"output_dir": "s3://"}, "--output-dir"),  # no bucket: its checkpoints went to a local folder named s3:
    ({"output_dir": "run", "checkpoint_dir": "s3:///ck"}, "--checkpoint-dir"),
    ({"output_dir": "run", "checkpoint_dir": ""}, "--checkpoint-dir"),
    ({"output_dir": "run", "data_dir": ""}, "--data-dir"),
    ({"output_dir": "run\x00"}, "--output-dir"),  # a hand-written hyperparameters.json can hold one
])
def test_an_empty_or_bucketless_folder_is_refused(flags, flag):
    from trainer.config import TrainConfig
    from trainer.errors import UsageError

    with pytest.raises(UsageError, match=f"^{flag} "):
        TrainConfig(dataset="mnist", **flags).resolve()


def test_an_empty_output_dir_is_one_line_before_any_folder_is_made(tmp_path, data_dir, capsys, monkeypatch):
    import trainer.run_setup

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(trainer.run_setup, "ensure_writable_dir", lambda *a: pytest.fail("made a folder"))
    code, captured = run_train(capsys, "--dataset", "mnist", "--data-dir", data_dir, "--output-dir", "")
    assert_one_line(code, captured, "--output-dir", "empty")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags, flag", [({"lr": 1e-320}, "--lr"), ({"d_lr": 5e-324}, "--d-lr"),
                                         ({"lr": 1e-46}, "--lr")])
def test_a_learning_rate_that_is_zero_as_a_float32_is_refused(flags, flag):
    # Keras keeps the rate in a float32 variable (Adam(learning_rate=1e-320).learning_rate is 0.0): these trained at 0.
    from trainer.config import TrainConfig
    from trainer.errors import UsageError

    with pytest.raises(UsageError, match=f"^{flag} .*float32"):
        TrainConfig(dataset="mnist", output_dir="run", **flags).resolve()
    TrainConfig(dataset="mnist", output_dir="run", lr=1e-44, d_lr=1e-30).resolve()  # tiny, but not 0


# Each rule's edge: the first value refused, and the last one allowed (a bound one off either way is another rule).
@pytest.mark.parametrize("name, refused, allowed", [
    ("epochs", 0, 1), ("keep_checkpoints", 0, 1), ("beta1", 1.0, 0.999), ("smooth", 0.5, 0.499),
    ("seed", 2**32, 2**32 - 1), ("aux_weight", 10.001, 10.0), ("aux_g_weight", 10.001, 10.0),
])
def test_each_rule_refuses_its_first_bad_value_and_takes_its_last_good_one(name, refused, allowed):
    from trainer.config import TrainConfig
    from trainer.errors import UsageError

    other = {"aux_weight": 0.3} if name == "aux_g_weight" else {}  # --aux-g-weight needs the classifier head
    with pytest.raises(UsageError, match=f"^--{name.replace('_', '-')} "):
        TrainConfig(dataset="mnist", output_dir="run", loss="bce", **other, **{name: refused}).resolve()
    TrainConfig(dataset="mnist", output_dir="run", loss="bce", **other, **{name: allowed}).resolve()


@pytest.mark.parametrize("manifest", [
    '{"description": "my own notes on this folder"}',  # not a staging's at all
    '{"files": {"notes.txt": {"size": 3, "sha256": "abc"}}}',  # another tool's list, of files not there
])
def test_a_data_dir_with_a_manifest_of_ones_own_says_that_gankit_took_it_for_a_staging(tmp_path, data_dir, capsys,
                                                                                        manifest):
    """A folder holding a MANIFEST.json is checked as a copy gankit staged: one of the user's own, not gankit's, was
    refused with 'replace it with an intact copy, or drop --data-dir', which said neither why their folder was
    refused nor that moving that file out lets gankit read the folder as it is."""
    import shutil

    own = tmp_path / "own"
    shutil.copytree(data_dir, own)
    (own / "MANIFEST.json").write_text(manifest)
    code, captured = run_train(capsys, "--dataset", "mnist", "--data-dir", own, "--output-dir", tmp_path / "run",
                               "--max-steps", "1")
    assert_one_line(code, captured, "MANIFEST.json", "a copy gankit staged",
                    "if that MANIFEST.json is not gankit's, move it out of the folder")
    assert not (tmp_path / "run").exists()
