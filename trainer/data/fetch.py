"""Find an IDX dataset's files, download them if need be, and check them.

Where a split's two files come from, in order:
1. `--data-dir DIR`, when given (and nowhere else then);
2. the cache, `$GANKIT_CACHE/datasets/<name>/` (default ~/.cache/gankit);
3. the system's copy (Debian's `/usr/share/datasets/fashion-mnist/` for zalando;
   `$GANKIT_SYSTEM_DATASETS` moves the root);
4. a download from the publisher (or `$GANKIT_DATA_MIRROR/<name>/`) into the cache,
   checked against the publisher's md5 before it is renamed into place.

Every copy is read by the defensive IDX reader. Copies gankit found itself
(cache, system) must also be the published arrays: same shape and, where the
catalog knows it, the same decoded sha256. A --data-dir copy may be your own
data; it is held to the published checksum only if it has the published shape.
"""

import contextlib
import hashlib
import os
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from http.client import HTTPException
from pathlib import Path

from trainer.data.catalog import IdxDataset, IdxFile
from trainer.data.idx import check_pair, read_idx
from trainer.errors import UsageError
from trainer.fsutil import atomic_file, cache_root
from trainer.progress import Progress, format_bytes

CHUNK = 1 << 20
TIMEOUT_S = 60
STALE_PART_S = 3600
CACHE_FIX = "delete it and run again to re-download"
SYSTEM_ROOT = "/usr/share/datasets"


def system_root() -> Path:
    return Path(os.environ.get("GANKIT_SYSTEM_DATASETS") or SYSTEM_ROOT)


def download_urls(spec: IdxDataset, mirror: str | None = None) -> tuple:
    """Base URLs to try: a mirror (argument, then $GANKIT_DATA_MIRROR) replaces the publisher's."""
    mirror = mirror or os.environ.get("GANKIT_DATA_MIRROR")
    return (f"{mirror.rstrip('/')}/{spec.name}/",) if mirror else spec.urls


def load_split(spec: IdxDataset, split: str, data_dir=None, mirror=None, stream=None, log=None):
    """(images, labels) of one split, as stored (N, H, W) uint8 and int64, checked."""
    paths, strict, fix = locate_split(spec, split, data_dir, mirror, stream, log)
    return read_checked(spec, split, paths, strict=strict, fix=fix)


def locate_split(spec: IdxDataset, split: str, data_dir=None, mirror=None, stream=None, log=None):
    """(paths, strict, fix): where one split's files are, downloading them if need be.

    Looks in `data_dir` if given, else the cache, then the system copy (Debian),
    then downloads into the cache. `strict` and `fix` say how to check and mend them;
    `log`, when given, hears where the files came from.
    """
    say = log or (lambda message: None)
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        fix = "replace it with an intact copy, or drop --data-dir to use gankit's cache"
        paths = _in_data_dir(spec, split, folder)
        say(f"data: {spec.name} from --data-dir {folder}")
        return paths, False, fix

    cache = cache_root() / "datasets" / spec.name
    paths = _present(cache, spec.splits[split])
    if paths:
        say(f"data: {spec.name} from gankit's cache ({cache})")
        return paths, True, CACHE_FIX

    if spec.system_dir:
        folder = system_root() / spec.system_dir
        paths = _present(folder, spec.splits[split])
        if paths:
            say(f"data: {spec.name} from Debian's copy ({folder}, package dataset-{spec.system_dir})")
            return paths, True, f"reinstall it (apt-get install --reinstall dataset-{spec.system_dir}) or pass --data-dir DIR"

    source = download(spec, split, cache, mirror=mirror, stream=stream)
    say(f"data: {spec.name} downloaded from {source} into gankit's cache ({cache})" if source
        else f"data: {spec.name} from gankit's cache ({cache})")
    return _present(cache, spec.splits[split]), True, CACHE_FIX


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
            raise UsageError(f"{folder} has no {f.name} (the {spec.name} {split} split); put the dataset's "
                             f"canonical files there, or drop --data-dir to use the cache or download them")
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
        archive = cache / spec.archive.name
        source = None
        if not (archive.is_file() and _md5_of(archive) == spec.archive.md5):  # left by an interrupted extraction
            source = _download(spec, urls, spec.archive.name, spec.archive.md5, archive, stream)
        try:
            _extract(archive, [f for f in spec.files if not (cache / f.name).is_file()], cache)
        finally:
            archive.unlink(missing_ok=True)  # hundreds of MB we no longer need
        return source
    sources = [_download(spec, urls, f.name, f.md5, cache / f.name, stream)
               for f in spec.splits[split] if not (cache / f.name).is_file()]
    return sources[0] if sources else None


def _sweep_stale_parts(cache: Path):
    """Drop partial downloads a killed run left; a live download keeps its file's mtime fresh."""
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


def _fetch(url: str, md5: str, dest: Path, stream):
    digest, size, total = hashlib.md5(), 0, None
    # The checks run inside the block, before the rename: a short or wrong download never becomes `dest`.
    with atomic_file(dest, suffix=".part") as out:
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "gankit"})
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                progress = Progress(total, label=f"downloading {dest.name}", stream=stream, fmt=format_bytes)
                try:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                        progress.update(len(chunk))
                finally:
                    progress.close()  # also ends a redrawn TTY line before any error message
        except urllib.error.HTTPError as e:
            raise _Failed(f"HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            raise _Failed(str(e.reason)) from None
        except (OSError, HTTPException) as e:
            raise _Failed(f"{type(e).__name__}: {e}") from None
        if total is not None and size != total:
            raise _Failed(f"got {size} of {total} bytes")
        if digest.hexdigest() != md5:
            raise _Failed(f"checksum mismatch: md5 {digest.hexdigest()}, the publisher lists {md5}")


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
        raise UsageError(f"cannot extract {archive.name} ({e}); run again to re-download, "
                         f"or pass --data-dir DIR with the files") from None
