import os

# Quiet TensorFlow's start-up chatter in test output and subprocesses.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Never read or write the user's real cache or config from a test."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("GANKIT_CACHE", str(home / "cache"))
    monkeypatch.setenv("GANKIT_CONFIG", str(home / "config.json"))
    return home


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


@pytest.fixture(autouse=True)
def wheel_built_once(tmp_path_factory, monkeypatch):
    """EC2 submits build the project's wheel (`pip wheel`, seconds each); the source does not change
    during a test session, so the first build is real and later ones copy it."""
    import shutil
    from pathlib import Path

    from launcher import instances

    real = instances.build_wheel

    def build_wheel(dest):
        if "wheel" not in _WHEELS:
            _WHEELS["wheel"] = real(tmp_path_factory.mktemp("wheel"))
        return Path(shutil.copy(_WHEELS["wheel"], dest))

    monkeypatch.setattr(instances, "build_wheel", build_wheel)
