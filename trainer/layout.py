"""One layout for every backend, under a bucket (`s3://BUCKET`) or a local folder standing in for one:

    <root>/datasets/<name>/            canonical dataset files + MANIFEST.json (checksums)
    <root>/datasets/<folder>-<hash>/   a staged folder:PATH (class subfolders kept) + MANIFEST.json
    <root>/datasets/<name>-<hash>/     an IDX dataset a cloud job took from `--hp data_dir` + MANIFEST.json
    <root>/runs/<job>/checkpoints/     ckpt-NNNNNNNNN/ folders, each complete once its MANIFEST.json exists
    <root>/runs/<job>/output/          what `train --output-dir` writes: generator/, samples/, metrics.jsonl, ...

Inside a job, SageMaker's container layout (trainer/contract.py) lives under `sm_root()`.

The trainer, the launcher and every backend build paths only through these functions.
"""

import hashlib
import os
import re
from pathlib import Path


def join(root: str, *parts: str) -> str:
    """Join an s3:// URI or a local path with '/' (S3 keys and POSIX paths alike)."""
    return "/".join([str(root).rstrip("/"), *(p.strip("/") for p in parts)])


def dataset_slug(dataset: str) -> str:
    """A dataset name safe as one path segment: `zalando`, or `folder-faces-1a2b3c4d` for folder:PATH."""
    if dataset.startswith("folder:"):
        path = dataset[len("folder:"):].rstrip("/")
        # surrogateescape: a folder whose name is not UTF-8 still gets its stable slug
        return f"folder-{_folder_base(path)}-{hashlib.sha256(path.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
    return dataset


def _folder_base(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.rstrip("/").rsplit("/", 1)[-1].lower()).strip("-") or "images"


def dataset_prefix(root: str, dataset: str) -> str:
    return join(root, "datasets", dataset_slug(dataset))


def folder_dataset_prefix(root: str, folder: str, content_hash: str) -> str:
    """Where a folder of pictures (or your own copy of an IDX dataset: `folder` is then its name) is staged:
    named by its content, so a changed folder gets a new prefix."""
    return join(root, "datasets", f"{_folder_base(str(folder))}-{content_hash}")


def run_prefix(root: str, job: str) -> str:
    return join(root, "runs", job)


def checkpoints_prefix(root: str, job: str) -> str:
    return join(run_prefix(root, job), "checkpoints")


def output_prefix(root: str, job: str) -> str:
    return join(run_prefix(root, job), "output")


def generator_prefix(root: str, job: str) -> str:
    """Where a job's exported generator lands (examples/pull_and_generate.ipynb reads runs by it)."""
    return join(output_prefix(root, job), "generator")


def local_generator(path) -> Path:
    """The generator folder `path` names: itself, or for a run's output folder (a pulled job's too) its
    generator/, the last one (generator-best/ only when named). One rule for `launcher generate` and
    `python -m trainer generate`."""
    path = Path(path)
    return path / "generator" if (path / "generator" / "generator.json").exists() else path


def job_of_output(output: str) -> str | None:
    """The job whose output prefix `output` is (`<root>/runs/<job>/output`), else None."""
    parts = str(output).rstrip("/").split("/")
    if len(parts) >= 3 and parts[-1] == "output" and parts[-3] == "runs" and parts[-2]:
        return parts[-2]
    return None


def sm_root() -> Path:
    """The container contract's root: /opt/ml, or GANKIT_SM_ROOT (local jobs, EC2, tests)."""
    return Path(os.environ.get("GANKIT_SM_ROOT", "/opt/ml"))
