"""Bring a run's outputs home, and find a generator wherever it lives (folder, job, s3:// prefix)."""

import filecmp
import shutil
from pathlib import Path

from trainer import layout, s3
from trainer.errors import GankitError, UsageError
from trainer.fsutil import cache_root, inside
from trainer.progress import Progress, format_bytes


def copy_tree(source: Path, dest: Path, label: str) -> Path:
    """Like s3.download_prefix for a local source: resumable, skips files already there with the same bytes."""
    files = [p for p in sorted(source.rglob("*")) if p.is_file() and "checkpoints" not in p.relative_to(source).parts]
    targets = {p: inside(dest, p.relative_to(source).as_posix(), str(source)) for p in files}
    todo = [p for p in files if not (targets[p].is_file() and filecmp.cmp(p, targets[p], shallow=False))]
    if todo:
        progress = Progress(sum(p.stat().st_size for p in todo), label=label, fmt=format_bytes)
        for path in todo:
            target = targets[path]
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            shutil.copyfile(path, tmp)
            tmp.replace(target)  # complete or absent
            progress.update(path.stat().st_size)
        progress.close()
    return dest


def fetch(uri: str, dest: Path, label: str) -> Path:
    if s3.is_s3(uri):
        return s3.download_prefix(uri, dest, label=label)
    if not Path(uri).is_dir():
        raise GankitError(f"nothing at {uri} yet: the job has not published outputs; try again later")
    return copy_tree(Path(uri), dest, label)


def pull(record: dict, dest: Path) -> Path:
    """The run's outputs (generator, samples, metrics, plots, report) into `dest`; checks the generator loads."""
    fetch(record["output_uri"], dest, label=f"pulling {record['job']}")
    check_generator(dest / "generator", record["job"])
    return dest


def check_generator(folder: Path, what: str):
    if not (folder / "generator.json").exists():
        raise GankitError(f"{what} has no exported generator yet (it is written when training ends); "
                          "check `launcher status` and pull again when it has completed")
    from trainer import load_generator

    load_generator(folder)  # raises a clear error if it does not load


def generator_dir(source: str) -> Path:
    """A local generator folder from a folder, a job name, or an s3:// generator prefix (cached)."""
    if s3.is_s3(source):
        return s3.download_prefix(source, cache_root() / "generators" / s3.cache_key(source), label="downloading generator")
    path = Path(source)
    if path.exists():
        # A pulled run folder holds its generator in generator/.
        return path / "generator" if (path / "generator" / "generator.json").exists() else path
    if "/" not in source:
        from launcher import jobs

        record = jobs.load(source)
        uri = layout.join(record["output_uri"], "generator")
        return generator_dir(uri) if s3.is_s3(uri) else Path(uri)
    raise UsageError(f"{source}: no such generator folder, job or s3:// prefix")
