"""`python -m launcher` is the `launcher` command (as `python -m trainer` is the trainer's)."""
from launcher.cli import main

main()
