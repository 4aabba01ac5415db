"""The exported generator: a Keras model plus `generator.json` that describes it.

`export_generator` writes the folder atomically; `load_generator` reads it back
into a `Generator` that makes uint8 images of a chosen class without needing to
know how it was trained.
"""

import json
from pathlib import Path

import numpy as np

from trainer.errors import UsageError
from trainer.fsutil import atomic_dir
from trainer.images import tile, to_uint8

MODEL_FILE = "generator.keras"
META_FILE = "generator.json"
MAX_COUNT = 1_000_000


def export_generator(model, meta: dict, out_dir) -> Path:
    with atomic_dir(out_dir) as tmp:
        model.save(tmp / MODEL_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    return Path(out_dir)


def float32_model(model, rebuild):
    """`model`, or when it computes in a mixed policy, a float32 twin (`rebuild()`) with its weights,
    so an export loads and runs anywhere, CPUs included. The global policy is left as it was."""
    import keras

    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = rebuild()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def read_meta(path) -> dict:
    """An exported generator's generator.json, checked; no TensorFlow or Keras needed."""
    path = Path(path)
    if not (path / META_FILE).is_file() or not (path / MODEL_FILE).is_file():
        raise UsageError(
            f"{path} is not an exported generator (it needs {META_FILE} and {MODEL_FILE}); "
            "point at the generator/ folder of a finished run"
        )
    try:
        meta = json.loads((path / META_FILE).read_text())
        meta["z_dim"], meta["image_shape"]
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path / META_FILE} is corrupted ({e}); export the generator again") from None
    return meta


def load_generator(path) -> "Generator":
    path = Path(path)
    meta = read_meta(path)
    import keras

    try:
        model = keras.models.load_model(path / MODEL_FILE, compile=False)
    except Exception as e:  # Keras raises many kinds; all mean the same to a user.
        raise UsageError(f"cannot load {path / MODEL_FILE} ({type(e).__name__}); export the generator again") from None
    return Generator(model, meta)


class Generator:
    """A trained generator and what it knows about its data."""

    def __init__(self, model, meta: dict):
        self.model = model
        self.meta = meta
        self.class_names = list(meta.get("class_names") or [])
        self.conditional = bool(meta.get("conditional", bool(self.class_names)))
        self.z_dim = int(meta["z_dim"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.conditional else 0

    def class_index(self, target_class) -> int:
        """A class given by index (int or digit string) or by name -> its index."""
        if not self.conditional:
            raise UsageError("this generator is unconditional (trained with --model dcgan); leave out --class")
        names = self.class_names
        if isinstance(target_class, (int, np.integer)) and not isinstance(target_class, bool):
            index = int(target_class)
        elif isinstance(target_class, str) and target_class in names:
            index = names.index(target_class)
        elif isinstance(target_class, str) and target_class.lstrip("-").isdigit():
            index = int(target_class)
        else:
            raise UsageError(f"unknown class '{target_class}'; choose an index 0-{len(names) - 1} or one of: {', '.join(names)}")
        if not 0 <= index < len(names):
            raise UsageError(f"class index {index} is out of range; this generator has classes 0-{len(names) - 1}")
        return index

    def _z(self, rng, count):
        if self.meta.get("z_distribution", "uniform") == "normal":
            return rng.standard_normal((count, self.z_dim)).astype(np.float32)
        return rng.uniform(-1.0, 1.0, (count, self.z_dim)).astype(np.float32)

    def generate(self, target_class=None, count=1, seed=None, batch_size=500) -> np.ndarray:
        """`count` images as uint8 (N, H, W, C); a conditional generator with no class gives an even mix."""
        if not isinstance(count, (int, np.integer)) or not 1 <= count <= MAX_COUNT:
            raise UsageError(f"--count {count}: must be between 1 and {MAX_COUNT}")
        rng = np.random.default_rng(seed)
        z = self._z(rng, count)
        if self.conditional:
            if target_class is None:
                labels = np.arange(count) % self.num_classes
            else:
                labels = np.full(count, self.class_index(target_class))
            onehot = np.eye(self.num_classes, dtype=np.float32)[labels]
        elif target_class is not None:
            self.class_index(target_class)  # raises the clear error
        out = []
        for i in range(0, count, batch_size):
            inputs = [z[i:i + batch_size], onehot[i:i + batch_size]] if self.conditional else z[i:i + batch_size]
            out.append(to_uint8(self.model(inputs, training=False)))
        return np.concatenate(out)

    def grid(self, target_class=None, rows=None, cols=None, seed=None, scale=2):
        """A PIL image: one class in rows x cols, or (no class) one row per class."""
        if target_class is None and self.conditional:
            rows = rows or min(self.num_classes, 10)
            cols = cols or 10
            classes = class_rows(self.num_classes, rows)
            images = np.concatenate([self.generate(c, cols, seed) for c in classes])
            return tile(images, rows, cols, scale=scale, row_labels=[self.class_names[c] for c in classes])
        rows, cols = rows or 5, cols or 5
        return tile(self.generate(target_class, rows * cols, seed), rows, cols, scale=scale)


def class_rows(num_classes: int, rows: int) -> list[int]:
    """Which classes get a row when only `rows` fit: spread evenly over all of them."""
    if num_classes <= rows:
        return list(range(num_classes))
    return [int(round(i * (num_classes - 1) / (rows - 1))) for i in range(rows)] if rows > 1 else [0]
