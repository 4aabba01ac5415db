"""The code's shape: facts the source keeps in one place, and boundaries between modules."""

import re
import tomllib
from pathlib import Path

import trainer

ROOT = Path(__file__).resolve().parent.parent


def test_one_tensorflow_pin_and_the_files_that_cannot_import_it_agree():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["trainer"]
    assert f"tensorflow{trainer.TENSORFLOW_RANGE}" in extra
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ARG TENSORFLOW=(\S+)$", dockerfile, re.M)[1] == trainer.TENSORFLOW
    assert "FROM tensorflow/tensorflow:${TENSORFLOW}-gpu" in dockerfile
    assert f"tensorflow=={trainer.TENSORFLOW}\n" in (ROOT / "constraints.txt").read_text()
