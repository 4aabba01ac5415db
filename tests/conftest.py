import os

# Quiet TensorFlow's start-up chatter in test output and subprocesses.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

# Modules that share one built-once run (tests/quality_helpers.py): one xdist group, so it is built once.
XDIST_GROUPS = {"test_evaluate": "quality", "test_launcher_quality": "quality", "test_report": "quality"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`--dist loadgroup`, pyproject.toml), each module's tests run on one worker, so
    its module-scoped fixtures (trained runs, datasets) are built once, as in a single process."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS.get(module, module)))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Never read or write the user's real cache or config from a test."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("GANKIT_CACHE", str(home / "cache"))
    monkeypatch.setenv("GANKIT_CONFIG", str(home / "config.json"))
    return home


@pytest.fixture(autouse=True)
def float32_policy_after():
    """trainer.device.configure sets Keras' global precision policy (mixed_bfloat16 on CPUs that have it),
    and tests call it directly: put float32 back, so the next test's models do not inherit it."""
    yield
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """A tiny synthetic MNIST (10 classes, 64 train and 32 test images: 4 steps of 16 an epoch), once per module."""
    from tests.data_helpers import make_idx_dataset

    return make_idx_dataset(tmp_path_factory.mktemp("mnist"), num_classes=10, n_train=64, n_test=32)


@pytest.fixture(scope="session")
def moto_server():
    """A real HTTP AWS (moto) on loopback, for code that runs in subprocesses; yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_server, monkeypatch):
    """Point boto3 (here and in subprocesses) at the moto server with fake credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    from trainer import s3

    s3.client.cache_clear()
    yield moto_server
    s3.client.cache_clear()


_WHEELS = {}


def project_wheel(tmp_path_factory):
    """The project's wheel (`pip wheel` of this checkout, seconds), built on first use: the source does not
    change during a test session. Never write to it; copy it."""
    from launcher import instances

    if "wheel" not in _WHEELS:
        build = getattr(instances.build_wheel, "real", instances.build_wheel)  # the copier below keeps the real builder
        _WHEELS["wheel"] = build(tmp_path_factory.mktemp("wheel"))
    return _WHEELS["wheel"]


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory):
    """project_wheel as a fixture, for module-scoped fixtures (tests/test_wheel.py)."""
    return project_wheel(tmp_path_factory)


@pytest.fixture(autouse=True)
def wheel_built_once(tmp_path_factory, monkeypatch):
    """EC2 submits build the project's wheel; the first build is real and later ones copy it."""
    import shutil
    from pathlib import Path

    from launcher import instances

    def build_wheel(dest):
        return Path(shutil.copy(project_wheel(tmp_path_factory), dest))

    build_wheel.real = instances.build_wheel
    monkeypatch.setattr(instances, "build_wheel", build_wheel)
