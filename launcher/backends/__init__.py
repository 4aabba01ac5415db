"""Backends: local, sagemaker, ec2. Each module has submit(spec, dry_run), describe(record), logs(record, follow, echo), stop(record)."""

import importlib

from launcher.settings import BACKENDS
from trainer.errors import UsageError

FINAL_STATES = ("Completed", "Failed", "Stopped")


def get(name: str):
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(f"launcher.backends.{name}")


def ensure_dataset(spec):
    """Stage the job's dataset into the bucket unless it is there already (cloud backends read it from S3)."""
    from trainer import layout, s3
    from trainer.stage import MANIFEST, stage_dataset

    if spec.dataset.startswith("folder:"):
        raise UsageError(f"{spec.dataset}: upload the folder to S3 and submit with --hp data_dir=s3://... "
                         "(image folders are not staged by name)")
    if s3.read_bytes(layout.join(spec.data_uri, MANIFEST)) is None:
        stage_dataset(spec.dataset, spec.data_uri, data_dir=spec.hyperparameters.get("data_dir"))
