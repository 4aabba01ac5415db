"""`launcher evaluate` and `launcher report` for a local job and an S3 (SageMaker/EC2-style) job."""

import json
import shutil

import pytest
from click.testing import CliRunner

from tests.quality_helpers import trained  # noqa: F401  (fixture)
from trainer import s3
from trainer.errors import UsageError

pytestmark = pytest.mark.slow


@pytest.fixture
def jobs():
    from launcher import jobs

    return jobs


def invoke(command, args):
    return CliRunner().invoke(command, args, catch_exceptions=False)

def finished_local(job: str) -> dict:
    """What a finished local job's record holds besides its output (launcher/jobs.py checks for these fields)."""
    from launcher import jobs

    return {"pid": 2**22 + 1, "log": str(jobs.jobs_dir() / job / "train.log"), "sm_root": str(jobs.jobs_dir() / job)}


def ec2_uris(run_prefix):
    return {"status_uri": f"{run_prefix}/status.json", "log_uri": f"{run_prefix}/train.log",
            "setup_log_uri": f"{run_prefix}/setup.log"}


@pytest.fixture
def local_job(trained, jobs, tmp_path):
    output = tmp_path / "bucket" / "runs" / "j-local" / "output"
    shutil.copytree(trained["run"], output, ignore=shutil.ignore_patterns("checkpoints", "evaluation.json"))
    jobs.save({"job": "j-local", "backend": "local", "dataset": "mnist", "output_uri": str(output),
               **finished_local("j-local")})
    return output


def test_evaluate_a_local_job(local_job, trained):
    from launcher.quality import evaluate

    result = invoke(evaluate, ["j-local", "--data-dir", str(trained["data"]), "--samples", "30"])
    assert result.exit_code == 0, result.output
    assert "30 generated vs 30 real test images" in result.output
    assert json.loads((local_job / "evaluation.json").read_text())["samples"] == 30


@pytest.mark.parametrize("which", ["generator", "run folder"])
def test_evaluate_a_generator_folder(local_job, trained, which):
    from launcher.quality import evaluate

    target = local_job / "generator" if which == "generator" else local_job
    result = invoke(evaluate, [str(target), "--data-dir", str(trained["data"]), "--samples", "20"])
    assert result.exit_code == 0, result.output
    assert json.loads((local_job / "evaluation.json").read_text())["samples"] == 20


def test_report_of_a_local_job(local_job, monkeypatch):
    from launcher.quality import report

    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    result = invoke(report, ["j-local", "--open"])
    assert result.exit_code == 0, result.output
    assert f"report: {local_job / 'report.html'}" in result.output
    assert opened == [(local_job / "report.html").resolve().as_uri()]


def test_unknown_job_is_a_usage_error(jobs):
    from launcher.quality import report

    with pytest.raises(UsageError, match="unknown job '?nope'?;"):
        invoke(report, ["nope"])


def test_s3_job_report_and_evaluate(trained, jobs, aws_env, tmp_path, monkeypatch):
    from launcher.quality import evaluate, report

    s3.client().create_bucket(Bucket="runs-bucket")
    output_uri = "s3://runs-bucket/runs/j-sm/output"
    s3.upload_dir(trained["run"], output_uri, skip=lambda rel: rel.startswith("checkpoints"))
    jobs.save({"job": "j-sm", "backend": "sagemaker", "dataset": "mnist", "output_uri": output_uri,
               "instance_type": "ml.g5.xlarge", "instance_count": 1, "spot": False})

    result = invoke(report, ["j-sm", "--out", str(tmp_path / "fetched")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "fetched" / "report.html").read_text()
    assert "at $1.408/hour" in html and "data:image/gif;base64," in html  # launcher.pricing: ml.g5.xlarge

    monkeypatch.setenv("GANKIT_CACHE", str(trained["cache"]))  # the judge, already trained
    result = invoke(evaluate, ["j-sm", "--data-dir", str(trained["data"]), "--samples", "25"])
    assert result.exit_code == 0, result.output
    assert json.loads(s3.read_bytes(output_uri + "/evaluation.json"))["samples"] == 25


def test_s3_job_without_output_yet(jobs, aws_env):
    from launcher.quality import report

    s3.client().create_bucket(Bucket="empty-bucket")
    jobs.save({"job": "j-new", "backend": "ec2", "output_uri": "s3://empty-bucket/runs/j-new/output",
               **ec2_uris("s3://empty-bucket/runs/j-new")})
    with pytest.raises(UsageError, match="has no output yet"):
        invoke(report, ["j-new"])


def test_the_launcher_cli_finds_both_commands(local_job):
    from launcher.cli import cli

    result = CliRunner().invoke(cli, ["report", "j-local"])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output
    assert "evaluation.json" in CliRunner().invoke(cli, ["evaluate", "--help"]).output


def test_the_command_list_says_what_report_does():
    # `launcher --help` once said report "fetches" the page; it rebuilds it every time (README, `report --help`).
    from launcher.cli import cli

    listed = next(line for line in CliRunner().invoke(cli, ["--help"]).output.splitlines()
                  if line.split()[:1] == ["report"])
    assert "Rebuild a job's report.html" in listed and "Fetch" not in listed
    assert "Rebuild a job's report.html" in CliRunner().invoke(cli, ["report", "--help"]).output


# --- one run folder is the truth: evaluate updates it, report is rebuilt from it ---------------

@pytest.fixture
def unevaluated_job(trained, jobs, tmp_path):
    """A local job whose run has a report but no evaluation yet."""
    from trainer.report import write_report

    output = tmp_path / "bucket" / "runs" / "j-new" / "output"
    shutil.copytree(trained["run"], output, ignore=shutil.ignore_patterns("checkpoints", "evaluation.json"))
    write_report(output)
    assert "Not evaluated yet" in (output / "report.html").read_text()
    jobs.save({"job": "j-new", "backend": "local", "dataset": "mnist", "output_uri": str(output),
               **finished_local("j-new")})
    return output


def test_report_after_evaluate_shows_the_figures(unevaluated_job, trained, tmp_path):
    from launcher.quality import evaluate, report

    assert invoke(evaluate, ["j-new", "--data-dir", str(trained["data"]), "--samples", "20"]).exit_code == 0
    assert "Not evaluated yet" not in (unevaluated_job / "report.html").read_text()  # the run's own report
    result = invoke(report, ["j-new"])
    assert result.exit_code == 0, result.output
    html = (unevaluated_job / "report.html").read_text()
    assert "Not evaluated yet" not in html and "20 generated images vs 20 real test images" in html


def test_evaluate_a_job_updates_its_run_wherever_you_are(unevaluated_job, trained, tmp_path, monkeypatch):
    from launcher.pull import copy_tree
    from launcher.quality import evaluate

    monkeypatch.chdir(tmp_path)
    copy_tree(unevaluated_job, tmp_path / "j-new", label="pull")  # what `launcher pull j-new` leaves here
    result = invoke(evaluate, ["j-new", "--data-dir", str(trained["data"]), "--samples", "20"])
    assert result.exit_code == 0, result.output
    assert json.loads((unevaluated_job / "evaluation.json").read_text())["samples"] == 20
    assert not (tmp_path / "j-new" / "evaluation.json").exists()  # the pulled copy is not the run
    assert f"wrote {unevaluated_job / 'evaluation.json'}" in result.output

    # A path is a path: ./j-new is the pulled folder.
    result = invoke(evaluate, ["./j-new", "--data-dir", str(trained["data"]), "--samples", "20"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "j-new" / "evaluation.json").exists()


def test_report_out_is_honoured_for_local_jobs(unevaluated_job, tmp_path):
    from launcher.quality import report

    before = (unevaluated_job / "report.html").read_bytes()
    result = invoke(report, ["j-new", "--out", str(tmp_path / "mine")])
    assert result.exit_code == 0, result.output
    assert f"report: {tmp_path / 'mine' / 'report.html'}" in result.output
    assert (tmp_path / "mine" / "report.html").is_file() and (tmp_path / "mine" / "metrics.jsonl").is_file()
    assert not (tmp_path / "mine" / "checkpoints").exists()
    assert (unevaluated_job / "report.html").read_bytes() == before  # the run itself is untouched


def test_s3_job_evaluate_then_report(trained, jobs, aws_env, tmp_path, monkeypatch):
    from launcher.pull import copy_tree
    from launcher.quality import evaluate, report
    from trainer.report import write_report

    s3.client().create_bucket(Bucket="eval-bucket")
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run, ignore=shutil.ignore_patterns("checkpoints", "evaluation.json"))
    write_report(run)
    output_uri = "s3://eval-bucket/runs/j-s3/output"
    s3.upload_dir(run, output_uri)
    jobs.save({"job": "j-s3", "backend": "ec2", "dataset": "mnist", "output_uri": output_uri, **ec2_uris("s3://eval-bucket/runs/j-s3"),
               "instance_type": "g5.xlarge", "instance_count": 1, "spot": False})
    first = invoke(report, ["j-s3", "--out", str(tmp_path / "first")])
    assert first.exit_code == 0 and "Not evaluated yet" in (tmp_path / "first" / "report.html").read_text()

    monkeypatch.chdir(tmp_path)
    copy_tree(run, tmp_path / "j-s3", label="pull")  # a pulled copy in the current folder changes nothing
    result = invoke(evaluate, ["j-s3", "--data-dir", str(trained["data"]), "--samples", "20"])
    assert result.exit_code == 0, result.output
    assert json.loads(s3.read_bytes(output_uri + "/evaluation.json"))["samples"] == 20
    assert "Not evaluated yet" not in s3.read_bytes(output_uri + "/report.html").decode()  # the bucket's report
    assert not (tmp_path / "j-s3" / "evaluation.json").exists()

    again = invoke(report, ["j-s3", "--out", str(tmp_path / "first")])  # the same folder as before
    assert again.exit_code == 0, again.output
    html = (tmp_path / "first" / "report.html").read_text()
    assert "Not evaluated yet" not in html and "20 generated images vs 20 real test images" in html
    assert "at $1.006/hour" in html  # the EC2 price: launcher.pricing


def test_the_reports_price_is_of_all_the_jobs_instances_at_the_rate_it_ran_at():
    # The cost line of `launcher report`: a spot job at the typical spot price, and a job on two instances at twice
    # one's (a job of two spot instances read as one on-demand one).
    from launcher.pricing import price_per_hour
    from launcher.quality import _price_per_hour

    job = {"backend": "sagemaker", "instance_type": "ml.g5.xlarge", "instance_count": 1, "spot": False}
    assert _price_per_hour(job) == pytest.approx(price_per_hour("ml.g5.xlarge", False))
    assert _price_per_hour({**job, "spot": True}) == pytest.approx(price_per_hour("ml.g5.xlarge", True))
    assert price_per_hour("ml.g5.xlarge", True) < price_per_hour("ml.g5.xlarge", False)
    assert _price_per_hour({**job, "instance_count": 2, "spot": True}) == pytest.approx(
        2 * price_per_hour("ml.g5.xlarge", True))
    assert _price_per_hour({**job, "instance_type": "ml.unknown.xlarge"}) is None  # not in the price table
    assert _price_per_hour({"backend": "local", "instance_type": "local"}) is None
