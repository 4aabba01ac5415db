"""Put a dataset's files under an S3 prefix (or a local folder standing in for a bucket), once.

`s3://BUCKET/datasets/<name>/` holds the canonical files plus `MANIFEST.json`
(each file's size and SHA-256), uploaded last and withdrawn before a staging
replaces the first file: a prefix with a manifest is complete, and staging
again with the same checksums uploads nothing.

A folder of pictures goes to `s3://BUCKET/datasets/<folder>-<content hash>/`
with its class subfolders; its manifest lists the relative paths that training
reads. Its pictures are all decoded before the first byte is sent, and what an
interrupted upload left there is not sent again. Staged again to one fixed prefix
(`trainer stage --to`), a folder's changes go by the SHA-256s of the manifest
there, and what it listed that the folder no longer has is removed.
"""

import contextlib
import functools
import hashlib
import json
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from trainer import s3
from trainer.checkpoints import file_digest
from trainer.data import canonical_name
from trainer.errors import GankitError, UsageError
from trainer.fsutil import atomic_file, atomic_write_bytes, inside, name_problem, refuse_file_in_the_way
from trainer.progress import Progress, format_bytes

MANIFEST = "MANIFEST.json"
CONTENT_HASH_CHARS = 16  # of the manifest's SHA-256: 64 bits name a folder's content in the prefix
UPLOAD_THREADS = 8  # pictures are small: one request each, several at once


def dataset_files(name: str, data_dir=None, log=None) -> list[Path]:
    """The dataset's files on this machine, checked, fetched if need be (see trainer.data.fetch)."""
    name = canonical_name(name)
    if name.startswith("folder:"):
        raise UsageError(f"{name}: an image folder has no canonical files; stage it with stage_folder")
    from trainer.data.catalog import CATALOG
    from trainer.data.fetch import checked_split

    spec = CATALOG[name]
    files, said = [], set()

    def once(message):  # both splits usually come from the same place: say it once
        if log and message not in said:
            said.add(message)
            log(message)

    for split in spec.splits:
        files += checked_split(spec, split, data_dir, log=once)[0]  # never stage a broken copy
    return files


def build_manifest(name: str, files) -> dict:
    return {"dataset": canonical_name(name),
            "files": {p.name: {"size": p.stat().st_size, "sha256": file_digest(p)} for p in files}}


def stage_dataset(name: str, to_uri: str, data_dir=None, log=print) -> dict:
    """Upload `name` to `to_uri` unless the same checksums are already there; returns the manifest."""
    _check_target(to_uri)
    name = canonical_name(name)
    if name.startswith("folder:"):
        folder = data_dir or name[len("folder:"):]
        return stage_folder(folder, folder_manifest(name, folder), to_uri, log=log)
    files = dataset_files(name, data_dir, log)  # says where the files came from
    return stage_files(files, build_manifest(name, files), to_uri, log)


def stage_files(files, manifest: dict, to_uri: str, log=print) -> dict:
    """Upload a dataset's checked `files` and their `manifest` (build_manifest's) to `to_uri`, as stage_folder
    does a folder's, unless the same checksums are already there; returns the manifest."""
    if is_staged(to_uri, manifest["dataset"], manifest["files"]):
        log(f"{manifest['dataset']} is already staged at {to_uri} (same checksums); nothing to upload")
        return manifest
    _withdraw_manifest(to_uri)
    progress = Progress(sum(p.stat().st_size for p in files), label=f"staging {manifest['dataset']}", fmt=format_bytes)
    for path in files:
        _put(path, s3.join(to_uri, path.name), progress.update)
    progress.close()
    _write(s3.join(to_uri, MANIFEST), json.dumps(manifest, indent=1).encode())
    log(f"staged {manifest['dataset']} at {to_uri}")
    return manifest


def _check_target(to_uri):
    """`stage --to`: an S3 prefix or a folder. Joined with '/', an empty one was the filesystem's root and
    `s3://` (or `s3:/x`) a local folder named `s3:`."""
    text = str(to_uri)
    if not text.strip():
        raise UsageError("--to is empty; name an S3 prefix, e.g. s3://BUCKET/datasets/zalando, or a folder")
    if text.lower().startswith("s3:") and not (text.startswith("s3://") and text[5:].split("/")[0]):
        raise UsageError(f"--to {text} is not an S3 URI; write s3://BUCKET/PREFIX, e.g. s3://BUCKET/datasets/zalando")
    if not s3.is_s3(text):  # a file in the way failed at the first copy: "File exists; free space", exit 1
        refuse_file_in_the_way(text, "--to")


def folder_manifest(name: str, folder) -> dict:
    """The pictures of `folder` that training reads (trainer.data.folder), by relative path, with size and SHA-256.

    `content_hash` names the whole: the same pictures under the same paths give the same hash.
    """
    from trainer.data.folder import list_folder

    root = Path(folder).expanduser()
    pictures, _, class_names = list_folder(root)
    progress = Progress(sum(p.stat().st_size for p in pictures), label="hashing pictures", fmt=format_bytes)
    files = {}
    for path in pictures:
        rel = path.relative_to(root).as_posix()
        why = name_problem(rel)
        if why:  # here, not as a refusal in the cloud after the upload
            raise UsageError(f"cannot stage {_printable(path)}: {why}; rename it")
        files[rel] = {"size": path.stat().st_size, "sha256": _picture_digest(path)}
        progress.update(path.stat().st_size)
    progress.close()
    return {"dataset": canonical_name(name), "kind": "folder", "classes": list(class_names),
            "content_hash": content_hash(files), "files": files}


def content_hash(files: dict) -> str:
    """A manifest's files (name: size and SHA-256) as one short hash: the same files give the same hash."""
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[
        :CONTENT_HASH_CHARS]


def _printable(path: Path) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")  # a non-UTF-8 name shown as its bytes


def _picture_digest(path: Path) -> str:
    try:
        return file_digest(path)
    except OSError as e:
        raise UsageError(f"cannot read image {path} ({e.strerror or e}); fix its permissions or remove it") from None


def stage_folder(folder, manifest: dict, to_uri: str, image_size=None, channels=None, log=print) -> dict:
    """Check every picture in `manifest`, upload those not yet below `to_uri`, remove those the earlier staging
    there listed and this one does not, then write the manifest; returns it.

    A prefix whose manifest lists the same files was checked and uploaded before: nothing is done.
    """
    from trainer.data import FOLDER_CHANNELS, FOLDER_IMAGE_SIZE
    from trainer.data.folder import check_pictures

    root = Path(folder).expanduser()
    old = _remote_files(to_uri)
    if old == manifest["files"]:  # is_staged's rule; `old` is needed below
        log(f"{root} is already staged at {to_uri} (same pictures); nothing to upload")
        return manifest
    check_pictures([root / rel for rel in manifest["files"]], image_size or FOLDER_IMAGE_SIZE,
                   channels or FOLDER_CHANNELS)
    there = _unchanged_there(to_uri, manifest, old)
    todo = [rel for rel in manifest["files"] if rel not in there]
    # Only what an earlier manifest listed was put here by a staging: anything else below the prefix (notes,
    # pictures put there by hand, another tool's files) is the bucket owner's, and `--to` may name a prefix that
    # holds more than a staging. Unsafe names (which no staging writes: folder_manifest refuses them) stay too.
    removed = sorted(rel for rel in set(old or {}) - set(manifest["files"]) if not name_problem(rel))
    earlier = _earlier_copies(to_uri, manifest) if todo else {}
    copied = [rel for rel in todo if rel in earlier]
    sent = [rel for rel in todo if rel not in earlier]
    size = sum(manifest["files"][rel]["size"] for rel in todo)
    kept = len(manifest["files"]) - len(todo)
    log(f"uploading {len(sent)} pictures ({format_bytes(sum(manifest['files'][rel]['size'] for rel in sent))}) "
        f"to {to_uri}" + (f"; {len(copied)} unchanged ones copied inside S3 from an earlier staging" if copied else "")
        + (f"; {kept} already there" if kept else "")
        + (f"; removing {len(removed)} no longer in the folder" if removed else ""))
    for rel in removed:  # while the earlier manifest still names them: a staging cut short removes them next time
        _remove(to_uri, rel)
    _withdraw_manifest(to_uri)
    tasks = [functools.partial(_put, root / rel, s3.join(to_uri, rel)) for rel in sent]
    tasks += [functools.partial(s3.copy_object, earlier[rel], s3.join(to_uri, rel)) for rel in copied]
    _run_all(tasks, size, label="staging pictures")
    _write(s3.join(to_uri, MANIFEST), json.dumps(manifest, indent=1).encode())
    log(f"staged {root} at {to_uri}")
    return manifest


def _unchanged_there(to_uri, manifest: dict, old: dict | None) -> set:
    """The pictures of `manifest` already below `to_uri`, that need not be sent again.

    The earlier staging's manifest there says what it put there, by SHA-256 (a staging withdraws it before it
    changes a file): a picture it lists with the same size and checksum is there unchanged. Without one (none yet,
    or withdrawn by a staging cut short), a prefix named by this very content (datasets/<folder>-<content hash>/,
    as the launcher stages) only ever received these pictures, so one of the right size is one an interrupted
    upload finished; at any other prefix a picture of the same size may be another one, and all are sent.
    """
    listed = _list(to_uri)
    if old is None and not to_uri.rstrip("/").endswith("-" + manifest["content_hash"]):
        return set()
    return {rel for rel, entry in manifest["files"].items()
            if listed.get(rel) == entry["size"] and (old is None or old.get(rel) == entry)}


def _earlier_copies(to_uri: str, manifest: dict) -> dict:
    """Relative path -> URI of the same bytes in an earlier staging of this folder (datasets/<folder>-*/)."""
    if not s3.is_s3(to_uri):
        return {}
    parent, _, name = to_uri.rstrip("/").rpartition("/")
    by_digest = {}
    for sibling in s3.list_prefixes(parent, starting=name.rsplit("-", 1)[0] + "-"):
        files = _remote_files(s3.join(parent, sibling)) if sibling != name else None
        for rel, entry in (files or {}).items():  # complete stagings only: their manifest is written last
            by_digest.setdefault((entry.get("sha256"), entry.get("size")), s3.join(parent, sibling, rel))
    found = {}
    for rel, entry in manifest["files"].items():
        source = by_digest.get((entry["sha256"], entry["size"]))
        if source:
            found[rel] = source
    return found


def _withdraw_manifest(to_uri):
    """Before the first file is replaced: an earlier staging's manifest would otherwise vouch for a prefix
    that an interrupted upload left holding part of each staging, and cloud jobs would train on the mix."""
    _remove(to_uri, MANIFEST)


def is_staged(to_uri, name: str, files: dict | None = None) -> bool:
    """Whether `to_uri` (an S3 prefix or a local folder standing in for one) holds a complete staging of dataset
    `name`: a manifest that parses and lists `files` (a manifest's: name -> size and SHA-256), the one rule every
    staging goes by. Without `files` (a cloud submit does not fetch a dataset only to learn it is staged) it must
    be `name`'s manifest listing `name`'s canonical files; the job checks their sizes and SHA-256s before it trains."""
    remote = _remote_manifest(to_uri)
    if remote is None:
        return False
    if files is not None:
        return remote["files"] == files
    from trainer.data.catalog import CATALOG

    name = canonical_name(name)  # mnist and zalando have the same file names: the manifest's dataset tells them apart
    return remote.get("dataset") == name and sorted(remote["files"]) == sorted(f.name for f in CATALOG[name].files)


def check_staged_copy(folder):
    """A folder holding a staging's manifest (a job's training channel, an S3 data dir mirrored) must be what the
    manifest lists, each file's size and SHA-256, before training reads it: a mixed or damaged copy at a prefix,
    whatever wrote it there, is refused in one line rather than trained on. An IDX dataset is tens of MB, hashed
    in a second or two; a picture folder is hashed whole too, once per run (and resume), in time with its size.
    The line ends by saying why the folder was checked (a MANIFEST.json of one's own is moved out of the way),
    then as a --data-dir's damaged file does; a job turns that into how to stage it again
    (trainer.contract.staged_copy_advice)."""
    from trainer.data.fetch import STAGED_COPY_FIX

    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return  # not a staging: your own folder, read as it is
    manifest = _remote_manifest(folder)
    if manifest is None:
        raise UsageError(f"{folder / MANIFEST} does not list each file's size and SHA-256; {STAGED_COPY_FIX}")
    files = manifest["files"]
    for rel, entry in files.items():
        path = inside(folder, rel, str(folder))
        if not path.is_file():
            raise UsageError(f"{path} is missing, though {MANIFEST} lists it; {STAGED_COPY_FIX}")
        if path.stat().st_size != entry["size"] or file_digest(path) != entry["sha256"]:
            raise UsageError(f"{path} is not the file {MANIFEST} lists ({entry['size']} bytes, SHA-256 "
                             f"{entry['sha256'][:12]}...); {STAGED_COPY_FIX}")
    if manifest.get("kind") == "folder":
        _refuse_unlisted_pictures(folder, files)


def _refuse_unlisted_pictures(folder: Path, files: dict):
    """Training reads every picture of a folder's listing, not the manifest's: one that a staging cut short left
    at a fixed prefix (a staged-again folder cannot know it was its own, with no manifest there to say so) or
    that was put there since would be trained on beside the staged ones."""
    from trainer.data.folder import list_folder

    for path in list_folder(folder)[0]:
        rel = path.relative_to(folder).as_posix()
        if rel not in files:
            raise UsageError(f"{folder} holds {rel}, a picture training would read, but its {MANIFEST} does not list "
                             "it (left by a staging cut short, or put there since): remove it where the copy comes "
                             "from, or stage the folder to a prefix of its own")


def _remote_files(to_uri):
    remote = _remote_manifest(to_uri)
    return remote["files"] if remote is not None else None


def _remote_manifest(to_uri) -> dict | None:
    """The manifest below `to_uri`, or None where there is none or it is not one (not JSON, its files not each a
    size and a SHA-256): stage again."""
    remote = _read(s3.join(to_uri, MANIFEST))
    try:
        manifest = json.loads(remote) if remote is not None else None
    except ValueError:
        return None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
            isinstance(e, dict) and type(e.get("size")) is int and isinstance(e.get("sha256"), str)
            for e in files.values()):
        return None
    return manifest


def _run_all(tasks, total: int, label: str):
    """Run each `task(callback)` (an upload or a copy), several at once, under one progress bar in bytes."""
    progress = Progress(total, label=label, fmt=format_bytes)
    lock = threading.Lock()  # transfers report from several threads

    def count(n):
        with lock:
            progress.update(n)

    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        try:
            for _ in pool.map(lambda task: task(count), tasks):
                pass
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        finally:
            progress.close()


# S3 or a local folder, the same four operations.
def _list(uri) -> dict:
    """Relative path -> size of what is below `uri`."""
    if s3.is_s3(uri):
        return s3.list_objects(uri)
    base = Path(uri)
    return {p.relative_to(base).as_posix(): p.stat().st_size for p in base.rglob("*") if p.is_file()} \
        if base.is_dir() else {}

def _read(uri):
    if s3.is_s3(uri):
        return s3.read_bytes(uri)
    return Path(uri).read_bytes() if Path(uri).exists() else None


def _remove(to_uri, rel: str):
    """Remove `rel` below `to_uri`, and in a folder the class folders that leaves empty (training would refuse an
    empty class); one that is not there is no error, as S3 answers."""
    if s3.is_s3(to_uri):
        return s3.delete_object(s3.join(to_uri, rel))
    inside(to_uri, rel, str(to_uri)).unlink(missing_ok=True)  # a name from the earlier manifest: kept below to_uri
    for parent in Path(rel).parents[:-1]:  # not to_uri itself
        with contextlib.suppress(OSError):
            os.rmdir(Path(to_uri) / parent)  # only ever an empty folder


def _put(path: Path, uri, callback):
    if s3.is_s3(uri):
        return s3.upload_file(path, uri, callback=callback)
    try:
        with atomic_file(uri, suffix=".part") as out, open(path, "rb") as src:  # complete or absent, as on S3
            shutil.copyfileobj(src, out)
    except OSError as e:
        raise _local_error(path, uri, e) from None
    callback(path.stat().st_size)


def _write(uri, data: bytes):
    if s3.is_s3(uri):
        return s3.write_bytes(uri, data)
    try:
        atomic_write_bytes(uri, data)
    except OSError as e:
        raise _local_error(MANIFEST, uri, e) from None


def _local_error(what, uri, e: OSError) -> GankitError:
    """A local stand-in for a bucket that cannot be written (a full disk, a file where a folder must go):
    one line, as an S3 upload's failure is."""
    return GankitError(f"copy of {what} to {uri} failed: {e.strerror or e}; free space, move what is in the way, "
                       "or choose another destination")
