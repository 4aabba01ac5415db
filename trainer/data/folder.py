"""`folder:PATH` datasets: a folder of pictures, one subfolder per class or none.

    faces/                  -> unconditional (labels None)
        0001.jpg ...
    pets/                   -> conditional, classes = sorted subfolder names
        cats/ 01.png ...
        dogs/ 01.png ...
"""

import errno
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from trainer.data.resize import fit, fit_all, map_with_progress
from trainer.errors import UsageError

# A picture between Pillow's two decompression-bomb limits (89-179 megapixels: a panorama, a 100 MP camera's photo)
# loads, and fit() keeps it small; the warning Pillow prints for it, two lines cutting the progress bar, asks
# nothing of the user. Beyond the upper limit Pillow refuses the picture, and _decode names it in one line.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def load_folder(path, image_size: int = 64, channels: int = 3, stream=None, listing=None):
    """(images uint8 (N, size, size, channels), labels int64 (N,) or None, class_names tuple); `listing`: the
    folder's `list_folder`, where the caller has it already."""
    files, labels, class_names = listing or list_folder(path)
    return _decode_all(files, image_size, channels, stream), labels, class_names


def list_folder(path):
    """The pictures `load_folder` reads, their labels (or None) and the class names; the layout checked."""
    root = Path(path).expanduser()
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise UsageError(f"image folder {root} {problem}; give folder:PATH the folder that holds your images")
    top = _pictures_in(root)
    classes = {d.name: _pictures_in(d) for d in sorted(root.iterdir(), key=lambda d: d.name)
               if _not_dangling(d).is_dir() and not _hidden(d.name)}
    with_pictures = [name for name, files in classes.items() if files]
    if top and with_pictures:
        raise UsageError(f"image folder {root} mixes pictures ({top[0].name}, ...) with class subfolders "
                         f"({with_pictures[0]}/, ...); keep either one folder of pictures or one subfolder per class")
    for folder in [root] if top else [root / name for name in classes]:
        _refuse_nested(folder, "image folder" if top else "class folder")
    if top:
        files, labels, class_names = top, None, ()
    elif with_pictures:
        empty = [name for name, files in classes.items() if not files]
        if empty:
            raise UsageError(f"class folder {root / empty[0]} has no pictures; add some or remove the folder")
        class_names = tuple(classes)
        for name in class_names:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:  # a name that was not UTF-8, kept by Python as surrogates
                shown = os.fsencode(root / name).decode("utf-8", "backslashreplace")
                raise UsageError(f"class folder {shown} has a name that is not valid UTF-8 text, and it would name "
                                 f"the class in the generator and report; rename it") from None
        files = [f for name in class_names for f in classes[name]]
        labels = np.array([k for k, name in enumerate(class_names) for _ in classes[name]], np.int64)
    else:
        raise UsageError(f"image folder {root} has no pictures ({', '.join(IMAGE_SUFFIXES)}), neither in it "
                         f"nor in subfolders; point folder:PATH at your images")
    return files, labels, class_names


def check_pictures(files, image_size: int = 64, channels: int = 3, stream=None):
    """Decode every picture as training will, keeping nothing: a broken one is named before a job exists."""
    for _ in map_with_progress(lambda f: _decode(f, image_size, channels).shape, files, "checking pictures", stream):
        pass


def _refuse_nested(folder: Path, kind: str):
    """Training reads the pictures in `folder` itself: one further down would be left out without a word."""
    with os.scandir(folder) as entries:  # the entry's type comes with the listing: no stat per picture
        subs = sorted(Path(e.path) for e in entries if not _hidden(e.name) and _is_folder(e))
    for sub in subs:
        for where, subfolders, names in os.walk(sub):  # symlinked folders below `sub` are not entered: no loops
            subfolders[:] = sorted(d for d in subfolders if not _hidden(d))
            nested = next((n for n in sorted(names)
                           if Path(n).suffix.lower() in IMAGE_SUFFIXES and not _hidden(n)), None)
            if nested:
                raise UsageError(f"{Path(where) / nested} is in {sub.name}/, a subfolder of {kind} {folder} that "
                                 f"training does not read; move its pictures up into {folder}, or remove them")


def _hidden(name: str) -> bool:
    # Dot files (.DS_Store, ._x.jpg, .ipynb_checkpoints), and the __MACOSX folder of resource forks that a zip made
    # on macOS leaves when unpacked elsewhere: it would read as an empty class.
    return name.startswith(".") or name == "__MACOSX"


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop (other than a picture's name: those are named by _not_dangling)
        return False


def _pictures_in(folder: Path) -> list:
    return sorted(f for f in folder.iterdir()
                  if f.suffix.lower() in IMAGE_SUFFIXES and not _hidden(f.name) and _not_dangling(f).is_file())


def _not_dangling(path: Path) -> Path:
    # A link to nothing is a picture or class the user meant to include: say so rather than skip it.
    if path.is_symlink() and not path.exists():
        try:
            os.stat(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UsageError(f"{path} is a symlink loop (it points to {path.readlink()}, which leads back to "
                                 "itself); fix or remove it") from None
        raise UsageError(f"{path} is a dangling symlink (it points to {path.readlink()}, which does not exist); "
                         "fix or remove it")
    return path


def _decode(path: Path, size: int, channels: int) -> np.ndarray:
    try:
        with Image.open(path) as picture:
            return fit(picture, size, channels)
    except Exception as e:  # Pillow raises many types for broken files; any of them means "unreadable"
        raise UsageError(f"cannot read image {path} ({type(e).__name__}: {e}); fix or remove it") from None


def _decode_all(files, size, channels, stream) -> np.ndarray:
    return fit_all(files, lambda f: _decode(f, size, channels), size, channels, label="loading images", stream=stream)
