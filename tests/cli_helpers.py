"""Running `python -m trainer` in process and checking its one-line errors."""

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
