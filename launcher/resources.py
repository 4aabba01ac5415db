"""The files the launcher reads from infra/, docker/ and examples/: the checkout's, else the wheel's.

Run from a checkout (`pip install -e .`, or PYTHONPATH) they are the folders beside launcher/.
A wheel carries the same files as package data, `gankit_data.<folder>`, which setup.py maps
from those folders at build time: the repository keeps one copy.
"""

import importlib.resources
from pathlib import Path

from trainer.errors import GankitError

_SOURCE = Path(__file__).resolve().parents[1]


def checkout() -> Path | None:
    """The source checkout the launcher runs from; None when it is installed from a wheel."""
    return _SOURCE if (_SOURCE / "pyproject.toml").is_file() and (_SOURCE / "infra").is_dir() else None


def resource_path(name: str) -> Path:
    """The file `name` ('infra/base.yaml', 'docker/sagemaker_entry.py', ...) on disk."""
    folder, _, rest = name.partition("/")
    root = checkout()
    try:
        path = root / name if root else Path(str(importlib.resources.files(f"gankit_data.{folder}").joinpath(rest)))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise GankitError(f"{name} is missing from this gankit install; reinstall it (`pip install gankit`, "
                          "or `pip install -e .` in a clone)")
    return path
