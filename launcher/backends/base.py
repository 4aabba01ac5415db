"""What a backend is (the `Backend` protocol) and what every backend shares.

A backend is one module, launcher/backends/<name>.py, implementing `Backend`, plus one entry in
`launcher.backends.REGISTRY`; the CLI and `build_spec` ask it for what differs between backends
rather than testing its name. Backend modules import this module, never the package, so the
registry can name them without an import cycle. Heavy imports (boto3, the SageMaker SDK,
TensorFlow) stay inside the functions that need them: `launcher --help` imports the registry.

Shared here: the dataset where a job reads it (`ensure_dataset`), a folder:PATH job's
pictures (`folder_source`, `check_folder`), and the trainer's container inputs, written one way
for every backend (`container_inputs`, `write_container_inputs`; trainer/contract.py reads them).
"""

import contextlib
import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from trainer.errors import NO_CREDENTIALS, GankitError, UsageError, echo

FINAL_STATES = ("Completed", "Failed", "Stopped")


def utc_now() -> str:
    """Now, as job records and statuses say when something happened: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Backend(Protocol):
    """A backend module: these attributes and functions at module level."""

    # The instance type a job gets when it names none, or one of another backend's kind.
    DEFAULT_INSTANCE_TYPE: str
    # Its instance types carry SageMaker's `ml.` prefix (ml.p3.2xlarge), not EC2's bare names.
    ML_INSTANCE_TYPES: bool
    # Runs in the cloud: its runs live in a bucket (datasets staged there), in a region, on a GPU
    # instance type with spot and a cost estimate, and `submit` detaches by default. Otherwise the job
    # runs on this machine, under the local folder standing in for the bucket, and submit waits.
    CLOUD: bool
    # What `--bucket NAME` needs beside it, for the no-bucket message ("--role ARN").
    SETUP_HINT: str
    # The one-line error when the job has no execution role (--role), None when it needs none.
    NO_ROLE: str | None
    # The fields a job record of this backend must have (besides job, backend, output_uri).
    RECORD_FIELDS: tuple[str, ...]
    # The most a job bills before --max-run starts counting (an EC2 instance's setup); in the cost ceiling.
    SETUP_SECONDS: int

    def check_spec(self, spec) -> None:
        """Refuse, in one line (UsageError), a spec this backend cannot run; nothing is read or sent.
        `submit` prints the plan and its cost only after this passed."""

    def submit(self, spec, dry_run: bool = False) -> dict:
        """Start the job: its record (saved with launcher.jobs). A dry run sends nothing and returns
        exactly what would be sent."""

    def describe(self, record: dict) -> dict:
        """status (InProgress or one of FINAL_STATES), started, ended, failure_reason, instance_type, ..."""

    def logs(self, record: dict, follow: bool, print_line) -> None:
        """Print the job's log through `print_line`; with follow, until the job ends."""

    def stop(self, record: dict) -> str | None:
        """Stop the job; the trainer checkpoints first where the platform lets it. The status it ended with
        where it ended before it could be stopped, else None."""

    def output_uri(self, record: dict) -> str:
        """Where the run's outputs (generator, samples, metrics) live: s3://... or a local folder."""

    def plan_rows(self, spec) -> list[tuple[str, str]]:
        """Rows of its own for the plan `launcher submit` prints (e.g. a console link)."""


def aws_session(region: str | None = None):
    """A boto3 session with credentials, else the one-line fix. A cloud submit asks first, before its
    plan and cost are printed (they would read as if the job had started)."""
    import boto3

    session = boto3.session.Session(region_name=region)
    if session.get_credentials() is None:
        raise UsageError(NO_CREDENTIALS)
    return session


def recorded_output_uri(record: dict) -> str:
    """The run's output prefix as `submit` recorded it (every backend publishes to the shared layout)."""
    return record["output_uri"]


def no_plan_rows(spec) -> list[tuple[str, str]]:
    return []


# --- the trainer's container inputs -------------------------------------------------------------

def container_inputs(hyperparameters: dict, *, output_uri: str, checkpoint_uri: str | None = None,
                     data_uri: str | None = None) -> dict[str, str]:
    """hyperparameters.json for the trainer's contract, the same for every backend: the job's own, as
    strings, with the run's output prefix (and checkpoint prefix, unless the platform syncs checkpoints
    itself), so the trainer publishes straight into the shared layout. The data arrives as the
    `training` channel, or, given `data_uri`, the trainer reads it from there."""
    values = {key: str(value) for key, value in hyperparameters.items() if key != "data_dir"}
    if data_uri:
        values["data_dir"] = data_uri
    values["output_dir"] = output_uri
    if checkpoint_uri:
        values["checkpoint_dir"] = checkpoint_uri
    return values


def write_container_inputs(root: Path, hyperparameters: dict[str, str], training: str | Path | None = None):
    """The /opt/ml tree trainer/contract.py reads, for backends that build it themselves (local, EC2):
    input/config/hyperparameters.json, the `training` channel (a link to the data) and output/."""
    from trainer.fsutil import atomic_write_text

    atomic_write_text(root / "input" / "config" / "hyperparameters.json", json.dumps(hyperparameters, indent=1))
    if training is not None:
        channel = root / "input" / "data" / "training"
        channel.parent.mkdir(parents=True, exist_ok=True)
        channel.symlink_to(Path(training).resolve(), target_is_directory=True)
    (root / "output").mkdir(parents=True, exist_ok=True)


# --- datasets -----------------------------------------------------------------------------------

def ensure_dataset(spec, upload: bool = True):
    """The spec with its dataset where a job reads it, staged in the bucket (or the local backend's folder standing
    in for it) unless it is there already.

    A folder:PATH is checked first (every picture decoded: a broken one is named, and nothing is sent) and
    goes to datasets/<folder>-<content hash>/; an IDX dataset from `--hp data_dir` to datasets/<name>-<content
    hash>/ (once the canonical datasets/<name>/ took it if empty, and every later job trained on whichever
    copy came first). `upload=False` (a dry run) checks and names the prefix only.
    """
    from trainer import layout
    from trainer.dataset_staging import (build_manifest, content_hash, dataset_files, folder_manifest, is_staged,
                                         stage_dataset, stage_files, stage_folder)

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

    data_dir = spec.hyperparameters.get("data_dir")
    with launcher_flags():
        if not data_dir:
            if upload and not is_staged(spec.data_uri, spec.dataset):
                stage_dataset(spec.dataset, spec.data_uri, log=say_in_launcher_words)
            return spec
        # Your own copy: named by its content, so it never stands in for the published files, nor they for it.
        said = []  # where its files came from: said when they are sent (as stage_dataset says it) or refused
        try:
            files = dataset_files(spec.dataset, data_dir, log=said.append)
        except GankitError:
            for line in said:
                say_in_launcher_words(line)
            raise
        manifest = build_manifest(spec.dataset, files)
        spec = dataclasses.replace(spec, data_prefix=layout.folder_dataset_prefix(
            spec.root, spec.dataset, content_hash(manifest["files"])))
        if upload and not is_staged(spec.data_uri, spec.dataset, manifest["files"]):
            for line in said:
                say_in_launcher_words(line)
            stage_files(files, manifest, spec.data_uri, log=say_in_launcher_words)  # checked and hashed once
    return spec


def launcher_words(message: str) -> str:
    """A trainer's dataset message in the launcher's words: the trainer's --data-dir is `--hp data_dir`."""
    return message.replace("--data-dir DIR", "--hp data_dir=DIR").replace("--data-dir", "--hp data_dir")


def say_in_launcher_words(message: str):
    echo(launcher_words(message))


@contextlib.contextmanager
def launcher_flags():
    """The trainer's dataset errors in the launcher's words (`launcher_words`)."""
    try:
        yield
    except GankitError as e:
        if type(e) not in (GankitError, UsageError) or "--data-dir" not in str(e):
            raise
        raise type(e)(launcher_words(str(e))) from None


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
