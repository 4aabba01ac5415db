"""Pictures to training arrays: one square size, one or three channels."""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps

from trainer.progress import Progress


def fit(picture: Image.Image, size: int, channels: int) -> np.ndarray:
    """`picture` as a (size, size, channels) uint8 array.

    A non-square picture is centre-cropped to a square first (as DCGAN
    pipelines do for faces), so nothing is squashed.
    """
    picture = picture.convert("L" if channels == 1 else "RGB")
    if picture.size != (size, size):
        picture = ImageOps.fit(picture, (size, size), method=Image.Resampling.LANCZOS)
    array = np.asarray(picture, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def fit_all(sources, to_array, size: int, channels: int, label: str, stream=None) -> np.ndarray:
    """(N, size, size, channels) uint8 from `to_array(source)` for each source, with progress."""
    out = np.empty((len(sources), size, size, channels), np.uint8)
    for i, array in enumerate(map_with_progress(to_array, sources, label, stream)):
        out[i] = array
    return out


def map_with_progress(function, items, label: str, stream=None):
    """Yield `function(item)` for each item, in order, with progress.

    Pillow releases the GIL while decoding and resampling, so threads use every core.
    """
    progress = Progress(len(items), label=label, stream=stream)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        try:
            for result in pool.map(function, items, chunksize=64):
                yield result
                progress.update()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        finally:
            progress.close()


def resize_images(images: np.ndarray, size: int | None = None, channels: int | None = None, stream=None) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, size, size, channels); None keeps that part as it is."""
    _, h, w, c = images.shape
    size, channels = size or h, channels or c
    if (h, w, c) == (size, size, channels):
        return images
    if c == 1 and channels == 3:  # grey to RGB: resample one channel, then repeat it
        return np.repeat(resize_images(images, size, 1, stream), 3, axis=3)
    return fit_all(images, lambda image: fit(Image.fromarray(image[..., 0] if c == 1 else image), size, channels),
                   size, channels, label=f"resizing to {size}x{size}x{channels}", stream=stream)
