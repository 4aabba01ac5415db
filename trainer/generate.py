"""Generated images to a file: `.npy` (the uint8 array) or `.png` (a grid)."""

import io
import math
import tempfile
from pathlib import Path

import numpy as np

from trainer.errors import UsageError
from trainer.fsutil import atomic_write_bytes
from trainer.images import tile

SUFFIXES = (".npy", ".png")


def generate_to_file(generator_dir, out, target_class=None, count=None, rows=None, cols=None, seed=None) -> Path:
    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise UsageError(f"--out {out}: name a .npy file (the images as an array) or a .png file (a grid)")
    for flag, value in (("--count", count), ("--rows", rows), ("--cols", cols)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: must be a positive whole number")
    _check_writable(out)  # before the seconds of loading and generating

    from trainer.export import Generator, load_generator, read_meta

    if target_class is not None:  # a wrong --class fails from generator.json, before Keras' seconds-long import
        Generator(None, read_meta(generator_dir)).class_index(target_class)
    generator = load_generator(generator_dir)
    if out.suffix.lower() == ".npy":
        images = generator.generate(target_class, count or (rows or 10) * (cols or 10), seed)
        buf = io.BytesIO()
        np.save(buf, images)
    else:
        if count is None and target_class is None and rows is None and cols is None:
            picture = generator.grid(seed=seed)  # one row per class
        else:
            if count is not None and rows is None and cols is None:
                cols = min(count, 10)
                rows = math.ceil(count / cols)
            rows, cols = rows or 5, cols or 5
            picture = tile(generator.generate(target_class, count or rows * cols, seed), rows, cols, scale=2)
        buf = io.BytesIO()
        picture.save(buf, format="PNG")
    try:
        atomic_write_bytes(out, buf.getvalue())
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
