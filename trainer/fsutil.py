"""Where gankit keeps files, and writes that are complete or invisible (temp file or folder, then an atomic rename)."""

import contextlib
import os
import shutil
import tempfile
import unicodedata
from pathlib import Path


def cache_root() -> Path:
    """Downloads, staged S3 data, local stand-ins for S3 prefixes: $GANKIT_CACHE, else ~/.cache/gankit."""
    if os.environ.get("GANKIT_CACHE"):
        return Path(os.environ["GANKIT_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "gankit"


def umask() -> int:
    """The process's umask (read without changing it where Linux allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path, suffix: str = "", mode: int | None = None):
    """Yield a binary file open for writing beside `path`; when the block succeeds it is synced and renamed
    onto `path`, when it fails it is removed. So `path` is either complete or as it was, never half-written.

    The file gets the usual permissions (0666 less the umask) unless `mode` is given (e.g. 0o600 for a secret).
    Every temp-then-rename write in gankit goes through here or `atomic_dir`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp's private 0600 would follow the file into place: an ordinary file gets the umask's.
            os.fchmod(f.fileno(), 0o666 & ~umask() if mode is None else mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes, mode: int | None = None):
    with atomic_file(path, mode=mode) as f:
        f.write(data)


def atomic_write_text(path, text: str, mode: int | None = None):
    atomic_write_bytes(path, text.encode(), mode=mode)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temp folder beside `path`; on success it replaces `path` whole.

    A crash inside the block leaves `path` as it was (plus a hidden temp folder
    that the next call sweeps away); a crash between the two renames at the end
    leaves `path` missing and its old copy aside, which the next call puts back.
    A `path` that is a symlink or a file is refused (`refuse_to_replace`), before anything is written.
    """
    path = Path(path)
    refuse_to_replace(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's 0700 would follow the folder into place
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        # Two renames: the old folder steps aside, the new one steps in; at no
        # moment does `path` hold a mix of both.
        old = path.parent / f".{path.name}.tmp-old-{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_dir(path):
    """What a killed `atomic_dir(path)` left: the old copy it had set aside put back, its temp folders removed."""
    path = Path(path)
    restore_set_aside(path)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        if stale.is_symlink():  # set aside by a gankit that replaced a symlinked folder instead of its target
            stale.unlink()
        else:
            shutil.rmtree(stale, ignore_errors=True)


def refuse_file_in_the_way(path, flag):
    """A one-line UsageError if `path`, or the nearest of its parents that exists, is not a folder;
    creates nothing (so it can run before a long job whose end writes there)."""
    from trainer.errors import UsageError

    path = Path(path)
    dangling = next((p for p in [path, *path.parents] if p.is_symlink() and not p.exists()), None)
    if dangling is not None:  # mkdir would say "File exists" of a folder that is not there
        raise UsageError(f"{flag} {path}: {dangling} is a symlink to {os.readlink(dangling)}, which does not exist; "
                         "create that folder or choose another")
    blocker = next((p for p in [path, *path.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UsageError(f"{flag} {path}: {blocker} is a file, not a folder; choose a folder")


@contextlib.contextmanager
def written_or_one_line(what: str, folder, flag: str = "--output-dir"):
    """An OSError inside the block (a full disk, a folder gone read-only) becomes a one-line GankitError
    naming `what`, `folder` and the fix, instead of a traceback; what the block wrote atomically is whole or absent."""
    from trainer.errors import RESUME_BY_HAND, GankitError

    try:
        yield
    except OSError as e:
        raise GankitError(f"{what} could not be written in {folder} ({e.strerror or e}); free some space on that "
                          f"disk or choose another {flag}, then {RESUME_BY_HAND}") from e


def restore_set_aside(path):
    """Put back the old copy of `path` that `atomic_dir` had set aside when a crash stopped it before the
    new one moved in: `path` is then as it was, never missing."""
    path = Path(path)
    aside = sorted(path.parent.glob(f".{path.name}.tmp-old-*"), key=lambda p: p.lstat().st_mtime)
    if aside and not path.exists() and not path.is_symlink():  # a dangling link is the user's, not to replace
        os.replace(aside[-1], path)


def refuse_to_replace(path, flag=None):
    """A one-line UsageError if `path`, a folder gankit replaces whole (an exported generator, a checkpoint), is a
    symlink or a file. Replacing what a link points to deleted a folder outside the run (a link to ~/thesis took
    it with it), and a file there was set aside as hidden debris: neither is gankit's to replace."""
    from trainer.errors import UsageError

    path = Path(path)
    instead = f", or choose another {flag}" if flag else ""
    if path.is_symlink():
        raise UsageError(f"{path} is a symlink to {os.readlink(path)}; gankit replaces {path.name}/ whole and never "
                         f"what a link points to: remove the link (what it points to is left alone){instead}")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file where gankit writes a folder: move the file away{instead}")


def ensure_writable_dir(path, flag):
    """Create `path` and prove we can write there, or raise a one-line UsageError."""
    from trainer.errors import UsageError

    path = Path(path)
    refuse_file_in_the_way(path, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UsageError(f"{flag} {path} is not writable ({e.strerror}); choose a folder you can write to") from None
    return path


def lock_folder(path, flag) -> int | None:
    """Hold `path` (a folder) for this process alone, or raise a one-line UsageError: two runs writing checkpoints
    into one folder sweep each other's writes in flight. The lock is on the folder itself, so nothing is created
    in it; close the returned descriptor to let go (the end of the process does too)."""
    import fcntl

    from trainer.errors import UsageError

    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(f"{flag} {path} is in use by another run on this machine; wait for it to end, or choose "
                         "another --checkpoint-dir (or --output-dir)") from None
    except OSError:  # a filesystem without locks (some network mounts): run unguarded rather than not at all
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def folder_held(path, missing_ok=False, on_wait=None):
    """Hold `path` (a folder) for this process alone while the block runs, waiting while another process holds it
    (lock_folder refuses instead); `on_wait()`, when given, is called once if it has to wait. Nothing is created;
    a missing folder with `missing_ok` is held by no one."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        if not missing_ok:
            raise
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # lets go of the lock


@contextlib.contextmanager
def removed_on_error(*paths, created=None):
    """Folders (and their missing parents) created inside the block are removed again if it fails while they are empty.

    A run that fails validation must not leave empty output and checkpoint folders behind. The block gets
    the folders it will remove; a later block given them as `created` removes them too if it fails (a run
    whose checks go on after its folders were made, such as the GPU check once the backend loads).
    """
    fresh = dict(created or {})
    for path in map(Path, paths):
        top = path
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        if not path.exists():
            fresh[path] = top
    try:
        yield fresh
    except BaseException:
        for path, top in fresh.items():
            for folder in [path, *path.parents]:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only ever an empty folder
                if folder == top:
                    break
        raise


MAX_SEGMENT_BYTES = 230  # NAME_MAX (255) less what atomic_file adds for its temp name


def _refuse(source: str, name: str, why: str):
    from trainer.errors import GankitError

    raise GankitError(f"refusing {source.rstrip('/')}/{name}: {why}; "
                      "the remote side holds an unsafe name, remove or rename it there")


def inside(dest, name: str, source: str) -> Path:
    """`dest / name` for a name that came from elsewhere (an S3 key, a manifest entry), or a one-line error.

    The one gate where a remote name becomes a local path: a hostile bucket must
    not write outside `dest`, so `..`, `.`, empty segments, absolute names and
    segments too long for a file name are refused, and the resolved target
    (symlinks followed) must stay below `dest`.
    """
    why = name_problem(name)
    if why:
        _refuse(source, name, why)
    try:
        root = Path(dest).resolve()
        target = (root / name).resolve()
    except (OSError, RuntimeError):  # a symlink on this side that leads back to itself (RuntimeError in 3.11)
        from trainer.errors import UsageError

        raise UsageError(f"cannot write {source.rstrip('/')}/{name} below {dest}: a symlink there leads back to "
                         "itself; remove it, or choose another destination") from None
    if not target.is_relative_to(root):
        _refuse(source, name, f"it resolves to {target}, outside {root}")
    return Path(dest) / name


def name_problem(name: str) -> str | None:
    """Why a relative name (an S3 key below a prefix, a manifest entry) cannot be a local path, or None.
    The one rule for both sides: the launcher checks what it stages with it too."""
    parts = str(name).split("/")
    if not name or name.startswith("/") or "\\" in name or "\0" in name or any(p in ("", ".", "..") for p in parts):
        return "a name with '..', '.', an empty segment, a backslash or an absolute path would write outside its folder"
    try:
        encoded = [p.encode("utf-8") for p in parts]
    except UnicodeEncodeError:  # a file name that was not UTF-8 (kept by Python as surrogates)
        return "a name that is not valid UTF-8 cannot be an S3 key"
    if any(len(p) > MAX_SEGMENT_BYTES for p in encoded):  # S3 allows 1024 bytes; file systems 255 a name
        return f"a name segment over {MAX_SEGMENT_BYTES} bytes is longer than a local file name can be"
    return None


def inside_all(dest, names, source: str) -> dict:
    """`inside` for every name of one listing, and the set refused if one name is also another's folder
    (`a` and `a/b`: S3 holds both, a file system cannot). All checked before anything is written."""
    targets = {name: inside(dest, name, source) for name in sorted(names)}
    folders = {"/".join(name.split("/")[:i]) for name in targets for i in range(1, name.count("/") + 1)}
    for name in targets:
        if name in folders:
            _refuse(source, name, "it is both a file and the folder of other files")
    clash = _one_name_but_for_case(set(targets) | folders)
    if clash and _ignores_case(dest):
        _refuse(source, clash[1], f"it differs from {clash[0]} only in case (or in how its accents are encoded), and "
                f"the file system of {dest} takes the two for one, so one would silently overwrite or merge into "
                "the other")
    return targets


def composed(name) -> str:
    """`name` with its accents composed (NFC): macOS lists many file names decomposed (e + U+0301), while a
    terminal sends the é the user typed; both are one name."""
    return unicodedata.normalize("NFC", str(name))


def folded(name) -> str:
    """`name` as a file system that ignores case and accent encoding (macOS's, Windows') tells names apart."""
    return composed(name).casefold()


def _one_name_but_for_case(paths) -> tuple[str, str] | None:
    """Two of `paths` (files and folders) that differ only in case or in the encoding of their accents, if any."""
    seen = {}
    for path in sorted(paths):
        other = seen.setdefault(folded(path), path)
        if other != path:
            return other, path
    return None


def _ignores_case(dest) -> bool:
    """Whether the file system `dest` is on (or would be, as its nearest existing parent) takes names that differ
    only in case or in accent encoding for one file: macOS's and Windows' do, by default."""
    folder = Path(dest)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".gankit-case-\u00e9-") as probe:
            name = os.path.basename(probe.name)
            return any(os.path.exists(folder / other) for other in (name.upper(), unicodedata.normalize("NFD", name)))
    except (OSError, UnicodeError):  # a folder it cannot write: the download itself says so
        return False
