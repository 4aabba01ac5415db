"""The judge: a small CNN classifier that scores generated images.

Trained by us on the dataset's train split (for an image folder, on 5/6 of each
class, the rest held out as its test split: see folder_test_indices), so figures mean the same thing
from run to run. Cached under `cache_root()/judges/` with its test accuracy and
a fingerprint of the data it saw; a changed train split (or judge recipe)
retrains it, a changed test split measures its test accuracy again.
"""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from trainer.errors import UsageError
from trainer.fsutil import atomic_dir, atomic_write_text, cache_root, folder_held

RECIPE = "judge-v1"  # change when the network or training changes: cached judges then retrain
MODEL_FILE = "judge.keras"
META_FILE = "judge.json"
FOLDER_TEST_SHARE = 6  # an image folder holds out 1 picture in 6 of each class as its test split
MIN_STEPS = 200  # tiny datasets still get enough updates to separate their classes
EPOCHS = 4  # Fashion-MNIST: ~91% test accuracy, a few minutes on two CPU cores
BATCH = 128
FEATURES_LAYER = "features"


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """The labelled images a judge learns from and is tested on."""

    name: str
    class_names: tuple
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def image_shape(self) -> tuple:
        return tuple(self.train_images.shape[1:])

    def fingerprint(self) -> str:
        return _digest(f"{RECIPE}|{self.name}|{self.class_names}|{self.image_shape}", self.train_images,
                       self.train_labels)

    def test_fingerprint(self) -> str:
        """The test split's own: the judge never learns from it, but its cached test accuracy comes from it."""
        return _digest(f"{self.test_images.shape}", self.test_images, self.test_labels)


def _digest(header: str, *arrays) -> str:
    h = hashlib.sha256(header.encode())
    for array in arrays:
        h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


def load_splits(dataset, data_dir=None, image_shape=None) -> Splits:
    """Train and test images at `image_shape` (H, W, C; default: as stored)."""
    from trainer.data import FOLDER, canonical_name, class_names_of, folder_listing, load_dataset

    name = canonical_name(dataset)
    # Asked of the folder's listing, before its pictures load: a large folder took minutes, only to be refused.
    # The pictures then load from the same listing: the folder is listed once.
    listing = folder_listing(name, data_dir)
    check_judgeable(name, listing[2] if listing else class_names_of(name, data_dir))
    size, channels = (image_shape[0], image_shape[2]) if image_shape is not None else (None, None)
    train = load_dataset(name, data_dir, "train", size, channels, listing=listing)
    if name.startswith(FOLDER):
        test_idx = folder_test_indices(train.labels, len(train.class_names))
        train_idx = np.setdiff1d(np.arange(len(train.labels)), test_idx)
        return Splits(name, train.class_names, train.images[train_idx], train.labels[train_idx],
                      train.images[test_idx], train.labels[test_idx])
    test = load_dataset(name, data_dir, "test", size, channels)
    return Splits(name, train.class_names, train.images, train.labels, test.images, test.labels)


def check_judgeable(name, class_names):
    """One line (a UsageError) where a dataset of `class_names` can have no judge, so no quality figures."""
    if not class_names:
        raise UsageError(f"{name} has no classes, so no judge can be trained on it; "
                         "put the pictures in one subfolder per class to get quality figures")
    if len(class_names) < 2:
        # A judge of one class has one softmax output, always 1: its loss is 0 whatever it sees, so it never
        # learns. Its label accuracy and classifier score would be 1 and its distance one measured in an
        # untrained network's features: no figure at all, as for a folder without classes, says more.
        raise UsageError(f"{name} has one class, so a judge trained on it could tell nothing apart and its figures "
                         "would mean nothing; put the pictures in two or more class subfolders to get quality figures")


def folder_test_indices(labels, num_classes) -> np.ndarray:
    """Sorted indices of the pictures an image folder holds out for testing: in each class, a seeded draw of
    `held_out_count` of its pictures, so the same folder gives the same split. Drawn per class: drawn from the
    whole folder, a class of a few pictures could end up with none to train on, or none to test."""
    rng = np.random.default_rng(0)
    held = [rng.permutation(members)[:held_out_count(len(members))]
            for k in range(num_classes) for members in [np.flatnonzero(labels == k)]]
    return np.sort(np.concatenate(held)).astype(np.int64)


def held_out_count(pictures: int) -> int:
    """1 in FOLDER_TEST_SHARE of a class's pictures, rounded to the nearest; at least one of a class of two or
    more, and never its last. A class of one picture is only trained on: it has no test picture, so no figures."""
    if pictures < 2:
        return 0
    return max(1, (pictures + FOLDER_TEST_SHARE // 2) // FOLDER_TEST_SHARE)


class Judge:
    """A trained classifier: `features(images)` (penultimate layer) and `probabilities(images)`."""

    def __init__(self, model, meta: dict):
        import keras

        self.model = model
        self.meta = meta
        self.class_names = tuple(meta["class_names"])
        self.test_accuracy = float(meta["test_accuracy"])
        self._both = keras.Model(model.inputs[0], [model.get_layer(FEATURES_LAYER).output, model.outputs[0]])

    def outputs(self, images, batch_size=500) -> tuple[np.ndarray, np.ndarray]:
        """(features (N, D), probabilities (N, classes)) for uint8 images (N, H, W, C)."""
        feats, probs = [], []
        for i in range(0, len(images), batch_size):
            f, p = self._forward(np.asarray(images[i:i + batch_size]))
            feats.append(np.asarray(f, np.float64))
            probs.append(np.asarray(p, np.float64))
        return np.concatenate(feats), np.concatenate(probs)

    def _forward(self, batch):
        import keras

        if keras.backend.backend() == "jax":
            # One compiled call per batch shape, as the generator's (trainer/export.py): op by op, eager JAX
            # dispatched every layer's ops separately, 338 ms for 1,000 images against 72 ms on a 2-core CPU.
            return self._both.predict_on_batch(batch)
        return self._both(batch, training=False)

    def features(self, images) -> np.ndarray:
        return self.outputs(images)[0]

    def probabilities(self, images) -> np.ndarray:
        return self.outputs(images)[1]


def judge_dir(splits: Splits) -> Path:
    from trainer.layout import dataset_slug

    h, w, c = splits.image_shape
    return cache_root() / "judges" / f"{dataset_slug(splits.name)}-{h}x{w}x{c}"


def load_judge(dataset, data_dir=None, log=print, splits: Splits | None = None) -> Judge:
    """The cached judge for this data, trained first if missing, if the data changed or if not float32."""
    splits = splits or load_splits(dataset, data_dir)
    folder = judge_dir(splits)
    fingerprint = splits.fingerprint()
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Two runs that need the same judge (two local jobs with --eval-every): one trains it, the other waits and
    # loads it. Unheld, the second's atomic_dir swept away the first's half-saved copy, which then failed.
    with folder_held(folder.parent, on_wait=lambda: log(f"waiting for another process to train or save a judge "
                                                        f"in {folder.parent}")):
        meta = _read_meta(folder)
        if meta is not None and meta.get("fingerprint") == fingerprint:
            judge = _cached_judge(folder, meta, log)
            if judge is not None:
                return _tested_on(judge, splits, folder, log)
        elif meta is not None:
            log(f"the data for {splits.name} changed since its judge was trained; retraining")
        model, meta = train_judge(splits, log=log)
        with atomic_dir(folder) as tmp:
            model.save(tmp / MODEL_FILE)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    return Judge(model, meta)


def _cached_judge(folder: Path, meta: dict, log) -> Judge | None:
    """The judge cached in `folder` for this data, or None (said) when it must be trained again."""
    import keras

    from trainer.device import float32_policy

    try:
        # Under a bf16 run's global policy Keras gives the loaded judge's layers that policy wherever the file
        # leaves it to the global one, so a float32 judge looked stale and was retrained at every evaluation.
        with float32_policy():
            model = keras.models.load_model(folder / MODEL_FILE, compile=False, safe_mode=True)
        mixed = sorted({layer.dtype_policy.name for layer in model.layers} - {"float32"})
        if not mixed:
            return Judge(model, meta)
    except Exception as e:  # a damaged cache file: retrain rather than fail
        log(f"judge cache {folder} is unreadable ({type(e).__name__}); retraining")
        return None
    # Judges cached before they were always built in float32 (a bf16 run with --eval-every built them in
    # its own precision) have the same fingerprint: their figures would differ from a float32 judge's.
    log(f"judge cache {folder} was trained in {mixed[0]}, not float32 as judges now are; retraining")
    return None


def _tested_on(judge: Judge, splits: Splits, folder: Path, log) -> Judge:
    """`judge`, with its test accuracy measured again (and cached) when `splits` has another test split than
    the one it was measured on. Judges cached before the test split was fingerprinted are measured once."""
    test_fingerprint = splits.test_fingerprint()
    if judge.meta.get("test_fingerprint") == test_fingerprint:
        return judge
    if "test_fingerprint" in judge.meta:
        log(f"the test split of {splits.name} changed since its judge was tested; measuring its accuracy again")
    meta = dict(judge.meta, test_accuracy=accuracy_on_test(judge, splits), test_images=len(splits.test_images),
                test_fingerprint=test_fingerprint)
    atomic_write_text(folder / META_FILE, json.dumps(meta, indent=2))
    return Judge(judge.model, meta)


def accuracy_on_test(judge: Judge, splits: Splits) -> float:
    """The share of the real test images `judge` puts in their own class."""
    return float((judge.probabilities(splits.test_images).argmax(axis=1) == splits.test_labels).mean())


def _read_meta(folder: Path) -> dict | None:
    """The cached judge's judge.json, or None when it is missing or damaged (the judge is then retrained)."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def build_classifier(image_shape, num_classes):
    """Conv blocks down to <= 7x7, a 128-wide feature layer, softmax."""
    import keras
    from keras import layers

    from trainer.models import upsampling_plan

    _, n = upsampling_plan(image_shape[0])
    x = keras.Input(image_shape, name="image")
    h = layers.Rescaling(1 / 127.5, offset=-1.0)(x)  # uint8 pixels in, as the generator emits them
    for i in range(max(n, 1)):
        h = layers.Conv2D(32 * 2**min(i, 2), 3, padding="same", activation="relu")(h)
        h = layers.MaxPooling2D()(h)
    h = layers.Flatten()(h)
    h = layers.Dropout(0.3)(h)
    features = layers.Dense(128, activation="relu", name=FEATURES_LAYER)(h)
    out = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(features)
    return keras.Model(x, out, name="judge")


def train_judge(splits: Splits, log=print, seed=0):
    """Train on the train split; returns (model, meta with test accuracy and fingerprint)."""
    import time

    import keras

    from trainer.device import float32_policy
    from trainer.progress import Progress, format_duration

    keras.utils.set_random_seed(seed)
    n = len(splits.train_images)
    batch = min(BATCH, n)
    steps_per_epoch = n // batch
    epochs = max(EPOCHS, -(-MIN_STEPS // steps_per_epoch))
    log(f"training the judge for {splits.name}: {n} images, {epochs} epochs of {steps_per_epoch} steps "
        f"(cached afterwards)")
    with float32_policy():  # the same judge whatever precision the run that needs it trains in
        model = build_classifier(splits.image_shape, len(splits.class_names))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    progress = Progress(epochs * steps_per_epoch, label="judge", warmup=True)  # its first batch compiles

    class Advance(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            progress.update(extra=lambda: f"accuracy {float(logs.get('accuracy', 0)):.3f}" if logs else "")

    dataset = _batches(splits.train_images, splits.train_labels, batch, seed)
    t0 = time.monotonic()
    # One long Keras epoch: per-epoch overhead would dominate on tiny datasets.
    model.fit(dataset, epochs=1, steps_per_epoch=epochs * steps_per_epoch, verbose=0, shuffle=False, callbacks=[Advance()])
    progress.close()
    accuracy = accuracy_on_test(Judge(model, {"class_names": splits.class_names, "test_accuracy": 0}), splits)
    seconds = time.monotonic() - t0
    log(f"judge test accuracy {accuracy:.4f} on {len(splits.test_images)} images ({format_duration(seconds)})")
    meta = {"dataset": splits.name, "class_names": list(splits.class_names), "image_shape": list(splits.image_shape),
            "test_accuracy": accuracy, "test_images": len(splits.test_images), "train_images": n,
            "fingerprint": splits.fingerprint(), "test_fingerprint": splits.test_fingerprint(), "recipe": RECIPE, "epochs": epochs, "seconds": seconds}
    return model, meta


def _batches(images, labels, batch, seed):
    """Shuffled batches without end: tf.data on TensorFlow (as the cached judges were trained), else a
    numpy generator (the JAX path never imports TensorFlow)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return (tf.data.Dataset.from_tensor_slices((images, labels))
                .shuffle(len(images), seed=seed, reshuffle_each_iteration=True).repeat()
                .batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE))

    def forever():
        rng = np.random.default_rng(seed)
        while True:
            order = rng.permutation(len(images))
            for i in range(0, len(order) - batch + 1, batch):
                yield images[order[i:i + batch]], labels[order[i:i + batch]]

    return forever()

