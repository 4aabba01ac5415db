"""Tiny synthetic datasets for tests: IDX files in the canonical names, and image folders.

The pictures depend on the class in a way a classifier (or a GAN's
discriminator) can learn: a bright blob whose position is the class.
"""

import math
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
