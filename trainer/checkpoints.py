"""Training checkpoints that are complete or invisible.

A checkpoint is a folder `ckpt-<step>/` holding `weights.npz` (every variable of
the networks, optimizers, EMA generator and dropout RNGs, as plain numpy arrays,
so a run checkpointed on one Keras backend resumes on the other), `state.json`
(step, metrics history, the partial epoch's running sums) and, written last,
`MANIFEST.json` naming every file with its size and SHA-256. The digests are
taken from the bytes in memory as they are written (never by reading the files
back), so a checkpoint costs one pass over a payload whose size is fixed by the
networks, however long the run. Readers trust only the manifest: a folder without one, or
whose files disagree with it, is skipped with a warning in favour of the
previous complete checkpoint. Locally the folder is also built under a temp name
and renamed into place; on S3 (trainer/s3sync.py) the manifest is uploaded last.
"""

import hashlib
import io
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from trainer.errors import UsageError
from trainer.fsutil import atomic_dir

MANIFEST = "MANIFEST.json"
STATE = "state.json"
WEIGHTS = "weights.npz"
FORMAT = 2  # 1: TensorFlow checkpoint files (gankit before the JAX backend)
_NAME = re.compile(r"^ckpt-(\d{9})$")


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:09d}"


def file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_manifest(payload: dict[str, bytes], step: int) -> dict:
    return {
        "format": FORMAT,
        "step": step,
        "files": {name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                  for name, data in sorted(payload.items())},
    }


def npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_checkpoint(directory, step: int, arrays: dict, state: dict, keep: int) -> Path:
    """`arrays` (name -> numpy array) and `state` (JSON) as ckpt-<step>/, complete or invisible."""
    directory = Path(directory)
    final = directory / checkpoint_name(step)
    with atomic_dir(final) as tmp:
        payload = {WEIGHTS: npz_bytes(arrays), STATE: json.dumps(state).encode()}
        for name, data in payload.items():
            (tmp / name).write_bytes(data)
        (tmp / MANIFEST).write_text(json.dumps(build_manifest(payload, step), indent=1))
    prune(directory, keep)
    return final


def problem(folder: Path) -> str | None:
    """Why `folder` is not a complete checkpoint, or None if it is."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("step") != int(_NAME.match(folder.name).group(1)):
            return "manifest names another step"
    except FileNotFoundError:
        return "no manifest (incomplete)"
    except (ValueError, KeyError, TypeError, AttributeError):
        return "corrupted manifest"
    return problem_with_files(folder, manifest)


def problem_with_files(folder: Path, manifest: dict) -> str | None:
    """Why the files in `folder` disagree with `manifest`, or None if they agree."""
    files = manifest["files"]
    if STATE not in files:
        return "manifest lists no state.json"
    for name, meta in files.items():
        path = folder / name
        if not path.is_file():
            return f"missing file {name}"
        if path.stat().st_size != meta.get("size") or file_digest(path) != meta.get("sha256"):
            return f"file {name} does not match the manifest"
    return None


def checkpoint_folders(directory) -> list[tuple[int, Path]]:
    """Every `ckpt-*` folder, newest first, complete or not."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found, reverse=True)


def latest_checkpoint(directory, warn=True) -> Path | None:
    for _, folder in checkpoint_folders(directory):
        reason = problem(folder)
        if reason is None:
            return folder
        if warn:
            print(f"warning: skipping checkpoint {folder}: {reason}; trying the previous one", file=sys.stderr)
    return None


def read_checkpoint(folder: Path) -> tuple[dict, dict]:
    """(arrays, state) of a complete checkpoint folder."""
    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise UsageError(f"{folder} was written by an older gankit (TensorFlow checkpoint files, no {WEIGHTS}); "
                         "resume it with that version, or start afresh with another --checkpoint-dir")
    with np.load(folder / WEIGHTS, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return arrays, json.loads((folder / STATE).read_text())


def prune(directory, keep: int):
    """Keep the newest `keep` checkpoints that have a manifest; drop all older folders."""
    kept = 0
    for _, folder in checkpoint_folders(directory):
        # A manifest is enough here: folders are renamed into place whole, and
        # readers still verify every file before loading.
        if kept < keep and (folder / MANIFEST).is_file():
            kept += 1
        elif kept >= keep:
            shutil.rmtree(folder, ignore_errors=True)
