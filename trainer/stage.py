"""Put a dataset's canonical files under an S3 prefix (or a local folder standing in for a bucket), once.

`s3://BUCKET/datasets/<name>/` holds the files plus `MANIFEST.json` (each
file's size and SHA-256), uploaded last: a prefix with a manifest is complete,
and staging again with the same checksums uploads nothing.
"""

import json
import shutil
from pathlib import Path

from trainer import s3
from trainer.checkpoints import file_digest
from trainer.data import canonical_name
from trainer.errors import UsageError
from trainer.fsutil import atomic_write_bytes
from trainer.progress import Progress, format_bytes

MANIFEST = "MANIFEST.json"


def dataset_files(name: str, data_dir=None, log=None) -> list[Path]:
    """The dataset's files on this machine, checked, fetched if need be (see trainer.data.fetch)."""
    name = canonical_name(name)
    if name.startswith("folder:"):
        raise UsageError(f"{name}: image folders are not staged by name; upload the folder with "
                         "`aws s3 sync` and pass its s3:// prefix as --data-dir")
    from trainer.data.catalog import CATALOG
    from trainer.data.fetch import _read_checked, locate_split

    spec = CATALOG[name]
    files, said = [], set()

    def once(message):  # both splits usually come from the same place: say it once
        if log and message not in said:
            said.add(message)
            log(message)

    for split in spec.splits:
        paths, strict, fix = locate_split(spec, split, data_dir, log=once)
        _read_checked(spec, split, paths, strict=strict, fix=fix)  # never stage a broken copy
        files += paths
    return files


def build_manifest(name: str, files) -> dict:
    return {"dataset": canonical_name(name),
            "files": {p.name: {"size": p.stat().st_size, "sha256": file_digest(p)} for p in files}}


def stage_dataset(name: str, to_uri: str, data_dir=None, log=print) -> dict:
    """Upload `name` to `to_uri` unless the same checksums are already there; returns the manifest."""
    files = dataset_files(name, data_dir, log)  # says where the files came from
    manifest = build_manifest(name, files)
    remote = _read(s3.join(to_uri, MANIFEST))
    try:
        if remote is not None and json.loads(remote)["files"] == manifest["files"]:
            log(f"{manifest['dataset']} is already staged at {to_uri} (same checksums); nothing to upload")
            return manifest
    except (ValueError, KeyError, TypeError):
        pass  # a broken manifest: stage again
    progress = Progress(sum(p.stat().st_size for p in files), label=f"staging {manifest['dataset']}", fmt=format_bytes)
    for path in files:
        _put(path, s3.join(to_uri, path.name), progress.update)
    progress.close()
    _write(s3.join(to_uri, MANIFEST), json.dumps(manifest, indent=1).encode())
    log(f"staged {manifest['dataset']} at {to_uri}")
    return manifest


# S3 or a local folder, the same three operations.
def _read(uri):
    if s3.is_s3(uri):
        return s3.read_bytes(uri)
    return Path(uri).read_bytes() if Path(uri).exists() else None


def _put(path: Path, uri, callback):
    if s3.is_s3(uri):
        return s3.upload_file(path, uri, callback=callback)
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, uri)
    callback(path.stat().st_size)


def _write(uri, data: bytes):
    if s3.is_s3(uri):
        return s3.write_bytes(uri, data)
    atomic_write_bytes(uri, data)
