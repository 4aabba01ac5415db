"""Find an IDX dataset's files, download them if need be, and check them.

Where a split's two files come from, in order:
1. `--data-dir DIR`, when given (and nowhere else then);
2. the cache, `$GANKIT_CACHE/datasets/<name>/` (default ~/.cache/gankit);
3. the system's copy (Debian's `/usr/share/datasets/fashion-mnist/` for zalando;
   `$GANKIT_SYSTEM_DATASETS` moves the root);
4. a download from the publisher (or `$GANKIT_DATA_MIRROR/<name>/`) into the cache,
   checked against the publisher's md5 before it is renamed into place.

A download that fails in a way that may pass (a dropped connection, a timeout,
HTTP 5xx or 429) is tried again, a few times per URL, and continues where it
stopped (HTTP Range) from a hidden part file that also outlives the run.

Every copy is read by the defensive IDX reader. Copies gankit found itself
(cache, system) must also be the published arrays: same shape and, where the
catalog knows it, the same decoded sha256. A damaged copy in the cache is
downloaded again, once; a damaged system copy is an error. A --data-dir copy
may be your own data; it is held to the published checksum only if it has the
published shape.
"""

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
import zipfile
from http.client import HTTPException, IncompleteRead
from pathlib import Path
from typing import NamedTuple

from trainer.data.catalog import IdxDataset, IdxFile
from trainer.data.idx import check_pair, read_idx
from trainer.errors import UsageError, printable
from trainer.fsutil import atomic_file, cache_root, folder_held, umask
from trainer.progress import Progress, format_bytes

CHUNK = 1 << 20
TIMEOUT_S = 60
STALE_PART_S = 3600
ATTEMPTS = 4  # per URL, for failures that may pass
BACKOFF_S = 1.0  # the waits between attempts double: 1 s, 2 s, 4 s
_sleep = time.sleep  # tests make the waits instant
REFETCH_FIX = "gankit's cached copy is damaged: downloading it again"
FRESH_FIX = "a fresh download fails this check too; pass --data-dir DIR with intact files"
DATA_DIR_FIX = "replace it with an intact copy, or drop --data-dir to use gankit's cache"
DATA_DIR_MISSING_FIX = "put the dataset's canonical files there, or drop --data-dir to use the cache or download them"
# A data dir may hold a MANIFEST.json of the user's own: say why it was taken for a staging's, and how to be read as is.
STAGED_COPY_FIX = ("a data dir holding a MANIFEST.json is taken for a copy gankit staged, checked against it before "
                   f"training: if that MANIFEST.json is not gankit's, move it out of the folder; else {DATA_DIR_FIX}")
SYSTEM_ROOT = "/usr/share/datasets"


def system_root() -> Path:
    return Path(os.environ.get("GANKIT_SYSTEM_DATASETS") or SYSTEM_ROOT)


def download_urls(spec: IdxDataset, mirror: str | None = None) -> tuple:
    """Base URLs to try: a mirror (argument, then $GANKIT_DATA_MIRROR) replaces the publisher's."""
    mirror = mirror or os.environ.get("GANKIT_DATA_MIRROR")
    return (f"{mirror.rstrip('/')}/{spec.name}/",) if mirror else spec.urls


def load_split(spec: IdxDataset, split: str, data_dir=None, mirror=None, stream=None, log=None):
    """(images, labels) of one split, as stored (N, H, W) uint8 and int64, checked."""
    return checked_split(spec, split, data_dir, mirror, stream, log)[1]


def checked_split(spec: IdxDataset, split: str, data_dir=None, mirror=None, stream=None, log=None):
    """(paths, (images, labels)): one split's files, found or downloaded (see `locate_split`), and checked.

    A copy in gankit's cache that fails the checks is gankit's to mend: `log` hears that it is damaged,
    and it is downloaded again, once. Anywhere else, and the second time, it is an error that says what to do.
    """
    say = log or (lambda message: None)
    found = locate_split(spec, split, data_dir, mirror, stream, say)
    try:
        return found.paths, read_checked(spec, split, found.paths, strict=found.strict, fix=found.fix)
    except UsageError as e:
        if not found.refetch:
            raise
        say(f"data: {e}")
    for path in found.paths:
        path.unlink(missing_ok=True)
    download(spec, split, found.paths[0].parent, mirror=mirror, stream=stream)
    return found.paths, read_checked(spec, split, found.paths, strict=True, fix=FRESH_FIX)


class Located(NamedTuple):
    paths: tuple
    strict: bool  # held to the published shape (a --data-dir copy may be other data)
    fix: str  # what an error about these files tells the user to do
    refetch: bool = False  # gankit's cache had them: a damaged copy is downloaded again


def locate_split(spec: IdxDataset, split: str, data_dir=None, mirror=None, stream=None, log=None) -> Located:
    """Where one split's files are, downloading them if need be, and how to check and mend them.

    Looks in `data_dir` if given, else the cache, then the system copy (Debian),
    then downloads into the cache. `log`, when given, hears where the files came from.
    """
    say = log or (lambda message: None)
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        fix = DATA_DIR_FIX
        paths = _in_data_dir(spec, split, folder)
        say(f"data: {spec.name} from --data-dir {folder}")
        return Located(paths, False, fix)

    cache = cache_root() / "datasets" / spec.name
    paths = _present(cache, spec.splits[split])
    if paths:
        say(f"data: {spec.name} from gankit's cache ({cache})")
        return Located(paths, True, REFETCH_FIX, refetch=True)

    if spec.system_dir:
        folder = system_root() / spec.system_dir
        paths = _present(folder, spec.splits[split])
        if paths:
            say(f"data: {spec.name} from Debian's copy ({folder}, package dataset-{spec.system_dir})")
            return Located(paths, True, f"reinstall it (apt-get install --reinstall dataset-{spec.system_dir}) "
                                        f"or pass --data-dir DIR")

    # A file the cache already had may be the damaged one; one fetched just now is what the publisher serves.
    cached_before = any((cache / f.name).is_file() for f in spec.splits[split])
    source = download(spec, split, cache, mirror=mirror, stream=stream)
    say(f"data: {spec.name} downloaded from {source} into gankit's cache ({cache})" if source
        else f"data: {spec.name} from gankit's cache ({cache})")
    paths = _present(cache, spec.splits[split])
    return Located(paths, True, REFETCH_FIX, refetch=True) if cached_before else Located(paths, True, FRESH_FIX)


def _present(folder: Path, files) -> tuple | None:
    paths = tuple(folder / f.name for f in files)
    return paths if all(p.is_file() for p in paths) else None


def _in_data_dir(spec: IdxDataset, split: str, folder: Path) -> tuple:
    if not folder.is_dir():
        raise UsageError(f"--data-dir {folder} is not a folder; name the folder that holds the {spec.name} files")
    paths = []
    for f in spec.splits[split]:
        names = [n for name in (f.name, *f.also) for n in (name, name.removesuffix(".gz"))]
        found = next((folder / n for n in names if (folder / n).is_file()), None)
        if found is None:
            raise UsageError(f"{folder} has no {f.name} (the {spec.name} {split} split); {DATA_DIR_MISSING_FIX}")
        paths.append(found)
    return tuple(paths)


def read_checked(spec: IdxDataset, split: str, paths, strict: bool, fix: str):
    """Read a split's IDX pair and check it against what the publisher lists (shapes, decoded checksums)."""
    arrays = [read_idx(path, fix) for path in paths]
    for path, array, published in zip(paths, arrays, spec.splits[split]):
        _check_published(path, array, published, strict, fix)  # on the arrays as stored, before any cast
    return check_pair(*arrays, spec.num_classes, *paths, fix)


def _check_published(path: Path, array, published: IdxFile, strict: bool, fix: str):
    same_shape = tuple(array.shape) == tuple(published.shape)
    if strict and not same_shape:
        raise UsageError(f"{path} holds a {'x'.join(map(str, array.shape))} array, not the published "
                         f"{'x'.join(map(str, published.shape))}; {fix}")
    if same_shape and published.sha256:
        digest = hashlib.sha256(array.tobytes()).hexdigest()
        if digest != published.sha256:
            raise UsageError(f"{path} is not the published {published.name}: its decoded sha256 is {digest}, "
                             f"expected {published.sha256}; {fix}")


def download(spec: IdxDataset, split: str, cache: Path, mirror=None, stream=None) -> str | None:
    """Download what `split` lacks in `cache`, verified; a file appears there complete or not at all.
    Returns where from (the first URL used), or None if nothing was missing."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the dataset cache {cache} ({e.strerror or e}); set GANKIT_CACHE to a "
                         f"folder you can write, or pass --data-dir DIR") from None
    _sweep_stale_parts(cache)
    urls = download_urls(spec, mirror)
    if spec.archive:
        # The archive is deleted once extracted: a second process that looked for it meanwhile failed to open it
        # (or fetched its hundreds of MB again). One at a time, and the second finds the files out.
        with folder_held(cache, on_wait=lambda: _say(stream, f"waiting for another process to download or "
                                                             f"extract {spec.archive.name} in {cache}")):
            return _from_archive(spec, urls, cache, stream)
    sources = [_download(spec, urls, f.name, f.md5, cache / f.name, stream)
               for f in spec.splits[split] if not (cache / f.name).is_file()]
    return sources[0] if sources else None


def _from_archive(spec: IdxDataset, urls, cache: Path, stream) -> str | None:
    """Download the archive (unless a verified one is there), extract what `cache` lacks, delete the archive."""
    missing = [f for f in spec.files if not (cache / f.name).is_file()]
    if not missing:
        return None  # extracted by another process while we waited
    archive = cache / spec.archive.name
    source = None
    if not _verified(archive, spec.archive.md5):  # a verified one stays after a killed extraction, a full disk
        # Not the publisher's (a copy put there by hand, cut short or another release): _fetch would take it
        # for a finished download and extract it.
        archive.unlink(missing_ok=True)
        source = _download(spec, urls, spec.archive.name, spec.archive.md5, archive, stream)
    try:
        _extract(archive, missing, cache)
    except OSError as e:  # a full disk: the verified download stays, so the next run does not fetch it again
        raise _disk_error(e, cache, kept=archive) from None
    except BaseException:
        archive.unlink(missing_ok=True)
        raise
    archive.unlink(missing_ok=True)  # hundreds of MB we no longer need
    return source


def _verified(path: Path, md5: str) -> bool:
    return path.is_file() and _md5_of(path) == md5


def _sweep_stale_parts(cache: Path):
    """Drop partial downloads left an hour ago or more (a younger one is continued); a live download
    keeps its file's mtime fresh."""
    for part in cache.glob(".*.part"):
        with contextlib.suppress(OSError):
            if time.time() - part.stat().st_mtime > STALE_PART_S:
                part.unlink()


def _md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _download(spec, urls, filename, md5, dest: Path, stream):
    failures = []
    for base in urls:
        url = base + filename
        try:
            _fetch(url, md5, dest, stream)
            return url
        except _Failed as e:
            failures.append(f"{url}: {e}")
    raise UsageError(f"cannot download {spec.name}'s {filename}: {'; '.join(failures)}; check the network "
                     f"(or GANKIT_DATA_MIRROR), or pass --data-dir DIR with the files")


class _Failed(Exception):
    """One URL did not give us the right file; the next may."""


class _Retry(_Failed):
    """A failure that may pass: the same URL is tried again, after a wait."""


def _fetch(url: str, md5: str, dest: Path, stream):
    """Download `url` to `dest`, trying again after failures that may pass.

    The bytes go to a hidden part file beside `dest` that outlives a failed attempt and a killed run,
    and each attempt continues it; `dest` appears only once the whole file matches `md5`.
    """
    part = dest.parent / f".{dest.name}.{md5[:12]}.part"  # named by content: any URL for it may continue it
    with _part_file(part) as out:
        if dest.is_file():
            return  # another process finished it while we waited for the part
        if _verified(part, md5):  # whole already: a run was killed before it checked it (a Range would get a 416)
            return _install(part, out, dest, md5)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                _get(url, out, dest, stream)
                break
            except _Retry as e:
                if attempt == ATTEMPTS:
                    raise _Failed(f"{e} (gave up after {ATTEMPTS} attempts)") from None
                wait = BACKOFF_S * 2 ** (attempt - 1)
                _say(stream, f"downloading {dest.name}: {e}; trying again in {wait:g} s "
                             f"(attempt {attempt + 1} of {ATTEMPTS})")
                _sleep(wait)
        _install(part, out, dest, md5)


@contextlib.contextmanager
def _part_file(path: Path):
    """`path` opened for update (created if need be) and locked, so two processes that want the same file
    take turns rather than write into one part. Removed on the way out while it is still empty."""
    try:
        while True:
            out = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+b")  # 0666 less the umask
            fcntl.flock(out, fcntl.LOCK_EX)
            if _same_file(out, path):
                break
            out.close()  # renamed into place or swept while we waited: take whatever is at `path` now
    except OSError as e:
        raise _disk_error(e, path.parent) from None
    try:
        yield out
    finally:
        with contextlib.suppress(OSError):
            if _same_file(out, path) and os.fstat(out.fileno()).st_size == 0:
                path.unlink()
        out.close()


def _same_file(f, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(f.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _get(url: str, out, dest: Path, stream):
    """One request for the bytes `out` lacks.
    Raises _Retry for a failure that may pass, _Failed for one that will not."""
    have = out.seek(0, os.SEEK_END)
    headers = {"User-Agent": "gankit", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as response:
            have, total = _resume_point(response, out, have)
            _receive(response, out, have, total, dest, stream)
    except urllib.error.HTTPError as e:
        # A part that is not a prefix of what the server has: start afresh, without a Range. A 416 to a request
        # without one is a failure like any other (asked again, the server would be asked forever).
        if e.code == 416 and have:
            _truncate(out)
            return _get(url, out, dest, stream)
        transient = e.code >= 500 or e.code in (408, 429)
        raise (_Retry if transient else _Failed)(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise (_Retry if _transient(e.reason) else _Failed)(str(e.reason)) from None
    except (OSError, HTTPException) as e:  # reading the body: a timeout, a reset
        raise _Retry(f"{type(e).__name__}: {e}") from None


def _transient(reason) -> bool:
    """Whether a failure to connect may pass. A refused connection, an unknown host or a bad certificate
    will not: say so at once rather than after a minute of retries."""
    if isinstance(reason, socket.gaierror):
        return reason.errno == socket.EAI_AGAIN  # "temporary failure in name resolution"
    permanent = (ConnectionRefusedError, ssl.SSLCertVerificationError)
    return isinstance(reason, OSError) and not isinstance(reason, permanent)


def _resume_point(response, out, have: int) -> tuple:
    """(offset, total size or None) of the body: a 206 continues the part, a 200 is the whole file again."""
    length = response.headers.get("Content-Length")
    if response.status != 206:
        if have:
            _truncate(out)  # the server ignored our Range
        return 0, int(length) if length else None
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (response.headers.get("Content-Range") or "").strip())
    if not match or int(match[1]) != have:
        _truncate(out)
        raise _Retry(f"the server resumed at another byte than {have}; starting again")
    total = match[2] if match[2] != "*" else (have + int(length) if length else None)
    return have, int(total) if total is not None else None


def _receive(response, out, have: int, total, dest: Path, stream):
    progress = Progress(total, label=f"downloading {dest.name}", stream=stream, fmt=format_bytes, start=have)
    cut = False
    try:
        while chunk := response.read(CHUNK):
            _write(out, chunk, dest)
            have += len(chunk)
            progress.update(len(chunk))
    except IncompleteRead:  # the connection closed before the declared length (or the last chunk)
        cut = True
    finally:
        progress.close()  # also ends a redrawn TTY line before any error message
    if cut or (total is not None and have != total):
        raise _Retry(f"got {have} of {total} bytes" if total else f"the connection closed after {have} bytes")


def _write(out, chunk: bytes, dest: Path):
    try:
        out.write(chunk)
        out.flush()  # so a full disk shows here, not at some later write
    except OSError as e:
        raise _disk_error(e, dest.parent) from None


def _truncate(out):
    out.seek(0)
    out.truncate()


def _install(part: Path, out, dest: Path, md5: str):
    """Check the whole part against `md5`, then rename it onto `dest`, synced and with the usual permissions."""
    digest = _md5_of(part)
    if digest != md5:
        part.unlink()
        raise _Failed(f"checksum mismatch: md5 {digest}, the publisher lists {md5}")
    try:
        os.fchmod(out.fileno(), 0o666 & ~umask())  # a part left by an earlier run may have had another umask
        os.fsync(out.fileno())
        os.replace(part, dest)
    except OSError as e:
        raise _disk_error(e, dest.parent) from None


def _disk_error(e: OSError, folder: Path, kept: Path | None = None) -> UsageError:
    """Writing into the cache failed: not the network's fault, so say what is (and which download stays)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        stays = (f"; the verified download {kept} is kept, so running again after freeing space does not fetch it "
                 "again (delete it if you move GANKIT_CACHE)") if kept else ""
        return UsageError(f"cannot write into the dataset cache {folder}: the disk is full ({e.strerror}); free "
                          f"some space, or set GANKIT_CACHE to a folder on a disk with room, or pass --data-dir DIR"
                          + stays)
    return UsageError(f"cannot write into the dataset cache {folder} ({e.strerror or e}); set GANKIT_CACHE to a "
                      f"folder you can write, or pass --data-dir DIR")


def _say(stream, line: str):
    stream = stream or sys.stderr
    stream.write(printable(line) + "\n")  # it may quote a server (a 503's reason phrase)
    stream.flush()


def _extract(archive: Path, files, cache: Path):
    """Copy `files` (matched by base name) out of the zip `archive` into `cache`."""
    try:
        with zipfile.ZipFile(archive) as z:
            members = {Path(info.filename).name: info for info in z.infolist() if not info.is_dir()}
            for f in files:
                if f.name not in members:
                    raise UsageError(f"{archive.name} has no {f.name}; the publisher changed the archive: "
                                     f"get the files yourself and pass --data-dir DIR")
                with atomic_file(cache / f.name, suffix=".part") as out, z.open(members[f.name]) as src:
                    shutil.copyfileobj(src, out, CHUNK)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # download() says so, keeping the archive: running again without more room would not help
        raise UsageError(f"cannot extract {archive.name} ({e}); run again to re-download, "
                         f"or pass --data-dir DIR with the files") from None
