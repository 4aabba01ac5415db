"""Backends: local, sagemaker, ec2. Each module has submit(spec, dry_run), describe(record), logs(record, follow, echo), stop(record)."""

import dataclasses
import importlib
from pathlib import Path

from launcher.settings import BACKENDS
from trainer.errors import UsageError

FINAL_STATES = ("Completed", "Failed", "Stopped")


def get(name: str):
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(f"launcher.backends.{name}")


def ensure_dataset(spec, upload: bool = True):
    """The spec with its dataset where a cloud job reads it, staged in the bucket unless it is there already.

    A folder:PATH is checked first (every picture decoded: a broken one is named, and nothing is sent) and
    goes to datasets/<folder>-<content hash>/. `upload=False` (a dry run) checks and names the prefix only.
    """
    from trainer import layout, s3
    from trainer.dataset_staging import MANIFEST, folder_manifest, stage_dataset, stage_folder

    if spec.dataset.startswith("folder:"):
        folder = folder_source(spec)
        manifest = folder_manifest(spec.dataset, folder)
        spec = dataclasses.replace(spec, data_prefix=layout.folder_dataset_prefix(
            spec.root, folder.resolve(), manifest["content_hash"]))
        if upload:
            stage_folder(folder, manifest, spec.data_uri, *_picture_shape(spec))
        else:
            from trainer.data.folder import check_pictures

            check_pictures([folder / rel for rel in manifest["files"]], *_picture_shape(spec))
        return spec
    if upload and s3.read_bytes(layout.join(spec.data_uri, MANIFEST)) is None:
        stage_dataset(spec.dataset, spec.data_uri, data_dir=spec.hyperparameters.get("data_dir"))
    return spec


def folder_source(spec) -> Path:
    """The folder holding a folder:PATH job's pictures on this machine: --hp data_dir if given, else PATH."""
    source = spec.hyperparameters.get("data_dir") or spec.dataset[len("folder:"):]
    if source.startswith("s3://"):
        raise UsageError(f"--hp data_dir={source}: give your pictures' local folder as --dataset folder:PATH; "
                         "the launcher uploads it to the bucket")
    return Path(source).expanduser()


def check_folder(spec) -> Path:
    """Decode every picture of a folder:PATH job as its training will; the first broken one is a UsageError."""
    from trainer.data.folder import check_pictures, list_folder

    folder = folder_source(spec)
    check_pictures(list_folder(folder)[0], *_picture_shape(spec))
    return folder


def _picture_shape(spec) -> tuple[int, int]:
    from trainer.data import FOLDER_CHANNELS, FOLDER_IMAGE_SIZE

    hp = spec.hyperparameters
    return int(hp.get("image_size") or FOLDER_IMAGE_SIZE), int(hp.get("channels") or FOLDER_CHANNELS)
