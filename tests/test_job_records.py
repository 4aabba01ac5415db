"""A corrupted job record is one clean line for `launcher status` and a one-line warning for `launcher list`."""

import json

import pytest

from launcher import jobs


def run_launcher(capsys, *argv):
    from launcher.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(argv))
    return e.value.code, capsys.readouterr()


CORRUPT = [b'{"job": "j1", "backend": "local"', b"[1, 2]", b"\xff\xfe", b'{"backend": "local"}',
           b'{"job": "other", "backend": "local", "output_uri": "/x"}', b'{"job": "j1", "backend": 5, "output_uri": "/x"}',
           b'{"job": "j1", "backend": "local"}']


@pytest.mark.parametrize("content", CORRUPT)
def test_status_of_a_corrupted_record_is_one_line(capsys, content):
    jobs.jobs_dir().mkdir(parents=True, exist_ok=True)
    (jobs.jobs_dir() / "j1.json").write_bytes(content)
    code, captured = run_launcher(capsys, "status", "j1")
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "j1.json" in lines[0] and "corrupted" in lines[0]


@pytest.mark.parametrize("content", CORRUPT)
def test_list_skips_a_corrupted_record_with_one_warning(capsys, content):
    jobs.jobs_dir().mkdir(parents=True, exist_ok=True)
    (jobs.jobs_dir() / "j1.json").write_bytes(content)
    code, captured = run_launcher(capsys, "list", "--json")
    assert code == 0, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "j1.json" in lines[0]
    assert json.loads(captured.out) == []
