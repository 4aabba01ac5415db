"""What the commands print on success is text from elsewhere too: a job's status and failure reason from AWS, its
log lines from CloudWatch, S3 or a run folder, a stack's outputs, a class named by a dataset. None of it reaches the
terminal raw: its control characters and bidirectional overrides are shown escaped, as the error lines' are."""

import json
import time

import boto3
import pytest

from tests.aws_helpers import mocked_bucket
from trainer.errors import printable_lines

BUCKET, REGION = "gankit-terminal", "us-east-1"
# Sets the window's title, clears the screen, starts a C1 CSI sequence and reverses the rest of the line.
TERMINAL_CONTROL = "\x1b]2;pwned\x07\x1b[2J\x9b1m\u202e"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\r")


def assert_shown_escaped(text: str):
    assert not any(ch in text for ch in RAW), repr(text)
    assert "\\x1b]2;pwned\\x07" in text and "\\u202e" in text, text  # still there to read, as text


def launcher(capsys, *argv):
    """(exit code, stdout, stderr) of `launcher ARGV...` as run from a shell."""
    from launcher.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


def test_printable_lines_keeps_ordinary_text_byte_for_byte_and_escapes_the_rest():
    ordinary = "epoch 3/10  d_loss 0.693\tg_loss 0.71\nFréchet classifier distance — 日本 ✓\n"
    assert printable_lines(ordinary) == ordinary
    assert printable_lines(f"a{TERMINAL_CONTROL}\rb\x7f") == "a\\x1b]2;pwned\\x07\\x1b[2J\\x9b1m\\u202e\\rb\\x7f"


# --- EC2: status.json and the log are objects in the job's S3 prefix -----------------------------------------

@pytest.fixture
def ec2_job(monkeypatch):
    """An EC2 job whose status.json and log in S3 (written by its instance, or anyone who can write there) hold
    terminal controls; its instance is gone, so the status is S3's."""
    from launcher import jobs

    with mocked_bucket(monkeypatch, BUCKET, region=REGION) as bucket:
        run = f"{bucket}/runs/hostile"
        jobs.save({"job": "hostile", "backend": "ec2", "region": REGION, "instance_type": "g5.xlarge",
                   "dataset": "mnist", "output_uri": f"{run}/output", "status_uri": f"{run}/status.json",
                   "log_uri": f"{run}/train.log", "setup_log_uri": f"{run}/setup.log"})
        s3 = boto3.client("s3")
        status = {"status": "Completed", "started": TERMINAL_CONTROL, "ended": "2026-01-01T01:00:00+00:00",
                  "failure_reason": f"{TERMINAL_CONTROL}\nstatus  Completed"}
        s3.put_object(Bucket=BUCKET, Key="runs/hostile/status.json", Body=json.dumps(status).encode())
        s3.put_object(Bucket=BUCKET, Key="runs/hostile/train.log",
                      Body=f"epoch 1/2\nclass {TERMINAL_CONTROL}cat\n".encode())
        yield "hostile"


def test_status_shows_a_remote_status_escaped_and_each_value_on_its_own_line(ec2_job, capsys):
    code, out, err = launcher(capsys, "status", ec2_job)
    assert code == 0, err
    assert_shown_escaped(out)
    reason = [line for line in out.splitlines() if line.startswith("failure reason")]
    assert reason == ["failure reason  \\x1b]2;pwned\\x07\\x1b[2J\\x9b1m\\u202e\\nstatus  Completed"], out


def test_list_shows_a_remote_value_escaped_and_the_columns_still_line_up(ec2_job, capsys):
    code, out, err = launcher(capsys, "list")
    assert code == 0, err
    assert_shown_escaped(out)
    header, row = out.splitlines()
    assert row.index("Completed") == header.index("STATUS") and row.index("-") == header.index("DURATION"), out


def test_logs_from_s3_are_shown_with_their_terminal_controls_escaped(ec2_job, capsys):
    code, out, err = launcher(capsys, "logs", ec2_job)
    assert code == 0, err
    assert_shown_escaped(out)
    assert out.splitlines() == ["epoch 1/2", "class \\x1b]2;pwned\\x07\\x1b[2J\\x9b1m\\u202ecat"], out


# What str.splitlines() takes for a line break besides \n: on a terminal none of them starts a new line.
NOT_LINE_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@pytest.mark.parametrize("verbose", [False, True])
def test_logs_from_s3_break_lines_at_newlines_only_as_a_local_log_does(ec2_job, capsys, verbose):
    boto3.client("s3").put_object(Bucket=BUCKET, Key="runs/hostile/train.log",
                                  Body=f"step 1{NOT_LINE_BREAKS}end\n\rstep 2\n".encode())
    code, out, err = launcher(capsys, "logs", ec2_job, *(["--verbose"] if verbose else []))
    assert code == 0, err
    # U+2028 and U+2029 are escaped too: no control characters, yet many tools (splitlines) break lines at them
    assert out.split("\n") == ["step 1\\r\\x0b\\x0c\\x1c\\x1d\\x1e\\x85\\u2028\\u2029end", "\\rstep 2", ""], out
    assert out.splitlines() == out.split("\n")[:-1], out


# --- the local backend: the trainer's log is a file in the job's folder ------------------------------------------

@pytest.mark.parametrize("verbose", [False, True])  # --verbose passes the log on in chunks, not lines
def test_a_local_jobs_log_is_shown_with_its_terminal_controls_escaped(tmp_path, capsys, verbose):
    from launcher import jobs

    root = jobs.jobs_dir() / "local-hostile"
    (root / "output").mkdir(parents=True)
    (root / "exit_code").write_text("0\n")
    (root / "train.log").write_text(f"step 1\tloss 0.5\n{TERMINAL_CONTROL}\n\rstep 2\n")
    jobs.save({"job": "local-hostile", "backend": "local", "output_uri": str(tmp_path / "runs/local-hostile/output"),
               "pid": 1, "log": str(root / "train.log"), "sm_root": str(root)})
    code, out, err = launcher(capsys, "logs", "local-hostile", *(["--verbose"] if verbose else []))
    assert code == 0, err
    assert_shown_escaped(out)
    assert out.startswith("step 1\tloss 0.5\n"), out  # our own lines (a tab in them) as they were
    assert out.endswith("\n\\rstep 2\n"), out  # a carriage return cannot draw over the line before it


def test_a_character_written_in_two_parts_is_shown_whole_by_logs_follow(tmp_path, monkeypatch):
    """The trainer's output reaches its log file in writes of any size, so a read may end inside a UTF-8 character:
    `logs -f` must hold its first bytes until the rest comes, not show each part as U+FFFD."""
    import os

    from launcher import jobs
    from launcher.backends import local

    monkeypatch.setattr(local, "POLL_SECONDS", 0)
    root = jobs.jobs_dir() / "local-split"
    (root / "output").mkdir(parents=True)
    log = root / "train.log"
    log.write_bytes("Fréchet distance: caf".encode() + "é".encode()[:1])
    record = {"job": "local-split", "backend": "local", "pid": os.getpid(), "log": str(log), "sm_root": str(root)}
    shown = []

    def echo(text, nl=True):  # the job goes on between two reads: the character's second byte, and its end
        shown.append(text)
        if len(shown) == 1:
            with open(log, "ab") as f:
                f.write("é".encode()[1:] + b" 42\n")
            (root / "exit_code").write_text("0\n")

    local.logs(record, True, echo)
    assert "".join(shown) == "Fréchet distance: café 42\n"


# --- SageMaker: DescribeTrainingJob's reasons and CloudWatch's events ------------------------------------------

@pytest.fixture
def sagemaker_job(monkeypatch, tmp_path):
    from tests.data_helpers import make_idx_dataset

    from launcher.backends import sagemaker
    from launcher.spec import build_spec

    data = make_idx_dataset(tmp_path / "mnist", n_train=64, n_test=16)
    with mocked_bucket(monkeypatch, BUCKET, region=REGION):
        spec = build_spec(dataset="mnist", epochs=2, hp=[f"data_dir={data}"], backend="sagemaker", bucket=BUCKET,
                          role="arn:aws:iam::123456789012:role/gankit-sagemaker", region=REGION)
        yield sagemaker.submit(spec)


def test_sagemaker_reasons_and_log_events_are_shown_escaped(sagemaker_job, capsys):
    from moto.sagemaker.models import sagemaker_backends

    from launcher.backends import sagemaker

    job = sagemaker_backends["123456789012"][REGION].training_jobs[sagemaker_job["job"]]
    job.training_job_status, job.failure_reason = "Failed", f"AlgorithmError: {TERMINAL_CONTROL}"
    code, out, err = launcher(capsys, "status", sagemaker_job["job"])
    assert code == 1 and err.startswith("error: job ") and "\\u202e" in err, err  # the error line, as before
    assert_shown_escaped(out)  # and the table above it

    cw = boto3.client("logs", region_name=REGION)
    cw.create_log_group(logGroupName=sagemaker.LOG_GROUP)
    stream = f"{sagemaker_job['job']}/algo-1-1700000000"
    cw.create_log_stream(logGroupName=sagemaker.LOG_GROUP, logStreamName=stream)
    cw.put_log_events(logGroupName=sagemaker.LOG_GROUP, logStreamName=stream,
                      logEvents=[{"timestamp": int(time.time() * 1000), "message": f"epoch 1 {TERMINAL_CONTROL}"}])
    code, out, err = launcher(capsys, "logs", sagemaker_job["job"])
    assert code == 0, err
    assert_shown_escaped(out)
    assert out.startswith("epoch 1 \\x1b]2;pwned"), out


# --- a class named by its dataset ----------------------------------------------------------------------------

def test_the_evaluation_table_names_a_hostile_class_escaped_on_one_row():
    from trainer.evaluate import format_table

    classes = {"cat": 0.9, f"dog\n{TERMINAL_CONTROL}": 0.8}
    result = {"samples": 10, "label_accuracy": 0.85, "frechet_classifier_distance": 1.0, "classifier_score": 1.5,
              "per_class_accuracy": classes, "judge_test_accuracy": 0.95,
              "real": {"samples": 20, "label_accuracy": 0.9, "frechet_classifier_distance": 0.5,
                       "classifier_score": 1.8, "per_class_accuracy": classes}}
    table = format_table(result)
    assert_shown_escaped(table)
    rows = table.splitlines()
    assert len(rows) == 2 + 3 + 2 + 3, table  # header, rule, three figures, two classes, then three lines of notes
    assert rows[6].startswith("  class dog\\n\\x1b]2;pwned") and rows[6].endswith("0.8000      0.8000"), table


# --- a tab in a table cell ----------------------------------------------------------------------------------

def shown(line: str) -> str:
    """A line as a terminal draws it: a tab to the next multiple of 8 columns."""
    return line.expandtabs()


def test_the_evaluation_table_keeps_its_columns_under_a_class_name_with_a_tab():
    from trainer.evaluate import format_table

    classes = {"cat": 0.9, "dog\tpuppy": 0.8}  # a class folder may be named so
    result = {"samples": 10, "label_accuracy": 0.85, "frechet_classifier_distance": 1.0, "classifier_score": 1.5,
              "per_class_accuracy": classes, "judge_test_accuracy": 0.95,
              "real": {"samples": 20, "label_accuracy": 0.9, "frechet_classifier_distance": 0.5,
                       "classifier_score": 1.8, "per_class_accuracy": classes}}
    rows = [shown(row) for row in format_table(result).splitlines()[:7]]
    assert len({len(row) for row in rows}) == 1, rows  # the figures' columns end where the header's do
    assert "dog\\tpuppy" in rows[6], rows


def list_with_started(monkeypatch, capsys, job, started) -> str:
    """`launcher list`'s output for one EC2 job whose status.json (in the bucket) says it started at `started`."""
    from launcher import jobs

    with mocked_bucket(monkeypatch, BUCKET, region=REGION) as bucket:
        run = f"{bucket}/runs/{job}"
        jobs.save({"job": job, "backend": "ec2", "region": REGION, "instance_type": "g5.xlarge",
                   "dataset": "mnist", "output_uri": f"{run}/output", "status_uri": f"{run}/status.json",
                   "log_uri": f"{run}/train.log", "setup_log_uri": f"{run}/setup.log"})
        status = {"status": "Completed", "started": started, "ended": "2026-01-01T01:00:00+00:00"}
        boto3.client("s3").put_object(Bucket=BUCKET, Key=f"runs/{job}/status.json", Body=json.dumps(status).encode())
        code, out, err = launcher(capsys, "list")
    assert code == 0, err
    return out


def test_list_keeps_its_columns_under_a_remote_value_with_a_tab(monkeypatch, capsys):
    out = list_with_started(monkeypatch, capsys, "tabbed", "2026\t01-01 00:00")
    header, row = (shown(line) for line in out.splitlines())
    assert row.index("Completed") == header.index("STATUS") and row.index("g5") == header.index("INSTANCE"), out


def test_unicode_line_and_paragraph_separators_are_shown_escaped_everywhere():
    # Not control characters to Unicode (Zl, Zp), yet terminals, editors and most tools (Python's splitlines too)
    # break lines at them; NEL (U+0085) is a C1 control, escaped as every one is.
    from trainer.errors import printable, printable_cell

    for show in (printable, printable_cell, printable_lines):
        assert show("a\u2028b\u2029c\x85d") == "a\\u2028b\\u2029c\\x85d"


def test_list_keeps_one_row_per_job_under_a_remote_value_with_a_line_separator(monkeypatch, capsys):
    out = list_with_started(monkeypatch, capsys, "separated", "2026\u2028faked  ec2  Failed")
    header, row = out.splitlines()
    assert "2026\\u2028faked" in row, out
