"""Image arrays to pictures: value scaling and grids."""

import functools
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = 32


def to_uint8(x) -> np.ndarray:
    """[-1, 1] floats -> uint8 pixels."""
    return np.clip(np.rint((np.asarray(x, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def tile(images: np.ndarray, rows: int, cols: int, pad: int = 2, scale: int = 1, row_labels=None) -> Image.Image:
    """Lay uint8 images (N, H, W, C) out row by row on a dark grid; `row_labels` name the rows on the left."""
    n, h, w, c = images.shape
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), BACKGROUND, dtype=np.uint8)
    for i in range(min(n, rows * cols)):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        canvas[top:top + h, left:left + w] = images[i]
    picture = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    if row_labels:
        picture = _label_rows(picture, [str(t) for t in row_labels[:rows]], (h + pad) * scale, pad * scale)
    return picture


def _label_rows(picture: Image.Image, labels, pitch: int, pad: int) -> Image.Image:
    """`picture` with a margin on its left holding one label per row of cells, centred on the row."""
    font = _font(max(10, min(18, pitch // 3)))
    draw = ImageDraw.Draw(picture)
    margin = max(int(draw.textlength(t, font=font)) for t in labels) + 2 * pad + 4
    labelled = Image.new(picture.mode, (picture.width + margin, picture.height), _ink(picture.mode, BACKGROUND))
    labelled.paste(picture, (margin, 0))
    draw = ImageDraw.Draw(labelled)
    for r, text in enumerate(labels):
        middle = pad + r * pitch + (pitch - pad) // 2
        draw.text((margin - pad - 2, middle), text, fill=_ink(picture.mode, 225), font=font, anchor="rm")
    return labelled


@functools.lru_cache(maxsize=None)
def _font(size: int):
    # DejaVu Sans, which matplotlib (a trainer dependency) ships, draws accented and Cyrillic class names;
    # Pillow's own font drew "café" as "caf" and a box.
    try:
        return ImageFont.truetype(str(_matplotlib_font()), size)
    except (OSError, TypeError, ImportError):
        pass
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow 10.1+ with FreeType)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _matplotlib_font() -> Path:
    """matplotlib's DejaVuSans.ttf, found without importing matplotlib (seconds, on the training thread)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise OSError("matplotlib is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"


def _ink(mode: str, level: int):
    return level if mode == "L" else (level,) * len(mode)
