"""benchmarks/quality.py: what --full runs, the README table and the targets it prints, and a tiny real run."""

import importlib.util
import json
from pathlib import Path

import pytest

from tests.data_helpers import make_idx_dataset

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("quality_benchmark", ROOT / "benchmarks" / "quality.py")
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)


def test_full_is_every_preset_at_1_8_and_64_epochs_plus_dcgan_64x64x3_on_jax():
    args = quality.parse_args(["--full"])
    plan = quality.plan(args)
    assert plan["samples"] == 10_000
    assert [(r[0], r[3]) for r in plan["runs"]] == [
        ("book", 1), ("book", 8), ("book", 64), ("projection", 1), ("projection", 8), ("projection", 64),
        ("sn-hinge", 1), ("sn-hinge", 8), ("sn-hinge", 64), ("dcgan 64x64x3", 1), ("dcgan 64x64x3", 8)]
    assert all(r[4] is None for r in plan["runs"])  # whole epochs, no --max-steps
    assert plan["runs"][-1][1:] == ("sn-hinge", "dcgan", 8, None, 64, 3)
    cpu = quality.plan(quality.parse_args(["--images", "16000"]))
    assert [(r[0], r[4]) for r in cpu["runs"]] == [("book", 500), ("projection", 125), ("sn-hinge", 125)]
    assert cpu["samples"] == 2_000


def test_a_bare_presets_runs_only_the_dcgan_rows_and_nothing_at_all_is_refused(capsys):
    rgb = quality.plan(quality.parse_args(["--presets", "--rgb-epochs", "1"]))
    assert rgb["runs"] == [("dcgan 64x64x3", "sn-hinge", "dcgan", 1, None, 64, 3)]
    with pytest.raises(SystemExit) as stop:
        quality.main(["--presets"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "quality.py: nothing to run; name --presets, or --rgb-epochs for the dcgan 64x64x3 rows")


def result(label, epochs, acc, fcd, seconds, model="cgan"):
    real = {"label_accuracy": 0.91, "frechet_classifier_distance": 0.5, "classifier_score": 7.8, "samples": 10_000,
            "per_class_accuracy": {"shirt": 0.7}}
    return {"label": label, "preset": label, "model": model, "epochs": epochs, "steps": 100 * epochs,
            "train_seconds": seconds, "label_accuracy": acc, "frechet_classifier_distance": fcd, "classifier_score": 8.0,
            "per_class_accuracy": {"shirt": 0.6} if acc is not None else None, "real": real, "max_steps": None}


def test_markdown_table_and_targets():
    results = [result("book", 64, 0.90, 5.0, 190), result("projection", 64, 0.915, 2.6, 33),
               result("sn-hinge", 64, 0.93, 1.0, 55), result("dcgan 64x64x3", 8, None, 9.0, 80, model="dcgan")]
    table = quality.markdown(results)
    assert "| `sn-hinge` | 64 | 55 | 0.930 | 1.00 | 8.00 |" in table
    assert "| `dcgan 64x64x3` | 8 | 80 | n/a | 9.00 | 8.00 |" in table
    assert "| real test images 28x28 (10,000 vs 10,000 train) | | | 0.910 | 0.50 | 7.80 |" in table
    lines = quality.targets(results)
    assert any("label accuracy 0.9300 vs the judge on real test images 0.9100 -> met" in x for x in lines)
    assert any("= 38% of projection's at 64 epochs (target <= 40%) -> met" in x for x in lines)
    assert any("training 55 s" in x and "-> met" in x for x in lines)
    assert any("sn-hinge vs book at 64 epochs" in x and "-> met" in x for x in lines)
    worse = quality.targets([result("book", 8, 0.9, 3.0, 20), result("sn-hinge", 8, 0.95, 3.5, 10)])
    assert any("sn-hinge vs book at 8 epochs" in x and "NOT met" in x for x in worse)


def test_targets_of_a_cpu_budget_name_its_steps_and_leave_the_64_epoch_targets_unjudged():
    # --images 16000: every preset sees the same images in its own number of steps, epochs=1 with max_steps.
    book = dict(result("book", 1, 0.80, 20.0, 600), steps=500, max_steps=500)
    projection = dict(result("projection", 1, 0.85, 18.0, 130), steps=125, max_steps=125)
    new = dict(result("sn-hinge", 1, 0.95, 5.0, 40), steps=125, max_steps=125)
    lines = quality.targets([book, projection, new])
    assert not any("at 1 epochs" in x for x in lines)
    assert any("of projection's after 125 steps vs 125 steps (target <= 40%) -> not judged" in x for x in lines)
    assert any("training 40 s after 125 steps (target <= 60 s on one H100) -> not judged" in x for x in lines)
    assert any("vs the judge on real test images 0.9100 -> not judged" in x for x in lines)
    assert any(x.startswith("targets: sn-hinge vs book after 125 steps vs 500 steps:") and x.endswith("-> met")
               for x in lines)


@pytest.mark.slow
def test_a_tiny_cpu_run_prints_the_table(tmp_path, monkeypatch, capsys):
    # 200 samples: more images than the judge's 128 features, so the covariances are not singular.
    data = make_idx_dataset(tmp_path / "zalando", num_classes=10, n_train=512, n_test=200)
    # In this process (TensorFlow is loaded already; a subprocess would import it again): main() is the
    # script's whole body. The autouse fixture gives it a fresh GANKIT_CACHE, so the judge is trained here.
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")  # main() sets it; monkeypatch restores it
    quality.main(["--images", "512", "--samples", "200", "--presets", "book", "sn-hinge", "--data-dir", str(data),
                  "--out-dir", str(tmp_path / "runs"), "--json", str(tmp_path / "q.json")])
    out = capsys.readouterr().out
    assert "| `book` | 16 steps |" in out and "| `sn-hinge` | 4 steps |" in out
    assert "targets: label accuracy" in out
    saved = json.loads((tmp_path / "q.json").read_text())
    assert saved["framework"] == "tensorflow" and [r["preset"] for r in saved["results"]] == ["book", "sn-hinge"]
    assert all(r["samples"] == 200 for r in saved["results"])
