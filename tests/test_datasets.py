"""load_dataset and canonical_name: names, splits, shapes, EMNIST's orientation, the real Fashion-MNIST."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.data_helpers import IDX_FILES, make_idx_dataset
from trainer.data import Dataset, canonical_name, load_dataset
from trainer.data.catalog import CATALOG, EMNIST, ZALANDO
from trainer.data.idx import read_idx, write_idx
from trainer.errors import UsageError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("given, name", [
    ("mnist", "mnist"), ("MNIST", "mnist"), ("zalando", "zalando"), ("fashion-mnist", "zalando"),
    (" Fashion-MNIST ", "zalando"), ("emnist", "emnist"), ("folder:~/faces", "folder:~/faces"),
])
def test_canonical_names(given, name):
    assert canonical_name(given) == name


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UsageError) as e:
        canonical_name("imagenet")
    message = str(e.value)
    assert "unknown dataset 'imagenet'" in message
    assert "mnist, zalando (alias fashion-mnist), emnist" in message and "folder:PATH" in message
    with pytest.raises(UsageError, match="folder: needs a path"):
        canonical_name("folder:")
    with pytest.raises(UsageError, match="no dataset given"):
        canonical_name("")


def test_catalog_matches_the_issue():
    assert ZALANDO.class_names == ("t_shirt_top", "trouser", "pullover", "dress", "coat",
                                   "sandal", "shirt", "sneaker", "bag", "ankle_boots")
    assert EMNIST.num_classes == 47 and EMNIST.transposed
    assert "".join(EMNIST.class_names) == "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"
    for spec in CATALOG.values():
        assert set(spec.splits) == {"train", "test"}
        for f in spec.files:  # every download is verified: per file, or by its archive
            checksum = f.md5 or spec.archive.md5
            assert len(checksum) == 32 and int(checksum, 16) >= 0


@pytest.fixture(scope="module")
def idx10(tmp_path_factory):
    return make_idx_dataset(tmp_path_factory.mktemp("idx10"), num_classes=10, n_train=40, n_test=20)


@pytest.mark.parametrize("name", ["mnist", "zalando", "fashion-mnist"])
def test_idx_datasets_from_a_data_dir(idx10, name):
    train = load_dataset(name, data_dir=idx10)
    test = load_dataset(name, data_dir=idx10, split="test")
    assert isinstance(train, Dataset) and train.name == canonical_name(name)
    assert train.images.shape == (40, 28, 28, 1) and train.images.dtype == np.uint8
    assert test.images.shape == (20, 28, 28, 1) and test.labels.shape == (20,)
    assert train.labels.dtype == np.int64 and set(train.labels.tolist()) == set(range(10))
    assert train.conditional and train.num_classes == 10 and train.image_shape == (28, 28, 1)
    np.testing.assert_array_equal(train.images[..., 0], read_idx(idx10 / "train-images-idx3-ubyte.gz"))
    assert train.class_names == CATALOG[canonical_name(name)].class_names


def test_resize_and_channels_on_request(idx10):
    data = load_dataset("mnist", data_dir=idx10, image_size=64, channels=3)
    assert data.images.shape == (40, 64, 64, 3)
    grey = load_dataset("mnist", data_dir=idx10, channels=3)
    assert grey.images.shape == (40, 28, 28, 3)
    np.testing.assert_array_equal(grey.images[..., 1], read_idx(idx10 / "train-images-idx3-ubyte.gz"))
    small = load_dataset("mnist", data_dir=idx10, image_size=16)
    assert small.images.shape == (40, 16, 16, 1)
    # Blobs stay where they were: the brightest pixel moves with the picture.
    original = load_dataset("mnist", data_dir=idx10).images[:, :, :, 0].reshape(40, -1).argmax(1)
    oy, ox = np.divmod(original, 28)
    sy, sx = np.divmod(small.images[:, :, :, 0].reshape(40, -1).argmax(1), 16)
    assert np.abs(sy - oy * 16 / 28).max() <= 2 and np.abs(sx - ox * 16 / 28).max() <= 2


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "validation"}, "unknown split 'validation'"),
    ({"image_size": 0}, "image size 0"),
    ({"image_size": 2.5}, "image size 2.5"),
    ({"channels": 4}, "channels 4: must be 1 .* or 3"),
])
def test_bad_arguments(idx10, kwargs, match):
    with pytest.raises(UsageError, match=match):
        load_dataset("mnist", data_dir=idx10, **kwargs)


def test_emnist_pictures_are_turned_upright(tmp_path):
    folder = tmp_path / "emnist"
    make_idx_dataset(folder, num_classes=47, n_train=47, n_test=47)
    # A picture as NIST stores it: column by column, so a bar along the top row is written as the left column.
    upright = np.zeros((28, 28), np.uint8)
    upright[2, 4:24] = 255
    images = read_idx(folder / "train-images-idx3-ubyte.gz")
    images[0] = upright.T
    (folder / "train-images-idx3-ubyte.gz").unlink()
    write_idx(folder / "emnist-balanced-train-images-idx3-ubyte.gz", images)  # canonical and MNIST names both work
    data = load_dataset("emnist", data_dir=folder)
    assert data.num_classes == 47 and data.class_names[36] == "a"
    np.testing.assert_array_equal(data.images[0, ..., 0], upright)
    assert data.images.flags.c_contiguous


def test_emnist_labels_beyond_47_are_refused(tmp_path):
    folder = make_idx_dataset(tmp_path / "e", num_classes=62, n_train=62, n_test=62)
    with pytest.raises(UsageError, match=r"train-labels-idx1-ubyte.gz: label \d+ at index \d+ is outside 0\.\.46"):
        load_dataset("emnist", data_dir=folder)


def test_dataset_checks_its_arrays():
    with pytest.raises(ValueError, match="uint8"):
        Dataset("x", np.zeros((2, 4, 4), np.uint8), None)
    with pytest.raises(ValueError, match="labels must be int64"):
        Dataset("x", np.zeros((2, 4, 4, 1), np.uint8), np.zeros(3, np.int64))


def test_importing_the_data_layer_stays_light():
    code = "import sys, trainer.data, trainer.data.fetch, trainer.data.folder; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


needs_debian = pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").exists(),
                                  reason="Debian's dataset-fashion-mnist is not installed")


@needs_debian
def test_real_fashion_mnist_from_debian():
    train = load_dataset("zalando")  # the test cache is empty: this is Debian's copy
    test = load_dataset("fashion-mnist", split="test")
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(train.labels).tolist() == [6000] * 10 and np.bincount(test.labels).tolist() == [1000] * 10
    for split in ("train", "test"):
        for f in ZALANDO.splits[split]:
            array = read_idx(DEBIAN / f.name)
            assert hashlib.sha256(array.tobytes()).hexdigest() == f.sha256
            # Debian recompressed the files: that is why the decoded checksum exists.
            assert hashlib.md5((DEBIAN / f.name).read_bytes()).hexdigest() != f.md5
    np.testing.assert_array_equal(train.images[..., 0], read_idx(DEBIAN / "train-images-idx3-ubyte.gz"))


@needs_debian
def test_a_doctored_full_copy_in_a_data_dir_is_refused(tmp_path):
    for name in IDX_FILES["test"]:
        shutil.copy(DEBIAN / name, tmp_path / name)
    assert load_dataset("zalando", data_dir=tmp_path, split="test").images.shape == (10000, 28, 28, 1)
    labels = read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz")
    labels[123] = (labels[123] + 1) % 10
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(UsageError, match="is not the published t10k-labels-idx1-ubyte.gz"):
        load_dataset("zalando", data_dir=tmp_path, split="test")
