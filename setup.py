"""The build step pyproject.toml cannot say: the files of infra/, docker/ and examples/ the launcher reads go into the wheel.

They become the package data of `gankit_data.<folder>` (read by launcher/resources.py), mapped
from the repository's own folders, so there is one copy of each file. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# Only the files the launcher reads (launcher.resources.resource_path); tests/test_wheel.py's PACKAGED lists
# them. docker/'s Dockerfile, train and dependencies.py build the image, which needs a clone anyway.
FILES = {"infra": ["*.yaml"], "docker": ["sagemaker_entry.py"], "examples": ["*.ipynb"]}
DATA = {f"gankit_data.{folder}": folder for folder in FILES}


class DataFoldersHoldNoModules(build_py):
    """setuptools ships every .py of a package as a module, FILES or not (docker/dependencies.py was):
    gankit_data's folders are data, so theirs go in only as FILES says."""

    def find_package_modules(self, package, package_dir):
        return [] if package in DATA else super().find_package_modules(package, package_dir)


setup(
    cmdclass={"build_py": DataFoldersHoldNoModules},
    packages=[*find_packages(include=["trainer*", "launcher*"]), *DATA],
    package_dir=DATA,
    package_data={f"gankit_data.{folder}": patterns for folder, patterns in FILES.items()},
    # package_data alone says what ships. setuptools' default (on for a pyproject.toml project) would add every file
    # of a package folder in the build's file list: all Git-tracked files with setuptools-scm installed, else the list
    # an earlier build left in gankit.egg-info/SOURCES.txt (docker/Dockerfile and docker/train, from before FILES).
    include_package_data=False,
)
