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
