"""Shared, built-once fixtures for the evaluation and report tests.

One tiny synthetic MNIST-shaped dataset, one judge cache and one short cgan
run (trained with --eval-every), reused by every test that needs them, so
TensorFlow work happens once per session.
"""

import shutil
import subprocess

import pytest

from tests.data_helpers import make_idx_dataset

N_TRAIN, N_TEST = 200, 60
# Judge updates for these blobs: 50 reach 100% test accuracy, as the 200 the real
# recipe's minimum gives (trainer.judge.MIN_STEPS), in a quarter of the time.
JUDGE_STEPS = 50
_BUILT = {}


def quiet(*args, **kwargs):
    pass


def _build(tmp_path_factory):
    from trainer.config import TrainConfig
    from trainer.train import train

    root = tmp_path_factory.mktemp("quality")
    data = make_idx_dataset(root / "data", num_classes=10, n_train=N_TRAIN, n_test=N_TEST)
    cache = root / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANKIT_CACHE", str(cache))
        # 3 epochs, evaluated at epoch 2 (--eval-every 2) and at the end (epoch 3).
        mp.setattr("trainer.evaluate.EPOCH_SAMPLES", 20)
        mp.setattr("trainer.judge.MIN_STEPS", JUDGE_STEPS)
        cfg = TrainConfig(dataset="mnist", data_dir=str(data), output_dir=str(root / "run"), epochs=3,
                          batch_size=50, eval_every=2)
        train(cfg, log=quiet)
    return {"data": data, "cache": cache, "run": root / "run"}


def quality_run(tmp_path_factory) -> dict:
    """{"data": dataset folder, "cache": GANKIT_CACHE with the trained judge, "run": the run's output dir}."""
    if "run" not in _BUILT:
        _BUILT["run"] = _build(tmp_path_factory)
    return _BUILT["run"]


@pytest.fixture
def trained(tmp_path_factory, monkeypatch):
    """The shared run, with GANKIT_CACHE pointing at the cache that holds its judge."""
    built = quality_run(tmp_path_factory)
    monkeypatch.setenv("GANKIT_CACHE", str(built["cache"]))
    return built


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_run(*args, timeout=120) -> subprocess.CompletedProcess:
    browser = chromium()
    if browser is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=timeout)
