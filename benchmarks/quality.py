"""Image quality of the `seed` (the book's) and `default` (ours) presets, side by side.

    python benchmarks/quality.py                         # CPU budget (printed): 8,000 images each
    python benchmarks/quality.py --images 60000 --samples 10000
    python benchmarks/quality.py --full                  # GPU: 64 whole epochs each, 10,000 samples

Both presets train on real Zalando Fashion-MNIST (/usr/share/datasets/fashion-mnist,
or --data-dir) for the same number of epochs: with --images, the same share of one
epoch (the same number of images seen, whatever each preset's batch size), so the
comparison is fair. Then each generator is scored by `trainer.evaluate` at the same
sample count, beside the real-data ceiling. Targets (issue 6, --full on a GPU):
default's label accuracy >= the judge's accuracy on real test images, and its
Fréchet classifier distance within 3x the real-vs-real distance at the same count.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FASHION = "/usr/share/datasets/fashion-mnist"
PRESETS = ("seed", "default")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="64 whole epochs per preset (a GPU job), 10,000 samples.")
    p.add_argument("--epochs", type=int, default=None, help="Whole epochs per preset (default: 64 with --full).")
    p.add_argument("--images", type=int, default=8_000,
                   help="CPU budget: training images per preset, a share of one epoch [8,000].")
    p.add_argument("--samples", type=int, default=None, help="Images per evaluation [CPU 2,000; --full 10,000].")
    p.add_argument("--data-dir", default=FASHION, help=f"Fashion-MNIST files [{FASHION}].")
    p.add_argument("--out-dir", default=None, help="Keep the runs here (default: a temp folder).")
    p.add_argument("--json", default=None, help="Also write the results to this JSON file.")
    return p.parse_args(argv)


def budget(args) -> dict:
    """What each preset trains for: whole epochs (--full/--epochs), else a share of one epoch."""
    from trainer.config import PRESETS as CONFIGS

    if args.full or args.epochs:
        epochs = args.epochs or 64
        return {"epochs": epochs, "max_steps": {p: None for p in PRESETS}, "samples": args.samples or 10_000,
                "text": f"{epochs} whole epochs per preset"}
    steps = {p: max(1, args.images // CONFIGS[p].batch_size) for p in PRESETS}
    return {"epochs": 1, "max_steps": steps, "samples": args.samples or 2_000,
            "text": f"{args.images:,} training images per preset ({args.images / 60_000:.2f} epochs: "
                    + ", ".join(f"{p} {steps[p]} steps of {CONFIGS[p].batch_size}" for p in PRESETS) + ")"}


def run_preset(preset, plan, args, root: Path) -> dict:
    from trainer.config import TrainConfig
    from trainer.evaluate import evaluate
    from trainer.train import train

    out = root / preset
    cfg = TrainConfig(dataset="zalando", data_dir=args.data_dir, output_dir=str(out), preset=preset,
                      epochs=plan["epochs"], max_steps=plan["max_steps"][preset], checkpoint_minutes=60)
    t0 = time.monotonic()
    summary = train(cfg, log=lambda *a: None)
    train_seconds = time.monotonic() - t0  # TensorFlow start-up and report included
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    t0 = time.monotonic()
    result = evaluate(out / "generator", args.data_dir, plan["samples"], log=print)
    return {"preset": preset, "steps": summary["steps"], "train_seconds": train_seconds,
            "images_per_sec": sum(r["images_per_sec"] * r["seconds"] for r in rows) / sum(r["seconds"] for r in rows),
            "eval_seconds": time.monotonic() - t0, **result}


def side_by_side(results: dict) -> str:
    seed, default = results["seed"], results["default"]
    real = default["real"]

    def f(x, digits=4):
        return "n/a" if x is None else f"{x:.{digits}f}"

    rows = [("figure", "seed", "default", "real"),
            ("label accuracy", f(seed["label_accuracy"]), f(default["label_accuracy"]), f(real["label_accuracy"])),
            ("Fréchet classifier distance", f(seed["frechet_classifier_distance"]),
             f(default["frechet_classifier_distance"]), f(real["frechet_classifier_distance"])),
            ("classifier score", f(seed["classifier_score"], 3), f(default["classifier_score"], 3),
             f(real["classifier_score"], 3)),
            ("training steps", str(seed["steps"]), str(default["steps"]), ""),
            ("training time (s)", f"{seed['train_seconds']:.0f}", f"{default['train_seconds']:.0f}", ""),
            ("train images/s", f(seed["images_per_sec"], 0), f(default["images_per_sec"], 0), "")]
    for name in real["per_class_accuracy"]:
        rows.append((f"  {name}", f(seed["per_class_accuracy"][name]), f(default["per_class_accuracy"][name]),
                     f(real["per_class_accuracy"][name])))
    lines = [f"{a:<30}{b:>10}{c:>10}{d:>10}" for a, b, c, d in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def targets(results) -> str:
    d = results["default"]
    fcd_ratio = d["frechet_classifier_distance"] / max(d["real"]["frechet_classifier_distance"], 1e-12)
    return (f"targets (meant for --full on a GPU): label accuracy {d['label_accuracy']:.4f} vs judge's real "
            f"test accuracy {d['judge_test_accuracy']:.4f} -> {'met' if d['label_accuracy'] >= d['judge_test_accuracy'] else 'not met'}; "
            f"FCD {fcd_ratio:.1f}x the real-vs-real distance (target <= 3x) -> {'met' if fcd_ratio <= 3 else 'not met'}")


def main(argv=None):
    args = parse_args(argv)
    plan = budget(args)
    print(f"budget: {plan['text']}; evaluation at {plan['samples']:,} samples (real: test vs train at the same count)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out_dir or tmp)
        t0 = time.monotonic()
        results = {}
        for preset in PRESETS:
            print(f"--- {preset}", flush=True)
            results[preset] = run_preset(preset, plan, args, root)
        wall = time.monotonic() - t0
    print()
    print(side_by_side(results))
    n = results["default"]["samples"]
    print(f"\n{n} generated vs {n} real test images; real column: real test images (distance: {n} test vs {n} train).")
    print(f"judge test accuracy (whole test split): {results['default']['judge_test_accuracy']:.4f}")
    print(targets(results))
    print(f"wall time: {wall / 60:.1f} min (judge training included when not cached)")
    if args.json:
        Path(args.json).write_text(json.dumps({"budget": plan["text"], "wall_seconds": wall, **results}, indent=2))


if __name__ == "__main__":
    main()
