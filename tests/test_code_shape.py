"""The code's shape: facts the source keeps in one place, and boundaries between modules."""

import ast
import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra's tomli is the same parser
    import tomli as tomllib

import trainer

ROOT = Path(__file__).resolve().parent.parent


def test_one_tensorflow_pin_and_the_files_that_cannot_import_it_agree():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["trainer"]
    assert f"tensorflow{trainer.TENSORFLOW_RANGE}" in extra
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ARG TENSORFLOW=(\S+)$", dockerfile, re.M)[1] == trainer.TENSORFLOW
    assert "FROM tensorflow/tensorflow:${TENSORFLOW}-gpu" in dockerfile
    assert f"tensorflow=={trainer.TENSORFLOW}\n" in (ROOT / "constraints.txt").read_text()


def _modules() -> dict[str, Path]:
    """Every module of trainer/ and launcher/ by dotted name (tests may use private names; the code may not)."""
    files = sorted([*ROOT.glob("trainer/**/*.py"), *ROOT.glob("launcher/**/*.py")])
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in files}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def reach_ins(modules: dict[str, Path], root: Path = ROOT) -> list[str]:
    """Where one project module imports, or reads an attribute, that another module keeps private (`_name`)."""
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        bound = {}  # a local name -> the project module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in modules:
                        bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    elif node.module in modules and node.module != name and _private(alias.name):
                        found.append(f"{path.relative_to(root)}:{node.lineno} imports {node.module}.{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        bound[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            base, dotted = node.value, []
            while isinstance(base, ast.Attribute):
                dotted.insert(0, base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                owner = ".".join([bound[base.id], *dotted])
                if owner in modules and owner != name:
                    found.append(f"{path.relative_to(root)}:{node.lineno} reads {owner}.{node.attr}")
    return found


def test_no_module_reaches_into_another_modules_private_names():
    assert reach_ins(_modules()) == []


def test_the_reach_in_check_sees_imports_and_attributes(tmp_path):
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "a.py").write_text("_SECRET = 1\n")
    (tmp_path / "trainer" / "b.py").write_text("from trainer.a import _SECRET\n")
    (tmp_path / "trainer" / "c.py").write_text("def f():\n    from trainer import a\n    return a._SECRET\n")
    (tmp_path / "trainer" / "d.py").write_text("import trainer.a as x\n\nprint(x._SECRET, x.__name__)\n")
    modules = {f"trainer.{n}": tmp_path / "trainer" / f"{n}.py" for n in "abcd"}
    assert reach_ins(modules, tmp_path) == ["trainer/b.py:1 imports trainer.a._SECRET",
                                            "trainer/c.py:3 reads trainer.a._SECRET", "trainer/d.py:3 reads trainer.a._SECRET"]


def test_the_shared_plumbing_the_trainer_lists_exists_and_imports_without_a_framework():
    listed = re.findall(r"^    (trainer\.\w+) ", trainer.__doc__, re.M)
    assert len(listed) >= 8 and all(name in _modules() for name in listed)
    code = (f"import sys, {', '.join(listed)}\n"
            "print([m for m in ('tensorflow', 'jax', 'keras') if m in sys.modules])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_name_the_benchmarks_import_from_the_project_exists():
    """Benchmarks are not run by the suite, so a rename in trainer/ or launcher/ would break them unseen
    (epoch_overhead.py once imported trainer.train's _write_metrics long after it moved)."""
    import importlib

    root = Path(__file__).parents[1]
    missing = []
    for path in sorted((root / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):  # function-level imports too
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("trainer", "launcher"):
                module = importlib.import_module(node.module)
                missing += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name) and not (hasattr(module, "__path__") and  # a package's module
                                                                    importlib.util.find_spec(f"{node.module}.{a.name}"))]
    assert not missing, missing


def test_no_merge_conflict_markers_are_left_in_the_sources():
    # A marker left in a test module stops its collection only: every other test still passes.
    marker = re.compile(r"^(<<<<<<< |>>>>>>> |=======$)", re.M)
    sources = [p for pattern in ("*.py", "*.sh", "*.yaml", "*.toml", "*.md", "*.txt") for p in ROOT.rglob(pattern)
               if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    assert sources and [str(p) for p in sources if marker.search(p.read_text(errors="replace"))] == []


def test_commands_print_only_through_the_escaping_echo():
    """Status values, log lines, stack outputs and class names come from buckets and APIs: a raw click.echo
    of one would reach the terminal with its control characters (trainer.errors.echo escapes them)."""
    raw = [f"{path.relative_to(ROOT)}:{node.lineno}"
           for path in _modules().values() if path != ROOT / "trainer" / "errors.py"
           for node in ast.walk(ast.parse(path.read_text()))
           if isinstance(node, ast.Attribute) and node.attr in ("echo", "secho")
           and isinstance(node.value, ast.Name) and node.value.id == "click"]
    assert raw == []
