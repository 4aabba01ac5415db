"""The README's examples do what they say."""

import re
import shlex
from pathlib import Path

import pytest

from tests.cli_helpers import run_trainer
from trainer.data.catalog import ZALANDO

README = Path(__file__).resolve().parents[1] / "README.md"


def test_generate_examples_draw_the_class_their_file_is_named_after():
    # Every `generate ... --class C ... --out F` in the README is a Fashion-MNIST example.
    commands = re.findall(r"generate \S+ ([^`\n]*--class [^`\n]*)", README.read_text())
    assert len(commands) >= 4
    for command in commands:
        args = shlex.split(command)
        wanted, out = args[args.index("--class") + 1], args[args.index("--out") + 1]
        name = ZALANDO.class_names[int(wanted)] if wanted.isdigit() else wanted
        assert name in ZALANDO.class_names and Path(out).stem == f"{name}s", command


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but hyphens dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_inside_the_readme_leads_to_one_of_its_headings():
    text = README.read_text()
    anchors = {github_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert len(links) >= 14  # the contents line alone has 14
    assert github_anchor("GPU figures: `benchmarks/gpu.py`") == "gpu-figures-benchmarksgpupy"
    assert sorted(set(links) - anchors) == []


def test_the_preset_names_and_aliases_are_the_registry_s():
    # The launcher's options and the presets table name every preset and alias as trainer/presets.py has them:
    # a renamed or added preset (or an alias that now means another one) shows up here, not in a user's error.
    from trainer.presets import ALIASES, DEFAULT_PRESET, PRESETS

    text = README.read_text()
    listed = re.search(r"`--preset\s+([\w|-]+)`", text).group(1).split("|")
    assert listed == list(PRESETS)
    header = next(line for line in text.splitlines() if line.startswith("| | `--preset"))
    columns = [c.strip() for c in header.strip("|").split("|")][1:]
    assert [re.match(r"`--preset ([\w-]+)`", c).group(1) for c in columns] == list(PRESETS)
    for column, name in zip(columns, PRESETS):
        aliases = {alias for alias, target in ALIASES.items() if target == name}
        assert set(re.findall(r"alias `([\w-]+)`", column)) == aliases, column
        assert ("the default" in column) == (name == DEFAULT_PRESET), column


@pytest.mark.slow  # exports a small generator and loads Keras
def test_the_npy_generate_writes_is_the_array_the_readme_describes(tmp_path, capsys):
    """What a judge scoring the generator reads: the README must say the array's dtype, shape and pixel range."""
    import numpy as np

    from trainer.export import export_generator
    from trainer.models import build_generator

    text = " ".join(README.read_text().split())
    described = re.search(r"A `\.npy` holds `--count` images \(100 if not given\) as one `(\w+)` array of shape "
                          r"`\(N, H, W, C\)`.*?`\(N, (\d+), (\d+), (\d+)\)` for mnist, zalando and emnist.*?"
                          r"pixels (\d+)-(\d+)", text)
    assert described, "the README does not say what a .npy from generate holds"
    dtype, h, w, c, low, high = described.groups()
    meta = {"dataset": "zalando", "class_names": list(ZALANDO.class_names), "conditional": True, "model": "cgan",
            "z_dim": 8, "z_distribution": "normal", "image_shape": [28, 28, 1], "value_range": [-1.0, 1.0]}
    folder = export_generator(build_generator("projection", 8, (28, 28, 1), 10), meta, tmp_path / "generator")
    code, captured = run_trainer(capsys, "generate", folder, "--class", "T-shirt/top", "--count", 1000, "--seed", 0,
                                 "--out", tmp_path / "tops.npy")
    assert code == 0, captured.err
    images = np.load(tmp_path / "tops.npy")
    assert images.dtype == np.dtype(dtype) and images.shape == (1000, int(h), int(w), int(c))
    assert int(low) <= images.min() and images.max() <= int(high)
    code, captured = run_trainer(capsys, "generate", folder, "--out", tmp_path / "default.npy")
    assert code == 0, captured.err
    assert np.load(tmp_path / "default.npy").shape[0] == 100
