"""pyproject.toml's requirements and the code's imports agree: each folder imports only what the extras it runs
with declare, and every declared requirement is used."""

import ast
import functools
import re
import sys
from importlib import metadata
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra's tomli is the same parser
    import tomli as tomllib

from packaging.requirements import Requirement

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
