"""How good is a generator, in numbers that mean the same from run to run.

`evaluate(generator_dir)` scores `samples` generated images with the judge
(trainer.judge) against as many real test images, and the real test images
against as many real train images as the ceiling (`real`), then writes
`evaluation.json` beside the generator. A conditional generator is asked for the
classes of the real test images it is compared with, and the train images of the
ceiling are drawn to the same class counts: FCD compares distributions, so a
generator that draws every class exactly must not pay for an even mix against a
test split that is not even (an image folder's classes rarely are).

`epoch_hook` does the same during training every --eval-every epochs, with
EPOCH_SAMPLES images (cheaper, so only comparable with other EPOCH_SAMPLES
figures) and with DEFAULT_SAMPLES at the end; it keeps the generator with the
best EPOCH_SAMPLES FCD in generator-best/ (BEST_DIR) beside the last one.
"""

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np

from trainer import metrics
from trainer.errors import GankitError, UsageError, printable_cell
from trainer.fsutil import atomic_write_text, restore_set_aside

DEFAULT_SAMPLES = 10_000
EPOCH_SAMPLES = 1_000
RESULT_FILE = "evaluation.json"
BEST_DIR = "generator-best"  # beside generator/ (the last): the generator with the best FCD, with --eval-every
SEED = 0


@dataclasses.dataclass(eq=False)
class Reference:
    """The judge plus the real test images' features at one count, and the real-data figures."""

    judge: object
    samples: int
    test_features: np.ndarray
    real: dict
    test_labels: np.ndarray  # the class of each of those test images: what a conditional generator is asked for


def check_samples(samples) -> int:
    """`samples` if it is a count evaluate can compare at; else one line. The CLIs ask before TensorFlow loads."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 2:
        raise UsageError(f"--samples {samples}: must be a whole number of at least 2, e.g. {DEFAULT_SAMPLES}")
    return samples


def make_reference(dataset, data_dir, image_shape, samples, log=print, splits=None) -> Reference:
    """The reference at `samples` images; `splits` where the caller has them from `checked_splits` already
    (which then said what it had to say once, not once per count)."""
    from trainer.judge import load_judge

    check_samples(samples)
    splits = splits or checked_splits(dataset, data_dir, image_shape, log)
    judge = load_judge(dataset, splits=splits, log=log)
    n = reference_count(splits, samples)
    if n < samples:
        log(f"using {n} samples, not {samples}: the real test split has only {len(splits.test_images)} images "
            "(compare only figures taken at the same count)")
    rng = np.random.default_rng(SEED)
    test_idx = np.sort(rng.choice(len(splits.test_images), n, replace=False))
    test_labels = splits.test_labels[test_idx]
    train_idx = class_matched(rng, splits.train_labels, test_labels)
    test_features, test_probs = judge.outputs(splits.test_images[test_idx])
    train_features = judge.features(splits.train_images[train_idx])
    accuracy, per_class = metrics.label_accuracy(test_probs, test_labels, len(judge.class_names))
    real = {
        "label_accuracy": accuracy,
        "per_class_accuracy": dict(zip(judge.class_names, per_class)),
        # Real vs real: n test images against n train images of the same classes, the best a generator can hope for.
        "frechet_classifier_distance": metrics.frechet_distance(train_features, test_features),
        "classifier_score": metrics.classifier_score(test_probs),
        "samples": n,
    }
    return Reference(judge, n, test_features, real, test_labels)


def checked_splits(dataset, data_dir, image_shape, log=print):
    """The judge's splits, if figures can be taken from them (else one line, a UsageError); says which class
    has no test image."""
    from trainer.judge import load_splits

    splits = load_splits(dataset, data_dir, image_shape)
    if min(len(splits.test_images), len(splits.train_images)) < 2:  # no distance from a single image
        from trainer.judge import FOLDER_TEST_SHARE

        raise UsageError(f"{dataset} has too few images to evaluate ({len(splits.train_images)} train, "
                         f"{len(splits.test_images)} test; at least 2 each): an image folder keeps 1 picture in "
                         f"{FOLDER_TEST_SHARE} of each class for testing (one of a class of 2 to 8), so add pictures")
    untested = [name for k, name in enumerate(splits.class_names) if not (splits.test_labels == k).any()]
    if untested:
        log(f"no test image of class {', '.join(untested)}: the judge learns it, but the figures leave it out "
            "(an image folder's class needs 2 pictures to have one)")
    return splits


def reference_count(splits, samples) -> int:
    """How many images a reference of `samples` compares: no more than either split has."""
    return min(int(samples), len(splits.test_images), len(splits.train_images))


def class_matched(rng, labels, wanted) -> np.ndarray:
    """Sorted indices into `labels` holding as many of each class as `wanted` does (without replacement
    while a class has enough; a class `labels` lacks, possible in IDX files whose train split lacks a class its
    test split has, but not in an image folder's split, is drawn from all)."""
    picked = [rng.choice(pool if len(pool) else np.arange(len(labels)), count, replace=count > len(pool))
              for k, count in enumerate(np.bincount(wanted)) if count
              for pool in [np.flatnonzero(labels == k)]]
    return np.sort(np.concatenate(picked))


def check_classes(generator, dataset_classes):
    """A conditional generator is scored only against the classes it draws (else one line, a UsageError)."""
    if generator.conditional and tuple(generator.class_names) != tuple(dataset_classes):
        raise UsageError(f"the generator's classes ({_some(generator.class_names)}) differ from the dataset's "
                         f"({_some(dataset_classes)}); pass the --data-dir it was trained on")


def _some(names, shown=5) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def score_generator(generator, ref: Reference) -> dict:
    """The figures for `ref.samples` images from `generator`; label figures are None for a dcgan."""
    judge = ref.judge
    check_classes(generator, judge.class_names)
    # A conditional generator draws the classes of the test images it is compared with, not an even mix.
    images = generator.generate(count=ref.samples, seed=SEED, labels=ref.test_labels if generator.conditional else None)
    features, probs = judge.outputs(images)
    figures = {"label_accuracy": None, "per_class_accuracy": None}
    if generator.conditional:
        accuracy, per_class = metrics.label_accuracy(probs, ref.test_labels, generator.num_classes)
        figures = {"label_accuracy": accuracy, "per_class_accuracy": dict(zip(judge.class_names, per_class))}
    figures["frechet_classifier_distance"] = metrics.frechet_distance(features, ref.test_features)
    figures["classifier_score"] = metrics.classifier_score(probs)
    figures["samples"] = ref.samples
    return figures


def full_result(figures: dict, ref: Reference, meta: dict) -> dict:
    """evaluation.json: the figures, the ceiling, and which generator they score (`meta`: its generator.json)."""
    scored = {"selected": meta.get("selected", "last"), "steps": meta.get("steps")}
    return {**figures, "judge_test_accuracy": ref.judge.test_accuracy, "real": ref.real, "generator": scored}


def evaluate(generator_dir, data_dir=None, samples=DEFAULT_SAMPLES, log=print) -> dict:
    """Score an exported generator; writes evaluation.json into its parent (the run's output dir)."""
    from trainer.data import class_names_of
    from trainer.export import load_generator

    generator_dir = Path(generator_dir)
    generator = load_generator(generator_dir)
    # Asked of the folder's listing: loading every picture and training a judge on them came first, only to refuse.
    check_classes(generator, class_names_of(generator.meta["dataset"], data_dir))
    ref = make_reference(generator.meta["dataset"], data_dir, tuple(generator.meta["image_shape"]), samples, log)
    result = full_result(score_generator(generator, ref), ref, generator.meta)
    folder = generator_dir.resolve().parent
    try:
        write_result(folder, result)
    except OSError as e:  # a full disk, a folder that is not writable: the figures are shown, not lost
        log(format_table(result))
        raise GankitError(f"{RESULT_FILE} could not be written in {folder} ({e.strerror or e}); the figures are "
                          "above; free some space there or make it writable to keep them in the file") from None
    return result


def write_result(out_dir, result) -> Path:
    path = Path(out_dir) / RESULT_FILE
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path


def epoch_hook(cfg, data_dir, image_shape, class_names, log=print):
    """For the training loop: a function (generator, metrics row, final, out_dir) that records quality
    figures in the row every cfg.eval_every epochs and at the end; None when evaluation is off, or when the
    training data's `class_names` (none, or one) can have no judge: then said once, before the first step.

    It also keeps the generator with the best FCD in `generator-best/` (BEST_DIR) beside the last one:
    every evaluation, the final one included, is compared at EPOCH_SAMPLES so the figures are comparable.
    After the final evaluation, `hook.last` holds the keys the last generator's generator.json records;
    `hook.final_samples()` says at how many images that evaluation scores.
    """
    from trainer.data import canonical_name
    from trainer.judge import check_judgeable

    if not cfg.eval_every:
        return None
    try:  # known now: else the run would announce, after its last step, a score it never takes
        check_judgeable(canonical_name(cfg.dataset), class_names)
    except UsageError as e:
        log(f"no evaluation: {e}")
        return None
    references = {}

    @functools.cache
    def the_splits():
        """The data, checked (and what is odd in it said) once per run; None where no figures can come from it."""
        try:
            return checked_splits(cfg.dataset, data_dir, tuple(image_shape), log)
        except UsageError as e:  # e.g. a folder without classes: train on, just without figures
            log(f"no evaluation: {e}")
            return None

    def reference(count):
        """The reference at `count` images, made once: a count capped to the test split's size reuses the
        reference of that size."""
        splits = the_splits()
        if splits is None:
            return None
        n = reference_count(splits, count)
        if n not in references:
            references[n] = make_reference(cfg.dataset, data_dir, tuple(image_shape), count, log, splits=splits)
        return references[n]

    def hook(generator, row, final, out_dir):
        if not final and row["epoch"] % cfg.eval_every:
            return
        ref = reference(EPOCH_SAMPLES)
        if ref is None:
            return
        figures = score_generator(generator, ref)
        selection = selection_meta(figures, row)
        keep_if_best(generator, selection, Path(out_dir), cfg, image_shape, log)
        if final:
            hook.last = dict(selection, selected="last")
            big = reference(DEFAULT_SAMPLES)
            if big is not None and big.samples != ref.samples:
                ref, figures = big, score_generator(generator, big)
        # With the real figures at the same count: the plot's real line for 1,000-sample points is not 10,000's.
        row["evaluation"] = dict(figures, real={k: ref.real[k] for k in REAL_KEYS})
        log(f"epoch {row['epoch']} quality at {ref.samples} samples: " + short_summary(figures, ref.real))
        if final:
            write_result(out_dir, full_result(figures, ref, {"selected": "last", "steps": row["step"]}))

    def final_samples():
        """How many images the final evaluation scores: DEFAULT_SAMPLES, or fewer where the data has fewer
        (None: it takes no figures), for the line that says what the wait after the last step is for."""
        splits = the_splits()
        return None if splits is None else reference_count(splits, DEFAULT_SAMPLES)

    hook.last = {}
    hook.final_samples = final_samples
    return hook


REAL_KEYS = ("label_accuracy", "frechet_classifier_distance", "classifier_score", "samples")


def selection_meta(figures, row) -> dict:
    """What generator.json records about the evaluation a generator was chosen by."""
    return {"fcd": figures["frechet_classifier_distance"], "fcd_samples": figures["samples"],
            "label_accuracy": figures["label_accuracy"], "epoch": row["epoch"], "step": row["step"]}


def best_fcd(out_dir: Path, samples=EPOCH_SAMPLES) -> float | None:
    """The FCD of the generator in out_dir/BEST_DIR (a resumed run continues from it), if comparable."""
    restore_set_aside(out_dir / BEST_DIR)  # a crash in the middle of its last export must not lose it
    try:
        meta = json.loads((out_dir / BEST_DIR / "generator.json").read_text())
        return float(meta["fcd"]) if meta.get("fcd_samples") == samples else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def keep_if_best(generator, selection, out_dir: Path, cfg, image_shape, log=print) -> bool:
    """Export `generator` to out_dir/BEST_DIR (atomically, in float32) when its FCD beats the kept one's."""
    from trainer.export import export_generator, float32_model
    from trainer.models import build_generator

    best = best_fcd(out_dir, selection["fcd_samples"])
    if best is not None and selection["fcd"] >= best:
        return False
    model = float32_model(generator.model,
                          lambda: build_generator(cfg.preset, cfg.z_dim, tuple(image_shape), generator.num_classes))
    meta = dict(generator.meta, steps=selection["step"], selected="best", **selection)
    export_generator(model, meta, out_dir / BEST_DIR)
    log(f"epoch {selection['epoch']}: best FCD so far ({selection['fcd']:.3f} at {selection['fcd_samples']} "
        f"samples); generator kept in {BEST_DIR}/")
    return True


def short_summary(figures, real) -> str:
    parts = []
    if figures["label_accuracy"] is not None:
        parts.append(f"label accuracy {figures['label_accuracy']:.3f} (real {real['label_accuracy']:.3f})")
    parts.append(f"FCD {figures['frechet_classifier_distance']:.3f} (real {real['frechet_classifier_distance']:.3f})")
    parts.append(f"classifier score {figures['classifier_score']:.3f} (real {real['classifier_score']:.3f})")
    return ", ".join(parts)


def _fmt(value, digits=4):
    return "n/a" if value is None else f"{value:.{digits}f}"


def table_rows(result: dict) -> list[tuple[str, str, str]]:
    """(figure, generated, real) rows, shared by the terminal table and the HTML report."""
    real = result["real"]
    rows = [
        ("label accuracy", _fmt(result["label_accuracy"]), _fmt(real["label_accuracy"])),
        ("Fréchet classifier distance (lower is better)", _fmt(result["frechet_classifier_distance"]),
         _fmt(real["frechet_classifier_distance"])),
        ("classifier score (higher is better)", _fmt(result["classifier_score"], 3), _fmt(real["classifier_score"], 3)),
    ]
    per_class = result["per_class_accuracy"] or {}
    for name, real_share in real["per_class_accuracy"].items():
        rows.append((f"  class {name}", _fmt(per_class.get(name)), _fmt(real_share)))
    return rows


def format_table(result: dict) -> str:
    # A class is named by its dataset (a folder's subfolder, generator.json): each stays on its own row.
    rows = [(printable_cell(figure), generated, real) for figure, generated, real in
            [("figure", "generated", "real")] + table_rows(result)]
    width = max(len(r[0]) for r in rows)
    lines = [f"{a:<{width}}  {b:>10}  {c:>10}" for a, b, c in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    lines.append(f"{result['samples']} generated vs {result['samples']} real test images; real column: test images "
                 f"(distance: test vs {result['real']['samples']} train images). Compare only at the same count.")
    lines.append(f"judge accuracy on the whole real test split: {result['judge_test_accuracy']:.4f}")
    return "\n".join(lines)
