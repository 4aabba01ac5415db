"""pyproject.toml's requirements and the code's imports agree: each folder imports only what the extras it runs
with declare, and every declared requirement is used."""

import ast
import functools
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra's tomli is the same parser
    import tomli as tomllib

from packaging.requirements import Requirement

from trainer.errors import EXTRA_OF

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# The requirements each folder runs with ("" is the base install). trainer/ runs in the container (trainer or
# jax extra); launcher/ is the CLI, which starts the local trainer and SageMaker; benchmarks/ and tests/ run
# in a dev install.
FOLDERS = {
    "trainer": ("", "trainer", "jax"),
    "launcher": ("", "cloud", "trainer", "jax"),
    "docker": ("",),
    "benchmarks": ("", "all", "dev"),
    "tests": ("", "all", "dev"),
}
# Imported, not declared, and rightly so: boto3 requires its own matching botocore and s3transfer releases
# (checked below), and pip is the installer docker/dependencies.py borrows a TOML parser from on Python 3.10.
COMES_WITH = {"botocore": "boto3", "s3transfer": "boto3", "pip": None}
# Declared, not imported: the reason each is needed, as text that must be found in the named file.
NOT_IMPORTED = {
    "pytest-xdist": ("pyproject.toml", '"-ra -n 2'),  # pytest's -n (addopts)
    "jupyter-server": ("tests/test_jupyter_server.py", 'pytest.importorskip("jupyter_server")'),
}


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(extra: str) -> set[str]:
    """The distributions `extra` ("" for the base) names, gankit[...] followed."""
    names = set()
    for line in PROJECT["dependencies"] if extra == "" else PROJECT["optional-dependencies"][extra]:
        requirement = Requirement(line)
        if normal(requirement.name) == "gankit":
            names |= set().union(*(declared(e) for e in requirement.extras))
        else:
            names.add(normal(requirement.name))
    return names


def guarded(tree: ast.AST) -> set[ast.AST]:
    """Imports inside a `try:` that catches ImportError: optional ones, with a fallback."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            found |= {n for stmt in node.body for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return found


def third_party_imports(folder: str) -> dict[str, str]:
    """Top-level name -> one place ("path:line") `folder`'s Python files import it, anywhere in a file
    (imports inside functions count), optional imports left out."""
    # The project's packages, and scripts importing their neighbours (benchmarks/, docker/ have no __init__).
    local = {"trainer", "launcher", "tests", "benchmarks", "gankit_data"} | {p.stem for p in (ROOT / folder).glob("*.py")}
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        optional = guarded(tree)
        for node in ast.walk(tree):
            if node in optional:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.setdefault(top, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


@functools.cache
def providers() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distribution_of(module: str) -> str:
    """The distribution that installs `module`; one not installed here (tomli on Python 3.11+) by its own name."""
    return normal(providers().get(module, [module])[0])


def test_each_folder_imports_only_what_its_extras_declare():
    missing = []
    for folder, extras in FOLDERS.items():
        allowed = set().union(*(declared(e) for e in extras))
        for module, where in third_party_imports(folder).items():
            dist = distribution_of(module)
            if dist not in allowed and dist not in COMES_WITH:
                missing.append(f"{where} imports {module} ({dist}), which none of {extras} declares")
    assert not missing, "\n".join(missing)


def test_what_comes_with_a_declared_requirement_is_required_by_it():
    for dist, parent in COMES_WITH.items():
        if parent:
            assert dist in {normal(Requirement(r).name) for r in metadata.requires(parent)}, (dist, parent)


def test_every_declared_requirement_is_used():
    used = {distribution_of(m) for folder in FOLDERS for m in third_party_imports(folder)}
    unused = []
    for extra in ("", *PROJECT["optional-dependencies"]):
        for dist in declared(extra) - used:
            reason = NOT_IMPORTED.get(dist)
            if reason is None or reason[1] not in (ROOT / reason[0]).read_text():
                unused.append(f"{extra or 'base'}: {dist}")
    assert not unused, "declared but never imported: " + ", ".join(sorted(set(unused)))


def test_the_extra_named_for_a_missing_package_declares_it():
    for module, extra in EXTRA_OF.items():
        assert distribution_of(module.partition(".")[0]) in declared(extra), (module, extra)


# --- the base install: `pip install gankit`, no extras ---------------------------------------------------

def link_base_install(site: Path):
    """Fill `site` with symlinks to exactly what `pip install gankit` installs from this venv: the base
    requirements and, recursively, theirs (no extras)."""
    todo, seen = [Requirement(r) for r in PROJECT["dependencies"]], set()
    while todo:
        requirement = todo.pop()
        name = normal(requirement.name)
        if name in seen or requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        seen.add(name)
        dist = metadata.distribution(name)
        todo += [Requirement(r) for r in dist.requires or []]
        for top in {f.parts[0] for f in dist.files} - {"..", "__pycache__"}:
            if not (site / top).exists():
                (site / top).symlink_to(dist.locate_file(top))


def base_launcher(site: Path, cwd: Path, *args):
    """`launcher ARGS` seeing only the base install and the checkout (-S: no site-packages at all)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), GANKIT_HOME=str(cwd / "home"),
               GANKIT_CONFIG=str(cwd / "home" / "config.json"), AWS_DEFAULT_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    return subprocess.run([sys.executable, "-S", "-m", "launcher", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_base_install_runs_the_bookkeeping_and_names_the_extra_the_rest_needs(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    link_base_install(site)
    assert not any((site / name).exists() for name in ("tensorflow", "keras", "jax", "sagemaker", "matplotlib"))
    for args in (["--help"], ["submit", "--help"], ["list"], ["config", "show"],
                 ["submit", "--dataset", "mnist", "--epochs", "1", "--dry-run"]):
        done = base_launcher(site, tmp_path, *args)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)

    generator = tmp_path / "generator"
    generator.mkdir()
    (generator / "generator.keras").write_bytes(b"")  # never opened: Keras is not there to open it
    (generator / "generator.json").write_text(json.dumps({
        "dataset": "mnist", "class_names": [str(i) for i in range(10)], "conditional": True, "model": "cgan",
        "preset": "sn-hinge", "z_dim": 100, "z_distribution": "normal", "image_shape": [28, 28, 1],
        "value_range": [-1.0, 1.0], "steps": 10, "selected": "last", "trainer_version": "0.1.0",
        "framework": "tensorflow", "keras_version": "3.15.1"}))
    sagemaker = ["submit", "--dataset", "mnist", "--epochs", "1", "--backend", "sagemaker", "--bucket", "gankit-b",
                 "--role", "arn:aws:iam::123456789012:role/r", "--dry-run"]
    for args, extra in ((sagemaker, "cloud"), (["generate", str(generator), "--out", "x.png"], "trainer")):
        done = base_launcher(site, tmp_path, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and f"pip install 'gankit[{extra}]'" in done.stderr, done.stderr


def test_a_sagemaker_package_without_sagemaker_core_still_names_the_cloud_extra(tmp_path):
    # The cloud extra's sagemaker-core installs sagemaker.core, inside the top-level package `sagemaker` that the
    # classic SageMaker Python SDK (sagemaker 2.x, common where AWS is used) installs as well. With that SDK and no
    # sagemaker-core, `import sagemaker.core` fails on sagemaker.core only: `sagemaker` was found, so the failure
    # was taken for a missing module of an installed package and shown as a traceback.
    site = tmp_path / "site"
    site.mkdir()
    link_base_install(site)
    (site / "sagemaker").mkdir()
    (site / "sagemaker" / "__init__.py").write_text('"""The classic SageMaker SDK: no sagemaker.core."""\n')
    done = base_launcher(site, tmp_path, "submit", "--dataset", "mnist", "--epochs", "1", "--backend", "sagemaker",
                         "--bucket", "gankit-b", "--role", "arn:aws:iam::123456789012:role/r", "--dry-run")
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "pip install 'gankit[cloud]'" in done.stderr, done.stderr


def test_constraints_txt_pins_the_build_backend_pyproject_asks_for():
    # The EC2 backend builds the project's wheel with `pip wheel --no-build-isolation` (launcher/instances.py), so
    # with whatever setuptools the venv has. `pip freeze` leaves setuptools and wheel out, so constraints.txt
    # pinned neither and a fresh Python 3.11 venv kept ensurepip's setuptools 65.5, short of [build-system]'s >=68.
    # Pinned, the install command brings the pin (TensorFlow requires setuptools, astunparse wheel).
    from packaging.version import Version

    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    pins = [Requirement(line) for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    for needed in [Requirement(line) for line in build] + [Requirement("wheel")]:
        for python in ("3.10", "3.11", "3.12"):
            applying = [p for p in pins if normal(p.name) == normal(needed.name)
                        and (p.marker is None or p.marker.evaluate({"python_version": python}))]
            assert len(applying) == 1, (needed.name, python, applying)
            (pinned,) = applying[0].specifier
            assert pinned.operator == "==" and Version(pinned.version) in needed.specifier, (needed, python, pinned)
