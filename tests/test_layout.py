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


def test_contract_writes_into_the_layout_when_told_and_into_opt_ml_otherwise(tmp_path):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)

    def argv_for(**hyperparameters):
        (config / "hyperparameters.json").write_text(json.dumps(dict(dataset="mnist", **hyperparameters)))
        argv = train_argv(tmp_path)
        assert argv.count("--output-dir") == argv.count("--checkpoint-dir") == 1
        return argv[argv.index("--output-dir") + 1], argv[argv.index("--checkpoint-dir") + 1]

    assert argv_for(output_dir='"s3://b/runs/j/output"') == ("s3://b/runs/j/output", str(tmp_path / "checkpoints"))
    assert argv_for() == (str(tmp_path / "output" / "data"), str(tmp_path / "checkpoints"))
    assert argv_for(output_dir="/r/runs/j/output", checkpoint_dir="/r/runs/j/checkpoints") == (
        "/r/runs/j/output", "/r/runs/j/checkpoints")
