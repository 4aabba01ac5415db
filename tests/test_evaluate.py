"""The judge, evaluate() and `python -m trainer evaluate`, and --eval-every during training."""

import json

import numpy as np
import pytest

from tests.data_helpers import make_idx_dataset
from tests.quality_helpers import JUDGE_STEPS, N_TEST, quiet, trained  # noqa: F401  (fixture)
from trainer import evaluate as ev
from trainer.cli import main
from trainer.errors import UsageError
from trainer.export import load_generator

pytestmark = pytest.mark.slow
TOP_KEYS = {"label_accuracy", "per_class_accuracy", "frechet_classifier_distance", "classifier_score", "samples",
            "judge_test_accuracy", "real", "generator"}
FIGURE_KEYS = {"label_accuracy", "per_class_accuracy", "frechet_classifier_distance", "classifier_score", "samples"}


class ImagesOf:
    """A stand-in generator that hands out given images for each class: the metrics' known-answer input."""

    conditional = True

    def __init__(self, images_by_class, class_names, pick=lambda label: label):
        self.images_by_class, self.class_names, self.pick = images_by_class, list(class_names), pick
        self.num_classes = len(class_names)

    def generate(self, target_class=None, count=1, seed=None, labels=None):
        labels = np.arange(count) % self.num_classes if labels is None else labels
        rng = np.random.default_rng(seed)
        return np.stack([rng.choice(self.images_by_class[self.pick(k)]) for k in labels])


def test_judge_is_cached_and_retrained_when_the_data_changes(trained, tmp_path, monkeypatch):
    import shutil

    from trainer.judge import judge_dir, load_judge, load_splits

    # A copy of the shared cache: retraining here must not evict the judge other tests reuse.
    shutil.copytree(trained["cache"], tmp_path / "cache")
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "cache"))
    messages = []
    splits = load_splits("mnist", trained["data"])
    judge = load_judge("mnist", trained["data"], log=messages.append)
    assert messages == []  # the run trained it; this call reuses the cache
    assert judge.test_accuracy >= 0.9  # the blobs are trivially separable
    meta = json.loads((judge_dir(splits) / "judge.json").read_text())
    assert meta["fingerprint"] == splits.fingerprint() and meta["test_accuracy"] == judge.test_accuracy

    changed = make_idx_dataset(tmp_path / "changed", num_classes=10, n_train=200, n_test=N_TEST, seed=7)
    monkeypatch.setattr("trainer.judge.MIN_STEPS", JUDGE_STEPS)  # the retraining is the subject, not its length
    retrained = load_judge("mnist", changed, log=messages.append)
    assert any("changed" in m for m in messages) and any("training the judge" in m for m in messages)
    assert any(f"{JUDGE_STEPS} epochs of 1 steps" in m for m in messages)
    new_meta = json.loads((judge_dir(splits) / "judge.json").read_text())
    assert new_meta["fingerprint"] == load_splits("mnist", changed).fingerprint() != meta["fingerprint"]
    assert retrained.test_accuracy >= 0.9


def test_a_changed_test_split_is_noticed_and_the_judge_re_tested_not_retrained(trained, tmp_path, monkeypatch):
    """The judge learns from the train split only, but its test accuracy comes from the test split: a cache
    keyed on the train split alone kept the old test split's accuracy (here 1.0 for a judge now always wrong)."""
    import shutil

    from tests.data_helpers import IDX_FILES
    from trainer.data.idx import read_idx, write_idx
    from trainer.judge import judge_dir, load_judge, load_splits

    shutil.copytree(trained["cache"], tmp_path / "cache")
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "cache"))
    data = shutil.copytree(trained["data"], tmp_path / "data")
    labels_file = data / IDX_FILES["test"][1]
    write_idx(labels_file, (read_idx(labels_file) + 1) % 10)  # same pictures, every one now labelled wrong
    splits = load_splits("mnist", data)
    messages = []
    judge = load_judge("mnist", data, log=messages.append)
    assert judge.test_accuracy <= 0.1, messages
    assert any("test split" in m and "changed" in m for m in messages)
    assert not any("training the judge" in m for m in messages)  # the train split, all it learnt from, is the same
    messages.clear()
    assert load_judge("mnist", data, log=messages.append).test_accuracy == judge.test_accuracy and messages == []

    # A judge cached before test splits were fingerprinted is measured once, not retrained.
    meta = json.loads((judge_dir(splits) / "judge.json").read_text())
    del meta["test_fingerprint"]
    (judge_dir(splits) / "judge.json").write_text(json.dumps(dict(meta, test_accuracy=0.5)))
    assert load_judge("mnist", data, log=messages.append).test_accuracy == judge.test_accuracy and messages == []
    assert json.loads((judge_dir(splits) / "judge.json").read_text())["test_fingerprint"] == splits.test_fingerprint()


JUDGE_OUTPUTS = """import json, sys
import numpy as np
import trainer.judge as j
j.MIN_STEPS = int(sys.argv[3])
said = []
judge = j.load_judge("mnist", sys.argv[1], log=said.append)
features, probabilities = judge.outputs(j.load_splits("mnist", sys.argv[1]).test_images)
np.savez(sys.argv[2], features=features, probabilities=probabilities)
print(json.dumps({"said": said, "test_accuracy": judge.test_accuracy}))
"""


def judge_outputs_under_jax(data, cache, out):
    """(what load_judge said, test accuracy, features, probabilities of the test images) in a JAX process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, KERAS_BACKEND="jax", GANKIT_CACHE=str(cache), PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-c", JUDGE_OUTPUTS, str(data), str(out), str(JUDGE_STEPS)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    told, arrays = json.loads(done.stdout.strip().splitlines()[-1]), np.load(out)
    return told["said"], told["test_accuracy"], arrays["features"], arrays["probabilities"]


def test_a_cached_judge_scores_the_same_under_either_backend(trained, tmp_path, monkeypatch):
    """The cache is not keyed on the Keras backend: a judge cached by TensorFlow is loaded as it is by JAX,
    and the reverse, with the same test accuracy and the same outputs (float32 rounding apart)."""
    import shutil

    from trainer.judge import load_judge, load_splits

    test_images = load_splits("mnist", trained["data"]).test_images
    shutil.copytree(trained["cache"], tmp_path / "tf-cache")
    here = load_judge("mnist", trained["data"], log=quiet)  # this process: TensorFlow
    said, accuracy, features, probabilities = judge_outputs_under_jax(trained["data"], tmp_path / "tf-cache",
                                                                      tmp_path / "tf.npz")
    assert said == [] and accuracy == here.test_accuracy  # reused, not trained again
    np.testing.assert_allclose(features, here.features(test_images), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(probabilities, here.probabilities(test_images), atol=1e-5)

    said, accuracy, features, probabilities = judge_outputs_under_jax(trained["data"], tmp_path / "jax-cache",
                                                                      tmp_path / "jax.npz")
    assert any("training the judge" in m for m in said)
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "jax-cache"))
    messages = []
    there = load_judge("mnist", trained["data"], log=messages.append)
    assert messages == [] and there.test_accuracy == accuracy
    np.testing.assert_allclose(there.features(test_images), features, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(there.probabilities(test_images), probabilities, atol=1e-5)


@pytest.mark.parametrize("text", ["[1]", '"judge"'])
def test_a_judge_json_that_is_not_an_object_is_retrained_not_a_traceback(trained, tmp_path, monkeypatch, text):
    import shutil

    from trainer.judge import judge_dir, load_judge, load_splits

    shutil.copytree(trained["cache"], tmp_path / "cache")
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("trainer.judge.MIN_STEPS", JUDGE_STEPS)
    splits = load_splits("mnist", trained["data"])
    (judge_dir(splits) / "judge.json").write_text(text)
    messages = []
    judge = load_judge("mnist", trained["data"], log=messages.append)
    assert any("training the judge" in m for m in messages) and judge.test_accuracy >= 0.9
    assert json.loads((judge_dir(splits) / "judge.json").read_text())["fingerprint"] == splits.fingerprint()


def test_real_images_score_like_the_real_ceiling_and_collapse_scores_low(trained):
    from trainer.judge import load_splits

    splits = load_splits("mnist", trained["data"])
    by_class = {k: splits.train_images[splits.train_labels == k] for k in range(10)}
    ref = ev.make_reference("mnist", trained["data"], None, 50, quiet)

    real = ev.score_generator(ImagesOf(by_class, splits.class_names), ref)
    assert real["label_accuracy"] >= 0.9 and real["samples"] == 50
    assert min(real["per_class_accuracy"].values()) >= 0.6
    assert real["classifier_score"] > 5

    wrong = ev.score_generator(ImagesOf(by_class, splits.class_names, pick=lambda k: (k + 1) % 10), ref)
    assert wrong["label_accuracy"] <= 0.1  # right-looking images, wrong classes

    collapsed = ev.score_generator(ImagesOf(by_class, splits.class_names, pick=lambda k: 0), ref)
    assert collapsed["classifier_score"] < 2  # one mode only
    assert collapsed["frechet_classifier_distance"] > 5 * real["frechet_classifier_distance"]


def test_evaluate_writes_evaluation_json_with_the_exact_keys(trained):
    run = trained["run"]
    result = ev.evaluate(run / "generator", trained["data"], samples=40, log=quiet)
    written = json.loads((run / "evaluation.json").read_text())
    assert written == result
    assert set(written) == TOP_KEYS and set(written["real"]) == FIGURE_KEYS
    assert written["generator"] == {"selected": "last", "steps": 12}  # which generator the figures are of
    assert written["samples"] == written["real"]["samples"] == 40
    assert list(written["per_class_accuracy"]) == list("0123456789")
    assert 0 <= written["label_accuracy"] <= 1 and written["frechet_classifier_distance"] >= 0
    assert 1 <= written["classifier_score"] <= 10 and written["judge_test_accuracy"] >= 0.9
    assert written["real"]["label_accuracy"] >= 0.9  # the ceiling


def test_samples_are_capped_at_the_test_split_and_say_so(trained):
    messages = []
    result = ev.evaluate(trained["run"] / "generator", trained["data"], samples=10_000, log=messages.append)
    assert result["samples"] == result["real"]["samples"] == N_TEST
    assert any(f"using {N_TEST} samples, not 10000" in m for m in messages)


def test_eval_every_records_figures_in_metrics_jsonl(trained):
    run = trained["run"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert "evaluation" not in rows[0]  # --eval-every 2
    assert rows[1]["evaluation"]["samples"] == 20  # the cheaper per-epoch count
    assert rows[2]["evaluation"]["samples"] == N_TEST  # the end: the full count, capped at the test split
    for row in rows[1:]:
        assert set(row["evaluation"]) == FIGURE_KEYS | {"real"}
        assert np.isfinite(row["evaluation"]["frechet_classifier_distance"])
        assert row["evaluation"]["real"]["samples"] == row["evaluation"]["samples"]  # the real figures at its count
    assert (run / "report.html").is_file()
    # TensorBoard has the same figures, one tag per sample count (they compare only at the same count).
    from tests.events_helpers import read_events, scalars

    found = scalars(read_events(run / "tensorboard"))
    for row in rows[1:]:
        count = row["evaluation"]["samples"]
        assert found[f"quality_{count}_samples/label_accuracy"] == [(row["step"], pytest.approx(row["evaluation"]["label_accuracy"]))]
        assert found[f"quality_{count}_samples/classifier_score"][0][0] == row["step"]


def test_cli_prints_the_table_and_the_count(trained, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(trained["run"] / "generator"), "--data-dir", str(trained["data"]), "--samples", "30"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "label accuracy" in out and "Fréchet classifier distance" in out and "classifier score" in out
    assert "30 generated vs 30 real test images" in out
    assert json.loads((trained["run"] / "evaluation.json").read_text())["samples"] == 30


def test_cli_takes_the_run_folder_as_generate_does(trained, capsys):
    # `generate RUN` drew from RUN/generator, but `evaluate RUN` said RUN was not an exported generator.
    (trained["run"] / "evaluation.json").unlink(missing_ok=True)
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(trained["run"]), "--data-dir", str(trained["data"]), "--samples", "20"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    assert f"wrote {trained['run'].resolve() / 'evaluation.json'}" in capsys.readouterr().out
    assert json.loads((trained["run"] / "evaluation.json").read_text())["samples"] == 20


def test_cli_on_a_full_disk_shows_the_figures_and_one_line(trained, capsys, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ev, "atomic_write_text", full_disk)
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(trained["run"] / "generator"), "--data-dir", str(trained["data"]), "--samples", "30"])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 1 and "Traceback" not in captured.err, captured.err
    assert len(errors) == 1 and "evaluation.json could not be written" in errors[0] and "No space left" in errors[0]
    assert "Fréchet classifier distance" in captured.out  # minutes of scoring are not lost with the file


@pytest.mark.parametrize("argv, message", [
    (["--samples", "1"], "--samples 1: must be a whole number of at least 2"),
])
def test_cli_bad_samples_is_a_usage_error(trained, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(trained["run"] / "generator"), "--data-dir", str(trained["data"]), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_not_a_generator_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "is not an exported generator" in capsys.readouterr().err
    assert not (tmp_path.parent / "evaluation.json").exists()


def test_dcgan_has_null_label_figures(trained, tmp_path):
    from trainer.config import TrainConfig
    from trainer.train import train

    cfg = TrainConfig(dataset="mnist", data_dir=str(trained["data"]), output_dir=str(tmp_path / "dc"), model="dcgan",
                      epochs=1, batch_size=100, eval_every=1)
    train(cfg, log=quiet)
    result = json.loads((tmp_path / "dc" / "evaluation.json").read_text())
    assert set(result) == TOP_KEYS
    assert result["label_accuracy"] is None and result["per_class_accuracy"] is None
    assert result["frechet_classifier_distance"] > 0 and result["classifier_score"] >= 1
    assert result["real"]["label_accuracy"] >= 0.9  # the judge still rates real images


def test_a_folder_without_classes_has_no_judge(tmp_path):
    from tests.data_helpers import make_image_folder
    from trainer.judge import load_splits

    folder = make_image_folder(tmp_path / "plain", classes=())
    with pytest.raises(UsageError, match="has no classes"):
        load_splits(f"folder:{folder}")


def test_eval_every_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dataset", "mnist", "--output-dir", str(tmp_path / "r"), "--eval-every", "0"])
    assert exit_info.value.code == 2
    assert "--eval-every 0: must be a positive number of epochs" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_eval_every_keeps_the_best_fcd_generator_beside_the_last(trained):
    run = trained["run"]
    last = json.loads((run / "generator" / "generator.json").read_text())
    best = json.loads((run / ev.BEST_DIR / "generator.json").read_text())
    assert last["selected"] == "last" and best["selected"] == "best"
    import keras

    for meta in (last, best):  # either may be the one a user takes home: both say what made them
        assert (meta["framework"], meta["keras_version"]) == ("tensorflow", keras.__version__)
    # Both compared at the per-epoch count (20 here), the final evaluation included.
    assert last["epoch"] == 3 and last["fcd_samples"] == best["fcd_samples"] == 20 and best["epoch"] in (2, 3)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert best["fcd"] == min(rows[1]["evaluation"]["frechet_classifier_distance"], last["fcd"])
    assert best["step"] == rows[best["epoch"] - 1]["step"]
    for folder in ("generator", ev.BEST_DIR):
        assert load_generator(run / folder).generate(1, count=2, seed=0).shape == (2, 28, 28, 1)


def test_running_a_finished_command_again_keeps_the_final_evaluation(trained, tmp_path):
    """The final evaluation's keys live in the last checkpoint, so an export written again (the same
    command run twice, or a stop during the last call) still records them."""
    import shutil

    from trainer.config import TrainConfig
    from trainer.train import train

    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    before = json.loads((run / "generator" / "generator.json").read_text())
    assert before["selected"] == "last" and before["fcd"] is not None
    cfg = TrainConfig(dataset="mnist", data_dir=str(trained["data"]), output_dir=str(run), epochs=3, batch_size=50,
                      eval_every=2)
    summary = train(cfg, log=quiet)
    assert summary["steps"] == summary["total_steps"] and not summary["stopped"]
    after = json.loads((run / "generator" / "generator.json").read_text())
    for key in ("selected", "fcd", "fcd_samples", "label_accuracy", "epoch", "step"):
        assert after[key] == before[key], key
    assert json.loads((run / ev.BEST_DIR / "generator.json").read_text())["selected"] == "best"  # a resumed run keeps it


def test_a_fresh_run_does_not_inherit_an_earlier_runs_best_generator(trained, tmp_path):
    import shutil

    from trainer.config import TrainConfig
    from trainer.train import train

    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    shutil.rmtree(run / "checkpoints")  # nothing to resume: a fresh run in the same folder
    lines = []
    cfg = TrainConfig(dataset="mnist", data_dir=str(trained["data"]), output_dir=str(run), epochs=1, batch_size=50,
                      max_steps=1)
    train(cfg, log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert not (run / ev.BEST_DIR).exists()
    assert any(f"removed {ev.BEST_DIR}/" in line for line in lines)


def test_a_judge_cached_in_bfloat16_is_retrained_in_float32(tmp_path, monkeypatch):
    """Judges were once built in the precision of the run that needed them; such a cached judge has the same
    fingerprint as a float32 one, and reusing it would score every later figure with a different judge."""
    import keras

    from trainer.device import policy_kept
    from trainer.judge import META_FILE, MODEL_FILE, build_classifier, judge_dir, load_judge, load_splits

    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("trainer.judge.MIN_STEPS", JUDGE_STEPS)
    data = make_idx_dataset(tmp_path / "data", num_classes=10, n_train=200, n_test=N_TEST)
    splits = load_splits("mnist", data)
    with policy_kept():
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        stale = build_classifier(splits.image_shape, len(splits.class_names))
    folder = judge_dir(splits)
    folder.mkdir(parents=True)
    stale.save(folder / MODEL_FILE)
    (folder / META_FILE).write_text(json.dumps({"class_names": list(splits.class_names), "test_accuracy": 0.1,
                                                "fingerprint": splits.fingerprint()}))
    messages = []
    judge = load_judge("mnist", data, log=messages.append)
    assert any("trained in mixed_bfloat16" in m for m in messages)
    assert any("training the judge" in m for m in messages)
    assert {layer.dtype_policy.name for layer in judge.model.layers} == {"float32"}
    assert judge.test_accuracy >= 0.9
    messages.clear()
    load_judge("mnist", data, log=messages.append)
    assert messages == []  # the float32 judge it cached is reused


def test_a_float32_judge_is_reused_by_a_run_that_trains_in_bfloat16(tmp_path, monkeypatch):
    """A bf16 run with --eval-every loads the cached judge under its own global policy: Keras then gave some of
    the judge's layers mixed_bfloat16, so every evaluation took the float32 judge for a stale one and retrained it
    (two minutes each on a CPU, twice in a one-epoch run)."""
    import keras

    from trainer.device import policy_kept
    from trainer.judge import load_judge

    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("trainer.judge.MIN_STEPS", JUDGE_STEPS)
    data = make_idx_dataset(tmp_path / "data", num_classes=10, n_train=200, n_test=N_TEST)
    load_judge("mnist", data, log=lambda m: None)  # cached, in float32
    messages = []
    with policy_kept():
        keras.mixed_precision.set_global_policy("mixed_bfloat16")  # as during a bf16 run's evaluation
        judge = load_judge("mnist", data, log=messages.append)
    assert messages == []
    assert {layer.dtype_policy.name for layer in judge.model.layers} == {"float32"}


def test_two_runs_that_need_the_same_judge_train_it_once(tmp_path):
    """Two local jobs with --eval-every on a fresh machine: the second's atomic_dir swept away the first's
    half-saved judge, which then failed; now one trains it while the other waits, then loads it."""
    import fcntl
    import os
    import subprocess
    import sys

    data = make_idx_dataset(tmp_path / "data", num_classes=10, n_train=200, n_test=N_TEST)
    judges = tmp_path / "cache" / "judges"
    judges.mkdir(parents=True)
    code = (f"import sys, trainer.judge as j; j.MIN_STEPS = {JUDGE_STEPS}; "
            "j.load_judge('mnist', sys.argv[1], log=lambda m: print(m, flush=True))")
    env = {**os.environ, "GANKIT_CACHE": str(tmp_path / "cache")}
    held = os.open(judges, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # both reach the judge while it is held: they must queue, not race
    runs = [subprocess.Popen([sys.executable, "-c", code, str(data)], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for _ in range(2)]
    said = []
    for run in runs:
        for line in run.stdout:  # until it says it waits (or, unheld, until it ends)
            said.append(line)
            if "waiting for another process" in line:
                break
    os.close(held)
    said += [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], said
    assert "".join(said).count("training the judge") == 1, said


def uneven_folder(directory):
    """An image folder of classes of 9, 3 and 1 pictures: per class, "a" holds out 2, "b" 1, "lone" none."""
    from tests.data_helpers import make_image_folder

    for name, n in {"a": 9, "b": 3, "lone": 1}.items():
        make_image_folder(directory / name, classes=(), n=n)
    return f"folder:{directory}"


def test_a_judge_cached_on_the_whole_folder_split_is_retrained_on_the_per_class_one(tmp_path, monkeypatch):
    """Folders once held out 1 in 6 of the whole folder; a judge cached from that split learnt from other
    pictures than the per-class split's, so its fingerprint differs and it is trained again, not reused."""
    from trainer.data import load_dataset
    from trainer.judge import FOLDER_TEST_SHARE, Splits, judge_dir, load_judge, load_splits

    monkeypatch.setattr("trainer.judge.MIN_STEPS", JUDGE_STEPS)
    dataset = uneven_folder(tmp_path / "f")
    data = load_dataset(dataset, image_size=16, channels=3)
    order = np.random.default_rng(0).permutation(len(data.images))  # the old rule, as it was written
    n_test = max(1, len(order) // FOLDER_TEST_SHARE)
    test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
    old = Splits(dataset, data.class_names, data.images[train_idx], data.labels[train_idx], data.images[test_idx],
                 data.labels[test_idx])
    load_judge(dataset, splits=old, log=quiet)
    splits = load_splits(dataset, image_shape=(16, 16, 3))
    assert judge_dir(splits) == judge_dir(old) and splits.fingerprint() != old.fingerprint()
    messages = []
    load_judge(dataset, splits=splits, log=messages.append)
    assert any("changed since its judge was trained; retraining" in m for m in messages), messages
    meta = json.loads((judge_dir(splits) / "judge.json").read_text())
    assert meta["fingerprint"] == splits.fingerprint() and meta["test_fingerprint"] == splits.test_fingerprint()
    assert (meta["train_images"], meta["test_images"]) == (10, 3)


def test_a_folder_class_of_one_picture_is_said_and_left_out_of_the_figures(tmp_path, monkeypatch):
    monkeypatch.setattr("trainer.judge.MIN_STEPS", JUDGE_STEPS)
    messages = []
    ref = ev.make_reference(uneven_folder(tmp_path / "f"), None, (16, 16, 3), 20, log=messages.append)
    assert "no test image of class lone: the judge learns it, but the figures leave it out (an image folder's " \
           "class needs 2 pictures to have one)" in messages
    assert sorted(ref.test_labels.tolist()) == [0, 0, 1] and ref.samples == 3
    assert ref.real["per_class_accuracy"]["lone"] is None and ref.judge.class_names == ("a", "b", "lone")


def test_eval_every_says_once_that_a_class_has_no_test_picture(tmp_path, monkeypatch):
    # The reference was made once per count (1,000 per epoch, 10,000 at the end), each time saying it.
    from trainer.config import TrainConfig
    from trainer.train import train

    monkeypatch.setattr("trainer.judge.MIN_STEPS", JUDGE_STEPS)
    cfg = TrainConfig(dataset=uneven_folder(tmp_path / "f"), output_dir=str(tmp_path / "run"), epochs=1, batch_size=4,
                      image_size=16, eval_every=1)
    messages = []
    train(cfg, log=lambda m="", **kwargs: messages.append(str(m)))
    assert sum("no test image of class lone" in m for m in messages) == 1, messages
    assert json.loads((tmp_path / "run" / "evaluation.json").read_text())["samples"] == 3
    # The wait after the last step promised 10,000 samples: the count is the test split's 3.
    assert any("steps done; now scoring image quality (3 samples), " in m for m in messages), messages


def test_a_folder_of_one_class_gets_no_figures_and_says_why(tmp_path, monkeypatch, capsys):
    # Its judge has one output, always 1: its loss is 0 whatever it sees, so it never learns (label accuracy
    # and classifier score 1, the distance one in an untrained network's features). No figure is better.
    from tests.data_helpers import make_image_folder
    from trainer.config import TrainConfig
    from trainer.train import train

    monkeypatch.setattr("trainer.judge.MIN_STEPS", JUDGE_STEPS)
    folder = make_image_folder(tmp_path / "f", classes=("cats",), n=12)
    cfg = TrainConfig(dataset=f"folder:{folder}", output_dir=str(tmp_path / "run"), epochs=1, batch_size=4,
                      image_size=16, eval_every=1)
    messages = []
    train(cfg, log=lambda m="", **kwargs: messages.append(str(m)))
    said = [m for m in messages if m.startswith("no evaluation: ")]
    assert len(said) == 1 and "one class" in said[0], messages  # trains on without figures, saying why once
    assert not (tmp_path / "run" / ev.RESULT_FILE).exists()

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(tmp_path / "run")])
    last = capsys.readouterr().err.splitlines()[-1]
    assert e.value.code == 2 and last.startswith("error: folder:") and "has one class" in last, last
    assert not (tmp_path / "run" / ev.RESULT_FILE).exists()


@pytest.mark.parametrize("classes, model", [(("cats",), "cgan"), ((), "dcgan")], ids=["one-class", "no-classes"])
def test_eval_every_on_a_folder_without_figures_says_so_before_training_and_promises_no_score(tmp_path, classes, model):
    # The wait after the last step was announced as "scoring image quality (10,000 samples)", for a score
    # the run never takes: what cannot be judged is known from the training data's classes, before step 1.
    from tests.data_helpers import make_image_folder
    from trainer.config import TrainConfig
    from trainer.train import train

    folder = make_image_folder(tmp_path / "f", classes=classes, n=8)
    cfg = TrainConfig(dataset=f"folder:{folder}", output_dir=str(tmp_path / "run"), model=model, epochs=1,
                      batch_size=4, image_size=16, eval_every=1)
    messages = []
    train(cfg, log=lambda m="", **kwargs: messages.append(str(m)))
    said = [k for k, m in enumerate(messages) if m.startswith("no evaluation: ")]
    first_epoch = next(k for k, m in enumerate(messages) if m.startswith("epoch 1/"))
    assert len(said) == 1 and said[0] < first_epoch, messages
    last_step = next(m for m in messages if m.startswith("all 2 steps done"))
    assert last_step == "all 2 steps done; now the last sample grid, a checkpoint, the exported generator and " \
                        "report.html", messages
    assert not (tmp_path / "run" / ev.RESULT_FILE).exists()


def evaluate_folder_run(tmp_path, capsys, classes, generator_classes):
    """`trainer evaluate` of a run whose (untrained) generator of `generator_classes` drew a folder of `classes`:
    its exit (pytest's ExceptionInfo) and stderr."""
    from tests.data_helpers import make_image_folder
    from trainer.export import export_generator
    from trainer.models import build_generator

    folder = make_image_folder(tmp_path / "f", classes=classes, n=12)
    conditional = bool(generator_classes)
    meta = {"dataset": f"folder:{folder}", "class_names": list(generator_classes), "conditional": conditional,
            "model": "cgan" if conditional else "dcgan", "preset": "default", "z_dim": 8, "z_distribution": "normal",
            "image_shape": [16, 16, 3], "value_range": [-1.0, 1.0], "steps": 0}
    generator = build_generator("default", 8, (16, 16, 3), len(generator_classes))
    export_generator(generator, meta, tmp_path / "run" / "generator")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(tmp_path / "run")])
    return e, capsys.readouterr().err


@pytest.mark.parametrize("classes", [("cats",), ()], ids=["one-class", "no-classes"])
def test_a_folder_no_figures_can_come_from_is_refused_before_its_pictures_load(tmp_path, capsys, classes):
    """Its folder's layout says so (one class subfolder, or none): loading every picture first only to refuse
    took minutes of a progress bar on a large folder."""
    e, err = evaluate_folder_run(tmp_path, capsys, classes, generator_classes=())
    assert e.value.code == 2 and err.splitlines()[-1].startswith("error: folder:"), err
    assert ("has one class" if classes else "has no classes") in err.splitlines()[-1]
    assert "loading images" not in err, err
    assert not (tmp_path / "run" / ev.RESULT_FILE).exists()


def test_a_conditional_generator_of_other_classes_is_refused_before_the_folder_loads(tmp_path, capsys):
    """The folder's listing names its classes: loading every picture (and training a judge on them) first, only to
    find they are not the generator's, took minutes on a large folder."""
    e, err = evaluate_folder_run(tmp_path, capsys, ("cats", "dogs"), generator_classes=("ants", "bees"))
    last = err.splitlines()[-1]
    assert e.value.code == 2 and "the generator's classes (ants, bees) differ" in last and "(cats, dogs)" in last, err
    assert "loading images" not in err, err
    assert not (tmp_path / "run" / ev.RESULT_FILE).exists()
