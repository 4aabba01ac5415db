"""The one error type users see.

Anything raised as `GankitError` is printed as a single line (no traceback) by the
CLIs, which exit with `exit_code`: 2 for bad input (usage), 1 for a run that failed.
"""


class GankitError(Exception):
    exit_code = 1


class UsageError(GankitError):
    """Bad input from the user: a flag, a path, a file that is not what it claims."""

    exit_code = 2
