"""Where gankit keeps files, and writes that are complete or invisible (temp file or folder, then an atomic rename)."""

import contextlib
import os
import shutil
import tempfile
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


def mkstemp(**kwargs) -> tuple[int, str]:
    """tempfile.mkstemp, but the file gets the usual permissions (0666 less the umask), not mkstemp's
    private 0600: what it becomes after the rename is an ordinary file others may read."""
    fd, tmp = tempfile.mkstemp(**kwargs)
    os.fchmod(fd, 0o666 & ~umask())
    return fd, tmp


def atomic_write_bytes(path, data: bytes):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str):
    atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temp folder beside `path`; on success it replaces `path` whole.

    A crash inside the block leaves `path` as it was (plus a hidden temp folder
    that the next call sweeps away).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
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


def ensure_writable_dir(path, flag):
    """Create `path` and prove we can write there, or raise a one-line UsageError."""
    from trainer.errors import UsageError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UsageError(f"{flag} {path} is not writable ({e.strerror}); choose a folder you can write to") from None
    return path
