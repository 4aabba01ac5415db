"""Backends: local, sagemaker, ec2. Each module has submit(spec, dry_run), describe(record), logs(record, follow, echo), stop(record)."""

import importlib

from launcher.settings import BACKENDS
from trainer.errors import UsageError

FINAL_STATES = ("Completed", "Failed", "Stopped")


def get(name: str):
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(f"launcher.backends.{name}")
