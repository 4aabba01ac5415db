"""examples/pull_and_generate.ipynb: valid nbformat, and its code runs against a (moto) bucket with a real generator."""

import json
from pathlib import Path

import pytest

from tests.iam_helpers import denied, recording, role_statements

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "pull_and_generate.ipynb"


def code_cells():
    return ["".join(c["source"]) for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]


def test_notebook_is_valid_nbformat():
    data = json.loads(NOTEBOOK.read_text())
    assert data["nbformat"] == 4 and data["metadata"]["kernelspec"]["language"] == "python"
    assert all(c["cell_type"] in ("code", "markdown") for c in data["cells"])
    assert all(not c.get("outputs") for c in data["cells"] if c["cell_type"] == "code")  # shipped clean
    nbformat = pytest.importorskip("nbformat")
    nbformat.validate(nbformat.read(NOTEBOOK, as_version=4))


def test_notebook_lists_runs_pulls_a_generator_and_draws_a_class(aws_env, tmp_path, monkeypatch, capsys):
    import boto3
    from trainer.export import export_generator
    from trainer.models import build_generator

    classes = ["t-shirt", "trouser", "sneaker"]
    generator = tmp_path / "export"
    export_generator(build_generator("default", 8, (28, 28, 1), num_classes=len(classes)),
                     {"dataset": "zalando", "class_names": classes, "z_dim": 8, "image_shape": [28, 28, 1],
                      "model": "cgan", "steps": 12, "conditional": True}, generator)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="nb-bucket")
    for path in generator.iterdir():
        s3.upload_file(str(path), "nb-bucket", f"runs/z1/output/generator/{path.name}")
    s3.put_object(Bucket="nb-bucket", Key="runs/z0-unfinished/checkpoints/ckpt-000000001/MANIFEST.json", Body=b"{}")

    monkeypatch.setenv("GANKIT_BUCKET", "nb-bucket")  # what the instance's Jupyter unit sets
    monkeypatch.chdir(tmp_path)
    scope = {}
    with recording(tmp_path) as calls:
        for source in code_cells():
            exec(compile(source, str(NOTEBOOK), "exec"), scope)
    # On the instance it runs with the Jupyter role: it lists and reads runs/ only, which that role allows.
    assert {c["params"]["Key"].split("/")[0] for c in calls if "Key" in c["params"]} == {"runs"}
    assert any(c["operation"] == "ListObjectsV2" for c in calls)
    assert denied(role_statements("JupyterRole", "nb-bucket"), calls) == []

    out = capsys.readouterr().out
    assert "z1" in out and "zalando" in out and "z0-unfinished" not in out
    assert [r["job"] for r in scope["runs"]] == ["z1"]
    assert (tmp_path / "generators" / "z1" / "generator.json").is_file()
    assert scope["CLASS"] == "t-shirt"
    grid = scope["grid"]
    assert grid.size[0] > grid.size[1] > 0  # 4 rows x 8 columns of one class
