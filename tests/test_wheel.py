"""The wheel works outside a checkout: templates, notebook and container entry files are package data.

The wheel is built from this checkout, installed into a folder of its own, and run from a
temporary directory by a Python that cannot see the checkout (no PYTHONPATH to it, no .pth files,
so not the editable install either); the test venv's installed dependencies are borrowed as is.
"""

import ast
import io
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import boto3
import pytest

from tests.data_helpers import make_idx_dataset
from tests.ec2_helpers import seed_dlami_parameters

ROOT = Path(__file__).resolve().parents[1]
# Every file the launcher reads from infra/, docker/ and examples/ (launcher.resources.resource_path), and
# nothing more: the wheel carries exactly these (docker/Dockerfile and its helpers build the image from a clone).
PACKAGED = ("infra/base.yaml", "infra/gpu-instance.yaml", "examples/pull_and_generate.ipynb",
            "docker/sagemaker_entry.py")


@pytest.fixture(scope="module")
def installed(tmp_path_factory, built_wheel):
    """The wheel (`pip wheel` of this checkout, built once a session: tests/conftest.py), pip-installed
    (--target) into a folder far from the checkout; that folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = built_wheel
    assert wheel.name.startswith("gankit-") and wheel.suffix == ".whl"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(tmp / "site"),
                    str(wheel)], check=True, cwd=tmp)
    return tmp / "site"


def installed_python(site: Path, cwd: Path, code: str, *args, check=True):
    """Python running `code` (with sys.argv[1:] = args) on the installed wheel; refuses if the checkout is importable."""
    guard = ("import sys, launcher, trainer\n"
             f"for m in (launcher, trainer):\n"
             f"    assert m.__file__.startswith({str(site)!r}), f'{{m.__name__}} imported from {{m.__file__}}'\n"
             f"assert not any(p and {str(ROOT)!r}.startswith(p) for p in sys.path), sys.path\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]]))
    # -S: no site module, so no .pth files (the venv's editable install of a checkout stays out).
    done = subprocess.run([sys.executable, "-S", "-c", guard + code, *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def launcher(site: Path, cwd: Path, *args):
    """`launcher ARGS` from the installed wheel."""
    return installed_python(site, cwd, "from launcher.cli import main\nmain(sys.argv[1:])\n", *args)


def test_the_wheel_carries_the_repository_files(installed):
    # Byte for byte the checkout's: the folders stay the only copy in the repository.
    for name in PACKAGED:
        packaged = installed / "gankit_data" / name
        assert packaged.read_bytes() == (ROOT / name).read_bytes(), name


def test_the_wheel_carries_no_file_beyond_those(installed):
    data = installed / "gankit_data"
    shipped = {p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert shipped == set(PACKAGED)


def resource_patterns() -> set[str]:
    """The names the code passes to resource_path, as regular expressions (an f-string's fields match any text)."""
    patterns = set()
    for path in ROOT.glob("launcher/**/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "resource_path" and node.args:
                arg = node.args[0]
                parts = arg.values if isinstance(arg, ast.JoinedStr) else [arg]
                patterns.add("".join(re.escape(p.value) if isinstance(p, ast.Constant) else ".+" for p in parts))
    return patterns


def test_packaged_is_what_the_code_reads():
    patterns = resource_patterns()
    assert len(patterns) >= 3  # infra templates, the notebook, the SageMaker entry
    assert all(any(re.fullmatch(p, name) for p in patterns) for name in PACKAGED), (patterns, PACKAGED)
    assert all(any(re.fullmatch(p, name) for name in PACKAGED) for p in patterns), (patterns, PACKAGED)


def test_infra_up_and_sagemaker_submit_from_the_wheel(installed, aws_env, tmp_path, monkeypatch):
    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))
    seed_dlami_parameters("us-east-1")
    work = tmp_path / "cwd"
    work.mkdir()

    up = launcher(installed, work, "infra", "up", "--bucket-name", "gankit-wheel-test")
    assert "CREATE_COMPLETE" in up.stderr + up.stdout
    config = json.loads(Path(os.environ["GANKIT_CONFIG"]).read_text())
    assert config["bucket"] == "gankit-wheel-test" and config["backend"] == "sagemaker"

    data = make_idx_dataset(tmp_path / "mnist", n_train=64, n_test=16)
    args = ("submit", "--dataset", "mnist", "--epochs", "1", "--hp", f"data_dir={data}", "--detach")
    dry = launcher(installed, work, *args, "--dry-run")
    request = json.loads(dry.stdout[dry.stdout.index("{"):])
    assert request["HyperParameters"]["sagemaker_program"] == "sagemaker_entry.py"
    assert request["RoleArn"] == config["role"]

    # Script mode for real (moto's SageMaker): the source tarball is built from the installed package.
    launcher(installed, work, *args)
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="gankit-wheel-test", Prefix="runs/")["Contents"]]
    tarball, = [k for k in keys if k.endswith("sourcedir.tar.gz")]
    body = s3.get_object(Bucket="gankit-wheel-test", Key=tarball)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = tar.getnames()
        entry = tar.extractfile("sagemaker_entry.py").read()
    assert entry == (ROOT / "docker" / "sagemaker_entry.py").read_bytes()
    assert "trainer/contract.py" in names and "requirements.txt" in names
    assert not any("__pycache__" in n for n in names)


def test_the_instance_wheel_is_the_installed_one_repacked(installed, tmp_path):
    # EC2 jobs and `launcher jupyter` install the project's wheel on the instance; without a
    # checkout to build from, the launcher zips up its own installation again.
    built = installed_python(installed, tmp_path, "from launcher import instances\nprint(instances.build_wheel(sys.argv[1]))\n",
                             str(tmp_path))
    wheel = Path(built.stdout.strip().splitlines()[-1])
    assert wheel.parent == tmp_path and wheel.name.startswith("gankit-")
    again = tmp_path / "again"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(again), str(wheel)],
                   check=True, cwd=tmp_path)

    def files(site):
        return {p.relative_to(site).as_posix(): p.read_bytes() for p in site.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and ".dist-info" not in str(p.parent)}

    assert files(again) == files(installed)  # every module, template and entry file, launcher script included
    assert "launcher/resources.py" in files(again) and "gankit_data/infra/base.yaml" in files(again)
    launcher(again, tmp_path, "--help")


def test_image_push_from_a_wheel_says_it_needs_a_clone(installed, tmp_path):
    # The image is built from the whole source tree (pyproject.toml, setup.py, ...), which a wheel lacks.
    done = installed_python(installed, tmp_path, "from launcher.cli import main\nmain(sys.argv[1:])\n",
                            "image", "push", "--region", "us-east-1", check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "image push" in done.stderr and "clone" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def copy_of_the_checkout(tmp_path) -> Path:
    checkout = tmp_path / "checkout"
    for name in ("trainer", "launcher", "infra", "docker", "examples"):
        shutil.copytree(ROOT / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, checkout / name)
    return checkout


def instance_wheel_names(checkout: Path, dest: Path) -> list[str]:
    """The files of the wheel launcher.instances.build_wheel builds from `checkout` for an EC2 or Jupyter instance."""
    build = "import sys\nfrom launcher import instances\nprint(instances.build_wheel(sys.argv[1]))\n"
    env = dict(os.environ, PYTHONPATH=str(checkout))
    done = subprocess.run([sys.executable, "-c", build, str(dest)], cwd=dest.parent, env=env,
                          capture_output=True, text=True, check=True, timeout=300)
    return zipfile.ZipFile(done.stdout.strip().splitlines()[-1]).namelist()


def test_a_module_removed_from_the_checkout_leaves_the_next_instance_wheel(tmp_path):
    # setuptools reuses the checkout's build/lib, so the EC2 instance got modules deleted since an earlier build.
    checkout = copy_of_the_checkout(tmp_path)
    (checkout / "trainer" / "removed_since.py").write_text("GONE = True\n")
    assert "trainer/removed_since.py" in instance_wheel_names(checkout, tmp_path / "first")
    (checkout / "trainer" / "removed_since.py").unlink()
    assert "trainer/removed_since.py" not in instance_wheel_names(checkout, tmp_path / "second")


def test_a_file_list_left_by_an_earlier_build_adds_nothing_to_the_wheel(tmp_path):
    # setuptools' include_package_data (on by default for a pyproject.toml project) adds every file of a package
    # folder named in the build's file list, and with no Git file finder installed (setuptools-scm) it reads that
    # list from the checkout's gankit.egg-info/SOURCES.txt, which each build writes back: a checkout built before the
    # wheel carried only PACKAGED (its SOURCES.txt names docker/Dockerfile and docker/train) shipped them for good.
    checkout = copy_of_the_checkout(tmp_path)
    (checkout / "gankit.egg-info").mkdir()
    (checkout / "gankit.egg-info" / "SOURCES.txt").write_text(
        "README.md\npyproject.toml\nsetup.py\ndocker/Dockerfile\ndocker/train\ninfra/base.yaml\n")
    names = instance_wheel_names(checkout, tmp_path / "wheel")
    assert {n.removeprefix("gankit_data/") for n in names if n.startswith("gankit_data/")} == set(PACKAGED)
