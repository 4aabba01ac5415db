"""Property: whatever malformed input reaches the real entry points, the answer is a non-zero exit,
one line, no traceback, and nothing half-written.

Runs in-process (the CLIs' own `main`), so each example costs milliseconds; the examples
are built to be invalid, never merely unusual.
"""

import contextlib
import io
import json
import math
import shutil
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.data_helpers import IDX_FILES, make_idx_dataset

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)


def call(main, argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def assert_one_clean_line(code, err, exit_code=2):
    assert code == exit_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


_DATA = {}


def data_dir() -> Path:
    """One small valid MNIST-layout dataset for the whole module (hypothesis forbids function fixtures)."""
    if "dir" not in _DATA:
        _DATA["dir"] = make_idx_dataset(Path(tempfile.mkdtemp(prefix="gankit-prop-")), n_train=32, n_test=16)
    return _DATA["dir"]


def not_a_number(text):
    for parse in (int, float):
        with contextlib.suppress(ValueError):
            parse(text)
            return False
    return True


garbage = TEXT.filter(not_a_number)
ints_below = lambda n: st.integers(max_value=n - 1) | garbage  # noqa: E731
finite_or_not = st.floats(allow_nan=True, allow_infinity=True)

BAD_OPTIONS = {
    "--epochs": ints_below(1),
    "--batch-size": ints_below(1) | st.integers(min_value=33, max_value=10**12),  # larger than the 32 images
    "--z-dim": ints_below(1) | st.integers(min_value=4097),
    "--keep-checkpoints": ints_below(1),
    "--max-steps": ints_below(1),
    "--eval-every": ints_below(1),
    "--seed": ints_below(0) | st.integers(min_value=2**32),  # numpy seeds are 32-bit
    "--lr": finite_or_not.filter(lambda x: not (0 < x < 1)) | garbage,
    "--beta1": finite_or_not.filter(lambda x: not (0 <= x < 1)) | garbage,
    "--smooth": finite_or_not.filter(lambda x: not (0 <= x < 0.5)) | garbage,
    "--checkpoint-minutes": finite_or_not.filter(lambda x: not x > 0 or math.isnan(x)) | garbage,
    "--image-size": st.integers().filter(lambda x: not (16 <= x <= 256 and x % 4 == 0)) | garbage,
    "--channels": st.integers().filter(lambda x: x not in (1, 3)) | garbage,
    "--precision": TEXT.filter(lambda s: s not in ("auto", "float32", "mixed_float16", "mixed_bfloat16")),
    "--xla": TEXT.filter(lambda s: s not in ("auto", "on", "off")),
    "--strategy": TEXT.filter(lambda s: s not in ("auto", "default", "mirrored", "multiworker")),
    "--model": TEXT.filter(lambda s: s not in ("cgan", "dcgan")),
    "--preset": TEXT.filter(lambda s: s not in ("seed", "default")),
}


@st.composite
def bad_hyperparameters(draw):
    flags = draw(st.lists(st.sampled_from(sorted(BAD_OPTIONS)), min_size=1, max_size=2, unique=True))
    return [f"{flag}={draw(BAD_OPTIONS[flag])}" for flag in flags]


@settings(max_examples=150, deadline=None)  # each is rejected before any data is read: milliseconds
@given(bad_hyperparameters())
def test_malformed_hyperparameters(options):
    from trainer.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        code, err = call(main, ["train", "--dataset", "mnist", "--data-dir", str(data_dir()),
                                "--output-dir", str(out), *options])
        assert_one_clean_line(code, err)
        assert not out.exists()  # not even an empty folder


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                           max_leaves=6)
GENERATOR_KEYS = ["z_dim", "image_shape", "class_names", "conditional", "z_distribution"]


@st.composite
def bad_generator_json(draw):
    kind = draw(st.sampled_from(["object", "other json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "other json":
        return json.dumps(draw(json_values)).encode()
    meta = {"z_dim": 8, "image_shape": [28, 28, 1], "class_names": ["a", "b"], "conditional": True}
    for key in draw(st.lists(st.sampled_from(GENERATOR_KEYS), min_size=1, unique=True)):
        if draw(st.booleans()):
            meta.pop(key, None)
        else:
            meta[key] = draw(json_values)
    return json.dumps(meta).encode()


@FAST
@given(bad_generator_json(), st.binary(max_size=64))
def test_malformed_generator_folders(meta_bytes, model_bytes):
    """generator.json anything at all, and a generator.keras that is not a Keras archive: one line, no --out."""
    from trainer.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "generator"
        folder.mkdir()
        (folder / "generator.json").write_bytes(meta_bytes)
        (folder / "generator.keras").write_bytes(model_bytes)
        code, err = call(main, ["generate", str(folder), "--out", str(Path(tmp) / "x.png")])
        assert_one_clean_line(code, err)
        assert files_under(Path(tmp)) == ["generator", "generator/generator.json", "generator/generator.keras"]


@st.composite
def bad_idx_file(draw):
    zero = draw(st.sampled_from([0, 0, 0, 1, 0x1F8B]))
    code = draw(st.sampled_from([0x08, 0x08, 0x09, 0x0B, 0x0D, 0x0E, 0x00, 0x42]))
    dims = draw(st.lists(st.integers(0, 40) | st.integers(0, 2**32 - 1), min_size=0, max_size=4))
    header = struct.pack(">HBB", zero, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    header = header[:draw(st.integers(0, len(header)))] if draw(st.booleans()) else header
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0D: 4, 0x0E: 8}.get(code, 1)
    size = math.prod(dims) * itemsize if dims else 0
    length = draw(st.sampled_from([size, size + 1, max(size - 1, 0), 0])) if size < 1 << 16 else draw(st.integers(0, 64))
    valid = (zero, code, tuple(dims)) == (0, 0x08, (32, 28, 28)) and length == size and len(header) == 4 + 12
    assume(not valid)  # the one shape that is simply a good training file
    return header + bytes(length)


@FAST
@given(bad_idx_file(), st.sampled_from(["images", "labels"]))
def test_malformed_idx_files(content, which):
    from trainer.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        shutil.copytree(data_dir(), data)
        images, labels = IDX_FILES["train"]
        (data / (images if which == "images" else labels)).write_bytes(content)  # read by content, gz or not
        out = Path(tmp) / "run"
        code, err = call(main, ["train", "--dataset", "mnist", "--data-dir", str(data), "--output-dir", str(out),
                                "--batch-size", "8"])
        assert_one_clean_line(code, err)
        assert not out.exists()


@FAST
@given(st.dictionaries(TEXT.filter(lambda k: k not in ("dataset", "output_dir", "checkpoint_dir")), json_values,
                       max_size=4) | json_values.filter(lambda v: not isinstance(v, dict)))
def test_malformed_sagemaker_hyperparameters(hyperparameters):
    """The container's `train` entry: anything in hyperparameters.json without a dataset fails in one line."""
    import os

    from trainer import contract

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "input" / "config").mkdir(parents=True)
        (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
        old = os.environ.get("GANKIT_SM_ROOT")
        os.environ["GANKIT_SM_ROOT"] = str(root)
        try:
            code, err = call(contract.main, None)
        finally:
            if old is None:
                os.environ.pop("GANKIT_SM_ROOT")
            else:
                os.environ["GANKIT_SM_ROOT"] = old
        assert_one_clean_line(code, err)
        failure = (root / "output" / "failure").read_text()
        assert failure.count("\n") == 1 and failure.strip() == err.strip()[len("error: "):]
        assert not (root / "model").exists() and not (root / "checkpoints").exists()
