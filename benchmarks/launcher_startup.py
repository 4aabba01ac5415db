"""How fast `launcher --help` and `launcher submit --help` answer (the issue's target: under 0.3 s).

Each command runs in a fresh Python process, as a user's shell would start it; the best of
several runs is printed, since a busy machine only ever makes a run slower. Also lists the
heavy modules (TensorFlow, boto3, the SageMaker SDK) that `--help` must not import.

    python3 benchmarks/launcher_startup.py [--runs 7]
"""

import argparse
import subprocess
import sys
import time

COMMANDS = (["--help"], ["submit", "--help"], ["list", "--help"])
HEAVY = ("tensorflow", "keras", "boto3", "botocore", "sagemaker", "matplotlib", "numpy")
TARGET_S = 0.3


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def best_time(argv: list[str], runs: int) -> float:
    code = f"import sys; sys.argv = ['launcher'] + {argv!r}; from launcher.cli import main; main()"
    return min(_timed([sys.executable, "-c", code]) for _ in range(runs))


def heavy_imports(argv: list[str]) -> list[str]:
    code = (f"import sys; sys.argv = ['launcher'] + {argv!r}\n"
            "from launcher.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in done.stderr.strip().split(",") if m]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    python_s = min(_timed([sys.executable, "-c", "pass"]) for _ in range(args.runs))
    print(f"python startup alone: best of {args.runs}: {python_s:.3f} s")
    for argv in COMMANDS:
        seconds = best_time(argv, args.runs)
        heavy = heavy_imports(argv)
        verdict = "ok" if seconds < TARGET_S else f"SLOW (target {TARGET_S} s)"
        print(f"launcher {' '.join(argv):<16} best of {args.runs}: {seconds:.3f} s  {verdict}; "
              f"heavy modules imported: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
