"""The exported generator: a Keras model plus `generator.json` that describes it.

`export_generator` writes the folder atomically; `load_generator` reads it back
into a `Generator` that makes uint8 images of a chosen class without needing to
know how it was trained.
"""

import json
import re
import weakref
from pathlib import Path

import numpy as np

from trainer.config import MAX_Z_DIM  # the same bound as `train --z-dim`
from trainer.errors import UsageError
from trainer.fsutil import atomic_dir, composed, folded
from trainer.images import tile, to_uint8

MODEL_FILE = "generator.keras"
META_FILE = "generator.json"
MAX_COUNT = 1_000_000
GRID_ROWS = 10  # a grid of every class has one row per class, this many at most (spread over them)


def export_generator(model, meta: dict, out_dir) -> Path:
    with atomic_dir(out_dir) as tmp:
        model.save(tmp / MODEL_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    return Path(out_dir)


# Keras releases that fixed ways past safe mode: CVE-2025-1550 (3.9), CVE-2025-8747 and
# CVE-2025-9906 (3.11.0), CVE-2025-9905 (HDF5, 3.11.3), CVE-2026-1462 (TFSMLayer, 3.12.1 and 3.14.0).
SAFE_KERAS = "3.14"  # pyproject's trainer extra asks for the same (3.12.1-3.12.x on Python 3.10)


def require_safe_keras():
    """Refuse to deserialise a model with a Keras that has known safe-mode bypasses."""
    import keras

    version = tuple(int(p) for p in keras.__version__.split(".")[:3] if p.isdigit())
    if not (version >= (3, 14) or (3, 12, 1) <= version < (3, 13)):
        raise UsageError(f"Keras {keras.__version__} has known safe-mode bypasses (loading a hostile model could run code); "
                         f"upgrade it: pip install 'keras>={SAFE_KERAS}'")


_float32_twins = weakref.WeakKeyDictionary()  # a mixed-precision model -> its float32 twin (float32_model)


def float32_model(model, rebuild):
    """`model`, or when it computes in a mixed policy, a float32 twin (`rebuild()`) with its weights,
    so an export loads and runs anywhere, CPUs included. The global policy is left as it was.

    The twin is built once per model and given the model's weights at each call: a run with --eval-every
    exports its sampled generator at every new best FCD and again at the end, and rebuilding the network
    each time cost more host time than copying the weights (each call's result holds them until the next)."""
    from trainer.device import float32_policy

    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    twin = _float32_twins.get(model)
    if twin is None:
        with float32_policy():
            twin = _float32_twins[model] = rebuild()
    twin.set_weights(model.get_weights())
    return twin


def read_meta(path) -> dict:
    """An exported generator's generator.json, checked; no TensorFlow or Keras needed."""
    path = Path(path)
    if not (path / META_FILE).is_file() or not (path / MODEL_FILE).is_file():
        # A run killed between atomic_dir's two renames left its last export aside; its next start puts it back.
        if [*path.glob(".generator.tmp-old-*"), *path.parent.glob(f".{path.name}.tmp-old-*")]:
            raise UsageError(f"{path} holds no exported generator: a run stopped while replacing it left the last "
                             "one aside; run the same `train` command again, which puts it back")
        raise UsageError(
            f"{path} is not an exported generator (it needs {META_FILE} and {MODEL_FILE}); "
            "point at the generator/ folder of a finished run"
        )
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{path / META_FILE} is corrupted ({e}); export the generator again") from None
    problem = meta_problem(meta)
    if problem:
        raise UsageError(f"{path / META_FILE}: {problem}; export the generator again") from None
    return meta


def load_generator(path) -> "Generator":
    path = Path(path)
    meta = read_meta(path)
    require_safe_keras()
    import keras

    try:
        # safe_mode=True (Keras' default, spelled out so it never changes silently): a
        # generator from a bucket is untrusted, and a Lambda layer's Python code must not run.
        model = keras.models.load_model(path / MODEL_FILE, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many kinds; all mean the same to a user.
        if "safe_mode" in str(e):
            raise UsageError(f"cannot load {path / MODEL_FILE}: it holds unsafe Python code (refused by Keras safe mode); "
                             "load only generators gankit exported") from None
        raise UsageError(f"cannot load {path / MODEL_FILE} ({type(e).__name__}); export the generator again") from None
    problem = model_problem(model, meta)
    if problem:
        raise UsageError(f"{path / META_FILE}: {problem}; export the generator again") from None
    return Generator(model, meta)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def meta_problem(meta) -> str | None:
    """What is wrong with a generator.json's contents, or None."""
    if not isinstance(meta, dict):
        return "not a JSON object"
    z_dim = meta.get("z_dim")
    if not _whole(z_dim):
        return f"z_dim {z_dim!r} is not a whole number"
    if not 1 <= z_dim <= MAX_Z_DIM:
        return f"z_dim {z_dim} must be positive and at most {MAX_Z_DIM}"
    shape = meta.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_whole(v) and v >= 1 for v in shape)):
        return f"image_shape {shape!r} is not [height, width, channels]"
    names = meta.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in names):
        return f"class_names {names!r} is not a list of names"
    if meta.get("z_distribution", "uniform") not in ("uniform", "normal"):
        return f"z_distribution {meta['z_distribution']!r} is not uniform or normal"
    if not isinstance(meta.get("conditional", bool(names)), bool):
        return f"conditional {meta['conditional']!r} is not true or false"
    return None


def model_problem(model, meta) -> str | None:
    """Where generator.json and the network disagree (z length, image shape, classes), or None."""
    shapes = [tuple(t.shape) for t in model.inputs]
    z_len = shapes[0][-1]
    if z_len != meta["z_dim"]:
        return f"z_dim {meta['z_dim']} does not fit the network, which takes {z_len}"
    made = tuple(model.outputs[0].shape[1:])  # evaluate's judge and real images are sized from image_shape
    if len(made) != 3 or any(m is not None and m != v for m, v in zip(made, meta["image_shape"])):
        return f"image_shape {meta['image_shape']} does not fit the network, which makes {list(made)}"
    conditional = meta.get("conditional", bool(meta.get("class_names")))
    classes = shapes[1][-1] if len(shapes) > 1 else 0
    if conditional and len(meta.get("class_names") or []) != classes:
        return f"class_names lists {len(meta.get('class_names') or [])} but the network takes {classes} classes"
    if not conditional and classes:
        return f"the network takes {classes} classes but generator.json says it is unconditional"
    return None


class Generator:
    """A trained generator and what it knows about its data."""

    def __init__(self, model, meta: dict):
        self.model = model
        self.meta = meta
        # As text: --class is text, and a hand-written generator.json may list a folder named 3 as the number 3.
        self.class_names = [str(name) for name in meta.get("class_names") or []]
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
        else:
            index = _index_named(str(target_class), names)
        if not 0 <= index < len(names):
            raise UsageError(f"class index {index} is out of range; this generator has classes 0-{len(names) - 1}")
        return index

    def _z(self, rng, count):
        if self.meta.get("z_distribution", "uniform") == "normal":
            return rng.standard_normal((count, self.z_dim)).astype(np.float32)
        return rng.uniform(-1.0, 1.0, (count, self.z_dim)).astype(np.float32)

    def generate(self, target_class=None, count=1, seed=None, batch_size=500, labels=None,
                 on_batch=None) -> np.ndarray:
        """`count` images as uint8 (N, H, W, C); a conditional generator with no class gives an even mix.
        `labels` (conditional only) names each image's class index instead: then count is len(labels).
        `on_batch(n)`, when given, hears of each batch of `n` images made (for a progress bar)."""
        if labels is not None:
            labels = np.asarray(labels, np.int64).reshape(-1)
            if not self.conditional or (len(labels) and not 0 <= labels.min() <= labels.max() < self.num_classes):
                raise UsageError(f"labels must be class indexes 0-{self.num_classes - 1} of a conditional generator")
            count = len(labels)
        if not isinstance(count, (int, np.integer)) or not 1 <= count <= MAX_COUNT:
            raise UsageError(f"--count {count}: must be between 1 and {MAX_COUNT}")
        rng = np.random.default_rng(seed)
        z = self._z(rng, count)
        if self.conditional:
            if labels is None and target_class is None:
                labels = np.arange(count) % self.num_classes
            elif labels is None:
                labels = np.full(count, self.class_index(target_class))
            onehot = np.eye(self.num_classes, dtype=np.float32)[labels]
        elif target_class is not None:
            self.class_index(target_class)  # raises the clear error
        out = []
        for i in range(0, count, batch_size):
            inputs = [z[i:i + batch_size], onehot[i:i + batch_size]] if self.conditional else z[i:i + batch_size]
            out.append(to_uint8(self._forward(inputs)))
            if on_batch:
                on_batch(len(out[-1]))
        return np.concatenate(out)

    def _forward(self, inputs):
        import keras

        if keras.backend.backend() == "jax":
            # One compiled call (per batch shape); op-by-op eager JAX compiles every layer's ops separately.
            return self.model.predict_on_batch(inputs)
        return self.model(inputs, training=False)

    def grid(self, target_class=None, rows=None, cols=None, seed=None, scale=2):
        """A PIL image: one class in rows x cols, or (no class) one row per class."""
        if target_class is None and self.conditional:
            rows = rows or min(self.num_classes, GRID_ROWS)
            cols = cols or 10
            classes = class_rows(self.num_classes, rows)
            images = np.concatenate([self.generate(c, cols, seed) for c in classes])
            return tile(images, rows, cols, scale=scale, row_labels=[self.class_names[c] for c in classes])
        rows, cols = rows or 5, cols or 5
        return tile(self.generate(target_class, rows * cols, seed), rows, cols, scale=scale)


def _index_named(text: str, names) -> int:
    """The index of the class `text` names: the class of exactly that name first (a folder named 3 wins over the
    index 3), else a position (digits), else the one class the name stands for loosely."""
    if text in names:  # before the composed match: café and cafe + U+0301 may be two folders, so two classes
        return names.index(text)
    names_composed = [composed(n) for n in names]  # a class named after a macOS folder keeps its decomposed name
    if composed(text) in names_composed:
        return names_composed.index(composed(text))
    if re.fullmatch(r"-?[0-9]+", text):  # not isdigit(), which int() fails on ("²") or takes silently ("３")
        if _numbered_out_of_place(names):  # "3" could mean the 4th class or a class named 3 that is elsewhere
            raise UsageError(f"no class is named '{text}', and this generator's classes are named with numbers "
                             f"that are not their positions ({_preview(names)}); give --class one of these names")
        return int(text)
    if text.lstrip("-").isdigit():
        raise UsageError(f"class '{text}' is written with digits other than 0-9; give an index in 0-9 digits "
                         f"(0-{len(names) - 1}) or one of: {_preview(names)}")
    # Nearer matches first: "Cat" is cat, not also cats, which only the plural rule adds.
    for matches in (_case_matches(text, names), _loose_matches(text, names)):
        if len(matches) == 1:  # "Ankle boot", "T-shirt/top", "Sneakers" for ankle_boots, t_shirt_top, sneaker
            return matches[0]
        if matches:
            raise UsageError(f"class '{text}' is ambiguous: it could be {' or '.join(names[i] for i in matches)}; "
                             "give --class the exact name")
    raise UsageError(f"unknown class '{text}'; choose an index 0-{len(names) - 1} or one of: {', '.join(names)}")


def _case_matches(text: str, names) -> list[int]:
    """The indexes of the class names `text` is but for case."""
    return [i for i, name in enumerate(names) if folded(name) == folded(text)]


def _numbered_out_of_place(names) -> bool:
    """Whether a class name is a number other than its own index (folders 10/, 3/, 7/ sort as 10, 3, 7)."""
    return any(re.fullmatch(r"[0-9]+", name) and int(name) != i for i, name in enumerate(names))


def _preview(names, most=10) -> str:
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def _name_key(name) -> str:
    """A class name without case, spaces or punctuation: "T-shirt/top" and t_shirt_top are both tshirttop."""
    return "".join(ch for ch in composed(name).lower() if ch.isalnum())


def _loose_matches(name: str, names) -> list[int]:
    """The indexes of the class names `name` stands for, ignoring case, punctuation and a plural s
    (the exact name, then the name but for case, are matched before this; two or more matches are ambiguous)."""
    key = _name_key(name)
    if not key:
        return []
    return [i for i, n in enumerate(names) if key in (_name_key(n), _name_key(n) + "s") or _name_key(n) == key + "s"]


def class_rows(num_classes: int, rows: int) -> list[int]:
    """Which classes get a row when only `rows` fit: spread evenly over all of them."""
    if num_classes <= rows:
        return list(range(num_classes))
    return [int(round(i * (num_classes - 1) / (rows - 1))) for i in range(rows)] if rows > 1 else [0]
