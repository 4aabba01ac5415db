"""The errors users see, each as one line, and the signals that stop a command.

Anything raised as `GankitError` is printed as a single line (no traceback) by the
CLIs (`run_cli`), which exit with `exit_code`: 2 for bad input (`UsageError`), 1 for a
run that failed, 143 for a training run checkpointed and `Stopped`; `Diverged` for a
run whose numbers broke, `Interrupted` (128 + the signal) for a command stopped while
it leaves something going. `terminate_as_interrupt` raises SIGTERM and SIGHUP as
`Terminated`, a KeyboardInterrupt, so Ctrl-C's clean-up runs for them too; `aws_error`
turns botocore's failures into one line.
"""

import contextlib
import errno
import re


RESUME_BY_HAND = "run the same command to resume"  # a run's own advice; a job's says how the launcher resumes it


class GankitError(Exception):
    exit_code = 1


class UsageError(GankitError):
    """Bad input from the user: a flag, a path, a file that is not what it claims."""

    exit_code = 2


class Stopped(GankitError):
    """SIGTERM (a spot interruption, `launcher stop`) or Ctrl-C: checkpointed, then stopped."""

    exit_code = 143  # 128 + SIGTERM, as a shell reports it


# How a trainer that checkpointed and stopped exits, by the signal that stopped it (trainer/stopping.py):
# SIGTERM, Ctrl-C, SIGHUP. A runner that reads one of them says Stopped, not Failed.
STOPPED_EXIT_CODES = frozenset({143, 130, 129})


class Diverged(GankitError):
    """The losses or weights stopped being numbers: nothing from then on is kept, the checkpoints before stay."""

    def __init__(self, step: int, what: str):
        super().__init__(f"training diverged at step {step} ({what}), so it stops without keeping that state; the "
                         "checkpoints before it are kept. Run the same command with a lower --lr (and --d-lr), e.g. "
                         "half, to resume from the last of them at that rate, or start afresh with --precision "
                         "float32 or another --seed")


class Interrupted(GankitError):
    """Ctrl-C, SIGTERM or SIGHUP (`interrupt`, the KeyboardInterrupt it raised) stopped a command that leaves
    something going (a job, a pull half done): one line on what goes on and how to pick it up; exit 128 + the
    signal. The line names the signal with `interrupt_name`."""

    def __init__(self, message, interrupt: BaseException):
        super().__init__(message)
        self.signum = interrupt_signal(interrupt)
        self.exit_code = 128 + self.signum


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a closed terminal), raised where Ctrl-C would be, so that the same clean-up runs:
    temp files removed, S3 transfers cancelled, nothing half-written left behind."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def signal_name(signum) -> str:
    import signal

    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name


def interrupt_signal(e: BaseException) -> int:
    """The signal behind a KeyboardInterrupt: SIGINT, or Terminated's."""
    import signal

    return getattr(e, "signum", signal.SIGINT)


def interrupt_name(e: BaseException) -> str:
    """The name of the signal behind a KeyboardInterrupt, as Interrupted's line says it."""
    return signal_name(interrupt_signal(e))


NO_CREDENTIALS = "no AWS credentials found: run `aws configure` (or `aws sso login`), or set AWS_PROFILE"
NO_REGION = "no AWS region: run `launcher config set region REGION` (e.g. us-east-1), or set AWS_DEFAULT_REGION"
# Codes with which AWS refuses the credentials themselves (expired, revoked, mistyped).
REFUSED_CREDENTIALS = {"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "InvalidAccessKeyId",
                       "SignatureDoesNotMatch", "UnrecognizedClientException", "AuthFailure", "RequestExpired"}
# botocore's names for "no usable credentials here" (looked up by name: they vary across releases).
MISSING_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                       "SSOTokenLoadError", "UnauthorizedSSOTokenError", "TokenRetrievalError")


def no_region() -> UsageError:
    return UsageError(NO_REGION)


def one_line(text) -> str:
    return " ".join(str(text).split())


def aws_error(e: BaseException) -> GankitError | None:
    """A botocore failure as one line: missing or refused credentials and a missing region are usage
    errors (exit 2) that say how to fix them; any other AWS error is one line of what AWS said.
    None when `e` is not botocore's (botocore is imported only by code that talks to AWS)."""
    import sys

    exceptions = sys.modules.get("botocore.exceptions")
    if exceptions is None:
        return None
    setup = aws_setup_error(e)
    if setup is not None:
        return setup
    if isinstance(e, exceptions.ClientError):
        code, message = client_error(e)
        return GankitError(f"AWS {e.operation_name} failed: {code}: {message}")
    if isinstance(e, exceptions.ParamValidationError):
        return UsageError(one_line(e.kwargs.get("report", e)))
    if isinstance(e, exceptions.BotoCoreError):
        return GankitError(f"AWS: {one_line(e)}")
    return None


def aws_setup_error(e: BaseException) -> UsageError | None:
    """Missing or refused credentials, or no region, as the usage error that says how to fix them (the same
    line whichever call met them); None for any other failure."""
    import sys

    exceptions = sys.modules.get("botocore.exceptions")
    if exceptions is None:
        return None
    missing = tuple(getattr(exceptions, name) for name in MISSING_CREDENTIALS if hasattr(exceptions, name))
    if isinstance(e, missing):
        return UsageError(NO_CREDENTIALS)
    if isinstance(e, exceptions.NoRegionError):
        return no_region()
    if isinstance(e, exceptions.ClientError):
        code, message = client_error(e)
        if code in REFUSED_CREDENTIALS:
            return UsageError(f"AWS refused your credentials ({code}: {message}); renew them with `aws configure` "
                              "(or `aws sso login`), or set AWS_PROFILE")
    return None


def aws_failure(what: str, e: BaseException) -> GankitError:
    """`what: AWS's reason` on one line, for code that names what it was doing; but credentials missing or
    refused, or no region, are `aws_setup_error`'s line and fix, as every other command says them."""
    return aws_setup_error(e) or GankitError(f"{what}: {one_line(e)}")


def client_error(e) -> tuple[str, str]:
    """A ClientError's code and message, the message on one line."""
    error = e.response.get("Error", {})
    return str(error.get("Code", "?")), one_line(error.get("Message") or "")


@contextlib.contextmanager
def terminate_as_interrupt(signals=None):
    """SIGTERM and SIGHUP raise `Terminated` (a KeyboardInterrupt) in the block, as Ctrl-C raises its own:
    without this Python dies on the spot and leaves an atomic write's temp file, a download's partial copy,
    where the user finds it. After the first, further ones are ignored while the clean-up runs (Ctrl-C still
    interrupts it). A signal someone set to be ignored (`nohup`) stays ignored; off the main thread, nothing."""
    import signal
    import threading

    signals = signals or (signal.SIGTERM, signal.SIGHUP)
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in signals}

    def terminate(signum, _frame):
        for s in signals:
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    for s, handler in previous.items():
        if handler is signal.SIG_DFL:
            signal.signal(s, terminate)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


WINDOWS = ("gankit runs on Linux and macOS, not on Windows (it stops jobs with SIGTERM and SIGHUP, in process "
           "groups, and locks folders with fcntl); run it in WSL: `wsl --install`, then install gankit inside it")


def refuse_windows():
    """One line instead of a traceback from the first POSIX call (signal.SIGHUP as the CLI starts)."""
    import os

    if os.name != "posix":
        raise UsageError(WINDOWS)


def run_cli(command, argv=None, prog_name=None, on_error=None):
    """Run a Click command so that every failure is one line on stderr.

    Click's own usage errors (exit 2), our GankitErrors (their exit code; a training run `Stopped` as asked is
    not an error, so its line has no `error: `),
    botocore's errors (`aws_error`) and Ctrl-C (130) never show a traceback; SIGTERM and SIGHUP stop a
    command as Ctrl-C does (its clean-up runs) and exit 143 and 129. `on_error(message)` hears of every
    failure first (the SageMaker contract writes it to /opt/ml/output/failure).
    """
    import sys

    import click

    _print_any_name(sys.stdout, sys.stderr)

    def fail(message, code, interrupted=False, prefix="error: "):
        message = printable(message)
        if on_error:
            on_error(message)
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            if interrupted and sys.stderr.isatty():
                click.echo(err=True)  # close the terminal's ^C echo
            click.echo(f"{prefix}{message}", err=True)
        sys.exit(code)

    try:
        refuse_windows()
        with terminate_as_interrupt():
            command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort as e:
        cause = e.__cause__
        if isinstance(cause, Terminated):  # Ctrl-C speaks for itself (the ^C echo); these say what came
            fail(f"stopped by {signal_name(cause.signum)}", 128 + cause.signum)
        sys.exit(130)
    except Interrupted as e:
        fail(str(e), e.exit_code, interrupted=True)
    except click.ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `launcher` alone (Click 8.2+): its help, not "error: Usage: ..."
            click.echo(e.format_message(), err=True)
            sys.exit(e.exit_code)
        hint = ""
        if isinstance(e, click.UsageError) and e.ctx is not None:
            hint = f" (see '{e.ctx.command_path} --help')"
        fail(f"{e.format_message()}{hint}", e.exit_code)
    except Stopped as e:  # the stop asked for, checkpointed: not an error, though its exit code says it stopped
        fail(str(e), e.exit_code, prefix="")
    except GankitError as e:
        fail(str(e), e.exit_code)
    except KeyboardInterrupt as e:
        fail("interrupted", 128 + interrupt_signal(e))
    except Exception as e:
        known = _one_line_failure(e)
        if known is not None:
            fail(*known)
        if on_error:  # a bug: keep the traceback in the log, and say so where the user looks
            on_error(f"internal error: {type(e).__name__}: {e}")
        raise
    sys.exit(0)


# What may not reach a terminal raw: control characters (Unicode's Cc, C0 and C1: ESC, BEL, CSI, NEL...), the
# bidirectional overrides and isolates, which are not control characters to Unicode yet reorder the text shown,
# and the line and paragraph separators (U+2028, U+2029), which are not either yet break the line in terminals,
# editors and most tools (Python's splitlines too): a remote value could fake a row of `launcher list` with one.
# No text of ours holds one, so printable_lines escapes them as well: only \n breaks its lines.
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"  # all but \t and \n
_NOT_IN_A_LINE = re.compile(f"[{_CONTROLS}\n]")
_NOT_IN_TEXT = re.compile(f"[{_CONTROLS}]")


def printable(text) -> str:
    """`text` safe to show on a terminal as one line: every control character (a line break in a path typed with
    one; ESC, BEL and CSI in a name that came from a bucket: an S3 key, a class in generator.json), every
    bidirectional override and the Unicode line and paragraph separators are shown escaped (\\n, \\x1b, \\u202e,
    \\u2028), so a remote name can neither split the line nor retitle, clear or rewrite the terminal, nor reorder
    what the line says."""
    return _NOT_IN_A_LINE.sub(_escaped, str(text))


def printable_cell(text) -> str:
    """`text` as `printable`, with a tab shown as \\t too: a table's columns are padded by characters, and a
    terminal draws a tab as up to 8 columns, so a raw one pushed the rest of its row out of line."""
    return printable(text).replace("\t", "\\t")


def printable_lines(text) -> str:
    """`text` safe to show on a terminal as the lines it has: as `printable`, but its line breaks stay."""
    return _NOT_IN_TEXT.sub(_escaped, str(text))


def echo(text="", err=False, nl=True):
    """click.echo for everything a command prints: a job's status, its log lines, a stack's outputs, a class name
    all come from a bucket, an API or a run folder, so each goes out as `printable_lines`. Our own text is plain,
    so it is printed byte for byte; the trainer's progress bar (\\r, ESC[K) is drawn only on a TTY, and never is
    in a job's log, so a log line holds no control character of ours to keep."""
    import click

    click.echo(printable_lines(text), err=err, nl=nl)


def _escaped(match) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def _print_any_name(*streams):
    """A name that is not UTF-8 (a folder:PATH) is printed escaped, not a UnicodeEncodeError's traceback."""
    for stream in streams:
        with contextlib.suppress(AttributeError, ValueError):  # not a text stream Python opened (a test's capture)
            if stream.errors == "strict":
                stream.reconfigure(errors="backslashreplace")


def _one_line_failure(e: Exception) -> tuple[str, int] | None:
    """(message, exit code) for a failure raised outside our code that is the user's to fix or AWS's to
    report; None for a bug, whose traceback is kept."""
    if isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:  # any path option: one rule, not one per option
        name = str(e.filename)
        return (f"{name if len(name) <= 80 else name[:77] + '...'}: a name in that path is longer than the file "
                "system allows (255 bytes each); choose a shorter path", 2)
    known = aws_error(e)  # the one place botocore's errors become one line, for every command
    if known is not None:
        return str(known), known.exit_code
    missing = missing_extra(e)
    if missing is not None:
        return missing, 2
    return None


# The packages of gankit's extras (pyproject.toml), by the module the code imports: a base install (`pip install
# gankit`) runs the launcher's bookkeeping, and a command that needs one of these names the extra to install.
# sagemaker-core's is sagemaker.core: the classic SageMaker SDK installs a `sagemaker` without it.
EXTRA_OF = {"tensorflow": "trainer", "keras": "trainer", "matplotlib": "trainer", "tensorboardX": "trainer",
            "jax": "jax", "sagemaker.core": "cloud"}
ALSO = {"keras": " (or 'gankit[jax]' to train on JAX)"}


def missing_extra(e: Exception) -> str | None:
    """The line for an import of an extra's package that is not installed; None for anything else."""
    import importlib.util

    if not isinstance(e, ModuleNotFoundError) or not e.name:
        return None
    # The package itself, a module of it, or a parent it lives in (sagemaker, for sagemaker.core) was not found.
    top = next((p for p in EXTRA_OF if f"{e.name}.".startswith(f"{p}.") or p.startswith(f"{e.name}.")), None)
    if top is None:
        return None
    try:
        if importlib.util.find_spec(top) is not None:  # installed, but a module of it is missing: a bug, traceback
            return None
    except (ImportError, ValueError):  # a parent of it is not there either
        pass
    extra = EXTRA_OF[top]
    return f"{top} is not installed, and this needs gankit's {extra} extra: pip install 'gankit[{extra}]'{ALSO.get(top, '')}"
