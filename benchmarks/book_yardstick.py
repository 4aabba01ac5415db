"""The book preset against the book's loop on TensorFlow, both timed as whole processes.

    python benchmarks/book_yardstick.py [--data-dir /usr/share/datasets/fashion-mnist] [--steps 120] [--runs 3]

Yardstick: ../shared/yardsticks/book_cgan.py IDX_DIR --steps N (a faithful TF2 port of
the chapter's loop; it runs N timed steps after 5 warm-up ones). Ours: `python -m trainer
train --preset book --batch-size 32 --max-steps N` on the same data, with everything a run
does (checkpoint, samples, export, report). Runs are paired (yardstick, then ours) so a
busy neighbour hurts both alike; prints each pair and the median ratio yardstick/ours.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (or beside the folder of worktrees that holds it).
YARDSTICK = next((p for p in (REPO.parent / "shared" / "yardsticks" / "book_cgan.py",
                              REPO.parents[1] / "shared" / "yardsticks" / "book_cgan.py") if p.is_file()),
                 REPO.parent / "shared" / "yardsticks" / "book_cgan.py")


def timed(cmd, env) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--yardstick", type=Path, default=Path(os.environ.get("GANKIT_YARDSTICK", YARDSTICK)))
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not args.yardstick.is_file():
        raise SystemExit(f"error: no yardstick at {args.yardstick}; pass --yardstick PATH/book_cgan.py")

    env = dict(os.environ, PYTHONPATH=str(REPO), KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    ratios = []
    for run in range(args.runs):
        book = timed([sys.executable, str(args.yardstick), args.data_dir, "--steps", str(args.steps)], env)
        with tempfile.TemporaryDirectory() as tmp:
            ours = timed([sys.executable, "-m", "trainer", "train", "--dataset", "zalando", "--data-dir", args.data_dir,
                          "--preset", "book", "--batch-size", "32", "--max-steps", str(args.steps),
                          "--framework", "tensorflow", "--output-dir", tmp], dict(env, GANKIT_CACHE=tmp))
        ratios.append(book / ours)
        print(f"run {run + 1}: book {book:.1f} s, gankit {ours:.1f} s, ratio {book / ours:.2f}x", flush=True)
    print(f"median ratio (book / gankit) over {args.runs} paired runs: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
