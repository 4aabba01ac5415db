"""IDX files (the MNIST format), plain or gzipped, read defensively.

Layout: two zero bytes, a dtype code, the number of dimensions, then one
big-endian uint32 per dimension, then the payload in C order. Every file is
untrusted: nothing is allocated from the header's sizes until the payload has
been read and found to be exactly as long as the header says.
"""

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from trainer.errors import UsageError
from trainer.fsutil import atomic_file

DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
CODES = {dtype.newbyteorder("="): code for code, dtype in DTYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20
DEFAULT_FIX = "replace it with an intact copy"


def read_idx(path, fix: str = DEFAULT_FIX) -> np.ndarray:
    """The array in IDX file `path` (gzip detected by content, not by name).

    Any problem is a one-line `UsageError` naming the file, what is wrong and
    `fix` (callers that can re-download say so).
    """
    path = Path(path)

    def bad(problem):
        return UsageError(f"corrupt IDX file {path}: {problem}; {fix}")

    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            with (gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw) as f:
                return _read_array(f, bad)
    except FileNotFoundError:
        raise UsageError(f"IDX file {path} not found; {fix}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder, not an IDX file; {fix}") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise bad(f"broken gzip data ({e or 'ends early'})") from None
    except OSError as e:
        raise UsageError(f"cannot read IDX file {path}: {e.strerror or e}; {fix}") from None


def _read_array(f, bad) -> np.ndarray:
    header = f.read(4)
    if len(header) < 4:
        raise bad(f"file is {len(header)} bytes, too short for an IDX header")
    zero, code, ndim = struct.unpack(">HBB", header)
    if zero != 0:
        raise bad(f"bad magic number 0x{header.hex()} (an IDX file starts with two zero bytes)")
    if code not in DTYPES:
        raise bad(f"unknown dtype code 0x{code:02x} (expected one of {', '.join(f'0x{c:02x}' for c in DTYPES)})")
    if ndim == 0:
        raise bad("header declares 0 dimensions")
    dims_bytes = f.read(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise bad(f"header declares {ndim} dimensions but the file ends inside the list of sizes")
    dims = struct.unpack(f">{ndim}I", dims_bytes)
    dtype = DTYPES[code]
    shape_text = f"{'x'.join(map(str, dims))} of {dtype.name}"
    if int(np.prod([d for d in dims if d], dtype=object)) * dtype.itemsize > np.iinfo(np.intp).max:
        raise bad(f"header declares {shape_text}, more than any array can hold")
    expected = int(np.prod(dims, dtype=object)) * dtype.itemsize  # Python ints: no overflow
    payload = _read_at_most(f, expected)
    if len(payload) != expected:
        raise bad(f"payload is {len(payload)} bytes, header says {expected} ({shape_text})")
    extra = _count_rest(f)
    if extra:
        raise bad(f"payload is {expected + extra} bytes, header says {expected} ({shape_text})")
    return np.frombuffer(payload, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def _read_at_most(f, limit: int) -> bytearray:
    """Up to `limit` bytes, read in chunks: memory grows with the data actually there,
    never with what a (possibly lying) header claims."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = f.read(min(CHUNK, limit - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _count_rest(f) -> int:
    n = 0
    while chunk := f.read(CHUNK):
        n += len(chunk)
    return n


def write_idx(path, array):
    """Write `array` as an IDX file, gzipped when `path` ends in .gz; complete or not at all."""
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in CODES:
        raise UsageError(f"cannot write {path}: IDX has no dtype for {array.dtype} (use uint8, int8, int16, int32, float32 or float64)")
    if array.ndim == 0 or array.ndim > 255 or any(d >= 2**32 for d in array.shape):
        raise UsageError(f"cannot write {path}: IDX needs 1 to 255 dimensions of less than 2**32 each, got shape {array.shape}")
    header = struct.pack(">HBB", 0, CODES[native], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = np.ascontiguousarray(array, dtype=DTYPES[CODES[native]]).tobytes()
    with atomic_file(path, suffix=".part") as raw:
        if path.name.endswith(".gz"):
            # mtime=0 and no file name: the same array always gives the same bytes.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
                f.write(header)
                f.write(payload)
        else:
            raw.write(header)
            raw.write(payload)


def check_pair(images, labels, num_classes, images_path, labels_path, fix: str = DEFAULT_FIX):
    """What a dataset needs beyond each file's own structure: uint8 images,
    1-D integer labels in [0, num_classes) (unchecked when num_classes is None),
    and as many labels as images. Returns (images, labels as int64)."""
    if (images.dtype != np.uint8 or images.ndim not in (3, 4) or 0 in images.shape[1:3]
            or (images.ndim == 4 and images.shape[3] not in (1, 3))):
        raise UsageError(f"{images_path} is not an image file: it holds a {'x'.join(map(str, images.shape))} "
                         f"array of {images.dtype}, expected N x height x width (x 1 or 3 channels) uint8 "
                         f"pixels; {fix}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise UsageError(f"{labels_path} is not a labels file: it holds a {'x'.join(map(str, labels.shape))} "
                         f"array of {labels.dtype}, expected one integer per image; {fix}")
    if len(images) != len(labels):
        raise UsageError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
                         f"they must come from the same dataset; {fix}")
    if len(images) == 0:
        raise UsageError(f"{images_path} holds no images; {fix}")
    labels = labels.astype(np.int64)
    if num_classes is not None:
        out_of_range = (labels < 0) | (labels >= num_classes)
        if out_of_range.any():
            i = int(np.argmax(out_of_range))
            raise UsageError(f"{labels_path}: label {labels[i]} at index {i} is outside 0..{num_classes - 1} "
                             f"(this dataset has {num_classes} classes); {fix}")
    return images, labels
