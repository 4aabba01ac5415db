"""Every bad input the launcher reads from disk (job records, the config file) or takes as a name
(--bucket) is one clean line: a non-zero exit, no traceback, and nothing of the user's rewritten."""

import json
import os
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from launcher import jobs, settings
from trainer import layout
from launcher.cli import cli
from trainer.errors import run_cli

Result = namedtuple("Result", "exit_code output")
ROOT = Path(__file__).parents[1]


def run(*args) -> Result:
    """`launcher ARGS` as its entry point runs it (run_cli: one-line errors and exit codes)."""
    code = 0
    with CliRunner().isolation() as (_, _, both):
        try:
            run_cli(cli, list(args), prog_name="launcher")
        except SystemExit as e:
            code = e.code
    return Result(code, both.getvalue().decode(errors="replace"))


def one_clean_line(result: Result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def good_record(tmp_path, job="gan-good-cgan-20261122-180005") -> dict:
    """A finished local job, as the local backend records it (describe needs no process, no AWS): its files in its
    folder beside its record, its outputs in its run's folder."""
    root, output = jobs.jobs_dir() / job, tmp_path / "runs" / job / "output"
    output.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / "exit_code").write_text("0\n")
    return {"job": job, "backend": "local", "dataset": "mnist", "hyperparameters": {"dataset": "mnist", "epochs": "1"},
            "output_uri": str(output), "instance_type": "local", "instance_count": 1, "spot": False,
            "region": None, "submitted_at": "2026-11-22T18:00:05+00:00", "pid": 2 ** 22 + 1,
            "sm_root": str(root), "log": str(root / "train.log")}


def write_record(job: str, text: bytes):
    folder = jobs.jobs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job}.json").write_bytes(text)


def snapshot(folder) -> dict:
    """Every file below `folder` (the records' folder holds the local jobs' folders too), by name."""
    if not folder.exists():
        return {}
    return {p.name: snapshot(p) if p.is_dir() else p.read_bytes() for p in sorted(folder.iterdir())}


# --- job records -------------------------------------------------------------------------------

def test_a_good_record_still_shows(tmp_path):
    jobs.save(good_record(tmp_path))
    result = run("status", "gan-good-cgan-20261122-180005")
    assert result.exit_code == 0 and "Completed" in result.output


def test_a_record_deleted_as_it_is_read_is_no_job_not_a_bad_record(tmp_path, monkeypatch):
    # Another launcher deletes a record between this one's look and its read (a SageMaker submit refused, an EC2
    # launch abandoned): `list` warned that the file was "not a valid job record" and told the user to `rm` a file
    # that was gone, and `status` said so of a job that no longer exists.
    jobs.save(good_record(tmp_path))
    gone = "gan-gone-cgan-20261122-180006"
    jobs.save(good_record(tmp_path, gone))
    real = Path.read_bytes

    def deleted_meanwhile(path):
        if path.name == f"{gone}.json":
            jobs.delete(gone)  # what the other launcher does, right then
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", deleted_meanwhile)
    listed = run("list")
    assert listed.exit_code == 0 and "warning" not in listed.output and gone not in listed.output, listed.output
    assert "gan-good-cgan-20261122-180005" in listed.output
    jobs.save(good_record(tmp_path, gone))
    result = run("status", gone)
    assert result.exit_code == 2 and one_clean_line(result) == f"error: unknown job {gone}; `launcher list` shows your jobs"


def test_a_corrupted_record_is_one_line_naming_the_file_and_the_fix_and_list_shows_the_rest(tmp_path):
    jobs.save(good_record(tmp_path))
    write_record("gan-bad-cgan-20261122-180006", b'{"job": "gan-bad-cgan-2026112')  # a truncated write
    path = jobs.jobs_dir() / "gan-bad-cgan-20261122-180006.json"
    before = snapshot(jobs.jobs_dir())

    result = run("status", "gan-bad-cgan-20261122-180006")
    line = one_clean_line(result)
    assert result.exit_code == 2 and str(path) in line and "delete it" in line

    listed = run("list")
    assert listed.exit_code == 0, listed.output
    assert "gan-good-cgan-20261122-180005" in listed.output and "Completed" in listed.output
    warnings = [x for x in listed.output.splitlines() if str(path) in x]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "Traceback" not in listed.output
    assert snapshot(jobs.jobs_dir()) == before  # nothing rewritten, nothing deleted


def test_a_job_records_folder_that_cannot_be_read_is_one_line_not_no_jobs(tmp_path):
    jobs.jobs_dir().parent.mkdir(parents=True, exist_ok=True)
    jobs.jobs_dir().write_text("mine")  # `list` said "no jobs yet", as it would of an unreadable folder
    result = run("list")
    line = one_clean_line(result)
    assert result.exit_code == 2 and f"the job records folder {jobs.jobs_dir()} cannot be read" in line
    assert jobs.jobs_dir().read_text() == "mine"


def test_a_record_with_a_dangerous_pid_is_refused_before_any_signal(tmp_path):
    """`launcher stop` signals the recorded pid: 0 or a negative one would signal a whole process group."""
    for pid in (0, -1, True, "123", 2 ** 31, 2 ** 63):  # the last two: os.kill's OverflowError, a traceback
        write_record("gan-pid-cgan-20261122-180007", json.dumps({**good_record(tmp_path, "gan-pid-cgan-20261122-180007"),
                                                                 "pid": pid}).encode())
        result = run("stop", "gan-pid-cgan-20261122-180007")
        assert result.exit_code == 2 and "pid" in one_clean_line(result), pid


def test_a_record_whose_pid_is_past_any_process_is_named_and_list_shows_the_rest(tmp_path):
    # No exit code yet, so `status` asks whether its process runs: os.kill raised OverflowError, and `list` died too.
    jobs.save(good_record(tmp_path))
    record = {**good_record(tmp_path, "gan-big-cgan-20261122-180009"), "pid": 2 ** 63}
    (Path(record["sm_root"]) / "exit_code").unlink()
    write_record(record["job"], json.dumps(record).encode())
    path = jobs.jobs_dir() / f"{record['job']}.json"
    for command in ("status", "stop"):
        result = run(command, record["job"])
        assert result.exit_code == 2 and f"{path} is not a valid job record (pid" in one_clean_line(result), command
    listed = run("list")
    assert listed.exit_code == 0 and "Traceback" not in listed.output, listed.output
    assert "gan-good-cgan-20261122-180005" in listed.output
    assert sum(str(path) in x and x.startswith("warning: ") for x in listed.output.splitlines()) == 1



@pytest.mark.parametrize("elsewhere", ["notes", "runs/gan-other-cgan-20261122-180006/output",
                                       "runs/gan-good-cgan-20261122-180005/output/../../../notes"])
def test_a_record_whose_output_is_not_its_runs_is_refused_before_anything_is_written_there(tmp_path, elsewhere):
    """`launcher report` and `evaluate` write into a local job's output folder: an edited output_uri led them
    into any folder (report.html written among the user's notes, or into another job's run)."""
    folder = tmp_path / elsewhere
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "step": 10, "d_loss": 1.0, "g_loss": 1.0}\n')
    before = snapshot(folder)
    record = {**good_record(tmp_path), "output_uri": str(tmp_path / elsewhere)}
    write_record(record["job"], json.dumps(record).encode())
    for command in ("report", "status", "pull"):
        result = run(command, record["job"])
        line = one_clean_line(result)
        assert result.exit_code == 2 and "not a valid job record" in line and "output_uri" in line, line
    assert snapshot(folder) == before


@pytest.mark.parametrize("field, elsewhere", [
    ("log", "/etc/passwd"),  # `logs` printed it
    ("log", "{jobs}/{job}/../gan-other-cgan-20261122-180006/train.log"),  # another job's log, through '..'
    ("log", "{jobs}/{job}"),  # the job's folder itself, not a file in it
    ("sm_root", "{tmp}/notes"),  # `stop` wrote stop_sent there, `status` read an exit code there
    ("sm_root", "{jobs}/gan-other-cgan-20261122-180006"),  # another job's folder
    ("sm_root", "{jobs}/{job}/../{job}"),
])
def test_a_record_whose_job_folder_or_log_is_not_its_own_is_refused_before_anything_is_read_or_written(
        tmp_path, field, elsewhere):
    """A local job's record names the folder its trainer writes in and its log: an edit had `logs` print any file
    and `stop` write into any folder."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "exit_code").write_text("0\n")
    record = good_record(tmp_path)
    record[field] = elsewhere.format(jobs=jobs.jobs_dir(), job=record["job"], tmp=tmp_path)
    write_record(record["job"], json.dumps(record).encode())
    before = snapshot(notes)
    for command in ("logs", "status", "stop", "pull"):
        result = run(command, record["job"])
        line = one_clean_line(result)
        assert result.exit_code == 2 and "not a valid job record" in line and f"({field} " in line, (command, line)
    assert snapshot(notes) == before


def test_a_record_submit_made_under_a_config_and_home_reached_through_dotdot_is_valid(tmp_path, monkeypatch):
    """GANKIT_CONFIG=../cfg/config.json and GANKIT_HOME=../home are the user's own paths: submit records the job's
    folder, log and output through their '..', as every gankit has, and each of those records was refused as not
    valid (reproduced with a real local submit: `launcher list` said 'no jobs yet')."""
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("GANKIT_CONFIG", "../cfg/config.json")
    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "work" / ".." / "home"))
    job = "gan-good-cgan-20261122-180005"
    output = Path(layout.output_prefix(str(settings.local_root()), job))
    assert ".." in Path(jobs.jobs_dir()).parts and ".." in output.parts  # as submit records them
    output.mkdir(parents=True)
    record = {**good_record(tmp_path, job), "output_uri": str(output)}
    (Path(record["log"])).write_text("training\n")
    jobs.save(record)
    result = run("status", job)
    assert result.exit_code == 0 and "Completed" in result.output, result.output
    assert run("logs", job).output.strip() == "training"
    assert job in run("list").output


@pytest.mark.parametrize("job, field, value", [
    ("gan-esc-cgan-20261122-180010", "resume", "../../../../escaped"),  # the run: runs/<run>/ in the local bucket
    ("gan-esc-cgan-20261122-180011", "resume", "/tmp/escaped"),
    ("gan-esc-cgan-20261122-180012", "resume", ["x"]),  # a traceback from layout.join
    ("..", "job", ".."),  # the file ....json: its stem is '..'
])
def test_a_record_whose_job_or_run_is_not_a_job_name_never_becomes_a_folder(tmp_path, monkeypatch, job, field, value):
    """`submit --resume JOB` continues the record's run in <bucket>/runs/<run>/: a crafted name led outside it."""
    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))
    record = {**good_record(tmp_path, "gan-esc-cgan-20261122-180009"), "job": job, field: value}
    write_record(job, json.dumps(record).encode())
    result = run("submit", "--dataset", "mnist", "--backend", "local", "--resume", job, "--dry-run")
    line = one_clean_line(result)
    assert result.exit_code == 2 and "not a valid job record" in line and field in line, line  # not the dry run's plan


# Fields a record must have, for every backend, and a value of the wrong type for each field the
# launcher reads.
REQUIRED = ("job", "backend", "output_uri", "pid", "sm_root", "log")
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=6)
WRONG = {"job": lambda v: not isinstance(v, str), "backend": lambda v: v not in settings.BACKENDS,
         "output_uri": lambda v: not isinstance(v, str), "hyperparameters": lambda v: not isinstance(v, dict),
         "instance_count": lambda v: not isinstance(v, int) or isinstance(v, bool) or v < 1,
         "pid": lambda v: not isinstance(v, int) or isinstance(v, bool) or not 0 < v <= jobs.PID_MAX,
         "sm_root": lambda v: not isinstance(v, str), "log": lambda v: not isinstance(v, str),
         "submitted_at": lambda v: not isinstance(v, str), "spot": lambda v: not isinstance(v, bool)}


@st.composite
def malformed_records(draw, base):
    kind = draw(st.sampled_from(["truncated", "bytes", "not an object", "missing", "wrong type"]))
    text = json.dumps(base, indent=2)
    if kind == "truncated":
        return text[:draw(st.integers(0, len(text) - 2))].encode()
    if kind == "bytes":
        data = draw(st.binary(max_size=64))
        try:
            if isinstance(json.loads(data), dict):
                data = b"\xff" + data
        except ValueError:
            pass
        return data
    if kind == "not an object":
        return json.dumps(draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))).encode()
    record = dict(base)
    if kind == "missing":
        del record[draw(st.sampled_from(REQUIRED))]
    else:
        field = draw(st.sampled_from(sorted(WRONG)))
        record[field] = draw(JSON_VALUES.filter(WRONG[field]))
    return json.dumps(record).encode()


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_any_malformed_record_is_one_clean_line_and_nothing_changes(tmp_path, data):
    job = "gan-prop-cgan-20261122-180008"
    text = data.draw(malformed_records(good_record(tmp_path, job)))
    for leftover in jobs.jobs_dir().glob("*.json") if jobs.jobs_dir().exists() else []:
        leftover.unlink()
    jobs.save(good_record(tmp_path))
    write_record(job, text)
    before = snapshot(jobs.jobs_dir())
    for command in ("status", "logs", "stop", "pull"):
        result = run(command, job)
        line = one_clean_line(result)
        assert result.exit_code == 2 and f"{job}.json" in line, (command, text, line)
    listed = run("list", "--json")
    assert listed.exit_code == 0 and "Traceback" not in listed.output
    assert sum(f"{job}.json" in x for x in listed.output.splitlines()) == 1
    assert '"name": "gan-good-cgan-20261122-180005"' in listed.output
    assert snapshot(jobs.jobs_dir()) == before


# --- the config file ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, says", [
    ('["backend", "local"]', "not an object"),
    ('"local"', "not an object"),
    ("{not json", "not valid JSON"),
    ('{"bukcet": "my-bucket"}', "unknown setting 'bukcet'"),
    ('{"bucket": 5}', "bucket must be a string"),
    ('{"backend": "cloud"}', "backend"),
    ('{"bucket": "bad bucket"}', "not an S3 bucket name"),
])
def test_a_malformed_config_file_is_an_error_and_is_never_overwritten(text, says):
    path = settings.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    for args in (("config", "show"), ("config", "set", "region", "eu-west-1"),
                 ("submit", "--dataset", "mnist", "--dry-run")):
        result = run(*args)
        line = one_clean_line(result)
        assert result.exit_code == 2 and str(path) in line and says in line, (args, line)
    assert path.read_text() == text  # the user's file, as they left it


def test_a_config_file_that_is_a_folder_is_one_line_and_left_alone():
    path = settings.config_path()
    path.mkdir(parents=True)  # a traceback (IsADirectoryError) from every command that reads the settings
    for args in (("config", "show"), ("config", "set", "region", "eu-west-1"),
                 ("submit", "--dataset", "mnist", "--dry-run")):
        result = run(*args)
        line = one_clean_line(result)
        assert result.exit_code == 2 and f"{path} cannot be read" in line and "delete it" in line, (args, line)
    assert path.is_dir() and not any(path.iterdir())


def test_two_config_sets_at_once_keep_both_settings(tmp_path):
    # Each read the file, set its key and wrote the whole: the later write dropped the other's setting.
    started = tmp_path / "read"
    child = subprocess.Popen([sys.executable, "-c", f"""
import pathlib, time
from launcher import settings
write = settings.atomic_write_text
def slow(path, text, **options):  # between its read and its write
    pathlib.Path({str(started)!r}).touch()
    time.sleep(1.5)
    write(path, text, **options)
settings.atomic_write_text = slow
settings.update(region="eu-west-1")
"""], env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.monotonic() + 60
    while not started.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert started.exists()
    settings.update(backend="local")
    assert child.wait(60) == 0
    assert settings.load() == {"backend": "local", "region": "eu-west-1"}


def test_config_set_writes_through_a_symlinked_config_file(tmp_path, monkeypatch):
    # A config linked from a dotfiles repo: the write replaced the link with a plain file, so the setting never
    # reached the file the link names (the one the user keeps), and the link was gone.
    kept = tmp_path / "dotfiles" / "gankit.json"
    kept.parent.mkdir()
    kept.write_text('{"backend": "local"}')
    link = tmp_path / "cfg" / "config.json"
    link.parent.mkdir()
    link.symlink_to(kept)
    monkeypatch.setenv("GANKIT_CONFIG", str(link))
    assert run("config", "set", "region", "eu-west-1").exit_code == 0
    assert link.is_symlink() and link.resolve() == kept
    assert json.loads(kept.read_text()) == {"backend": "local", "region": "eu-west-1"}


def test_config_set_keeps_the_config_files_permissions():
    # The new file took the umask's 0644: a config the user had made private (its role ARN names the account)
    # was readable by everyone again after one `config set`.
    path = settings.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"backend": "local"}')
    path.chmod(0o600)
    assert run("config", "set", "region", "eu-west-1").exit_code == 0
    assert settings.load() == {"backend": "local", "region": "eu-west-1"}
    assert path.stat().st_mode & 0o777 == 0o600


def test_config_set_with_a_file_where_its_folder_goes_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("mine")
    monkeypatch.setenv("GANKIT_CONFIG", str(tmp_path / "f" / "config.json"))
    result = run("config", "set", "region", "eu-west-1")
    line = one_clean_line(result)
    assert result.exit_code == 2 and f"{tmp_path / 'f' / 'config.json'} could not be written" in line
    assert "GANKIT_CONFIG" in line and (tmp_path / "f").read_text() == "mine"


@hypothesis_settings(max_examples=60, deadline=None)
@given(value=JSON_VALUES | st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=3) | st.binary(max_size=40))
def test_property_a_config_file_is_either_valid_settings_or_one_clean_line(value):
    path = settings.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    path.write_bytes(raw)
    result = run("config", "show")
    if result.exit_code == 0:  # only an object of known settings with string values passes
        value = json.loads(raw)  # random bytes can spell valid JSON too, e.g. b'{}'
        assert isinstance(value, dict) and set(value) <= set(settings.KEYS)
        assert all(isinstance(v, str) for v in value.values())
    else:
        assert result.exit_code == 2 and str(path) in one_clean_line(result)
    assert path.read_bytes() == raw


# --- names ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bucket", ["bad bucket", "Bad-Bucket", "ab", "a" * 64, "my..bucket", "-bucket", "bucket-",
                                    "192.168.5.4", "xn--bucket", "my_bucket", "bucket/../x", "s3://bad bucket",
                                    "bucket/$(reboot)", "bucket/a b", "bucket/`id`", "bucket/a;b", "bucket/a%h"])
def test_a_bad_bucket_name_is_refused_before_any_call(bucket, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: any call would fail otherwise
    result = run("submit", "--dataset", "mnist", "--backend", "sagemaker", "--bucket", bucket, "--role",
                 "arn:aws:iam::123456789012:role/r", "--dry-run")
    assert result.exit_code == 2 and "is not an S3 bucket name" in one_clean_line(result)
    result = run("config", "set", "--", "bucket", bucket)
    assert result.exit_code == 2 and "is not an S3 bucket name" in one_clean_line(result)
    assert not settings.config_path().exists()


@pytest.mark.parametrize("bucket", ["my-gankit", "gankit.data.2026", "abc", "s3://my-gankit", "s3://my-gankit/team-a",
                                    "my-gankit/runs/year=2026/v1.2_b+c"])
def test_good_bucket_names_pass(bucket, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    result = run("submit", "--dataset", "mnist", "--backend", "sagemaker", "--bucket", bucket, "--role",
                 "arn:aws:iam::123456789012:role/r", "--dry-run")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("region", ["us east", "us-east-1; reboot", "US-EAST-1", "useast1", "$(id)"])
def test_a_region_that_is_not_a_region_name_is_a_usage_error(region, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: any call would fail otherwise
    result = run("submit", "--dataset", "mnist", "--backend", "sagemaker", "--bucket", "my-gankit", "--role",
                 "arn:aws:iam::123456789012:role/r", "--region", region, "--dry-run")
    assert result.exit_code == 2 and "is not an AWS region name" in one_clean_line(result)


def test_config_set_refuses_a_region_that_is_not_one(tmp_path):
    result = run("config", "set", "region", "us east")
    assert result.exit_code == 2 and "is not an AWS region name" in one_clean_line(result)
    assert not settings.config_path().exists()
    assert run("config", "set", "region", "eu-west-1").exit_code == 0


@pytest.mark.parametrize("key, bad, good", [("role", "my-role", "arn:aws:iam::123456789012:role/gankit-sagemaker"),
                                            ("instance_type", "foo", "g5.xlarge"),
                                            ("instance_type", "ml.m5.large", "ml.g5.xlarge")])
def test_config_set_refuses_a_role_or_instance_type_that_submit_would(tmp_path, key, bad, good, monkeypatch):
    # They were written, and every cloud submit then refused them.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # no AWS is asked
    result = run("config", "set", key, bad)
    assert result.exit_code == 2 and f"{key} {bad!r} is not" in one_clean_line(result)
    assert not settings.config_path().exists()
    assert run("config", "set", key, good).exit_code == 0 and settings.load() == {key: good}


@pytest.mark.parametrize("key, bad, good", [("security_group", "gankit-sg", "sg-0123456789abcdef0"),
                                            ("security_group", "sg 1", "sg-01234567"),
                                            ("subnet", "my-subnet", "subnet-0123456789abcdef0")])
def test_config_set_refuses_a_security_group_or_subnet_that_is_not_an_id(tmp_path, key, bad, good):
    # They were written, and every EC2 launch then sent them to RunInstances, which takes ids only (a group's
    # name is refused there), after the job's wheel and data were uploaded.
    result = run("config", "set", key, bad)
    assert result.exit_code == 2 and f"{key} {bad!r} is not" in one_clean_line(result)
    assert not settings.config_path().exists()
    assert run("config", "set", key, good).exit_code == 0 and settings.load() == {key: good}


@pytest.mark.parametrize("key", ["instance_profile", "jupyter-instance-profile"])
@pytest.mark.parametrize("bad", ["a b", "x" * 129, "caf\u00e9", "arn:aws:iam::123456789012:role/gankit-ec2",
                                 "arn:aws:iam::123:instance-profile/gankit-ec2"])
def test_config_set_refuses_an_instance_profile_that_is_not_a_name_or_arn(tmp_path, key, bad):
    # It was written, and every EC2 launch (or `launcher jupyter`) sent it to RunInstances, which refused it there,
    # after the job's wheel and data were uploaded.
    name = key.replace("-", "_")
    result = run("config", "set", key, bad)
    assert result.exit_code == 2 and f"{name} {bad[:80]!r} is not an IAM instance profile" in one_clean_line(result)
    assert not settings.config_path().exists()
    for good in ("gankit-ec2", "Gankit_EC2+=,.@-profile", "arn:aws:iam::123456789012:instance-profile/gankit-ec2",
                 "arn:aws-cn:iam::123456789012:instance-profile/team/gankit-ec2"):
        assert run("config", "set", key, good).exit_code == 0 and settings.load() == {name: good}


@pytest.mark.parametrize("bad", ["--privileged", "-v", "my image", "gankit:", "Gankit", "a//b", "a@sha256:xyz"])
def test_config_set_refuses_an_image_that_is_not_an_image_reference(tmp_path, bad):
    # It was written, and an EC2 job handed it to `docker run` on the instance: `--privileged` was read as an option,
    # and a typo failed only there, after the job's wheel and data were uploaded.
    result = run("config", "set", "image", "--", bad)
    assert result.exit_code == 2 and f"image {bad!r} is not a container image reference" in one_clean_line(result)
    assert not settings.config_path().exists()
    for good in ("123456789012.dkr.ecr.us-east-1.amazonaws.com/gankit-trainer:1.0", "localhost:5000/gankit",
                 "public.ecr.aws/me/gankit@sha256:" + "0" * 64):
        assert run("config", "set", "image", good).exit_code == 0 and settings.load() == {"image": good}


@pytest.mark.parametrize("make", [lambda p: None, lambda p: p.write_text("a file"), lambda p: p.mkdir()])
def test_a_folder_dataset_that_is_missing_or_empty_is_one_line_before_the_plan(tmp_path, monkeypatch, make):
    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))
    pictures = tmp_path / "pictures"
    make(pictures)
    result = run("submit", "--dataset", f"folder:{pictures}", "--detach")
    assert result.exit_code == 2 and str(pictures) in one_clean_line(result)  # no plan rows printed first
    assert not (tmp_path / "home").exists()  # and nothing made


def _junk_idx(folder):
    folder.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"junk")


@pytest.mark.parametrize("backend", [["--backend", "local"], ["--backend", "sagemaker", "--region", "us-east-1", "--bucket",
                                                               "gankit-x", "--role", "arn:aws:iam::123456789012:role/r",
                                                               "--dry-run"]])
@pytest.mark.parametrize("make", [lambda p: None, lambda p: p.mkdir(), _junk_idx])
def test_a_bad_data_dir_names_the_launchers_flag_not_the_trainers(tmp_path, monkeypatch, backend, make):
    # The trainer's lines said "drop --data-dir" and "--data-dir X is not a folder": `launcher submit` has no
    # --data-dir; its flag is --hp data_dir.
    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "mnist"
    make(data)
    result = run("submit", "--dataset", "mnist", "--hp", f"data_dir={data}", *backend)
    line = result.output.strip().splitlines()[-1]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert line.startswith("error: ") and str(data) in line and "--hp data_dir" in line and "--data-dir" not in line, line


def test_submit_says_where_the_data_came_from_in_the_launchers_words(tmp_path):
    # "data: mnist from --data-dir DIR": the trainer's flag again, in the line before the plan's training.
    _junk_idx(tmp_path / "mnist")
    env = dict(os.environ, GANKIT_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "launcher", "submit", "--dataset", "mnist", "--hp",
                           f"data_dir={tmp_path / 'mnist'}"], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 2 and f"data: mnist from --hp data_dir {tmp_path / 'mnist'}\n" in done.stdout + done.stderr
    assert "--data-dir" not in done.stdout + done.stderr, done.stdout + done.stderr


@pytest.mark.parametrize("in_the_way", ["", "bucket"])
def test_a_gankit_home_that_is_a_file_is_named_before_the_plan(tmp_path, monkeypatch, in_the_way):
    # The copy of the dataset failed "...; free space, move what is in the way, or choose another destination",
    # after the plan was printed, and nothing said that the destination was GANKIT_HOME's.
    from tests.data_helpers import make_idx_dataset

    data = make_idx_dataset(tmp_path / "mnist", n_train=64, n_test=16)
    home = tmp_path / "home"
    if in_the_way:
        home.mkdir()
    (home / in_the_way).write_text("not a folder")
    monkeypatch.setenv("GANKIT_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    result = run("submit", "--dataset", "mnist", "--hp", f"data_dir={data}", "--backend", "local")
    line = one_clean_line(result)
    assert result.exit_code == 2 and "GANKIT_HOME" in line and str(home / in_the_way) in line, line


@pytest.mark.parametrize("argv, usage", [([], "Usage: launcher [OPTIONS] COMMAND"),
                                         (["config"], "Usage: launcher config [OPTIONS] COMMAND")])
def test_a_group_without_its_command_shows_its_help_not_an_error_wrapped_around_it(argv, usage, capsys):
    # `launcher` alone printed "error: Usage: launcher ..." and its whole help, then "(see 'launcher --help')".
    from launcher.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    captured = capsys.readouterr()
    shown = captured.err + captured.out  # Click 8.2+ says it on stderr with exit 2, 8.1 on stdout with 0
    assert e.value.code in (0, 2) and shown.startswith(usage) and "Commands:" in shown, captured
    assert "error:" not in shown and "(see '" not in shown


@pytest.mark.parametrize("command", ["launcher", "trainer"])
def test_evaluate_refuses_too_few_samples_before_it_loads_anything(command, tmp_path, monkeypatch):
    # --samples 0 was refused only once the generator (and TensorFlow, seconds) had loaded.
    import trainer.cli

    generator = tmp_path / "run" / "generator"
    generator.mkdir(parents=True)
    (generator / "generator.json").write_text('{"z_dim": 8, "image_shape": [28, 28, 1], "dataset": "mnist"}')
    (generator / "generator.keras").write_text("not loaded")

    def load(*_):
        raise AssertionError("the generator was loaded")

    monkeypatch.setattr("trainer.export.load_generator", load)
    monkeypatch.setattr("launcher.quiet.start_tensorflow", lambda *a: load())
    if command == "launcher":
        result = run("evaluate", str(generator), "--samples", "0")
    else:
        with CliRunner().isolation() as (_, _, both):
            with pytest.raises(SystemExit) as exit_:
                trainer.cli.main(["evaluate", str(generator), "--samples", "0"])
        result = Result(exit_.value.code, both.getvalue().decode())
    assert result.exit_code == 2 and "--samples 0: must be a whole number of at least 2" in one_clean_line(result)
