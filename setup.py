"""The build step pyproject.toml cannot say: infra/, docker/ and examples/ go into the wheel.

They become the package data of `gankit_data.<folder>` (read by launcher/resources.py), mapped
from the repository's own folders, so there is one copy of each file. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

DATA = {f"gankit_data.{folder}": folder for folder in ("infra", "docker", "examples")}

setup(
    packages=[*find_packages(include=["trainer*", "launcher*"]), *DATA],
    package_dir=DATA,
    package_data={"": ["*.json", "*.yaml", "*.ipynb"], **{name: ["*"] for name in DATA}},
)
