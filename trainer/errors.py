"""The one error type users see.

Anything raised as `GankitError` is printed as a single line (no traceback) by the
CLIs, which exit with `exit_code`: 2 for bad input (usage), 1 for a run that failed.
"""


class GankitError(Exception):
    exit_code = 1


class UsageError(GankitError):
    """Bad input from the user: a flag, a path, a file that is not what it claims."""

    exit_code = 2


def run_cli(command, argv=None, prog_name=None):
    """Run a Click command so that every failure is one line on stderr.

    Click's own usage errors (exit 2), our GankitErrors (their exit code) and
    Ctrl-C (130) never show a traceback.
    """
    import sys

    import click

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
        click.echo(f"error: {e.format_message()}{hint}", err=True)
        sys.exit(e.exit_code)
    except GankitError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
