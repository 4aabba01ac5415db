"""The IDX reader and writer: round trips, every structural check, and fuzzing."""

import gzip
import struct
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from trainer.data.idx import DTYPES, check_pair, read_idx, write_idx
from trainer.errors import UsageError


def header(code, dims):
    return struct.pack(">HBB", 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_round_trip_every_dtype(tmp_path, dtype, name):
    array = (np.arange(2 * 3 * 5).reshape(2, 3, 5) * 37 - 100).astype(dtype)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 5)
    np.testing.assert_array_equal(back, array)


def test_gzip_is_recognised_by_content_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "a.gz", array)
    assert (tmp_path / "a.gz").read_bytes()[:2] == b"\x1f\x8b"
    (tmp_path / "a.gz").rename(tmp_path / "no-suffix")
    np.testing.assert_array_equal(read_idx(tmp_path / "no-suffix"), array)
    write_idx(tmp_path / "plain", array)
    assert (tmp_path / "plain").read_bytes() == header(0x08, (3, 4)) + array.tobytes()


def test_writing_is_deterministic_and_leaves_no_temp_files(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x.gz", array)
    first = (tmp_path / "x.gz").read_bytes()
    write_idx(tmp_path / "x.gz", array)
    assert (tmp_path / "x.gz").read_bytes() == first  # no timestamp in the gzip header
    assert first[4:8] == bytes(4)  # the gzip MTIME field: two writes within one second would match anyway
    assert [p.name for p in tmp_path.iterdir()] == ["x.gz"]


def test_write_rejects_what_idx_cannot_hold(tmp_path):
    with pytest.raises(UsageError, match="no dtype for int64"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))
    with pytest.raises(UsageError, match="1 to 255 dimensions"):
        write_idx(tmp_path / "x", np.uint8(3))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("data, problem", [
    (b"", "0 bytes, too short for an IDX header"),
    (b"\x00\x00\x08", "3 bytes, too short"),
    (b"\x01\x00\x08\x01" + b"\x00" * 8, "bad magic number 0x01000801"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01x", "unknown dtype code 0x07"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00", "ends inside the list of sizes"),
    (header(0x08, (2, 3)) + b"x" * 5, "payload is 5 bytes, header says 6 (2x3 of uint8)"),
    (header(0x08, (2, 3)) + b"x" * 9, "payload is 9 bytes, header says 6"),
    (header(0x0B, (2,)) + b"xyz", "payload is 3 bytes, header says 4"),
])
@pytest.mark.parametrize("gz", [False, True])
def test_structural_errors_name_the_file_and_the_problem(tmp_path, data, problem, gz):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(UsageError) as e:
        read_idx(path, fix="delete it and run again to re-download")
    message = str(e.value)
    assert str(path) in message and problem in message and message.endswith("delete it and run again to re-download")
    assert "\n" not in message


def test_truncated_and_garbled_gzip(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "good.gz", array)
    data = (tmp_path / "good.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match=r"corrupt IDX file .*cut\.gz: broken gzip data"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "garbage.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UsageError, match=r"garbage\.gz"):
        read_idx(tmp_path / "garbage.gz")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (tmp_path / "flipped.gz").write_bytes(bytes(flipped))
    with pytest.raises(UsageError, match=r"flipped\.gz"):
        read_idx(tmp_path / "flipped.gz")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(UsageError, match=r"nope\.gz not found"):
        read_idx(tmp_path / "nope.gz")
    with pytest.raises(UsageError, match="is a folder"):
        read_idx(tmp_path)


def test_impossible_shape_is_refused_even_when_empty(tmp_path):
    path = tmp_path / "empty-but-huge"
    path.write_bytes(header(0x0C, (0, 2**32 - 1, 2**32 - 1, 2**32 - 1)))
    with pytest.raises(UsageError, match="header declares 0x4294967295x4294967295x4294967295 of int32, more than any array"):
        read_idx(path)


def test_huge_dimensions_do_not_allocate(tmp_path):
    # 376 TB claimed, 1 KiB present: the reader must notice without trying to
    # make room for what the header claims.
    path = tmp_path / "liar.gz"
    path.write_bytes(gzip.compress(header(0x0E, (60000, 28000, 28000)) + bytes(1024)))
    tracemalloc.start()
    try:
        with pytest.raises(UsageError, match="payload is 1024 bytes, header says 376320000000000 "):
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    path.write_bytes(gzip.compress(header(0x0E, (4_000_000_000,) * 3) + bytes(1024)))
    with pytest.raises(UsageError, match="header declares 4000000000x4000000000x4000000000 of float64, more than any"):
        read_idx(path)


def read_idx_pair(images_path, labels_path, num_classes):
    """What trainer/data/fetch.py does with a split's two files."""
    return check_pair(read_idx(images_path), read_idx(labels_path), num_classes, images_path, labels_path)


def test_pair_checks_counts_labels_and_kinds(tmp_path):
    images = np.zeros((4, 5, 5), np.uint8)
    write_idx(tmp_path / "images.gz", images)
    write_idx(tmp_path / "labels.gz", np.array([0, 1, 2, 1], np.uint8))
    got_images, labels = read_idx_pair(tmp_path / "images.gz", tmp_path / "labels.gz", num_classes=3)
    assert got_images.shape == (4, 5, 5) and labels.dtype == np.int64 and labels.tolist() == [0, 1, 2, 1]

    with pytest.raises(UsageError, match=r"labels\.gz: label 2 at index 2 is outside 0\.\.1"):
        read_idx_pair(tmp_path / "images.gz", tmp_path / "labels.gz", num_classes=2)
    write_idx(tmp_path / "three.gz", np.array([0, 1, 2], np.uint8))
    with pytest.raises(UsageError, match="holds 4 images but .*three.gz holds 3 labels"):
        read_idx_pair(tmp_path / "images.gz", tmp_path / "three.gz", num_classes=3)
    write_idx(tmp_path / "float.gz", np.zeros((4, 5, 5), np.float32))
    with pytest.raises(UsageError, match=r"float\.gz is not an image file"):
        read_idx_pair(tmp_path / "float.gz", tmp_path / "labels.gz", num_classes=3)
    with pytest.raises(UsageError, match=r"images\.gz is not a labels file"):
        read_idx_pair(tmp_path / "images.gz", tmp_path / "images.gz", num_classes=3)
    write_idx(tmp_path / "none.gz", np.zeros((0, 5, 5), np.uint8))
    write_idx(tmp_path / "nolabels.gz", np.zeros(0, np.uint8))
    with pytest.raises(UsageError, match="holds no images"):
        read_idx_pair(tmp_path / "none.gz", tmp_path / "nolabels.gz", num_classes=3)


def test_a_negative_label_is_out_of_range(tmp_path):
    """int8 labels can be below 0: a class index of -1 would pick the last class, silently."""
    write_idx(tmp_path / "images.gz", np.zeros((4, 5, 5), np.uint8))
    write_idx(tmp_path / "labels.gz", np.array([0, -1, 2, 1], np.int8))
    with pytest.raises(UsageError, match=r"labels\.gz: label -1 at index 1 is outside 0\.\.2"):
        read_idx_pair(tmp_path / "images.gz", tmp_path / "labels.gz", num_classes=3)


def test_float_labels_are_not_a_labels_file(tmp_path):
    """1.7 would be cast to class 1 without a word."""
    write_idx(tmp_path / "images.gz", np.zeros((4, 5, 5), np.uint8))
    write_idx(tmp_path / "labels.gz", np.array([0, 1.7, 2, 1], np.float32))
    with pytest.raises(UsageError, match=r"labels\.gz is not a labels file: it holds a 4 array of float32"):
        read_idx_pair(tmp_path / "images.gz", tmp_path / "labels.gz", num_classes=3)


def test_more_labels_than_images_is_refused(tmp_path):
    """Not only fewer labels than images: files of two different datasets either way round."""
    write_idx(tmp_path / "images.gz", np.zeros((4, 5, 5), np.uint8))
    write_idx(tmp_path / "five.gz", np.array([0, 1, 2, 1, 0], np.uint8))
    with pytest.raises(UsageError, match=r"holds 4 images but .*five\.gz holds 5 labels"):
        read_idx_pair(tmp_path / "images.gz", tmp_path / "five.gz", num_classes=3)


@pytest.mark.parametrize("shape", [(4, 25), (4, 0, 0), (4, 5, 0), (4, 5, 5, 0), (4, 5, 5, 2), (4, 5, 5, 4)])
def test_images_without_pixels_or_with_odd_channels_are_not_images(tmp_path, shape):
    """Well-formed IDX, but no picture a network can take (4x25: rows of pixels, not pictures): one line now, not a Keras error later."""
    write_idx(tmp_path / "odd.gz", np.zeros(shape, np.uint8))
    write_idx(tmp_path / "labels.gz", np.array([0, 1, 2, 1], np.uint8))
    with pytest.raises(UsageError, match=r"odd\.gz is not an image file: it holds a 4x.* array of uint8"):
        read_idx_pair(tmp_path / "odd.gz", tmp_path / "labels.gz", num_classes=3)


# --- fuzzing: whatever the bytes, an array or a UsageError naming the file ---

FUZZ_DIR = Path(tempfile.mkdtemp(prefix="gankit-idx-fuzz-"))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def read_or_usage_error(data: bytes):
    path = FUZZ_DIR / "fuzz-idx"
    path.write_bytes(data)
    try:
        array = read_idx(path)
    except UsageError as e:
        assert str(path) in str(e)
        return None
    assert isinstance(array, np.ndarray)
    return array


near_valid = st.builds(
    lambda code, dims, payload: header(code, dims) + payload,
    st.sampled_from(sorted(DTYPES) + [0x00, 0x0A, 0xFF]),
    st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1)), min_size=1, max_size=5),
    st.binary(max_size=300),
)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data):
    read_or_usage_error(data)


@FUZZ
@given(near_valid)
@example(header(0x08, (0, 4635, 34637669, 57450172)))  # empty, yet too big for numpy to shape
def test_fuzz_near_valid_headers(data):
    array = read_or_usage_error(data)
    if array is not None:  # accepted: then it really is what the header says
        assert array.nbytes == len(data) - 4 - 4 * array.ndim


@FUZZ
@given(near_valid, st.integers(0, 10**6), st.binary(max_size=8))
def test_fuzz_gzipped_truncated_and_spliced(data, cut, tail):
    packed = gzip.compress(data)
    read_or_usage_error(packed)
    read_or_usage_error(packed[: cut % (len(packed) + 1)] + tail)
    read_or_usage_error(zlib.compress(data))  # zlib stream, not gzip: just bytes with a wrong magic


@FUZZ
@given(st.integers(0, 2**16), st.integers(0, 255))
def test_fuzz_single_byte_corruption_of_a_real_file(position, value):
    array = np.arange(6 * 7, dtype=np.uint8).reshape(6, 7)
    data = bytearray(gzip.compress(header(0x08, (6, 7)) + array.tobytes(), mtime=0))
    data[position % len(data)] = value
    result = read_or_usage_error(bytes(data))
    if result is not None and result.shape == (6, 7):
        # gzip's CRC catches payload damage; only harmless header bytes (flags, mtime, OS) can change.
        np.testing.assert_array_equal(result, array)
