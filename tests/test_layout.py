"""The shared run layout and how the /opt/ml contract maps hyperparameters onto it."""

import json

from trainer import layout
from trainer.contract import read_config


def test_layout_paths_for_s3_and_local_roots():
    assert layout.output_prefix("s3://b/", "gan-1") == "s3://b/runs/gan-1/output"
    assert layout.checkpoints_prefix("/home/u/bucket", "gan-1") == "/home/u/bucket/runs/gan-1/checkpoints"
    assert layout.generator_prefix("s3://b", "gan-1") == "s3://b/runs/gan-1/output/generator"
    assert layout.dataset_prefix("s3://b", "zalando") == "s3://b/datasets/zalando"


def test_folder_datasets_get_distinct_single_segment_slugs():
    a, b = layout.dataset_slug("folder:/data/Faces 64"), layout.dataset_slug("folder:/other/Faces 64/")
    assert a.startswith("folder-faces-64-") and "/" not in a and a != b


def test_contract_writes_into_the_layout_when_told_and_into_opt_ml_otherwise(tmp_path):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)

    def dirs_for(**hyperparameters):
        (config / "hyperparameters.json").write_text(json.dumps(dict(dataset="mnist", **hyperparameters)))
        cfg = read_config(tmp_path)
        return cfg.output_dir, cfg.checkpoint_dir

    assert dirs_for(output_dir='"s3://b/runs/j/output"') == ("s3://b/runs/j/output", str(tmp_path / "checkpoints"))
    assert dirs_for() == (str(tmp_path / "output" / "data"), str(tmp_path / "checkpoints"))
    assert dirs_for(output_dir="/r/runs/j/output", checkpoint_dir="/r/runs/j/checkpoints") == (
        "/r/runs/j/output", "/r/runs/j/checkpoints")


def test_contract_reads_the_training_channel_and_skips_sagemakers_own_keys(tmp_path):
    (tmp_path / "input" / "config").mkdir(parents=True)
    (tmp_path / "input" / "config" / "hyperparameters.json").write_text(json.dumps({
        "dataset": '"zalando"', "epochs": "3", "sagemaker_program": "sagemaker_entry.py",
        "sagemaker_region": '"us-east-1"', "model_dir": "s3://b/model"}))
    assert read_config(tmp_path).data_dir is None  # no channel: the trainer's usual places
    (tmp_path / "input" / "data" / "training").mkdir(parents=True)
    cfg = read_config(tmp_path)
    assert (cfg.dataset, cfg.epochs, cfg.data_dir) == ("zalando", 3, str(tmp_path / "input" / "data" / "training"))


def test_a_folder_whose_name_is_not_utf8_still_has_a_stable_slug():
    import os

    from trainer.layout import dataset_slug

    name = "folder:/data/" + os.fsdecode(b"caf\xe9")  # how Python holds a Latin-1 file name
    assert dataset_slug(name) == dataset_slug(name) and dataset_slug(name).startswith("folder-caf-")
    assert dataset_slug(name) != dataset_slug("folder:/data/cafe")
