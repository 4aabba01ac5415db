"""The README's examples do what they say."""

import re
import shlex
from pathlib import Path

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
