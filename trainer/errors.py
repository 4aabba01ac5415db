"""The one error type users see.

Anything raised as `GankitError` is printed as a single line (no traceback) by the
CLIs, which exit with `exit_code`: 2 for bad input (usage), 1 for a run that failed.
"""


class GankitError(Exception):
    exit_code = 1


class UsageError(GankitError):
    """Bad input from the user: a flag, a path, a file that is not what it claims."""

    exit_code = 2


class Stopped(GankitError):
    """SIGTERM (a spot interruption, `launcher stop`) or Ctrl-C: checkpointed, then stopped."""

    exit_code = 143  # 128 + SIGTERM, as a shell reports it


def run_cli(command, argv=None, prog_name=None, on_error=None):
    """Run a Click command so that every failure is one line on stderr.

    Click's own usage errors (exit 2), our GankitErrors (their exit code) and
    Ctrl-C (130) never show a traceback. `on_error(message)` hears of every
    failure first (the SageMaker contract writes it to /opt/ml/output/failure).
    """
    import sys

    import click

    def fail(message, code):
        if on_error:
            on_error(message)
        click.echo(f"error: {message}", err=True)
        sys.exit(code)

    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        sys.exit(130)
    except click.ClickException as e:
        hint = ""
        if isinstance(e, click.UsageError) and e.ctx is not None:
            hint = f" (see '{e.ctx.command_path} --help')"
        fail(f"{e.format_message()}{hint}", e.exit_code)
    except GankitError as e:
        fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as e:
        if on_error:  # a bug: keep the traceback in the log, and say so where the user looks
            on_error(f"internal error: {type(e).__name__}: {e}")
        raise
    sys.exit(0)
