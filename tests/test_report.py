"""report.html: self-contained, every image loads in headless Chromium, the page is not blank."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.quality_helpers import chromium_run, trained  # noqa: F401  (fixture)
from trainer.cli import main
from trainer.errors import UsageError
from trainer.report import write_report

pytestmark = pytest.mark.slow
# After the page's load event, count the images that did not decode.
PROBE = ("<script>addEventListener('load', () => { const bad = [...document.images].filter("
         "i => !(i.complete && i.naturalWidth > 0)); document.body.dataset.images = "
         "document.images.length + ':' + bad.length; });</script>")


@pytest.fixture
def report(trained, tmp_path):
    path = write_report(trained["run"], price_per_hour=3.06)
    return path, path.read_text()


def test_report_is_self_contained_with_every_section(report):
    _, html = report
    assert not re.search(r'src="(?!data:)', html) and "<link" not in html  # nothing fetched from elsewhere
    for heading in ("Run", "Image quality", "Losses", "Quality per evaluated epoch", "Samples during training",
                    "Progress", "Final generator (generator/, the last: step 12), per class", "Hyperparameters"):
        assert f">{heading}</h" in html
    assert html.count("data:image/gif;base64,") == 1
    # losses + quality plot + 3 epoch grids + 10 class grids, and the GIF
    assert html.count("data:image/png;base64,") == 1 + 1 + 3 + 10
    assert "real (ceiling)" in html and "$0.0" in html  # cost from the price


def test_report_renders_in_headless_chromium(report, tmp_path):
    path, html = report
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = chromium_run("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    counts = re.search(r'data-images="(\d+):(\d+)"', dom.stdout)
    assert counts, dom.stderr[-2000:]
    assert int(counts.group(1)) == 16 and counts.group(2) == "0"  # 16 images, none failed

    shot = tmp_path / "shot.png"
    chromium_run("--window-size=1200,2000", f"--screenshot={shot}", path.as_uri())
    pixels = np.asarray(Image.open(shot).convert("L"), np.float64)
    assert pixels.shape == (2000, 1200)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.01  # text, tables and plots, not a blank page


def test_report_without_evaluation_says_how_to_get_one(trained, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained["run"], run, ignore=shutil.ignore_patterns("checkpoints", "evaluation.json"))
    html = write_report(run).read_text()
    assert "Not evaluated yet" in html and "cost</th><td>unknown" in html


def test_report_of_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(UsageError, match="is not a run's output folder"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_report_on_a_full_disk_is_one_line_and_keeps_the_old_report(tmp_path, monkeypatch, capsys):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    (tmp_path / "run.json").write_text('{"config": {}}')
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / "report.html").write_text("the old one")
    monkeypatch.setattr("trainer.report.atomic_write_text", full_disk)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{tmp_path / 'report.html'} could not be written (No space left on device)" in err
    assert (tmp_path / "report.html").read_text() == "the old one"


def test_a_dataset_path_that_is_not_utf8_is_shown_as_its_bytes(tmp_path):
    # A folder:PATH whose name is Latin-1: render() held it as a lone surrogate and the page failed to encode.
    import json
    import os

    dataset = "folder:/data/" + os.fsdecode(b"caf\xe9")
    (tmp_path / "run.json").write_text(json.dumps({"config": {"dataset": dataset}}))
    (tmp_path / "metrics.jsonl").write_text("")
    assert "folder:/data/caf\\xe9" in write_report(tmp_path).read_text(encoding="utf-8")


def test_report_cli(trained, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(trained["run"])])
    assert exit_info.value.code in (0, None)
    assert "report.html" in capsys.readouterr().out


def test_a_failing_report_does_not_fail_the_run(trained, tmp_path, monkeypatch):
    from trainer.report import report_at_end

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("trainer.report.render", broken)
    messages = []
    assert report_at_end(trained["run"], log=messages.append) is None
    assert messages and "report.html not written (OSError: disk full)" in messages[0]


@pytest.mark.parametrize("price", ["nan", "-1", "inf"])
def test_a_price_that_is_no_price_is_one_line(tmp_path, capsys, price):
    # `report --price-per-hour nan` wrote "cost $nan (at $nan/hour)" into the report, and -1 a negative cost.
    from tests.cli_helpers import assert_one_line

    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "step": 2, "d_loss": 1.0, "g_loss": 1.0, "seconds": 30}\n')
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path), "--price-per-hour", price])
    assert_one_line(e.value.code, capsys.readouterr(), f"--price-per-hour {float(price)}", "0 or more")
    assert not (tmp_path / "report.html").exists()
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path), "--price-per-hour", "0"])
    assert e.value.code == 0 and "cost</th><td>$0.00" in (tmp_path / "report.html").read_text()


def test_a_run_stopped_inside_its_first_epoch_shows_its_loss_points(tmp_path, monkeypatch):
    # Stopped at step 7 of Zalando's 468-step first epoch: no metrics row yet, but losses.jsonl holds a point per
    # step; the report said "No finished epoch yet" and drew nothing.
    import json

    from trainer import plots

    figures, png = [], plots._png
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or png(fig))
    (tmp_path / "run.json").write_text(json.dumps({"config": {"dataset": "zalando"}, "total_steps": 40}))
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / "losses.jsonl").write_text("".join(
        json.dumps({"step": step, "d_loss": 2.6 - step / 10, "g_loss": 0.2 + step / 10}) + "\n" for step in range(1, 8)))
    html = write_report(tmp_path).read_text()
    assert "No finished epoch yet" not in html
    assert 'alt="losses per recorded step' in html and (tmp_path / "losses.png").is_file()
    labels = [line.get_label() for line in figures[0].axes[0].get_lines()]
    assert labels == ["discriminator, every point", "generator, every point"]  # no "epoch mean" it has none of


def stopped_run(tmp_path, mnist_dir, log=lambda *a: None):
    """The config of a real run stopped after its first compiled call, which is one step (the pacer measures
    it first): step 1 of the 8 of 2 epochs of 4."""
    from trainer.config import TrainConfig
    from trainer.train import train

    cfg = TrainConfig(dataset="mnist", data_dir=str(mnist_dir), output_dir=str(tmp_path / "run"), epochs=2,
                      batch_size=16)
    summary = train(cfg, stop_requested=lambda: True, log=log)
    assert summary["stopped"] and summary["steps"] == 1
    return cfg


def test_a_run_stopped_inside_an_epoch_reports_the_step_it_reached(tmp_path, mnist_dir):
    # metrics.jsonl, the report's only source of the step, had no row for a run stopped inside its first epoch:
    # "0 / 0 of 8", training time n/a. The stop writes the open epoch's row, as a --max-steps end does.
    run = Path(stopped_run(tmp_path, mnist_dir).output_dir)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in rows] == [(1, 1)]
    html = write_report(run).read_text()
    assert "<th>epochs / steps</th><td>0 / 1 of 8 (inside epoch 1)</td>" in html
    assert "<th>training time</th><td>n/a" not in html


def test_a_stopped_run_writes_its_report_and_says_how_it_resumes(tmp_path, mnist_dir):
    from trainer.train import train

    # A stop wrote no report.html (a pulled stopped job had none), and one written later never said the run stopped.
    lines = []
    cfg = stopped_run(tmp_path, mnist_dir, log=lines.append)
    run = Path(cfg.output_dir)
    html = (run / "report.html").read_text()
    assert "<th>stopped</th><td>at step 1 of 8; run the same command to resume</td>" in html
    assert any(line.startswith("report: ") for line in lines)
    assert "<th>stopped</th>" in write_report(run).read_text()  # rebuilt later (`launcher report`), it still says so
    train(cfg, log=lines.append)
    assert "<th>stopped</th>" not in (run / "report.html").read_text()  # resumed to its end: run.json is new


def test_the_report_says_which_generator_its_figures_and_grids_are_of(trained, tmp_path):
    # It never mentioned generator-best/, nor that its grids, its figures and `generate` on the run folder are
    # of generator/, the last. The best is compared at EPOCH_SAMPLES (20 in this run), not always 1,000.
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    best = json.loads((run / "generator-best" / "generator.json").read_text())
    html = write_report(run).read_text()
    assert (f"generator-best/ holds the generator with the best FCD at {best['fcd_samples']} samples"
            f" (epoch {best['epoch']}, step {best['step']}") in html
    assert "Final generator (generator/, the last: step 12), per class" in html
    assert "Figures of generator/ (the last: step 12)" in html
    with pytest.raises(SystemExit) as e:  # figures of the best, written beside both
        main(["evaluate", str(run / "generator-best"), "--data-dir", str(trained["data"]), "--samples", "20"])
    assert e.value.code in (0, None)
    assert f"Figures of generator-best/ (the best: step {best['step']})" in write_report(run).read_text()


def test_a_pulled_losses_file_with_lines_that_are_no_loss_points_still_draws(tmp_path):
    # losses.jsonl comes from the bucket with a pulled run: a line of JSON that is not a point (an edit, another
    # tool's, a hostile bucket's) was taken for one, and `report` ended in a KeyError's traceback.
    import json

    (tmp_path / "run.json").write_text(json.dumps({"config": {"dataset": "zalando"}, "total_steps": 40}))
    (tmp_path / "metrics.jsonl").write_text("")
    points = [json.dumps({"step": step, "d_loss": 1.0, "g_loss": 2.0}) for step in range(1, 4)]
    odd = ['{"step": 4}', "[1, 2]", '{"step": "5", "d_loss": 1, "g_loss": 2}', '{"step": 6, "d_loss": "x", "g_loss": 1}',
           '{"step": true, "d_loss": 1, "g_loss": 2}', "7"]
    (tmp_path / "losses.jsonl").write_text("\n".join(points[:2] + odd + points[2:]) + "\n")
    html = write_report(tmp_path).read_text()
    assert 'alt="losses per recorded step' in html and (tmp_path / "losses.png").is_file()


def test_a_pulled_metrics_file_with_lines_that_are_no_epoch_rows_still_reports(tmp_path):
    # metrics.jsonl comes from the bucket too: {"epoch": 1} ended `report` in KeyError: 'step', and a line that was
    # not JSON at all dropped every epoch from the report.
    import json

    (tmp_path / "run.json").write_text(json.dumps({"config": {"dataset": "zalando"}, "total_steps": 40,
                                                   "steps_per_epoch": 10, "global_batch_size": 32}))
    row = {"epoch": 1, "step": 10, "d_loss": 1.0, "g_loss": 2.0, "seconds": 4.0, "images_per_sec": 320.0}
    odd = ['{"epoch": 1}', "not json", '{"epoch": "2", "step": 20, "d_loss": 1, "g_loss": 2}',
           json.dumps({**row, "epoch": 2, "step": 20, "evaluation": {"samples": "many"}}),
           json.dumps({**row, "epoch": 2, "step": 20, "evaluation": {"samples": 100, "classifier_score": "x"}}),
           json.dumps({**row, "epoch": 2, "step": 20, "seconds": None}), "[3]"]
    good = json.dumps({**row, "epoch": 2, "step": 20, "evaluation": {"samples": 100, "classifier_score": 7.5}})
    (tmp_path / "metrics.jsonl").write_text("\n".join([json.dumps(row), *odd, good]) + "\n")
    html = write_report(tmp_path).read_text()
    assert "2 / 20 of 40" in html and "0:08" in html  # both good rows, and only they, counted
    # 640 images in 8 s: every image over the wall time, not each epoch's compiled speed (320) times its seconds
    assert "80 (all steps over the training time)" in html
