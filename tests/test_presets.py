"""The preset registry, its names and aliases, and the training flags issue 12 adds (no TensorFlow)."""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_trainer_errors import assert_usage_error, trainer_cli
from trainer import config, networks, presets
from trainer.config import ALIASES, DEFAULT_PRESET, PRESETS, TrainConfig, canonical_preset
from trainer.errors import UsageError


def resolved(**overrides):
    return TrainConfig(dataset="mnist", output_dir="/tmp/unused", **overrides).resolve()


def test_registry_names_and_default():
    assert set(PRESETS) == {"book", "projection", "sn-hinge"}
    assert DEFAULT_PRESET == "sn-hinge" and TrainConfig(dataset="mnist", output_dir="x").preset == "sn-hinge"
    assert ALIASES == {"seed": "book", "default": "sn-hinge"}


@pytest.mark.parametrize("name, canonical", [("book", "book"), ("seed", "book"), ("projection", "projection"),
                                             ("sn-hinge", "sn-hinge"), ("default", "sn-hinge")])
def test_aliases_resolve_to_the_canonical_name(name, canonical):
    cfg = resolved(preset=name)
    assert cfg.preset == canonical  # what run.json and generator.json record
    assert cfg.batch_size == PRESETS[canonical].batch_size


def test_unknown_preset_is_an_error_everywhere():
    with pytest.raises(UsageError, match="--preset nonsense: unknown preset; choose one of: book, projection"):
        canonical_preset("nonsense")
    with pytest.raises(UsageError, match="unknown preset"):
        resolved(preset="nonsense")
    # models.py used to turn any name but "seed" into "default"; it asks the registry now.
    from trainer.models import build_discriminator, build_generator

    with pytest.raises(UsageError, match="unknown preset"):
        build_generator("nonsense", 8, (28, 28, 1), 10)
    with pytest.raises(UsageError, match="unknown preset"):
        build_discriminator("Default", (28, 28, 1), 10)


def test_every_preset_fills_every_field_and_validates():
    for name, preset in PRESETS.items():
        cfg = resolved(preset=name)
        assert cfg.d_lr == (preset.d_lr or preset.lr) and cfg.beta2 == preset.beta2 and cfg.loss == preset.loss
        assert cfg.ema == 0.999  # EMA on for every preset
        assert cfg.aux_g_weight == (preset.aux_weight if preset.aux_g_weight is None else preset.aux_g_weight)


def test_new_default_recipe():
    cfg = resolved()
    assert (cfg.loss, cfg.lr, cfg.d_lr, cfg.beta1, cfg.beta2) == ("hinge", 2e-4, 4e-4, 0.0, 0.9)
    assert cfg.aux_weight == 0.3 and cfg.aux_g_weight == 0.1 and cfg.batch_size == 128


def test_overrides_win_over_the_preset():
    cfg = resolved(preset="book", d_lr=3e-4, beta2=0.9, loss="hinge", aux_weight=0.5, ema=0.0)
    assert (cfg.lr, cfg.d_lr, cfg.beta2, cfg.loss, cfg.aux_weight, cfg.aux_g_weight, cfg.ema) == \
        (2e-4, 3e-4, 0.9, "hinge", 0.5, 0.5, 0.0)
    assert resolved(preset="projection", lr=1e-3).d_lr == 1e-3  # unset d_lr follows lr
    assert resolved(aux_weight=0).aux_g_weight == 0  # no head, no term in G


def test_adding_a_preset_is_one_registry_entry(monkeypatch):
    from trainer.models import build_discriminator

    extra = dataclasses.replace(PRESETS["sn-hinge"], discriminator=networks.projection_discriminator, aux_weight=0.0)
    monkeypatch.setitem(presets.PRESETS, "plain-hinge", extra)
    assert resolved(preset="plain-hinge").loss == "hinge"
    d = build_discriminator("plain-hinge", (28, 28, 1), 10)
    assert not any("spectral" in layer.name for layer in d.layers) and len(d.outputs) == 1


@pytest.mark.parametrize("args, words", [
    (["--d-lr", "0"], ["--d-lr 0.0", "between 0 and 1"]),
    (["--beta2", "1"], ["--beta2 1.0", "[0, 1)"]),
    (["--loss", "wasserstein"], ["--loss"]),
    (["--aux-weight", "-1"], ["--aux-weight -1.0", "0 (no classifier head)"]),
    (["--aux-weight", "0", "--aux-g-weight", "0.5"], ["--aux-g-weight 0.5", "--aux-weight above 0"]),
    (["--ema", "1"], ["--ema 1.0", "0 to turn EMA off"]),
    (["--ema", "-0.5"], ["--ema -0.5"]),
    (["--preset", "nonsense"], ["--preset"]),
    # Flags the run would otherwise drop without a word (the preset's own smoothing is not refused).
    (["--smooth", "0.1"], ["--smooth 0.1 applies to --loss bce only", "preset sn-hinge uses hinge", "--loss bce"]),
    (["--preset", "book", "--loss", "hinge", "--smooth", "0.2"], ["--smooth 0.2 applies to --loss bce only"]),
    (["--model", "dcgan", "--aux-weight", "0.3"], ["--aux-weight 0.3 needs classes", "--model cgan"]),
    (["--model", "dcgan", "--aux-g-weight", "0.1"], ["--aux-g-weight 0.1 needs classes"]),
])
def test_bad_new_flags_are_one_line_usage_errors(tmp_path, args, words):
    result = trainer_cli("train", "--dataset", "mnist", "--output-dir", str(tmp_path / "r"), *args)
    assert_usage_error(result, *words)
    assert not (tmp_path / "r").exists()


def test_cli_flags_reach_the_config():
    from trainer.cli import train

    argv = ["--dataset", "mnist", "--output-dir", "o", "--preset", "seed", "--d-lr", "5e-4", "--beta2", "0.95",
            "--loss", "hinge", "--aux-weight", "0.2", "--aux-g-weight", "0.05", "--ema", "0"]
    with train.make_context("train", argv) as ctx:
        cfg = TrainConfig(**ctx.params).resolve()
    assert (cfg.preset, cfg.d_lr, cfg.beta2, cfg.loss, cfg.aux_weight, cfg.aux_g_weight, cfg.ema) == \
        ("book", 5e-4, 0.95, "hinge", 0.2, 0.05, 0.0)


def test_launcher_accepts_every_preset_name_and_checks_the_new_flags():
    from launcher.spec import check_hyperparameters

    for name in (*PRESETS, *ALIASES):
        check_hyperparameters({"dataset": "mnist", "preset": name, "ema": "0.99", "loss": "bce"})
    with pytest.raises(UsageError, match="--ema 2.0"):
        check_hyperparameters({"dataset": "mnist", "ema": "2"})


def test_a_resumed_run_keeps_its_preset_including_names_recorded_before_the_rename():
    config.check_resumed_preset(None, "sn-hinge")  # nothing recorded: nothing to check
    config.check_resumed_preset("book", "book")
    config.check_resumed_preset("seed", "book")
    config.check_resumed_preset("default", "projection")  # the old default *was* projection
    with pytest.raises(UsageError, match="hold preset projection .recorded as 'default', its name before issue 12.; "
                                         "resume with --preset projection"):
        config.check_resumed_preset("default", "sn-hinge")
    with pytest.raises(UsageError, match="resume with --preset book"):
        config.check_resumed_preset("book", "projection")


@pytest.mark.slow
def test_resuming_with_another_preset_is_a_usage_error(tmp_path, capsys):
    from tests.cli_helpers import assert_one_line, run_trainer
    from tests.data_helpers import make_idx_dataset

    data = make_idx_dataset(tmp_path / "mnist", n_train=32, n_test=16)
    args = ["--dataset", "mnist", "--data-dir", data, "--output-dir", tmp_path / "run",
            "--epochs", "1", "--batch-size", "16", "--max-steps", "1"]
    # In process: `python -m trainer` is main(); a subprocess would import TensorFlow twice more.
    code, captured = run_trainer(capsys, "train", *args, "--preset", "seed")
    assert code in (0, None), captured.err
    assert_one_line(*run_trainer(capsys, "train", *args), "--preset sn-hinge", "resume with --preset book")


def test_config_re_exports_the_registry_and_no_keras_loads_before_the_backend_is_chosen():
    assert config.PRESETS is presets.PRESETS and config.get_preset is presets.get_preset
    code = "import sys, trainer.config, trainer.models, trainer.train; assert 'keras' not in sys.modules, 'keras loaded'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def toy_generator(z_dim, image_shape, num_classes, sync_bn):
    """A one-layer generator: the smallest network a preset can name."""
    import keras
    from keras import layers

    z = keras.Input((z_dim,), name="z")
    y = keras.Input((num_classes,), name="label") if num_classes else None
    h = layers.Concatenate()([z, y]) if y is not None else z
    h = layers.Dense(math.prod(image_shape), name="toy_dense")(h)
    out = layers.Activation("tanh", dtype="float32", name="image")(layers.Reshape(image_shape)(h))
    return keras.Model([z, y] if y is not None else z, out, name="generator")


def toy_discriminator(image_shape, num_classes, sync_bn, aux):
    import keras
    from keras import layers

    x = keras.Input(image_shape, name="image")
    y = keras.Input((num_classes,), name="label") if num_classes else None
    h = layers.Flatten()(x)
    h = layers.Concatenate()([h, y]) if y is not None else h
    out = layers.Dense(1, dtype="float32", name="logit")(h)
    return keras.Model([x, y] if y is not None else x, out, name="discriminator")


TOY = presets.Preset(what="a one-layer toy", generator=toy_generator, discriminator=toy_discriminator,
                     batch_size=16, z_dim=8, lr=1e-3, beta1=0.5, smooth=0.0, z_distribution="normal")


@pytest.mark.slow
def test_a_toy_preset_in_the_registry_trains_exports_and_resumes_through_train(tmp_path, monkeypatch):
    """One registry entry, nothing else: train() builds its networks, records and exports it, and resumes it."""
    import trainer
    from tests.data_helpers import make_idx_dataset
    from trainer.train import train

    monkeypatch.setitem(presets.PRESETS, "toy", TOY)
    data = make_idx_dataset(tmp_path / "mnist", n_train=48, n_test=16)
    lines = []

    def run(max_steps, preset="toy"):
        return train(TrainConfig(dataset="mnist", data_dir=str(data), output_dir=str(tmp_path / "run"), epochs=2,
                                 max_steps=max_steps, preset=preset), log=lines.append)

    assert run(2)["steps"] == 2
    assert any(line.startswith("training cgan/toy on mnist") and "steps of 16" in line for line in lines)
    assert run(4)["steps"] == 4 and any(line.startswith("resuming from") for line in lines)
    gen = trainer.load_generator(tmp_path / "run" / "generator")
    assert gen.meta["preset"] == "toy" and gen.meta["z_dim"] == 8
    assert "toy_dense" in [layer.name for layer in gen.model.layers]  # the export rebuilt the toy's own network
    assert gen.generate(count=2, seed=0).shape == (2, 28, 28, 1)
    with pytest.raises(UsageError, match="hold preset toy; resume with --preset toy"):
        run(6, preset="book")


@pytest.mark.slow
def test_one_more_entry_in_presets_py_is_all_both_clis_need(tmp_path):
    """A copy of trainer/ whose PRESETS has one more entry: both CLIs offer it, the trainer trains it."""
    from tests.data_helpers import make_idx_dataset

    root = Path(__file__).parents[1]
    shutil.copytree(root / "trainer", tmp_path / "trainer", ignore=shutil.ignore_patterns("__pycache__"))
    source = tmp_path / "trainer" / "presets.py"
    entry = ('    "toy": Preset(what="a toy recipe", generator=networks.lean_generator, '
             'discriminator=networks.projection_discriminator, batch_size=16, z_dim=8, lr=1e-3, beta1=0.5, '
             'smooth=0.0, z_distribution="normal"),\n')
    assert source.read_text().count("PRESETS = {\n") == 1
    source.write_text(source.read_text().replace("PRESETS = {\n", "PRESETS = {\n" + entry))
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{root}")  # this copy's trainer, the checkout's launcher

    def python(*args):
        return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, cwd=tmp_path)

    words = lambda result: " ".join(result.stdout.split())  # noqa: E731  (help text wraps anywhere)
    assert "toy: a toy recipe" in words(python("-m", "trainer", "train", "--help"))
    assert "[toy|book|" in words(python("-m", "launcher.cli", "submit", "--help"))  # --preset's choices
    checked = python("-c", "from launcher.spec import check_hyperparameters; "
                           "check_hyperparameters({'dataset': 'mnist', 'preset': 'toy'})")
    assert checked.returncode == 0, checked.stderr
    data, out = make_idx_dataset(tmp_path / "mnist", n_train=32, n_test=16), tmp_path / "run"
    trained = python("-m", "trainer", "train", "--dataset", "mnist", "--data-dir", str(data), "--output-dir", str(out),
                     "--preset", "toy", "--epochs", "1", "--max-steps", "1")
    assert trained.returncode == 0, trained.stderr
    assert json.loads((out / "generator" / "generator.json").read_text())["preset"] == "toy"
