"""Generated images to a file: `.npy` (the uint8 array) or `.png` (a grid)."""

import io
import math
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
    atomic_write_bytes(out, buf.getvalue())
    return out
