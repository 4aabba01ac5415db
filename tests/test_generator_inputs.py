"""Exported generators from elsewhere: safe mode spelled out, a Keras without known bypasses,
and every bad generator.json or --out one clean line."""

import json
import shutil

import pytest

from tests.cli_helpers import assert_one_line, run_trainer
from trainer.errors import UsageError

pytestmark = pytest.mark.slow  # imports Keras and saves a small network


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    from trainer.export import export_generator
    from trainer.models import build_generator

    folder = tmp_path_factory.mktemp("gen") / "generator"
    meta = {"dataset": "mnist", "class_names": ["a", "b"], "conditional": True, "model": "cgan", "preset": "default",
            "z_dim": 8, "z_distribution": "normal", "image_shape": [28, 28, 1], "value_range": [-1.0, 1.0], "steps": 0}
    export_generator(build_generator("default", 8, (28, 28, 1), 2), meta, folder)
    return folder


def copy_with_meta(good, tmp_path, **changes):
    folder = tmp_path / "generator"
    shutil.copytree(good, folder)
    meta = json.loads((folder / "generator.json").read_text())
    meta.update(changes)
    (folder / "generator.json").write_text(json.dumps(meta))
    return folder


def run_generate(capsys, *argv):
    return run_trainer(capsys, "generate", *argv)



def test_the_good_generator_generates(good, tmp_path, capsys):
    code, captured = run_generate(capsys, good, "--out", tmp_path / "x.png")
    assert code == 0 and (tmp_path / "x.png").is_file(), captured.err


@pytest.mark.parametrize("args, size", [
    (["--count", "30", "--rows", "2"], (2, 15)),  # once a 2x5 grid: 10 of the 30 images asked for
    (["--count", "7", "--cols", "3"], (3, 3)),
    (["--count", "7", "--rows", "2"], (2, 4)),  # not 2x3: a seventh image that does not divide evenly is kept too
    (["--count", "12"], (2, 10)),
    (["--rows", "3"], (3, 5)),
])
def test_a_png_grid_holds_every_image_count_asks_for(good, tmp_path, capsys, args, size):
    from PIL import Image

    code, captured = run_generate(capsys, good, "--class", "a", *args, "--out", tmp_path / "x.png")
    assert code == 0, captured.err
    rows, cols = size
    # tile(): 28-pixel images with 2-pixel gaps around them, scaled by 2
    assert Image.open(tmp_path / "x.png").size == ((cols * 30 + 2) * 2, (rows * 30 + 2) * 2)


def test_a_count_that_does_not_fit_the_grid_asked_for_is_one_line(good, tmp_path, capsys):
    code, captured = run_generate(capsys, good, "--count", "30", "--rows", "2", "--cols", "2", "--out", tmp_path / "x.png")
    assert_one_line(code, captured, "--count 30 does not fit a 2x2 grid")
    assert not (tmp_path / "x.png").exists()
    code, captured = run_generate(capsys, good, "--count", "7", "--rows", "2", "--cols", "3", "--out", tmp_path / "x.png")
    assert_one_line(code, captured, "--count 7 does not fit a 2x3 grid")  # one image over
    code, captured = run_generate(capsys, good, "--count", "6", "--rows", "2", "--cols", "3", "--out", tmp_path / "x.png")
    assert code == 0, captured.err  # a grid just full


@pytest.mark.parametrize("args, message", [
    # refused from the arguments alone: the generator named does not even exist, so nothing loads first
    (["--count", "1000001", "--out", "x.npy"], "--count 1000001: must be between 1 and 1000000"),
    (["--rows", "3", "--out", "x.npy"], "--rows and --cols shape a .png grid"),  # once: 30 images, silently
    (["--count", "5", "--cols", "2", "--out", "x.npy"], "--rows and --cols shape a .png grid"),  # once: ignored
])
def test_options_that_cannot_work_are_refused_before_the_generator_loads(tmp_path, capsys, args, message):
    args = [str(tmp_path / a) if a.endswith(".npy") else a for a in args]
    code, captured = run_generate(capsys, tmp_path / "no-such-generator", *args)
    assert_one_line(code, captured, message)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("named", ["run", "run/generator"])
def test_a_generator_a_kill_left_aside_says_how_to_put_it_back(good, tmp_path, capsys, named):
    # A run killed between the two renames of its export: generator/ is missing, its last copy lies aside.
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(good, run / ".generator.tmp-old-4242")
    code, captured = run_generate(capsys, tmp_path / named, "--out", tmp_path / "x.png")
    assert_one_line(code, captured, "run the same `train` command again, which puts it back")


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_numpy_cannot_take_is_one_line_as_in_train(good, tmp_path, capsys, seed):
    # `generate --seed -1` loaded the generator and then died in numpy with a traceback.
    code, captured = run_generate(capsys, good, "--seed", seed, "--out", tmp_path / "x.png")
    assert_one_line(code, captured, f"--seed {seed}: must be between 0 and 4294967295")
    assert not (tmp_path / "x.png").exists()
    code, captured = run_generate(capsys, good, "--seed", str(2**32 - 1), "--out", tmp_path / "x.png")
    assert code == 0 and (tmp_path / "x.png").is_file(), captured.err


def test_generators_load_with_safe_mode_spelled_out(good, monkeypatch):
    import keras

    from trainer.export import load_generator

    seen = []
    real = keras.models.load_model
    monkeypatch.setattr(keras.models, "load_model", lambda *a, **k: (seen.append(k), real(*a, **k))[1])
    load_generator(good)
    assert seen and seen[0].get("safe_mode") is True


def test_a_generator_holding_python_code_is_refused(tmp_path, capsys):
    import keras

    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    folder = tmp_path / "evil"
    folder.mkdir()
    model.save(folder / "generator.keras")
    (folder / "generator.json").write_text(json.dumps({"z_dim": 8, "image_shape": [28, 28, 1]}))
    code, captured = run_generate(capsys, folder, "--out", tmp_path / "x.png")
    assert_one_line(code, captured, "cannot load", "unsafe")
    assert not (tmp_path / "x.png").exists()


def test_a_keras_with_known_safe_mode_bypasses_is_refused(good, monkeypatch):
    import keras

    from trainer.export import load_generator

    monkeypatch.setattr(keras, "__version__", "3.8.0")
    with pytest.raises(UsageError, match=r"Keras 3\.8\.0 .*safe.mode.*pip install"):
        load_generator(good)


@pytest.mark.parametrize("changes, words", [
    ({"z_dim": "many"}, ["z_dim", "whole number"]),
    ({"z_dim": 1.5}, ["z_dim", "whole number"]),
    ({"z_dim": True}, ["z_dim", "whole number"]),
    ({"z_dim": -3}, ["z_dim", "positive"]),
    ({"z_dim": 0}, ["z_dim", "positive"]),
    ({"z_dim": 9}, ["z_dim 9", "takes 8"]),
    ({"class_names": "ab"}, ["class_names", "list"]),
    ({"class_names": 5}, ["class_names", "list"]),
    ({"class_names": ["a", "b", "c"]}, ["class_names", "3", "2 classes"]),
    ({"conditional": False}, ["unconditional"]),
    ({"image_shape": "big"}, ["image_shape"]),
    ({"image_shape": [32, 32, 1]}, ["image_shape [32, 32, 1]", "makes [28, 28, 1]"]),  # evaluate sized its judge so
    ({"image_shape": [28, 28, 3]}, ["image_shape [28, 28, 3]", "makes [28, 28, 1]"]),
    ({"z_distribution": "cauchy"}, ["z_distribution"]),
])
def test_a_bad_generator_json_is_one_line(good, tmp_path, capsys, changes, words):
    folder = copy_with_meta(good, tmp_path, **changes)
    code, captured = run_generate(capsys, folder, "--out", tmp_path / "x.png")
    assert_one_line(code, captured, "generator.json", *words)
    assert not (tmp_path / "x.png").exists()


def test_a_generator_json_that_is_not_an_object(good, tmp_path, capsys):
    folder = copy_with_meta(good, tmp_path)
    (folder / "generator.json").write_text("[1, 2]")
    code, captured = run_generate(capsys, folder, "--out", tmp_path / "x.png")
    assert_one_line(code, captured, "generator.json")


@pytest.mark.parametrize("out", ["/proc/x.png", "/proc/x.npy", "/proc/self/x/y.png"])
def test_an_unwritable_out_is_one_line(good, capsys, out):
    code, captured = run_generate(capsys, good, "--out", out)
    assert_one_line(code, captured, "--out", out)


def test_an_out_that_is_a_folder_is_one_line(good, tmp_path, capsys):
    (tmp_path / "x.png").mkdir()
    code, captured = run_generate(capsys, good, "--out", tmp_path / "x.png")
    assert_one_line(code, captured, "--out")


# --- generators and images in S3 ------------------------------------------------------------------

def test_trainer_generate_reads_a_generator_from_s3_and_writes_images_to_s3(good, tmp_path, monkeypatch, capsys):
    import io

    import boto3
    import numpy as np

    from tests.aws_helpers import mocked_bucket
    from trainer import s3

    with mocked_bucket(monkeypatch, "gankit-gen-test") as bucket:
        s3.upload_dir(good, f"{bucket}/runs/j/output/generator")
        monkeypatch.chdir(tmp_path)
        code, captured = run_generate(capsys, f"{bucket}/runs/j/output/generator", "--class", "b", "--count", 3,
                                      "--seed", 0, "--out", f"{bucket}/samples/b.npy")
        assert code == 0, captured.err
        assert captured.out.strip().endswith(f"wrote {bucket}/samples/b.npy")
        body = boto3.client("s3").get_object(Bucket="gankit-gen-test", Key="samples/b.npy")["Body"].read()
        assert np.load(io.BytesIO(body)).shape == (3, 28, 28, 1)
        assert not any(tmp_path.iterdir())  # no local folder named "s3:"


@pytest.mark.parametrize("out, words", [("s3://bucket.png", "name an object"), ("s3://bucket/", "name a .npy file")])
def test_an_s3_out_without_an_object_name_is_one_line(good, capsys, out, words):
    code, captured = run_generate(capsys, good, "--out", out)  # refused before S3 is reached
    assert_one_line(code, captured, "--out", words)


def test_a_large_count_shows_progress_and_a_small_one_does_not(good, tmp_path, capsys):
    """Thousands of images take minutes on a CPU: they are counted as they are made, not in silence."""
    code, captured = run_generate(capsys, good, "--count", "1200", "--out", tmp_path / "many.npy")
    assert code == 0, captured.err
    assert "generating  1200 images/1200 images (100%)" in captured.err
    code, captured = run_generate(capsys, good, "--count", "300", "--out", tmp_path / "few.npy")
    assert code == 0 and "generating" not in captured.err


def test_launcher_generate_shows_progress_too(good, tmp_path, capsys):
    from launcher.cli import main

    with pytest.raises(SystemExit) as e:
        main(["generate", str(good), "--count", "1200", "--out", str(tmp_path / "grid.png")])
    captured = capsys.readouterr()
    assert e.value.code == 0, captured.err
    assert "generating  1200 images/1200 images (100%)" in captured.err and (tmp_path / "grid.png").is_file()


def test_launcher_generate_runs_where_keras_has_jax_and_no_tensorflow(good, tmp_path):
    """An install with `gankit[jax]` has no TensorFlow: starting it quietly before the generator loads traced
    back with ModuleNotFoundError, where Keras on JAX needs none."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[1]
    script = ("import sys\nsys.modules['tensorflow'] = None  # not installed\n"
              "from launcher.cli import main\n"
              f"main(['generate', {str(good)!r}, '--count', '4', '--out', {str(tmp_path / 'x.png')!r}])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(root), KERAS_BACKEND="jax",
                                   GANKIT_HOME=str(tmp_path / "home")))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert (tmp_path / "x.png").is_file()


def test_an_npy_holds_images_of_the_class_asked_for(good, tmp_path, capsys):
    import numpy as np

    from trainer import load_generator

    code, captured = run_generate(capsys, good, "--class", "b", "--count", "3", "--seed", "5", "--out", tmp_path / "b.npy")
    assert code == 0, captured.err
    generator = load_generator(good)
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), generator.generate("b", 3, 5), atol=1e-6)
    assert not np.allclose(generator.generate("a", 3, 5), generator.generate("b", 3, 5))  # the class shows
