"""What a run's pictures and pages say about it: the job's name, and a run that --max-steps cut short."""

import json
import re

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws

from trainer import layout, s3
from trainer.report import cut_short_text, render, run_name

RUN = {"config": {"epochs": 2, "max_steps": 50, "dataset": "mnist", "model": "cgan", "preset": "seed"},
       "steps_per_epoch": 468, "total_steps": 50, "cut_short": True, "job": "gan-mnist-cgan-20260101-000000"}
ROW = {"epoch": 1, "step": 50, "d_loss": 1.0, "g_loss": 1.0, "images_per_sec": 100.0, "seconds": 16.0}


def run_folder(path, run):
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps(run))
    (path / "metrics.jsonl").write_text(json.dumps(ROW) + "\n")
    return path


def test_layout_knows_the_job_of_an_output_prefix():
    assert layout.job_of_output(layout.output_prefix("s3://b", "gan-x-1")) == "gan-x-1"
    assert layout.job_of_output("/home/me/.local/share/gankit/bucket/runs/gan-x-1/output/") == "gan-x-1"
    assert layout.job_of_output("runs/z1") is None and layout.job_of_output("output") is None


def test_report_title_is_the_job_and_says_max_steps_cut_it_short(tmp_path):
    html = render(run_folder(tmp_path / "runs" / "anything" / "output", RUN))
    assert "<title>gan-mnist-cgan-20260101-000000: cgan/seed on mnist</title>" in html
    assert "<th>cut short</th><td>by --max-steps 50: it ended at step 50 of the 936 its 2 epochs take" in html
    # Built while it trains (`launcher report JOB`), the end is still to come.
    (tmp_path / "runs" / "anything" / "output" / "metrics.jsonl").write_text(json.dumps(dict(ROW, step=20)) + "\n")
    assert "it is set to end at step 50 of the 936" in render(tmp_path / "runs" / "anything" / "output")


def test_a_report_of_a_run_stopped_before_its_max_steps_end_says_it_in_the_past(tmp_path):
    # The report said "it is set to end at step 50" beside "stopped: at step 20 of 50", as if it still trained:
    # a stop (run.json's "stopped") is the tense `launcher status` gives a stopped job.
    folder = run_folder(tmp_path / "r", dict(RUN, stopped={"step": 20, "resume": "run the same command to resume"}))
    (folder / "metrics.jsonl").write_text(json.dumps(dict(ROW, step=20)) + "\n")
    html = render(folder)
    assert "<th>stopped</th><td>at step 20 of 50;" in html
    assert "by --max-steps 50: it was set to end at step 50 of the 936" in html


def test_a_stopped_run_trained_with_eval_every_is_not_told_to_train_with_it(tmp_path):
    # A stop writes the report now; it said "Not evaluated yet: train with --eval-every K, or run launcher
    # evaluate ... OUTPUT_DIR/generator" of a run trained with --eval-every whose figures it drew, with no generator/.
    figures = {"label_accuracy": 0.5, "frechet_classifier_distance": 9.0, "classifier_score": 2.0, "samples": 1000}
    folder = run_folder(tmp_path / "r", dict(RUN, stopped={"step": 20, "resume": "run the same command to resume"}))
    (folder / "metrics.jsonl").write_text(json.dumps(dict(ROW, step=20, evaluation=dict(figures, real=figures))) + "\n")
    html = render(folder)
    assert "train with --eval-every" not in html and "OUTPUT_DIR/generator" not in html
    assert "the run stopped before its end, where its final evaluation scores the generator it exports" in html
    assert "The epochs --eval-every scored so far are below." in html


def test_without_a_job_the_title_is_the_run_folder_never_output(tmp_path):
    plain = {k: v for k, v in RUN.items() if k != "job"}
    assert run_name(run_folder(tmp_path / "z1", plain), plain) == "z1"
    assert run_name(run_folder(tmp_path / "gan-y" / "output", plain), plain) == "gan-y"


def test_a_run_that_finishes_its_epochs_is_not_cut_short(tmp_path):
    whole = dict(RUN, cut_short=False, total_steps=936)
    assert cut_short_text(whole) is None
    assert "cut short" not in render(run_folder(tmp_path / "r", whole))
    assert cut_short_text(dict(RUN, config=dict(RUN["config"], epochs=1))).endswith(
        "of the 468 its 1 epoch takes (a larger max_steps resumes it from its checkpoint)")


def record(output_uri, **hyperparameters):
    from launcher import jobs

    sm_root = jobs.jobs_dir() / "gan-mnist-cgan-1"  # where the local backend keeps its job's files
    return {"job": "gan-mnist-cgan-1", "backend": "local", "output_uri": output_uri, "hyperparameters": hyperparameters,
            "pid": 2**22 + 1, "log": str(sm_root / "train.log"), "sm_root": str(sm_root)}  # a finished local job's record


def test_status_reads_the_cut_from_run_json_in_a_folder_or_s3(tmp_path, monkeypatch):
    from launcher.runinfo import cut_short_note

    out = run_folder(tmp_path / "out", RUN)
    assert cut_short_note(record(str(out), max_steps="50")).startswith("by --max-steps 50: it is set to end at step 50 of the 936")
    # Not started yet: the hyperparameter is all there is.
    assert cut_short_note(record(str(tmp_path / "none"), max_steps="50")) == \
        "by --max-steps 50 if its epochs take more steps (it is set to end at step 50)"
    assert cut_short_note(record(str(tmp_path / "none"), max_steps="50"), "Failed") == \
        "by --max-steps 50 if its epochs take more steps (it was set to end at step 50)"
    assert cut_short_note(record(str(tmp_path / "none"), max_steps="50"), "Stopping") == \
        "by --max-steps 50 if its epochs take more steps (it was set to end at step 50)"  # SageMaker's stop under way
    assert cut_short_note(record(str(tmp_path / "none"))) is None

    for key, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    s3.client.cache_clear()
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="gankit-test")
        uri = layout.output_prefix("s3://gankit-test", "gan-mnist-cgan-1")
        boto3.client("s3").put_object(Bucket="gankit-test", Key="runs/gan-mnist-cgan-1/output/run.json", Body=json.dumps(RUN))
        assert cut_short_note(record(uri)).startswith("by --max-steps 50: it is set to end at step 50")
    s3.client.cache_clear()


def test_status_command_shows_the_cut(tmp_path):
    from launcher import jobs
    from launcher.cli import cli

    out = run_folder(tmp_path / "runs" / "gan-mnist-cgan-1" / "output", RUN)
    sm_root = jobs.jobs_dir() / "gan-mnist-cgan-1"  # the local backend's job folder: the trainer exited 0
    sm_root.mkdir(parents=True)
    (sm_root / "exit_code").write_text("0\n")
    jobs.save(dict(record(str(out), max_steps="50"), dataset="mnist", instance_type="local"))
    shown = CliRunner().invoke(cli, ["status", "gan-mnist-cgan-1"])
    assert shown.exit_code == 0, shown.output
    # It completed: it ended there (it said "it is set to end", as if still running).
    assert re.search(r"\ncut short +by --max-steps 50: it ended at step 50 of the 936 its 2 epochs take", shown.output)
    as_json = json.loads(CliRunner().invoke(cli, ["status", "gan-mnist-cgan-1", "--json"]).output)
    assert as_json["cut_short"].startswith("by --max-steps 50: it ended at step 50")

    (sm_root / "exit_code").write_text("143\n")  # stopped before its end
    shown = CliRunner().invoke(cli, ["status", "gan-mnist-cgan-1"])
    assert re.search(r"\nstatus +Stopped\n", shown.output), shown.output
    assert re.search(r"\ncut short +by --max-steps 50: it was set to end at step 50 of the 936", shown.output)


@pytest.fixture(autouse=True)
def _config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))


def test_the_sample_strip_says_what_a_row_of_its_grids_is(tmp_path, monkeypatch):
    # A dcgan run's 5x5 grids were said to hold "one row per class", and EMNIST's 10 rows one per class of 47.
    from PIL import Image

    monkeypatch.setattr("trainer.report._class_grids_section", lambda out, meta: "")  # no network to load here

    def note(run, meta=None):
        out = run_folder(tmp_path / str(len(list(tmp_path.iterdir()))), run)
        (out / "samples").mkdir()
        Image.new("L", (8, 8)).save(out / "samples" / "epoch-0001.png")
        if meta is not None:
            (out / "generator").mkdir()
            (out / "generator" / "generator.json").write_text(json.dumps(meta))
        return re.search(r"<h2>Samples during training</h2><p class=note>([^<]*)</p>", render(out)).group(1)

    dcgan = dict(RUN, config=dict(RUN["config"], model="dcgan"))
    assert note(dcgan) == "The same noise every epoch."
    assert note(RUN) == "The same noise every epoch, one row per class."
    assert note(dcgan, {"class_names": [], "conditional": False}) == "The same noise every epoch."
    assert note(RUN, {"class_names": list("0123456789"), "conditional": True}) == (
        "The same noise every epoch, one row per class.")
    assert note(RUN, {"class_names": list("0123456789ABCDEF"), "conditional": True}) == (
        "The same noise every epoch, one row per class for 10 of the 16 classes, spread evenly over them.")


def test_a_local_jobs_report_says_it_cost_nothing_rather_than_to_run_launcher_report(tmp_path):
    # `launcher report` of a local job wrote "cost unknown (pass --price-per-hour, or use `launcher report`)".
    from launcher import jobs
    from launcher.quality import report

    out = run_folder(tmp_path / "runs" / "gan-mnist-cgan-1" / "output", RUN)
    jobs.save(dict(record(str(out)), dataset="mnist", instance_type="local"))
    result = CliRunner().invoke(report, ["gan-mnist-cgan-1"])
    assert result.exit_code == 0, result.output
    assert "<th>cost</th><td>none: a local job runs on this machine</td>" in (out / "report.html").read_text()


def test_the_report_draws_the_losses_of_every_epoch_not_the_runs_last_plot(tmp_path, monkeypatch):
    # The trainer redraws losses.png at most every 10 s, and not at a stop: a stopped run's report showed a
    # plot that ended 36 steps (12 epochs) before its metrics did.
    import base64
    import io

    from PIL import Image

    out = run_folder(tmp_path / "run", dict(RUN, cut_short=False))
    (out / "metrics.jsonl").write_text("".join(json.dumps(dict(ROW, epoch=e, step=25 * e)) + "\n" for e in (1, 2)))
    (out / "losses.jsonl").write_text("".join(json.dumps({"step": s, "d_loss": 1.0, "g_loss": 1.0}) + "\n"
                                              for s in range(1, 51)))
    Image.new("RGB", (7, 5), "red").save(out / "losses.png")  # the run's plot, drawn before its last epochs
    html = render(out)
    plot = re.search(r'<h2>Losses</h2><img src="data:image/png;base64,([^"]+)"', html).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(plot))).size == (1000, 420)
    assert Image.open(out / "losses.png").size == (1000, 420)  # the folder's copy is brought up to date too

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("trainer.report.atomic_write_bytes", full_disk)  # the page is still drawn (whole)
    assert re.search(r'<h2>Losses</h2><img src="data:image/png;base64,', render(out))
