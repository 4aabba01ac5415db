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
