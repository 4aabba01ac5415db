"""Pictures to training arrays: one square size, one or three channels."""

import numpy as np
from PIL import Image, ImageOps


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


def resize_images(images: np.ndarray, size: int | None = None, channels: int | None = None) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, size, size, channels); None keeps that part as it is."""
    n, h, w, c = images.shape
    size, channels = size or h, channels or c
    if (h, w, c) == (size, size, channels):
        return images
    if (h, w) == (size, size) and c == 1:
        return np.repeat(images, channels, axis=3)  # grey to RGB needs no resampling
    out = np.empty((n, size, size, channels), np.uint8)
    for i, image in enumerate(images):
        out[i] = fit(Image.fromarray(image[..., 0] if c == 1 else image), size, channels)
    return out
