"""`python -m trainer`; light, so that Ctrl-C while the CLI's imports run exits 130, as it does later,
rather than with a traceback."""

import sys

try:
    from trainer.cli import main
except KeyboardInterrupt:
    sys.exit(130)

main()
