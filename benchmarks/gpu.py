"""gankit on one GPU with JAX: images/s per preset, and whole 64-epoch runs, cold and warm.

    python benchmarks/gpu.py --data-dir FASHION_MNIST_DIR [--wheels WHEELS_DIR] [--epochs 64]

Needs only JAX (with CUDA), Keras 3 and numpy, plus the trainer's small pure-Python
dependencies (click, pillow, matplotlib): where those are missing, `--wheels DIR`
installs them from a folder of wheels (e.g. `pip download keras namex optree click
pillow matplotlib -d DIR` on a machine with internet) into benchmarks/.gpu-deps first.
TensorFlow and boto3 are never imported (the trainer's JAX path does not need them).
FASHION_MNIST_DIR holds the four canonical .gz files.

Prints, for the `sn-hinge` (default), `projection` and `book` presets at their default batch:
- steady images/s of the training step (whole epochs per compiled call, data on the device);
- wall time of the whole process `python -m trainer train --dataset zalando --epochs 64
  --framework jax` (data load, compile, every epoch's samples and checkpoint, export),
  cold (empty JAX compilation cache) and warm (the same command again: compiled code
  comes from the persistent cache under $GANKIT_CACHE/jax).
Results also go to benchmarks/gpu-results.json.
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEPS = REPO / "benchmarks" / ".gpu-deps"
NEEDED = ("jax", "keras", "numpy", "click", "PIL", "matplotlib")
PRESETS = ("sn-hinge", "projection", "book")  # projection: the default when issue 11 set its targets


def missing() -> list[str]:
    return [m for m in NEEDED if importlib.util.find_spec(m) is None]


def install_wheels(wheels: Path):
    names = {"PIL": "pillow"}
    wanted = [names.get(m, m) for m in missing() if m not in ("jax", "numpy")]
    if "keras" in wanted:
        wanted += ["namex", "optree"]  # keras' own small needs; the GPU machine has the rest (absl-py, rich, h5py, ml-dtypes)
    if wanted:
        # --no-deps: with --no-index and --target, pip would look in the folder for what the machine has already.
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--find-links",
                        str(wheels), "--target", str(DEPS), *wanted], check=True)


def env(cache: Path | None = None) -> dict:
    """A child process's environment: the wheels' folder and this checkout on its path, JAX with its
    normal GPU allocator (a parent that only scores may have turned preallocation off), and with
    `cache` its own GANKIT_CACHE (an empty one: a cold compile)."""
    path = [str(DEPS)] if DEPS.is_dir() else []
    child = dict(os.environ, PYTHONPATH=os.pathsep.join(path + [str(REPO)] + [os.environ.get("PYTHONPATH", "")]),
                 KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    child.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)
    if cache is not None:
        child["GANKIT_CACHE"] = str(cache)
    return child


def failure(done: subprocess.CompletedProcess) -> str:
    """The end of a failed child's output (its one-line error comes last)."""
    return (done.stderr.strip() or done.stdout.strip())[-3000:] or f"exit status {done.returncode}"


def throughput_in_child(preset: str, data_dir: str, batch_size=None, cache=None, timeout=None, max_steps=None) -> dict:
    """throughput() in a process of its own, so each preset compiles from a clean start; RuntimeError if it fails."""
    cmd = [sys.executable, __file__, "--data-dir", data_dir, "--throughput-only", preset]
    cmd += ["--batch-size", str(batch_size)] if batch_size else []
    cmd += ["--max-steps", str(max_steps)] if max_steps else []
    done = subprocess.run(cmd, env=env(cache), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(failure(done))
    return json.loads(done.stdout.strip().splitlines()[-1])


def throughput(preset: str, data_dir: str, batch_size=None, calls: int = 3, max_steps=None) -> dict:
    """In this process: steady images/s of whole-epoch compiled calls (the first call compiles); with
    `max_steps`, calls of that many steps instead (a smoke test on a CPU, where an epoch takes minutes)."""
    os.environ["KERAS_BACKEND"] = "jax"
    import jax

    from trainer.config import TrainConfig
    from trainer.data import load_dataset
    from trainer.device import configure
    from trainer.distribute import Placement
    from trainer.steps import build_nets, make_runner, spec_from

    cfg = TrainConfig(dataset="zalando", output_dir="-", preset=preset, framework="jax", batch_size=batch_size).resolve()
    setup = configure("auto", "auto", 0, "jax")
    data = load_dataset("zalando", data_dir, "train")
    nets = build_nets(cfg, data.images.shape[1:], data.num_classes, setup.precision)
    runner = make_runner("jax", nets, spec_from(cfg, data.num_classes, cfg.batch_size), data, Placement(1, "single"), setup)
    steps = len(data.images) // cfg.batch_size
    if max_steps:
        steps = min(steps, max_steps)
    t0 = time.perf_counter()
    runner.start_epoch(0, 0, steps)
    runner.run(0, steps, 0)
    compile_and_first = time.perf_counter() - t0
    best = float("inf")
    for epoch in range(1, calls + 1):
        runner.start_epoch(epoch, 0, steps)
        t0 = time.perf_counter()
        runner.run(0, steps, epoch * steps)  # returns host arrays: the device has finished
        best = min(best, time.perf_counter() - t0)
    return {"preset": preset, "batch": cfg.batch_size, "precision": setup.precision, "device": setup.device,
            "jax": jax.__version__, "steps_per_epoch": steps, "seconds_per_epoch": best,
            "images_per_sec": steps * cfg.batch_size / best, "first_epoch_seconds": compile_and_first,
            "max_steps": max_steps}


def whole_run(data_dir: str, epochs: int, cache: Path, out: Path, flags=(), timeout=None) -> float:
    """Wall seconds of the whole process `python -m trainer train --dataset zalando --epochs E --framework jax
    FLAGS`, into `out` (emptied first: a fresh run, never a resume); RuntimeError if it fails."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "trainer", "train", "--dataset", "zalando", "--data-dir", data_dir,
           "--epochs", str(epochs), "--framework", "jax", *flags, "--output-dir", str(out)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env(cache), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(failure(done))
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder with Fashion-MNIST's four .gz files")
    parser.add_argument("--wheels", type=Path, help="folder of wheels for whatever of keras/click/pillow/matplotlib is missing")
    parser.add_argument("--epochs", type=int, default=64)
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--batch-size", type=int, help="instead of each preset's default (for a smoke test on a CPU)")
    parser.add_argument("--max-steps", type=int,
                        help="steps per images/s call instead of an epoch, and per whole run (a smoke test on a CPU)")
    parser.add_argument("--skip-whole-runs", action="store_true")
    parser.add_argument("--throughput-only", help=argparse.SUPPRESS)  # the child process of one preset
    args = parser.parse_args()

    if args.throughput_only:
        print(json.dumps(throughput(args.throughput_only, args.data_dir, args.batch_size, max_steps=args.max_steps)))
        return
    if args.wheels:
        install_wheels(args.wheels)
        sys.path.insert(0, str(DEPS))
    gone = [m for m in missing() if not (DEPS / m).exists()]
    if gone:
        raise SystemExit(f"error: missing {', '.join(gone)}; pass --wheels DIR with their wheels, or pip install them")

    results = {"throughput": [], "whole_runs": []}
    presets = args.presets.split(",")
    for preset in presets:
        try:
            row = throughput_in_child(preset, args.data_dir, args.batch_size, max_steps=args.max_steps)
        except RuntimeError as e:
            raise SystemExit(f"error: throughput of {preset} failed:\n{e}") from None
        results["throughput"].append(row)
        print(f"{row['device']}  {preset:10s} batch {row['batch']:4d}  {row['precision']}: "
              f"{row['images_per_sec']:,.0f} img/s ({row['seconds_per_epoch']:.2f} s/epoch; first epoch with "
              f"compilation {row['first_epoch_seconds']:.1f} s)", flush=True)
    if not args.skip_whole_runs:
        work = Path(tempfile.mkdtemp(prefix="gankit-gpu-"))
        for preset in presets:
            cache = work / f"cache-{preset}"  # empty: the first run is cold, the second warm
            flags = ["--preset", preset] + (["--batch-size", str(args.batch_size)] if args.batch_size else [])
            flags += ["--max-steps", str(args.max_steps)] if args.max_steps else []
            for start in ("cold", "warm"):
                try:
                    seconds = whole_run(args.data_dir, args.epochs, cache, work / f"run-{preset}", flags)
                except RuntimeError as e:
                    raise SystemExit(f"error: the {preset} run failed:\n{e}") from None
                results["whole_runs"].append({"preset": preset, "start": start, "epochs": args.epochs, "seconds": seconds})
                print(f"whole process, {preset}, {args.epochs} epochs, {start} start: {seconds:.1f} s", flush=True)
        shutil.rmtree(work, ignore_errors=True)
    (REPO / "benchmarks" / "gpu-results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
