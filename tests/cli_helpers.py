"""Running `python -m trainer` in process and checking its one-line errors."""

import signal
from pathlib import Path

import pytest


def run_trainer(capsys, command, *argv):
    """(exit code, captured output) of `python -m trainer COMMAND ARGV...`."""
    from trainer.cli import main

    with pytest.raises(SystemExit) as e:
        main([command, *map(str, argv)])
    return e.value.code, capsys.readouterr()


def assert_one_line(code, captured, *words, exit_code=2):
    """A clean failure: the exit code, one `error:` line on stderr naming `words`, no traceback."""
    assert code == exit_code, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err, captured.err
    for word in words:
        assert word in lines[0], lines[0]


def assert_training_fails_with_one_line(capsys, data_dir, out, *words):
    """`python -m trainer train` for 3 epochs of `data_dir` into `out`, made to fail by the caller (a full
    disk): exit 1, one `error:` line naming `words` among the run's output, no traceback from any thread,
    and no generator exported from a run that failed."""
    code, captured = run_trainer(capsys, "train", "--dataset", "mnist", "--data-dir", data_dir, "--output-dir", out,
                                 "--epochs", 3, "--batch-size", 16)
    assert code == 1, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and all(word in errors[0] for word in words), captured.err
    assert "Traceback" not in captured.err and "Exception in thread" not in captured.err
    assert not (Path(out) / "generator").exists()


def signals_as_at_a_terminal():
    """A subprocess's preexec_fn: Ctrl-C and SIGHUP with their default effect, as a command typed at a
    terminal has them. A test run started under `nohup` or with `&` passes their being ignored on to every
    child, and the commands rightly leave an ignored signal ignored: a test of what they do with those
    signals must not depend on how its pytest was started."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
