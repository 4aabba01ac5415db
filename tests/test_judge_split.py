"""The judge's train and test splits: an image folder's, held out per class, and the IDX files' own."""

import numpy as np
import pytest

from tests.data_helpers import make_idx_dataset, make_image_folder
from trainer.judge import held_out_count, load_splits

SHAPE = (8, 8, 3)


def uneven_folder(directory, counts):
    """One class subfolder per (name, count) of `counts`, each holding that many pictures."""
    for name, n in counts.items():
        make_image_folder(directory / name, classes=(), n=n, size=(8, 8))
    return directory


def per_class(labels, classes=4):
    return np.bincount(labels, minlength=classes).tolist()


def test_every_class_of_two_or_more_pictures_is_on_both_sides_of_a_folders_split(tmp_path):
    # Drawn from the whole folder, 1 in 6 of these 36 pictures were all of class "big": "few", "pair" and
    # "three" had no test picture (train [24, 3, 2, 3], test [6, 0, 0, 0]), so no figures.
    folder = uneven_folder(tmp_path / "f", {"big": 30, "few": 3, "pair": 2, "three": 3})
    splits = load_splits(f"folder:{folder}", image_shape=SHAPE)
    assert splits.class_names == ("big", "few", "pair", "three")
    assert per_class(splits.train_labels) == [25, 2, 1, 2] and per_class(splits.test_labels) == [5, 1, 1, 1]


def test_a_class_of_one_picture_is_only_trained_on(tmp_path):
    folder = uneven_folder(tmp_path / "f", {"a": 7, "lone": 1})
    splits = load_splits(f"folder:{folder}", image_shape=SHAPE)
    assert per_class(splits.train_labels, 2) == [6, 1] and per_class(splits.test_labels, 2) == [1, 0]


def test_a_folders_split_is_every_picture_once_and_the_same_every_time(tmp_path):
    folder = uneven_folder(tmp_path / "f", {"a": 13, "b": 4, "c": 9})
    first, again = (load_splits(f"folder:{folder}", image_shape=SHAPE) for _ in range(2))
    for k, n in enumerate((13, 4, 9)):  # a class's pictures differ from each other (not from other classes')
        pictures = np.concatenate([first.train_images[first.train_labels == k],
                                   first.test_images[first.test_labels == k]]).reshape(-1, 8 * 8 * 3)
        assert len(pictures) == n and len(np.unique(pictures, axis=0)) == n
    assert first.fingerprint() == again.fingerprint() and first.test_fingerprint() == again.test_fingerprint()
    assert (first.test_images == again.test_images).all()


@pytest.mark.parametrize("pictures, held_out", [(1, 0), (2, 1), (3, 1), (8, 1), (9, 2), (14, 2), (15, 3),
                                                (6000, 1000)])
def test_a_class_holds_out_1_in_6_rounded_at_least_one_never_its_last(pictures, held_out):
    assert held_out_count(pictures) == held_out


def test_idx_splits_are_the_files_own_and_fingerprint_as_before(tmp_path):
    """IDX judges cached before folders were split per class stay valid: same splits, same fingerprints."""
    from trainer.data import load_dataset

    data = make_idx_dataset(tmp_path / "idx", num_classes=3, n_train=12, n_test=6, size=8)
    splits = load_splits("mnist", data)
    for split, images, labels in (("train", splits.train_images, splits.train_labels),
                                  ("test", splits.test_images, splits.test_labels)):
        stored = load_dataset("mnist", data, split)
        assert (images == stored.images).all() and (labels == stored.labels).all()
    # The digests the code before this change computed for this data.
    assert splits.fingerprint() == "34f9b2a3eba23fafbd7dc51b2e804249de4b5298c0ff2797889f866c018fa77a"
    assert splits.test_fingerprint() == "2fd011bf91cd1636cd037220d46f009b7a5d0eb27aad4cc315adc709f8558a6f"


def test_a_folders_splits_come_from_one_listing_of_it(tmp_path, monkeypatch):
    # Its class names were asked of one listing (to refuse a folder without two classes before loading) and its
    # pictures loaded from another: a large folder was walked twice.
    import trainer.data.folder as folder_module

    listings = []
    list_folder = folder_module.list_folder
    monkeypatch.setattr(folder_module, "list_folder", lambda path: listings.append(path) or list_folder(path))
    folder = uneven_folder(tmp_path / "f", {"a": 7, "b": 5})
    splits = load_splits(f"folder:{folder}", image_shape=SHAPE)
    assert len(listings) == 1, listings
    assert splits.class_names == ("a", "b") and len(splits.train_labels) + len(splits.test_labels) == 12
