"""docker/Dockerfile and the build context `launcher image push` sends, read as Docker reads them: no engine
runs here, so the context is worked out with the Docker SDK's own .dockerignore matcher (moto[server] brings it)."""

import re
import subprocess
import sys
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


def _install_steps(steps):
    """The index of the RUN that installs the dependencies, and of the one that installs gankit itself."""
    installs = [i for i, (name, args) in enumerate(steps) if name == "RUN" and "pip install" in args]
    assert len(installs) == 2, steps
    return installs


def test_a_code_edit_leaves_the_dependency_layer_cached():
    steps = instructions(ROOT / "docker" / "Dockerfile")
    dependencies, itself = _install_steps(steps)
    # Docker reuses a layer while nothing copied before it changed: were trainer/ copied first, each code edit
    # reinstalled every dependency (JAX's CUDA wheels alone are gigabytes).
    before = {source for name, args in steps[:dependencies] if name == "COPY" for source in copy_sources(args)}
    assert before == {"pyproject.toml", "constraints.txt", "docker/dependencies.py"}
    install = steps[dependencies][1]
    assert "docker/dependencies.py trainer" in install and "-c constraints.txt" in install
    assert "'jax[cuda12]>=0.4.30'" in install  # both backends
    assert "useradd --create-home --uid 1000" in install
    # gankit itself after its code, with nothing more to resolve.
    code = {source for name, args in steps[dependencies:itself] if name == "COPY" for source in copy_sources(args)}
    assert {"setup.py", "README.md", "trainer", "launcher", "infra", "docker", "examples"} <= code
    assert "--no-deps" in steps[itself][1] and steps[itself][1].split("&&")[0].rstrip().endswith(" .")


def requirement_set(lines, extra: str, python: str) -> set[str]:
    """The requirements among `lines` that pip installs for `extra` on Python `python`, markers left off."""
    from packaging.requirements import Requirement

    chosen = set()
    for line in lines:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": extra, "python_version": python}):
            requirement.marker = None
            chosen.add(str(requirement))
    return chosen


def test_the_dependency_layer_installs_what_the_trainer_extra_requires(built_wheel):
    from email.parser import Parser
    from zipfile import ZipFile

    listed = subprocess.run([sys.executable, str(ROOT / "docker" / "dependencies.py"), "--pyproject",
                             str(ROOT / "pyproject.toml"), "trainer"], capture_output=True, text=True, check=True)
    with ZipFile(built_wheel) as wheel:
        metadata = next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
        required = Parser().parsestr(wheel.read(metadata).decode()).get_all("Requires-Dist")
    # What `pip install '.[trainer]'` installed before the layers were split, on either side of Keras' markers.
    for python in ("3.10", "3.12"):
        assert requirement_set(listed.stdout.splitlines(), "", python) == requirement_set(required, "trainer", python)


def test_the_dependency_list_refuses_an_extra_that_names_gankit_itself(tmp_path):
    # pip would install "gankit" from PyPI: someone else's package.
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "gankit"\ndependencies = ["numpy"]\n'
                                             '[project.optional-dependencies]\nall = ["gankit[trainer]"]\n')
    done = subprocess.run([sys.executable, str(ROOT / "docker" / "dependencies.py"), "--pyproject",
                           str(tmp_path / "pyproject.toml"), "all"], capture_output=True, text=True)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip() == "extra 'all' requires gankit itself (gankit[trainer]): name its extras instead"


def test_the_image_builds_without_buildkit():
    # `launcher image push` runs a plain `docker build`: on engines before 23.0, or with DOCKER_BUILDKIT=0, that
    # is the legacy builder, which refuses BuildKit's options (COPY --chmod, RUN --mount, heredocs).
    steps = instructions(ROOT / "docker" / "Dockerfile")
    for name, args in steps:
        assert not re.search(r"--(chmod|mount|link|parents|exclude)\b|<<", args), (name, args)
    copied = steps.index(("COPY", "docker/train /usr/local/bin/train"))
    assert any(name == "RUN" and "chmod 0755 /usr/local/bin/train" in args for name, args in steps[copied:])
