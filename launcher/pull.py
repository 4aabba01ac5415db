"""Bring a run's outputs home, and find a generator wherever it lives (folder, job, s3:// prefix)."""

import filecmp
import json
import os
import shutil
from pathlib import Path

from trainer import layout, s3
from trainer.errors import GankitError, UsageError
from trainer.fsutil import (atomic_file, atomic_write_text, ensure_writable_dir, inside, removed_on_error,
                            written_or_one_line)
from trainer.progress import Progress, format_bytes


LOADING = "checking the generator loads"
CHECKED = ".gankit-checked.json"  # in a pulled folder: the generator files as they were when they last loaded


def copy_tree(source: Path, dest: Path, label: str, log=None) -> Path:
    """Like s3.download_prefix for a local source: resumable, skips files already there with the same bytes.
    Hidden files and folders are left out, as the S3 mirror leaves them out (s3.changed_files): they are the
    temp files of writes in flight, or cut short by a killed trainer, never outputs."""
    sizes = {p: size for p in _listed(source) if (size := _size(p)) is not None}
    files = list(sizes)
    targets = {p: inside(dest, p.relative_to(source).as_posix(), str(source)) for p in files}
    todo = [p for p in files if not (targets[p].is_file() and _same(p, targets[p]))]
    if log:
        s3.say_skipped(log, dest, len(files) - len(todo), sum(sizes[p] for p in files if p not in todo))
    if todo:
        progress = Progress(sum(sizes[p] for p in todo), label=label, fmt=format_bytes)
        for path in todo:
            target = targets[path]
            try:
                src = path.open("rb")
            except FileNotFoundError:  # replaced as it was read (a running job's generator-best/): the next pull
                progress.update(sizes[path])
                continue
            try:
                with src, atomic_file(target, suffix=".part") as out:  # complete or absent
                    shutil.copyfileobj(src, out)
            except OSError as e:  # a file where a folder must go (or the reverse), a full disk: as S3's mirror says
                raise GankitError(f"copy of {path} to {target} failed: {e.strerror or e}; free space, move what "
                                  "is in the way, or choose another destination") from None
            progress.update(sizes[path])
        progress.close()
    return dest


def _listed(source: Path) -> list[Path]:
    """The files below `source`, less hidden ones, checkpoints and symlinks that lead outside it (the upload,
    s3.changed_files, never sends those either: a cloud job's pull would not have them). A running job replaces
    folders whole (its generator-best/ through a hidden temp folder): what vanishes while it is listed is left out,
    not a traceback."""
    files = []
    root = source.resolve()
    for folder, dirs, names in os.walk(source):  # it skips a folder gone before it is read; never enters a link
        dirs[:] = sorted(d for d in dirs if d != "checkpoints" and not d.startswith("."))
        files += [Path(folder) / n for n in sorted(names) if n != "checkpoints" and not n.startswith(".")
                  and _stays_inside(Path(folder) / n, root)]
    return files


def _stays_inside(path: Path, root: Path) -> bool:
    """Whether `path` is no symlink, or one whose target lies below `root`: a link to ~/notes is not the run's."""
    if not path.is_symlink():
        return True
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a link that leads back to itself
        return False


def _size(path: Path) -> int | None:
    """A file's size; None if it is not a file (any more)."""
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


def _same(path: Path, other: Path) -> bool:
    try:
        return filecmp.cmp(path, other, shallow=False)
    except OSError:  # gone as it was compared: copied (or skipped) as any other
        return False


def fetch(uri: str, dest: Path, label: str, log=None) -> Path:
    if s3.is_s3(uri):
        return s3.download_prefix(uri, dest, label=label, log=log)
    if not Path(uri).is_dir():
        raise GankitError(f"nothing at {uri} yet: the job has not published outputs; try again later")
    return copy_tree(Path(uri), dest, label, log=log)


def pull(record: dict, dest: Path, log=print) -> Path:
    """The run's outputs (generator, samples, metrics, plots, report) into `dest`; checks the generator loads."""
    uri = _output_uri(record)
    with removed_on_error(dest):  # a pull that finds nothing (or no generator) leaves no empty folder behind
        ensure_writable_dir(dest, "--dest")  # one line now, not a traceback from the first file
        if not s3.is_s3(uri) and not Path(uri).is_dir():
            raise GankitError(_missing(record, f"nothing at {uri}", "published no outputs"))
        fetch(uri, dest, label=f"pulling {record['job']}", log=log)
        folder = dest / "generator"
        if _checked_stamp(folder) is not None and _checked_stamp(folder) == _read_checked(dest):
            log("the generator is the one already checked here; not loading it again")
            return dest
        if not (folder / "generator.json").exists():
            raise GankitError(_missing(record, f"{record['job']} has no exported generator", "exported no generator",
                                       pulled=dest))
    log(LOADING)  # it loads TensorFlow: 4 to 7 s on our 2-core CPU after the bar's 100%, with nothing said
    check_generator(folder, record["job"])
    with written_or_one_line(CHECKED, dest, flag="--dest"):  # a full disk at the very end: one line too
        atomic_write_text(dest / CHECKED, json.dumps(_checked_stamp(folder)))
    return dest


def _missing(record: dict, what: str, never: str, pulled: Path | None = None) -> str:
    """Why a job has nothing (or no generator) to pull: an ended job will not publish it later, so "try again
    later" would send its owner waiting for nothing."""
    from launcher import backends

    job = record["job"]
    try:
        info = backends.get(record["backend"]).describe(record)
    except Exception:  # only a hint for the message: without a status it gives none, never a traceback
        info = {}
    status = info.get("status")
    kept = f" (what it did publish is in {pulled})" if pulled and pulled.is_dir() and any(pulled.iterdir()) else ""
    if status == "Failed":
        return (f"{what}: job {job} failed and {never}{kept} ({info.get('failure_reason') or 'no reason given'}); "
                f"`launcher logs {job}` shows its log")
    if status == "Stopped":
        return (f"{what}: job {job} was stopped before it got that far{kept}; "
                f"`launcher submit --resume {job}` continues it from its last checkpoint")
    if status == "Completed":
        return f"{what}, yet job {job} completed; `launcher logs {job}` shows what it did"
    return (f"{what} yet (job {job} is {status or 'not finished'}; the generator is exported when training ends); "
            f"check `launcher status {job}` and pull again when it has completed")


def _output_uri(record: dict) -> str:
    from launcher import backends

    return backends.get(record["backend"]).output_uri(record)


def _checked_stamp(folder: Path) -> dict | None:
    """(size, mtime) of the generator's files: a file fetched again gets a new mtime."""
    if not (folder / "generator.json").is_file():
        return None
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(folder.iterdir()) if p.is_file()}


def _read_checked(dest: Path):
    try:
        return json.loads((dest / CHECKED).read_text())
    except (OSError, ValueError):
        return None


def check_generator(folder: Path, what: str):
    if not (folder / "generator.json").exists():
        raise GankitError(f"{what} has no exported generator yet (it is written when training ends); "
                          "check `launcher status` and pull again when it has completed")
    from launcher.quiet import tensorflow_quietly
    from trainer import load_generator

    with tensorflow_quietly():
        load_generator(folder)  # raises a clear error if it does not load


def generator_dir(source: str) -> Path:
    """A local generator folder from a folder, a job name, or an s3:// generator prefix (cached)."""
    from trainer.generate import generator_folder  # numpy and Pillow: only when generating

    if s3.is_s3(source):
        return generator_folder(source)
    path = Path(source)
    if path.exists():
        return layout.local_generator(path)  # a pulled run folder holds its generator in generator/
    if "/" not in source:
        from launcher import jobs

        record = jobs.load(source)
        uri = layout.join(_output_uri(record), "generator")

        def missing():  # said of the job, as `pull` says it, not of a folder or prefix the user never named
            return GankitError(_missing(record, f"{source} has no exported generator", "exported no generator"))

        if s3.is_s3(uri):
            return generator_folder(uri, missing=missing)  # one listing, which the download takes
        if not (Path(uri) / "generator.json").is_file():
            raise missing()
        return Path(uri)
    raise UsageError(f"{source}: no such generator folder, job or s3:// prefix")
