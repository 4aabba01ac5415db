"""The shared run layout and how the /opt/ml contract maps hyperparameters onto it."""

import json

from trainer import layout
from trainer.contract import train_argv


def test_layout_paths_for_s3_and_local_roots():
    assert layout.output_prefix("s3://b/", "gan-1") == "s3://b/runs/gan-1/output"
    assert layout.checkpoints_prefix("/home/u/bucket", "gan-1") == "/home/u/bucket/runs/gan-1/checkpoints"
    assert layout.generator_prefix("s3://b", "gan-1") == "s3://b/runs/gan-1/output/generator"
    assert layout.dataset_prefix("s3://b", "zalando") == "s3://b/datasets/zalando"


def test_folder_datasets_get_distinct_single_segment_slugs():
    a, b = layout.dataset_slug("folder:/data/Faces 64"), layout.dataset_slug("folder:/other/Faces 64/")
    assert a.startswith("folder-faces-64-") and "/" not in a and a != b


def test_contract_publishes_to_an_s3_output_dir_but_never_to_a_local_one(tmp_path):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({"dataset": "mnist", "output_dir": '"s3://b/runs/j/output"'}))
    argv = train_argv(tmp_path)
    assert argv[argv.index("--output-dir") + 1] == "s3://b/runs/j/output"
    assert argv[argv.index("--checkpoint-dir") + 1] == str(tmp_path / "checkpoints")
    (config / "hyperparameters.json").write_text(json.dumps({"dataset": "mnist", "output_dir": "/tmp/elsewhere"}))
    argv = train_argv(tmp_path)
    assert argv[argv.index("--output-dir") + 1] == str(tmp_path / "output" / "data")
    assert argv.count("--output-dir") == 1
