"""docker/Dockerfile and the build context `launcher image push` sends, read as Docker reads them: no engine
runs here, so the context is worked out with the Docker SDK's own .dockerignore matcher (moto[server] brings it)."""

import re
from pathlib import Path

from docker.utils.build import exclude_paths

ROOT = Path(__file__).resolve().parent.parent


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments left out."""
    lines = [line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(words[0].upper(), words[1] if len(words) > 1 else "")
            for words in (line.split(None, 1) for line in joined.splitlines() if line.strip())]


def copy_sources(arguments: str) -> list[str]:
    """A COPY's sources: its words but the options (--chmod=...) and the last, the destination."""
    return [word.rstrip("/") for word in arguments.split() if not word.startswith("--")][:-1]


def build_context(root: Path) -> set[str]:
    """The files `docker build ... root` sends to the engine, per root/.dockerignore."""
    patterns = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    return {path for path in exclude_paths(str(root), patterns, dockerfile="docker/Dockerfile")
            if (root / path).is_file()}


def test_the_image_installs_the_pins_ci_tests_with():
    steps = instructions(ROOT / "docker" / "Dockerfile")
    install = next(i for i, (name, args) in enumerate(steps) if name == "RUN" and "pip install" in args)
    # Without the pins each build took the newest releases pyproject.toml allows, not the ones CI tested.
    assert "-c constraints.txt" in steps[install][1]
    copied = [source for name, args in steps[:install] if name == "COPY" for source in copy_sources(args)]
    assert "constraints.txt" in copied
    # A source .dockerignore leaves out fails the build ("constraints.txt: not found") only on a machine with
    # an engine; here, each must be in the context as a file or a folder with files.
    context = build_context(ROOT)
    for source in (s for name, args in steps if name == "COPY" for s in copy_sources(args)):
        assert source in context or any(path.startswith(f"{source}/") for path in context), source


def test_a_working_checkout_sends_only_what_the_image_copies(tmp_path):
    (tmp_path / ".dockerignore").write_bytes((ROOT / ".dockerignore").read_bytes())
    wanted = {"pyproject.toml", "setup.py", "README.md", "constraints.txt", "trainer/__init__.py",
              "trainer/data/idx.py", "launcher/cli.py", "infra/base.yaml", "docker/Dockerfile", "docker/train",
              "examples/pull_and_generate.ipynb"}
    # What a checkout gathers as it is used: venvs, wheels, datasets, runs, pulled generators; the example
    # notebook, opened in examples/, pulls into examples/generators/ (Jupyter's working folder is the notebook's).
    gathered = {".ci-venv/lib/python3.11/site-packages/tensorflow/libtensorflow_cc.so.2", ".whl/gankit-0.1.0.whl",
                ".data/zalando/train-images-idx3-ubyte", "runs/gan-1/output/metrics.jsonl", "gankit.egg-info/PKG-INFO",
                "gan-zalando-cgan-1/generator/generator.keras", "trainer/__pycache__/cli.cpython-311.pyc",
                "examples/generators/gan-1/generator.keras",
                "examples/.ipynb_checkpoints/pull_and_generate-checkpoint.ipynb"}
    for path in wanted | gathered:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    assert build_context(tmp_path) == wanted | {".dockerignore"}
