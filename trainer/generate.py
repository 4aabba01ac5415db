"""Generated images to a file: `.npy` (the uint8 array) or `.png` (a grid), here or in S3."""

import io
import math
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np

from trainer import layout, s3
from trainer.errors import UsageError
from trainer.export import MAX_COUNT, META_FILE, MODEL_FILE, Generator, load_generator, read_meta
from trainer.fsutil import atomic_write_bytes, cache_root
from trainer.images import tile
from trainer.plots import png_bytes
from trainer.progress import Progress

SUFFIXES = (".npy", ".png")
PROGRESS_ABOVE = 500  # images: one batch is quick; more gets a progress line


def generator_folder(source, missing=None) -> Path:
    """A generator's local folder: `source` itself (or a run folder's generator/: layout.local_generator),
    or for an s3:// prefix its copy in the cache (downloaded again only where it changed). A prefix without a
    generator is refused before anything is fetched: in `missing()`'s words where given (the launcher's, of a job)."""
    if s3.is_s3(source):
        listing = s3.list_entries(source)  # once: the download takes this listing
        if not {META_FILE, MODEL_FILE} <= listing.keys():  # said of the prefix, not the cache
            raise missing() if missing else UsageError(
                f"{source} is not an exported generator (it needs {META_FILE} and {MODEL_FILE}); point at the "
                "generator/ prefix of a finished run, e.g. s3://BUCKET/runs/JOB/output/generator")
        return s3.mirror_into_cache(source, cache_root() / "generators" / s3.cache_key(source),
                                    label="downloading generator", listing=listing)
    return layout.local_generator(source)


def generate_to_file(generator_dir, out, target_class=None, count=None, rows=None, cols=None, seed=None,
                     before_load=None):
    """Write the images to `out` (a path or an s3:// URI) and return it; `generator_dir` may be an s3:// prefix.
    `before_load()`, when given, runs once the inputs are checked, just before Keras loads (the launcher starts
    TensorFlow quietly there)."""
    remote = s3.is_s3(out)
    out = str(out) if remote else Path(out)
    suffix = _check_request(out, remote, count, rows, cols, seed)  # before the seconds of loading, not after

    generator_dir = generator_folder(generator_dir)
    if target_class is not None:  # a wrong --class fails from generator.json, before Keras' seconds-long import
        Generator(None, read_meta(generator_dir)).class_index(target_class)
    if before_load:
        before_load()
    generator = load_generator(generator_dir)

    if suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, _generate(generator, target_class, count or 100, seed))
        data = buf.getvalue()
    else:
        data = png_bytes(_picture(generator, target_class, count, rows, cols, seed))
    return _write(out, data, remote)


def _check_request(out, remote, count, rows, cols, seed) -> str:
    """The suffix of `out`, once the options agree with each other and `out` can be written; else one line."""
    suffix = PurePosixPath(str(out)).suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(f"--out {out}: name a .npy file (the images as an array) or a .png file (a grid)")
    for flag, value in (("--count", count), ("--rows", rows), ("--cols", cols)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: must be a positive whole number")
    if count is not None and count > MAX_COUNT:
        raise UsageError(f"--count {count}: must be between 1 and {MAX_COUNT}")
    if suffix == ".npy" and (rows, cols) != (None, None):
        raise UsageError(f"--rows and --cols shape a .png grid; for --out {out} give --count (how many images "
                         "the array holds), or name a .png")
    if seed is not None and not 0 <= seed < 2**32:  # as `train --seed`; numpy refuses a negative one mid-run
        raise UsageError(f"--seed {seed}: must be between 0 and 4294967295 (numpy's seeds)")
    if suffix == ".png" and None not in (count, rows, cols) and count > rows * cols:
        raise UsageError(f"--count {count} does not fit a {rows}x{cols} grid; leave out --count, --rows or --cols "
                         "(the grid is then sized to fit), or make the grid larger")
    if remote:
        if not s3.split_s3(out)[1]:
            raise UsageError(f"--out {out}: name an object, e.g. s3://BUCKET/samples/{'x' + suffix}")
    else:
        _check_writable(out)
    return suffix


def _generate(generator, target_class, n, seed):
    """`n` images; more than one batch (minutes on a CPU for many thousands) shows progress."""
    if n <= PROGRESS_ABOVE:
        return generator.generate(target_class, n, seed)
    progress = Progress(n, label="generating", fmt=lambda k: f"{k} images")
    images = generator.generate(target_class, n, seed, on_batch=progress.update)
    progress.close()
    return images


def _picture(generator, target_class, count, rows, cols, seed):
    """The .png's grid: one row per class when no option shapes it, else the images tiled rows x cols."""
    if count is None and target_class is None and rows is None and cols is None:
        return generator.grid(seed=seed)
    rows, cols = _grid_shape(count, rows, cols)
    return tile(_generate(generator, target_class, count or rows * cols, seed), rows, cols, scale=2)


def _grid_shape(count, rows, cols) -> tuple[int, int]:
    """(rows, cols) from those given: with --count, a grid that holds all of them, never a silent first few."""
    if count is not None:
        if rows is None and cols is None:
            cols = min(count, 10)
        cols = cols or math.ceil(count / rows)
        rows = rows or math.ceil(count / cols)
    return rows or 5, cols or 5


def _write(out, data: bytes, remote):
    if remote:
        s3.write_bytes(out, data)  # one PUT: the object appears whole or not at all
        return out
    try:
        atomic_write_bytes(out, data)
    except OSError as e:
        raise _unwritable(out, e) from None
    return out


def _check_writable(out: Path):
    """Fail fast on an --out nobody can write, without creating anything."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; name a .npy or .png file")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # atomic_write_bytes creates the missing ones
    try:
        if not folder.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise _unwritable(out, e) from None


def _unwritable(out, e) -> UsageError:
    return UsageError(f"--out {out}: cannot write there ({e.strerror or e}); choose a file in a folder you can write to")
