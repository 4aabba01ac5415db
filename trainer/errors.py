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
        return GankitError(f"AWS {e.operation_name} failed: {code}: {message}")
    if isinstance(e, exceptions.ParamValidationError):
        return UsageError(one_line(e.kwargs.get("report", e)))
    if isinstance(e, exceptions.BotoCoreError):
        return GankitError(f"AWS: {one_line(e)}")
    return None


def client_error(e) -> tuple[str, str]:
    """A ClientError's code and message, the message on one line."""
    error = e.response.get("Error", {})
    return str(error.get("Code", "?")), one_line(error.get("Message") or "")


def run_cli(command, argv=None, prog_name=None, on_error=None):
    """Run a Click command so that every failure is one line on stderr.

    Click's own usage errors (exit 2), our GankitErrors (their exit code),
    botocore's errors (`aws_error`) and Ctrl-C (130) never show a traceback. `on_error(message)` hears of every
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
        known = aws_error(e)  # the one place botocore's errors become one line, for every command
        if known is not None:
            fail(str(known), known.exit_code)
        if on_error:  # a bug: keep the traceback in the log, and say so where the user looks
            on_error(f"internal error: {type(e).__name__}: {e}")
        raise
    sys.exit(0)
