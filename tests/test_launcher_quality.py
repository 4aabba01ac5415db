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


@pytest.fixture
def local_job(trained, jobs, tmp_path):
    output = tmp_path / "bucket" / "runs" / "j-local" / "output"
    shutil.copytree(trained["run"], output, ignore=shutil.ignore_patterns("checkpoints", "evaluation.json"))
    jobs.save({"job": "j-local", "backend": "local", "dataset": "mnist", "output_uri": str(output)})
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
    jobs.save({"job": "j-new", "backend": "ec2", "output_uri": "s3://empty-bucket/runs/j-new/output"})
    with pytest.raises(UsageError, match="has no output yet"):
        invoke(report, ["j-new"])


def test_the_launcher_cli_finds_both_commands(local_job):
    from launcher.cli import cli

    result = CliRunner().invoke(cli, ["report", "j-local"])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output
    assert "evaluation.json" in CliRunner().invoke(cli, ["evaluate", "--help"]).output
