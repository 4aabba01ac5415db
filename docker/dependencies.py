"""Print, one a line, the requirements `pip install '.[EXTRA...]'` would install: pyproject.toml's
dependencies and those of each named extra.

docker/Dockerfile installs these before it copies the code, so the slow dependency layer is rebuilt only when
pyproject.toml or constraints.txt change, not on every edit of trainer/; gankit itself follows with --no-deps.

    python3 docker/dependencies.py [--pyproject pyproject.toml] trainer
"""

import argparse
import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 base images: pip vendors the same parser
    from pip._vendor import tomli as tomllib

# A requirement on this package itself (the `all` extra's "gankit[trainer,cloud]").
SELF = re.compile(r"\s*gankit\b")


def requirements(project: dict, extras: list[str]) -> list[str]:
    """The project's dependencies and those of `extras`, in order."""
    optional = project.get("optional-dependencies", {})
    found = list(project.get("dependencies", []))
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r} (it has: {', '.join(sorted(optional))})")
        for requirement in optional[extra]:
            # pip would take "gankit" from PyPI, someone else's package: name the extras it lists instead.
            if SELF.match(requirement):
                raise SystemExit(f"extra {extra!r} requires gankit itself ({requirement}): name its extras instead")
            found.append(requirement)
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", default="pyproject.toml")
    parser.add_argument("extras", nargs="*")
    args = parser.parse_args(argv)
    with open(args.pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    sys.stdout.write("".join(f"{line}\n" for line in requirements(project, args.extras)))


if __name__ == "__main__":
    main()
