"""S3 transfers done once: retries, multipart, progress, and clear failures.

boto3's transfer manager does multipart and concurrency; botocore's "standard"
retry mode retries throttling and 5xx answers with backoff. A transfer that
still fails raises a one-line `GankitError`.
"""

import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path

from trainer.errors import GankitError, UsageError, aws_error, client_error, one_line
from trainer.fsutil import atomic_file, atomic_write_text, folder_held, inside_all
from trainer.layout import join  # noqa: F401 (s3.join: one way to join URIs)
from trainer.progress import Progress, format_bytes

MAX_ATTEMPTS = 8


def is_s3(path) -> bool:
    return str(path).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """s3://bucket/a/b -> ("bucket", "a/b")."""
    bucket, _, key = str(uri)[len("s3://"):].partition("/")
    if not bucket:
        raise UsageError(f"{uri} is not an S3 URI; write s3://BUCKET/PREFIX")
    return bucket, key.strip("/")


@functools.lru_cache(maxsize=None)
def client():
    import boto3
    from botocore.config import Config

    # AWS_ENDPOINT_URL (a moto server in tests) is honoured by boto3 itself. total_max_attempts counts
    # the first try, so "failed after MAX_ATTEMPTS attempts" is what happened.
    return boto3.client("s3", config=Config(retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS}))


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=8)


class LocalWriteError(GankitError):
    """A download that failed on this side (a full disk, a file where a folder must go, no permission): unlike
    an object that cannot be fetched now, trying another object would fail the same way."""


def _fail(action, uri, e):
    """One line: missing credentials are a usage error with the fix; "after N attempts" only when
    botocore did retry (throttling, 5xx, a dropped connection), not for a refusal such as NoSuchBucket."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError

    from s3transfer.exceptions import RetriesExceededError

    if isinstance(e, S3UploadFailedError) and isinstance(e.__context__, ClientError):
        e = e.__context__  # boto3 wraps the ClientError it caught
    attempts = None
    if isinstance(e, RetriesExceededError):  # a download cut off midway (a read timeout), tried again to the limit
        attempts, e = _transfer_config().num_download_attempts, e.last_exception or e
    known = aws_error(e)
    if isinstance(known, UsageError):
        raise known from None
    attempts = attempts or _attempts(e)
    after = f" after {attempts} attempts" if attempts > 1 else ""
    raise GankitError(f"S3 {action} {uri} failed{after}: {_reason(e)}") from None


def _attempts(e) -> int:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(e, ClientError):
        return e.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
    if isinstance(e, (ConnectionError, HTTPClientError)):  # retried to the limit before it got here
        return MAX_ATTEMPTS
    return 1


def _reason(e) -> str:
    from botocore.exceptions import ClientError

    if not isinstance(e, ClientError):
        return one_line(e)
    code, message = client_error(e)
    if code in ("404", "NoSuchKey"):
        return "no such object"
    if code == "NoSuchBucket":
        return "no such bucket; check its name (`launcher config show`), or `launcher infra up` makes one"
    return f"{code}: {message}" if message else code


def _transfer_errors():
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError
    from s3transfer.exceptions import RetriesExceededError

    return (ClientError, BotoCoreError, S3UploadFailedError, RetriesExceededError)


def list_objects(uri: str) -> dict[str, int]:
    """Keys below `uri` (relative to it) -> size."""
    return {key: obj["Size"] for key, obj in list_entries(uri).items()}


def list_entries(uri: str) -> dict[str, dict]:
    """Keys below `uri` (relative to it) -> their listing entry (Size, ETag, ...): what download_prefix takes as
    `listing`."""
    bucket, prefix = split_s3(uri)
    prefix = prefix + "/" if prefix else ""
    found = {}
    try:
        for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                found[obj["Key"][len(prefix):]] = obj
    except _transfer_errors() as e:
        _fail("listing of", uri, e)
    return found


def read_bytes(uri: str) -> bytes | None:
    """An object's bytes, or None if there is no such object."""
    bucket, key = split_s3(uri)
    return _of_object(lambda: client().get_object(Bucket=bucket, Key=key)["Body"].read(), "read of", uri, None)


def exists(uri: str) -> bool:
    """Whether there is an object at `uri` (its bytes unread)."""
    bucket, key = split_s3(uri)
    return _of_object(lambda: client().head_object(Bucket=bucket, Key=key) and True, "look-up of", uri, False)


def _of_object(call, what: str, uri: str, missing):
    """`call()`'s answer about one object; `missing` where there is no such object; else one line naming `what`."""
    from botocore.exceptions import ClientError

    try:
        return call()
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return missing
        _fail(what, uri, e)
    except _transfer_errors() as e:
        _fail(what, uri, e)


def write_bytes(uri: str, data: bytes):
    bucket, key = split_s3(uri)
    try:
        client().put_object(Bucket=bucket, Key=key, Body=data)
    except _transfer_errors() as e:
        _fail("write of", uri, e)


def upload_file(local, uri: str, callback=None):
    bucket, key = split_s3(uri)
    try:
        client().upload_file(str(local), bucket, key, Config=_transfer_config(), Callback=callback)
    except _transfer_errors() as e:
        _fail(f"upload of {local} to", uri, e)


def download_file(uri: str, local, callback=None):
    """Download into a temp file beside `local`, then rename: complete or absent."""
    bucket, key = split_s3(uri)
    try:
        with atomic_file(local) as f:
            client().download_fileobj(bucket, key, f, Config=_transfer_config(), Callback=callback)
    except _transfer_errors() as e:
        _fail("download of", uri, e)
    except OSError as e:  # this side: a full disk, a file where a folder must go, no permission
        raise LocalWriteError(f"download of {uri} to {local} failed: {e.strerror or e}; free space or choose "
                              "another destination") from None


ETAGS = ".gankit-etags.json"  # in a mirrored folder: the ETag each file had when downloaded


def download_prefix(uri: str, local_dir, label="download", log=None, listing=None, exact=False) -> Path:
    """Mirror everything below `uri` into `local_dir`, skipping files already there unchanged.

    Unchanged means: the local file is as we downloaded it (size and mtime) and
    the remote ETag is the one it had then. Size alone is not enough: every
    generator of one architecture has the same size. `log`, when given, hears
    what was not fetched again. Every key is checked (`fsutil.inside_all`) before anything is written.
    `listing` is `list_entries(uri)` where the caller has listed the prefix already (to check what is there).
    `exact` (a folder of gankit's own, held by the caller) also removes what is not below `uri`.
    """
    local_dir = Path(local_dir)
    listing = list_entries(uri) if listing is None else listing
    wanted = {k: obj for k, obj in listing.items() if k and not k.endswith("/")}  # "folder/" markers hold nothing
    targets = inside_all(local_dir, wanted, uri)
    seen = _read_etags(local_dir)
    todo = {k: obj for k, obj in wanted.items()
            if (stamp := _stamp(targets[k], obj["ETag"])) is None or seen.get(k) != stamp}
    if log:
        say_skipped(log, local_dir, len(wanted) - len(todo), sum(obj["Size"] for k, obj in wanted.items() if k not in todo))
    if todo:
        progress = Progress(sum(obj["Size"] for obj in todo.values()), label=label, fmt=format_bytes)
        for key in sorted(todo):
            download_file(join(uri, key), targets[key], callback=progress.update)
            seen[key] = _stamp(targets[key], todo[key]["ETag"])
            _write_etags(local_dir, seen)  # after each file: an interrupted mirror resumes where it stopped
        progress.close()
    if exact:
        _drop_unlisted(local_dir, set(wanted))
    return local_dir


def mirror_into_cache(uri: str, folder, label="download", listing=None) -> Path:
    """download_prefix into a cache folder that several processes may fill at once (two `generate`s of one
    generator, two runs staging one S3 dataset): one at a time, so the later one finds the files there and
    fetches nothing, and no process records ETags against files another one wrote.

    The copy is exact: what is no longer below `uri` (a class folder deleted there since the last run, which
    training would still have read) and the temp files of downloads killed midway go. The folder is the cache's
    own and held while this runs, so nothing removed is anyone's file or a write in flight."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with folder_held(folder):
        return download_prefix(uri, folder, label=label, listing=listing, exact=True)


def _drop_unlisted(local_dir: Path, keys: set):
    """Remove what below `local_dir` is not one of `keys` (nor the ETags file), then the folders left empty."""
    keep = keys | {ETAGS}
    for where, dirs, names in os.walk(local_dir, topdown=False):  # links are not followed: a link itself goes
        for name in names + [d for d in dirs if os.path.islink(os.path.join(where, d))]:
            path = Path(where, name)
            if path.relative_to(local_dir).as_posix() not in keep:
                path.unlink(missing_ok=True)
        if Path(where) != local_dir:
            with contextlib.suppress(OSError):
                os.rmdir(where)  # only ever an empty folder


def _stamp(path: Path, etag: str):
    try:
        st = path.stat()
    except OSError:
        return None
    return [etag, st.st_size, st.st_mtime_ns]


def _read_etags(local_dir: Path) -> dict:
    try:
        seen = json.loads((local_dir / ETAGS).read_text())
        return seen if isinstance(seen, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_etags(local_dir: Path, seen: dict):
    atomic_write_text(local_dir / ETAGS, json.dumps(seen))


def say_skipped(log, dest, count: int, size: int):
    """One line on what a resumable download did not fetch again."""
    if count:
        log(f"skipped {count} file{'s' if count != 1 else ''} ({format_bytes(size)}) already in {dest}, unchanged")


def upload_dir(local_dir, uri: str, last=(), skip=lambda rel: False, sent=None):
    """Upload the files of `local_dir` below `uri`; names in `last` go after all others.

    `sent` (a dict kept by the caller) remembers each file's (size, mtime), so
    calling again uploads only what changed since.
    """
    for path, rel, stamp in changed_files(local_dir, last, skip, sent):
        upload_file(path, join(uri, rel))
        if sent is not None:
            sent[rel] = stamp


def changed_files(local_dir, last=(), skip=lambda rel: False, sent=None) -> list[tuple[Path, str, tuple]]:
    """(path, relative name, (size, mtime)) of each file below `local_dir` that is not hidden (nor in a hidden
    folder, such as an atomic write's temp folder), not
    skipped and not in `sent` with the same stamp, in upload order: names in `last` at the end.
    A symlink, to a file or a folder, is followed where it points inside `local_dir` and skipped where it
    points outside (nothing outside the folder is ever uploaded) or at a folder it is in (a loop)."""
    local_dir = Path(local_dir)
    root = local_dir.resolve()
    files = list(_files_below(local_dir, root, (root,)))
    files.sort(key=lambda p: p.name in last)  # stable: the `last` ones move to the end
    changed = []
    for path in files:
        rel = path.relative_to(local_dir).as_posix()
        stat = path.stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
        if not skip(rel) and (sent is None or sent.get(rel) != stamp):
            changed.append((path, rel, stamp))
    return changed


def _files_below(folder: Path, root: Path, above: tuple):
    """`changed_files`' walk, in name order; `above`: the real folders it is in, `root` first."""
    try:
        entries = sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return  # gone, or unreadable: skipped, as rglob skipped it
    for path in entries:
        if path.name.startswith("."):
            continue
        try:
            real = path.resolve()
        except (OSError, RuntimeError):  # a link that leads back to itself (Python 3.11 raises RuntimeError)
            continue
        if path.is_symlink() and not real.is_relative_to(root):
            continue
        if path.is_dir():
            if real not in above:
                yield from _files_below(path, root, (*above, real))
        elif path.is_file():
            yield path


def move_prefix(uri: str, to_uri: str):
    """Copy every object below `uri` to below `to_uri` inside S3, then delete the originals."""
    for key in list_objects(uri):
        copy_object(join(uri, key), join(to_uri, key))
    delete_prefix(uri)


def cache_key(uri: str) -> str:
    """A short stable name for a local copy of `uri`: endpoint, bucket and path all tell copies apart."""
    endpoint = client().meta.endpoint_url
    return hashlib.sha256(f"{endpoint}|{str(uri).rstrip('/')}".encode()).hexdigest()[:16]


def delete_object(uri: str):
    """Delete one object; one that is not there is no error (as S3 answers)."""
    bucket, key = split_s3(uri)
    try:
        client().delete_object(Bucket=bucket, Key=key)
    except _transfer_errors() as e:
        _fail("delete of", uri, e)


def delete_prefix(uri: str):
    bucket, prefix = split_s3(uri)
    keys = [{"Key": f"{prefix}/{k}"} for k in list_objects(uri)]
    for i in range(0, len(keys), 1000):
        try:
            client().delete_objects(Bucket=bucket, Delete={"Objects": keys[i:i + 1000], "Quiet": True})
        except _transfer_errors() as e:
            _fail("delete of", uri, e)


def list_prefixes(uri: str, starting: str = "") -> list[str]:
    """Names of the 'folders' directly below `uri` that start with `starting`."""
    bucket, prefix = split_s3(uri)
    prefix = prefix + "/" if prefix else ""
    names = []
    try:
        pages = client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + starting, Delimiter="/")
        for page in pages:
            names += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
    except _transfer_errors() as e:
        _fail("listing of", uri, e)
    return names


def copy_object(source_uri: str, uri: str, callback=None):
    """Copy inside S3 (no bytes through this machine); `callback(size)` once done."""
    bucket, key = split_s3(uri)
    source_bucket, source_key = split_s3(source_uri)
    try:
        client().copy({"Bucket": source_bucket, "Key": source_key}, bucket, key, Config=_transfer_config(),
                      Callback=callback)
    except _transfer_errors() as e:
        _fail(f"copy of {source_uri} to", uri, e)
