"""Datasets for the trainer: `load_dataset(name, ...) -> Dataset`.

Names: mnist, zalando (alias fashion-mnist), emnist (balanced, 47 classes) and
folder:PATH (a folder of pictures). Kept light: numpy, Pillow and the standard
library only, so the launcher can import it quickly.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.data.catalog import ALIASES, CATALOG
from trainer.errors import UsageError

SPLITS = ("train", "test")
FOLDER = "folder:"
FOLDER_IMAGE_SIZE = 64
FOLDER_CHANNELS = 3


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray | None  # int64 (N,), or None for an unconditional dataset
    class_names: tuple = ()

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")
        if self.labels is not None and (self.labels.dtype != np.int64 or self.labels.shape != self.images.shape[:1]):
            raise ValueError(f"labels must be int64 ({len(self.images)},), got {self.labels.dtype} {self.labels.shape}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def conditional(self) -> bool:
        return self.labels is not None

    @property
    def image_shape(self) -> tuple:
        return tuple(self.images.shape[1:])


def known_names() -> str:
    names = [f"{spec.name} (alias {', '.join(spec.aliases)})" if spec.aliases else spec.name for spec in CATALOG.values()]
    return ", ".join(names)


def canonical_name(name: str) -> str:
    """The catalog name for `name` (aliases resolved), or `folder:PATH` as given."""
    if name is None or not str(name).strip():
        raise UsageError(f"no dataset given; choose one of {known_names()}, or folder:PATH")
    name = str(name).strip()
    if name.startswith(FOLDER):
        if not name[len(FOLDER):]:
            raise UsageError("folder: needs a path to a folder of pictures, e.g. folder:~/faces")
        return name
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in CATALOG:
        raise UsageError(f"unknown dataset {name!r}: choose one of {known_names()}, or folder:PATH "
                         f"for a folder of pictures (one subfolder per class makes it conditional)")
    return key


def class_names_of(name, data_dir=None) -> tuple:
    """The class names `load_dataset` would give `name` (none for a folder without classes), known without
    loading a picture: a folder's from its listing (its layout checked as loading checks it)."""
    listing = folder_listing(name, data_dir)
    return listing[2] if listing else tuple(CATALOG[canonical_name(name)].class_names)


def folder_listing(name, data_dir=None) -> tuple | None:
    """A folder dataset's pictures, labels and class names (`list_folder`, its layout checked), for `load_dataset`
    to load without listing the folder again; None for a dataset of IDX files."""
    name = canonical_name(name)
    if not name.startswith(FOLDER):
        return None
    from trainer.data.folder import list_folder

    return list_folder(_folder_path(name, data_dir))


def _folder_path(name, data_dir) -> Path:
    """Where a folder dataset's pictures are: `data_dir` when given (the PATH then only names it)."""
    return Path(data_dir) if data_dir is not None else Path(name[len(FOLDER):])


def load_dataset(name, data_dir=None, split="train", image_size=None, channels=None, log=None,
                 listing=None) -> Dataset:
    """Load a dataset's `split` ("train" or "test") into memory.

    IDX datasets come as stored (28x28x1) unless `image_size`/`channels` ask for
    otherwise; folders are resized to `image_size` (default 64) with `channels`
    (default 3). `data_dir` holds the dataset's files: the canonical IDX files,
    or for a folder dataset the pictures themselves (the PATH then only names it).
    `log`, when given, hears where the files came from. `listing`: a folder's `folder_listing`, where the
    caller has it already.
    """
    name = canonical_name(name)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}: choose train or test")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise UsageError(f"image size {image_size!r}: must be a positive whole number of pixels, e.g. 64")
    if channels not in (None, 1, 3):
        raise UsageError(f"channels {channels!r}: must be 1 (grey) or 3 (RGB)")

    if name.startswith(FOLDER):
        from trainer.data.folder import load_folder

        if split != "train":
            raise UsageError(f"{name} has no {split} split: an image folder is a single set of pictures")
        path = _folder_path(name, data_dir)
        images, labels, class_names = load_folder(path, image_size or FOLDER_IMAGE_SIZE, channels or FOLDER_CHANNELS,
                                                  listing=listing)
        if log:
            classes = f" in {len(class_names)} classes" if class_names else " (no classes)"
            log(f"data: {name}: {len(images)} pictures{classes} from {path}")
        return Dataset(name, images, labels, class_names)

    from trainer.data.fetch import load_split
    from trainer.data.resize import resize_images

    spec = CATALOG[name]
    images, labels = load_split(spec, split, data_dir, log=log)
    if spec.transposed:
        images = np.ascontiguousarray(np.swapaxes(images, 1, 2))  # EMNIST stores each picture column by column
    if images.ndim == 3:
        images = images[..., None]
    return Dataset(spec.name, resize_images(images, image_size, channels), labels, spec.class_names)
