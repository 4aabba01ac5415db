"""Pictures to training arrays: one square size, one or three channels."""

import io
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
from PIL import Image, ImageCms, ImageOps

from trainer.progress import Progress


def fit(picture: Image.Image, size: int, channels: int) -> np.ndarray:
    """`picture` as a (size, size, channels) uint8 array.

    A non-square picture is centre-cropped to a square first (as DCGAN
    pipelines do for faces), so nothing is squashed.
    """
    # A JPEG decodes straight at 1/2 to 1/8 scale, still at least `size` each way: a camera photo loads
    # ~4.6x faster (12 MP, 0.43 s to 0.09 s on the 2-core CPU), pixels within 1 of a full decode.
    picture.draft(picture.mode, (size, size))
    picture = as_seen(picture).convert("L" if channels == 1 else "RGB")
    if picture.size != (size, size):
        picture = ImageOps.fit(picture, (size, size), method=Image.Resampling.LANCZOS)
    array = np.asarray(picture, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # Pillow's 16-bit, 32-bit integer and float modes
SIXTEEN_BIT_FORMATS = ("PNG", "PPM")  # their "I" pictures (16-bit PNG in older Pillow, 16-bit PGM) are 16 bits
BACKGROUND = (0, 0, 0)  # what transparent pixels become: the dark ground of MNIST-style data
ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
GREY_MODES = ("1", "L", "LA", "La")  # those left once the high-depth ones are made "L"
SRGB = ImageCms.createProfile("sRGB")  # what a picture's numbers mean where it names no colour profile


def as_seen(picture: Image.Image) -> Image.Image:
    """The picture as a viewer shows it, in a mode that converts to 8-bit L or RGB faithfully.

    Pillow's `convert` clips rather than scales deeper pixels (a 16-bit scan comes out almost white),
    keeps the colour hidden under transparent pixels, ignores a camera's EXIF rotation, and takes the numbers
    of a picture with its own colour profile (an iPhone's Display P3, Adobe RGB, a printer's CMYK) as sRGB.
    """
    stored_as = picture.format  # the transposed copy has none
    profile = picture.info.get("icc_profile")  # read first: the 8-bit copy made of a deeper picture has no info
    picture = ImageOps.exif_transpose(picture)
    if picture.mode in HIGH_DEPTH:
        values = np.asarray(picture, dtype=np.float64)
        values[~np.isfinite(values)] = 0.0  # a float map's NaN (no data) pixels: dark, and not its whole range
        top = values.max(initial=0.0)
        if picture.mode.startswith("I;16") or (picture.mode == "I" and stored_as in SIXTEEN_BIT_FORMATS):
            scale = 65535.0  # 16 bits as stored, however dark the picture: a dim scan stays dim
        else:  # the range the values were stored in: 0-1 floats, 8 bits kept in a wider mode, or 16 bits
            scale = 1.0 if top <= 1.0 and picture.mode == "F" else 255.0 if top <= 255 else 65535.0
        picture = Image.fromarray(np.clip(np.rint(values * (255.0 / scale)), 0, 255).astype(np.uint8))
    if profile:
        picture = in_srgb(picture, profile)
    if picture.mode in ALPHA_MODES or "transparency" in picture.info:
        layer = picture.convert("RGBA")
        picture = Image.alpha_composite(Image.new("RGBA", layer.size, BACKGROUND + (255,)), layer)
    return picture


def in_srgb(picture: Image.Image, profile: bytes) -> Image.Image:
    """`picture`, whose numbers mean colours in ICC `profile`, as sRGB (RGB, or RGBA where it has transparency).

    A profile LittleCMS cannot read, or one that does not fit the picture (an RGB profile on a grey picture),
    leaves the picture as it is: a viewer, too, shows such a picture as if it were sRGB.
    """
    alpha = picture.mode in ALPHA_MODES or "transparency" in picture.info
    colours = "L" if picture.mode in GREY_MODES else "CMYK" if picture.mode == "CMYK" else "RGB"
    transform = _to_srgb(profile, colours)
    if transform is None:
        return picture
    # LittleCMS keeps no alpha from a grey picture: convert the colours alone and put the alpha back.
    converted = transform.apply(picture.convert(colours) if picture.mode != colours else picture)
    if alpha:
        converted.putalpha(picture.convert("LA" if colours == "L" else "RGBA").getchannel("A"))
    converted.info.pop("icc_profile", None)  # the numbers are sRGB now, which needs no profile
    return converted


@lru_cache(maxsize=16)
def _to_srgb(profile: bytes, mode: str):
    """The transform from `profile` to sRGB for a `mode` picture, or None where there is none.

    Cached: a folder's pictures share a handful of profiles (every iPhone photo carries the same Display P3),
    and reading one and building its transform costs several times converting a drafted photo.
    """
    try:
        return ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(profile)), SRGB, mode, "RGB")
    except Exception:  # OSError for an unreadable profile, PyCMSError for one of another colour space or mode
        return None


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
