"""`python -m launcher` is the `launcher` command (as `python -m trainer` is the trainer's), and `main` its
console script: light, so that Ctrl-C while the CLI's imports run (~0.25 s) exits 130, as it does later,
rather than with a traceback."""

import sys


def main():
    try:
        from launcher.cli import main as run
    except KeyboardInterrupt:
        sys.exit(130)
    run()


if __name__ == "__main__":
    main()
