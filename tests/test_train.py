"""End-to-end training on tiny synthetic data: outputs, export, generate, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import trainer
from tests.data_helpers import make_image_folder
from trainer.config import TrainConfig
from trainer.errors import UsageError
from trainer.train import train

pytestmark = pytest.mark.slow
ROW_KEYS = {"epoch", "step", "d_loss", "g_loss", "images_per_sec", "seconds"}


def quiet(*args, **kwargs):
    pass


def config(tmp_path, data_dir, **overrides):
    values = dict(dataset="mnist", data_dir=str(data_dir), output_dir=str(tmp_path / "run"), epochs=2, batch_size=16)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("cgan")
    summary = train(config(out, mnist_dir), log=quiet)
    return Path(summary["output_dir"]), summary


def read_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_cgan_run_writes_every_output(cgan_run):
    run, summary = cgan_run
    assert summary["steps"] == 8 and not summary["stopped"]  # 64 images / 16 = 4 steps x 2 epochs
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2] and [r["step"] for r in rows] == [4, 8]
    assert all(set(r) == ROW_KEYS and np.isfinite(r["d_loss"]) and r["images_per_sec"] > 0 for r in rows)
    # Epoch 1's figure leaves out its first call, which compiles (seconds, for 4 steps of ms); epoch 2 has none.
    assert rows[0]["images_per_sec"] > 2 * 4 * 16 / rows[0]["seconds"]
    assert rows[1]["images_per_sec"] == pytest.approx(4 * 16 / rows[1]["seconds"])
    grid = Image.open(run / "samples" / "epoch-0002.png")
    assert grid.size[1] > 10 * 28  # one row per class
    gif = Image.open(run / "samples" / "progress.gif")
    assert gif.n_frames == 2
    assert Image.open(run / "losses.png").size[0] > 100
    meta = json.loads((run / "generator" / "generator.json").read_text())
    assert meta["class_names"] == list("0123456789") and meta["conditional"]
    assert meta["z_dim"] == 100 and meta["image_shape"] == [28, 28, 1] and meta["steps"] == 8
    assert meta["preset"] == "sn-hinge" and meta["dataset"] == "mnist" and meta["trainer_version"] == trainer.__version__
    assert json.loads((run / "run.json").read_text())["total_steps"] == 8
    assert len(list((run / "checkpoints").glob("ckpt-*"))) == 2



def test_cgan_run_records_loss_points_tensorboard_events_and_labelled_grids(cgan_run):
    from tests.events_helpers import images, read_events, scalars

    run, _ = cgan_run
    points = [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]
    assert [p["step"] for p in points] == list(range(1, 9))  # 4-step epochs: a point every step
    rows = read_metrics(run)
    for row in rows:  # the epoch mean is the mean of its steps' points
        epoch_points = [p["d_loss"] for p in points if row["step"] - 4 < p["step"] <= row["step"]]
        assert np.mean(epoch_points) == pytest.approx(row["d_loss"], rel=1e-5)
    found = read_events(run / "tensorboard")
    values = scalars(found)
    assert [s for s, _ in values["loss/discriminator"]] == list(range(1, 9))
    assert values["epoch/g_loss"] == [(r["step"], pytest.approx(r["g_loss"])) for r in rows]
    assert [s for s, _ in values["speed/images_per_sec"]] == [4, 8]
    grids = images(found)["samples"]
    assert [g[0] for g in grids] == [4, 8]
    assert grids[-1][2:] == Image.open(run / "samples" / "epoch-0002.png").size
    # The grid names its rows: a margin of labels left of the 10 columns of 28x28 cells (scale 2, pad 2).
    assert grids[-1][2] > 10 * (28 + 2) * 2 + 2 * 2 + 10
    from trainer.fsutil import umask

    assert os.stat(run / "losses.png").st_mode & 0o777 == 0o666 & ~umask()  # not mkstemp's 0600

def test_exported_generator_round_trip(cgan_run):
    run, _ = cgan_run
    gen = trainer.load_generator(run / "generator")
    by_index = gen.generate(3, count=5, seed=1)
    name = gen.class_names[3]
    by_name = gen.generate(name, count=5, seed=1)
    assert by_index.dtype == np.uint8 and by_index.shape == (5, 28, 28, 1)
    np.testing.assert_array_equal(by_index, by_name)  # same class, same seed, same images
    assert not np.array_equal(by_index, gen.generate(4, count=5, seed=1))
    mixed = gen.generate(None, count=20, seed=0)
    assert mixed.shape == (20, 28, 28, 1)
    assert gen.grid(seed=0).size == gen.grid(seed=0).size
    with pytest.raises(UsageError, match="unknown class"):
        gen.generate("dragon", count=1)
    with pytest.raises(UsageError, match="out of range"):
        gen.generate(10, count=1)


def test_generate_command_writes_npy_and_png(cgan_run, tmp_path):
    run, _ = cgan_run
    from trainer.cli import main

    with pytest.raises(SystemExit) as done:
        main([
            "generate", str(run / "generator"), "--class", "7", "--count", "12", "--seed", "0",
            "--out", str(tmp_path / "sevens.npy"),
        ])
    assert done.value.code == 0
    arr = np.load(tmp_path / "sevens.npy")
    assert arr.shape == (12, 28, 28, 1) and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr, trainer.load_generator(run / "generator").generate(7, 12, seed=0))
    with pytest.raises(SystemExit) as done:
        main(["generate", str(run / "generator"), "--class", "2", "--rows", "2", "--cols", "3", "--out", str(tmp_path / "g.png")])
    assert done.value.code == 0 and Image.open(tmp_path / "g.png").size[0] > 3 * 28


def test_dcgan_seed_preset_is_unconditional(tmp_path, mnist_dir):
    summary = train(config(tmp_path, mnist_dir, model="dcgan", preset="seed", max_steps=3), log=quiet)
    run = Path(summary["output_dir"])
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [3]  # the partial epoch --max-steps ended in
    gen = trainer.load_generator(run / "generator")
    assert not gen.conditional and gen.meta["z_dim"] == 96
    images = gen.generate(count=4, seed=0)
    assert images.shape == (4, 28, 28, 1)
    with pytest.raises(UsageError, match="unconditional"):
        gen.generate(3, count=1)


@pytest.mark.parametrize("model", ["cgan", "dcgan"])
def test_image_folder_64x64_rgb(tmp_path, model):
    folder = make_image_folder(tmp_path / "faces", classes=("cats", "dogs"), n=4, size=(80, 70))
    summary = train(TrainConfig(dataset=f"folder:{folder}", output_dir=str(tmp_path / "run"), model=model,
                                epochs=1, batch_size=4, image_size=64, channels=3), log=quiet)
    gen = trainer.load_generator(Path(summary["output_dir"]) / "generator")
    assert gen.generate(count=2, seed=0).shape == (2, 64, 64, 3)
    config = json.loads((Path(summary["output_dir"]) / "run.json").read_text())["config"]
    assert (config["preset"], config["loss"]) == ("sn-hinge", "hinge")  # the spectral-norm D, at 64x64x3 too
    assert np.isfinite(read_metrics(Path(summary["output_dir"]))[0]["d_loss"])
    assert gen.conditional == (model == "cgan")
    if model == "cgan":
        assert gen.class_names == ["cats", "dogs"]


def test_stop_and_resume_match_an_uninterrupted_run(tmp_path, mnist_dir):
    straight = train(config(tmp_path / "a", mnist_dir, epochs=3), log=quiet)

    calls = {"n": 0}

    def stop_on_third_call():
        # Polled after every compiled call (one or more steps, never past an epoch's end).
        calls["n"] += 1
        return calls["n"] >= 3

    cfg = config(tmp_path / "b", mnist_dir, epochs=3)
    first = train(cfg, stop_requested=stop_on_third_call, log=quiet)
    assert first["stopped"] and 3 <= first["steps"] < 12
    assert (Path(cfg.output_dir) / "checkpoints" / f"ckpt-{first['steps']:09d}").is_dir()
    resumed = train(cfg, log=quiet)
    assert resumed["steps"] == straight["steps"] == 12

    a, b = (trainer.load_generator(Path(r["output_dir"]) / "generator") for r in (straight, resumed))
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    losses = lambda run: [(r["epoch"], r["step"], r["d_loss"], r["g_loss"]) for r in read_metrics(Path(run["output_dir"]))]
    assert losses(straight) == losses(resumed)


def test_a_stop_polled_after_the_last_step_lets_the_run_finish(tmp_path, mnist_dir):
    # A stop seen after the last call (one 64-image step here) ran the final evaluation and the last epoch's files
    # the log had promised with the export, then skipped the export: "stopped at step 1 of 1", no generator/,
    # exit 143 and a resume only to export. After the last step a stop waits for the export (seconds), as
    # train_until_stopped says ("the export finished first, so the run is complete").
    summary = train(config(tmp_path, mnist_dir, epochs=1, batch_size=64), stop_requested=lambda: True, log=quiet)
    run = Path(summary["output_dir"])
    assert summary["steps"] == 1 and not summary["stopped"]
    assert (run / "generator" / "generator.json").is_file() and "stopped" not in json.loads((run / "run.json").read_text())


def test_killed_run_resumes_to_the_same_total(tmp_path, mnist_dir):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "trainer", "train", "--dataset", "mnist", "--data-dir", str(mnist_dir),
           "--output-dir", str(out), "--epochs", "6", "--batch-size", "16", "--checkpoint-minutes", "0.0001"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(int(p.name[5:]) >= 6 for p in (out / "checkpoints").glob("ckpt-*")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from trainer.checkpoints import checkpoint_folders, latest_checkpoint, problem

    assert latest_checkpoint(out / "checkpoints") is not None
    assert all(problem(f) is None for _, f in checkpoint_folders(out / "checkpoints"))  # never a partial one

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6] and rows[-1]["step"] == 24
    assert trainer.load_generator(out / "generator").meta["steps"] == 24


def test_a_run_in_process_puts_the_callers_precision_policy_back(tmp_path, mnist_dir):
    import keras

    keras.mixed_precision.set_global_policy("float32")
    train(config(tmp_path, mnist_dir, epochs=1, max_steps=1, precision="mixed_bfloat16"), log=quiet)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["precision"] == "mixed_bfloat16"  # the run did train in bfloat16 ...
    assert keras.mixed_precision.global_policy().name == "float32"  # ... and the caller's models do not


def test_resuming_at_another_batch_size_is_one_line_not_broken_epochs(tmp_path, mnist_dir, capsys):
    """A checkpoint's step count means something only at its global batch: 4 steps of 16 are an epoch of
    64 images, 4 steps of 32 are two. Resuming at another batch would never close an epoch again."""
    from tests.cli_helpers import assert_one_line, run_trainer

    train(config(tmp_path, mnist_dir, epochs=3, max_steps=6), log=quiet)
    capsys.readouterr()  # its progress bar
    code, captured = run_trainer(capsys, "train", "--dataset", "mnist", "--data-dir", mnist_dir, "--output-dir",
                                 tmp_path / "run", "--epochs", 3, "--batch-size", 32)
    assert_one_line(code, captured, "global batch of 16, 4 steps per epoch", "global batch of 32, 2 steps per epoch",
                    "--batch-size")
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [4, 6]  # untouched (6: the open epoch)
    summary = train(config(tmp_path, mnist_dir, epochs=3), log=quiet)  # the same batch resumes
    assert summary["steps"] == 12 and [r["step"] for r in read_metrics(tmp_path / "run")] == [4, 8, 12]


def test_resuming_on_a_dataset_of_another_size_is_one_line_even_at_the_same_epoch_length(tmp_path, mnist_dir,
                                                                                        capsys):
    """Each epoch's order is a permutation of the dataset's size: a run stopped mid-epoch on 64 images and
    resumed on 70 (still 4 steps of 16) would draw the rest of that epoch from another permutation, some
    images twice and some not at all. A picture folder that gained a few pictures is the usual way here."""
    from tests.cli_helpers import assert_one_line, run_trainer
    from tests.data_helpers import make_idx_dataset

    train(config(tmp_path, mnist_dir, epochs=2, max_steps=2), log=quiet)
    capsys.readouterr()  # its progress bar
    grown = make_idx_dataset(tmp_path / "grown", num_classes=10, n_train=70, n_test=32)
    code, captured = run_trainer(capsys, "train", "--dataset", "mnist", "--data-dir", grown, "--output-dir",
                                 tmp_path / "run", "--epochs", 2, "--batch-size", 16)
    assert_one_line(code, captured, "4 steps per epoch over 64 images", "4 steps per epoch over 70 images")
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [2]  # untouched (2: the open epoch)


def test_a_resume_trains_at_the_commands_learning_rates_not_the_checkpoints(tmp_path, mnist_dir):
    """Keras keeps each optimizer's learning rate in a variable, so a checkpoint holds it; resuming with a
    lower --lr (after a divergence, say) must train at the new rate, not silently at the old one."""
    from trainer.checkpoints import latest_checkpoint, read_checkpoint

    def learning_rates():
        arrays, _ = read_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
        return [float(arrays[k]) for k in sorted(arrays) if k.startswith(("g_opt/", "d_opt/"))
                and arrays[k].shape == () and arrays[k].dtype.kind == "f"]

    train(config(tmp_path, mnist_dir, epochs=2, max_steps=2, lr=3e-4, d_lr=5e-4), log=quiet)
    assert learning_rates() == pytest.approx([5e-4, 3e-4])  # d_opt's, g_opt's
    said = []
    summary = train(config(tmp_path, mnist_dir, epochs=2, max_steps=4, lr=1e-4, d_lr=2e-4), log=said.append)
    assert summary["steps"] == 4 and learning_rates() == pytest.approx([2e-4, 1e-4])
    assert any("--lr 0.0001 from step 2 on (the checkpoint's was 0.0003)" in line for line in said), said


def test_a_diverged_run_stops_in_one_line_and_keeps_only_checkpoints_of_numbers(tmp_path, mnist_dir, capsys):
    """Weights that became NaN (here planted in a checkpoint that verifies) make the next step's losses NaN:
    the run stops at that step with one line, and writes no checkpoint or export of them."""
    from tests.cli_helpers import assert_one_line, run_trainer
    from trainer.checkpoints import checkpoint_folders, latest_checkpoint, read_checkpoint, write_checkpoint

    train(config(tmp_path, mnist_dir, epochs=3, max_steps=2), log=quiet)
    checkpoints = tmp_path / "run" / "checkpoints"
    arrays, state = read_checkpoint(latest_checkpoint(checkpoints))
    poisoned = next(k for k in sorted(arrays) if k.startswith("discriminator/") and arrays[k].ndim > 1)
    arrays[poisoned] = np.full_like(arrays[poisoned], np.nan)
    write_checkpoint(checkpoints, 2, arrays, state, keep=3)  # as a diverged run would have left it
    capsys.readouterr()

    code, captured = run_trainer(capsys, "train", "--dataset", "mnist", "--data-dir", mnist_dir, "--output-dir",
                                 tmp_path / "run", "--epochs", 3, "--batch-size", 16)
    assert_one_line(code, captured, "training diverged at step 3 (d_loss nan", "--lr", exit_code=1)
    assert [step for step, _ in checkpoint_folders(checkpoints)] == [2]  # nothing past the divergence
    assert json.loads((tmp_path / "run" / "generator" / "generator.json").read_text())["steps"] == 2  # the first run's


def test_a_checkpoint_of_weights_that_are_not_numbers_is_never_written(tmp_path):
    from trainer.checkpoints import CheckpointWriter, checkpoint_folders
    from trainer.errors import Diverged

    writer = CheckpointWriter(tmp_path, keep=3)
    writer.save(4, {"generator/0000": np.ones((2, 2), np.float32), "g_opt/0000": np.array(4)}, {"step": 4})
    writer.save(8, {"generator/0000": np.array([[1.0, np.inf]], np.float32), "g_opt/0000": np.array(8)}, {"step": 8})
    with pytest.raises(Diverged, match=r"step 8 \(generator/0000 holds NaN or infinity\)"):
        writer.wait()
    assert [step for step, _ in checkpoint_folders(tmp_path)] == [4]


def test_the_first_calls_compile_is_announced_before_it_starts(tmp_path, mnist_dir):
    # The first compiled call compiles the step: 10 to 14 s on a 2-core CPU between "training ..." and the first
    # progress line, with nothing said. Once: a resumed run's loop compiles once too.
    from trainer.epoch_loop import COMPILING

    lines = []
    train(config(tmp_path, mnist_dir, epochs=2), log=lambda *args, **kwargs: lines.append(" ".join(map(str, args))))
    training = next(i for i, line in enumerate(lines) if line.startswith("training cgan/"))
    assert lines[training + 1] == COMPILING and lines.count(COMPILING) == 1
    assert lines.index(COMPILING) < next(i for i, line in enumerate(lines) if line.startswith("epoch 1/2"))
