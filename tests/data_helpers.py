"""Tiny synthetic datasets for tests: IDX files in the canonical names, and image folders.

The pictures depend on the class in a way a classifier (or a GAN's
discriminator) can learn: a bright blob whose position is the class.
"""

import math
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from trainer.data.idx import write_idx

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def blob_images(labels, num_classes, size=28, seed=0) -> np.ndarray:
    """uint8 (N, size, size): one Gaussian blob per picture, placed on a grid cell chosen by the label."""
    rng = np.random.default_rng(seed)
    grid = math.ceil(math.sqrt(num_classes))
    cell = size / grid
    sigma = max(1.0, cell / 3)
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.empty((len(labels), size, size), np.uint8)
    for i, label in enumerate(labels):
        cy, cx = (np.array(divmod(int(label), grid)) + 0.5) * cell + rng.uniform(-0.5, 0.5, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        images[i] = np.clip(230 * blob + rng.uniform(0, 25, (size, size)), 0, 255).astype(np.uint8)
    return images


def make_idx_dataset(directory, num_classes=10, n_train=64, n_test=32, size=28, seed=0) -> Path:
    """Write the four canonical MNIST-layout .gz files into `directory`; every class appears when n >= num_classes."""
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    for k, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        labels = rng.permutation(np.arange(n) % num_classes).astype(np.uint8)
        images_name, labels_name = IDX_FILES[split]
        write_idx(directory / images_name, blob_images(labels, num_classes, size, seed=seed * 2 + k))
        write_idx(directory / labels_name, labels)
    return directory


def make_image_folder(directory, classes=("a", "b"), n=6, size=(40, 30), mode="RGB") -> Path:
    """`n` PNGs per class in one subfolder per class, or `n` in `directory` itself when `classes` is empty.

    `size` is (width, height); each class has its own colour and blob position.
    """
    directory = Path(directory)
    width, height = size
    rng = np.random.default_rng(0)
    groups = [(directory / name, k) for k, name in enumerate(classes)] if classes else [(directory, 0)]
    for folder, k in groups:
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array([(97 * k + 40) % 256, (53 * k + 200) % 256, (151 * k + 90) % 256], np.float64)
        for i in range(n):
            yy, xx = np.mgrid[0:height, 0:width]
            cx = width * (k % 3 + 1) / 4
            blob = np.exp(-((yy - height / 2) ** 2 + (xx - cx) ** 2) / (2 * (min(size) / 5) ** 2))
            rgb = blob[..., None] * colour + rng.uniform(0, 30, (height, width, 3))
            Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).convert(mode).save(folder / f"{i:03d}.png")
    return directory


# ICC profiles, written out: no profile file ships with Pillow, and LittleCMS makes only sRGB, Lab and XYZ.
D50 = (0.9642, 1.0, 0.8249)  # the white every ICC profile's colours are given against
ADOBE_RGB = ((0.60974, 0.31111, 0.01947), (0.20528, 0.62567, 0.06087), (0.14919, 0.06322, 0.74457))  # D50 XYZ
ADOBE_RGB_GAMMA = 563 / 256  # 2.2 as the profile's 8.8 fixed-point number stores it


def icc_profile(space: bytes, colorants=None, gamma=2.2) -> bytes:
    """An ICC v2 display profile: b"RGB " with `colorants` (the XYZ of full red, green, blue) or b"GRAY",
    each channel a pure `gamma` curve: the matrix/TRC kind that Adobe RGB 1998 and Display P3 are."""
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256))
    name = b"gankit test profile\0"
    tags = {b"desc": b"desc" + bytes(4) + struct.pack(">I", len(name)) + name + bytes(4 + 4 + 3 + 67),
            b"cprt": b"text" + bytes(4) + b"none\0", b"wtpt": _icc_xyz(D50)}
    if space == b"GRAY":
        tags[b"kTRC"] = curve
    else:
        for channel, colorant in zip((b"r", b"g", b"b"), colorants):
            tags[channel + b"XYZ"], tags[channel + b"TRC"] = _icc_xyz(colorant), curve
    table, data = struct.pack(">I", len(tags)), b""
    start = 128 + 4 + 12 * len(tags)
    for signature, body in tags.items():
        body += bytes(-len(body) % 4)  # each tag starts on a 4-byte boundary
        table += signature + struct.pack(">II", start + len(data), len(body))
        data += body
    header = (struct.pack(">I", start + len(data)) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntr" + space
              + b"XYZ " + bytes(12) + b"acsp" + bytes(4 * 4 + 8 + 4) + _icc_numbers(D50) + bytes(4 + 16 + 28))
    return header + table + data


def _icc_xyz(xyz) -> bytes:
    return b"XYZ " + bytes(4) + _icc_numbers(xyz)


def _icc_numbers(values) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)  # s15Fixed16Number
