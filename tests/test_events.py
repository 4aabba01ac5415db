"""losses.jsonl and TensorBoard events: what the loop records per step chunk and per epoch, read back."""

import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from tests.events_helpers import images, read_events, scalars
from trainer import events, plots

pytest.importorskip("tensorboardX")


def state(step=0, epoch_steps=0, sums=(0.0, 0.0)):
    return {"step": step, "epoch_steps": epoch_steps, "epoch_sums": list(sums)}


def run_steps(log, start, losses, steps_per_epoch, epoch_steps=0, sums=(0.0, 0.0)):
    """Feed per-step [d, g] losses as the loop does: running epoch sums, reset after each whole epoch."""
    step, sums = start, np.array(sums, float)
    for d, g in losses:
        sums = sums + [d, g]
        step += 1
        epoch_steps += 1
        log.steps(step, sums, epoch_steps)
        if epoch_steps == steps_per_epoch:
            sums, epoch_steps = np.zeros(2), 0


def test_points_are_chunk_means_and_restart_each_epoch(tmp_path):
    log = events.RunLog(tmp_path, steps_per_epoch=4, total_steps=8, state=state(), log=print)
    losses = [(float(i), 10.0 + i) for i in range(8)]
    run_steps(log, 0, losses, 4)
    log.close()
    rows = events.read_losses(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 9))  # 4 steps an epoch: a point every step
    assert [r["d_loss"] for r in rows] == [d for d, _ in losses]
    assert [r["g_loss"] for r in rows] == [g for _, g in losses]


def test_sums_added_to_in_place_still_give_each_chunk_its_own_mean(tmp_path):
    log = events.RunLog(tmp_path, steps_per_epoch=10, total_steps=10, state=state(), log=print)
    sums = np.zeros(2)
    for step in range(1, 4):
        sums += [step, 2 * step]  # one array, updated in place, as a loop may keep it
        log.steps(step, sums, step)
    assert [(r["d_loss"], r["g_loss"]) for r in events.read_losses(tmp_path)] == [(1, 2), (2, 4), (3, 6)]


def test_long_epochs_get_about_a_hundred_points_each_with_the_mean_since_the_last(tmp_path, monkeypatch):
    log = events.RunLog(tmp_path, steps_per_epoch=1000, total_steps=1000, state=state(), log=print)
    losses = [(float(i), 2.0 * i) for i in range(1000)]
    run_steps(log, 0, losses, 1000)
    rows = events.read_losses(tmp_path)
    assert len(rows) == 100 and rows[0]["step"] == 10 and rows[-1]["step"] == 1000
    assert rows[0]["d_loss"] == pytest.approx(np.mean(range(10)))  # steps 1-10 hold losses 0..9
    assert rows[-1]["g_loss"] == pytest.approx(2 * np.mean(range(990, 1000)))


def test_a_run_cut_short_inside_its_first_epoch_still_gets_a_curve(tmp_path):
    log = events.RunLog(tmp_path, steps_per_epoch=3750, total_steps=10, state=state(), log=print)
    run_steps(log, 0, [(1.0, 2.0)] * 10, 3750)
    assert [r["step"] for r in events.read_losses(tmp_path)] == list(range(1, 11))


def test_a_resumed_run_drops_later_points_and_continues_from_the_checkpoint_sums(tmp_path):
    first = events.RunLog(tmp_path, steps_per_epoch=4, total_steps=8, state=state(), log=print)
    run_steps(first, 0, [(1.0, 1.0)] * 6, 4)  # killed at step 6, checkpoint at step 5
    first.close()
    resumed = events.RunLog(tmp_path, 4, 8, state(step=5, epoch_steps=1, sums=(3.0, 4.0)), log=print)
    assert [r["step"] for r in events.read_losses(tmp_path)] == [1, 2, 3, 4, 5]
    run_steps(resumed, 5, [(7.0, 8.0)] * 3, 4, epoch_steps=1, sums=(3.0, 4.0))
    resumed.close()
    rows = events.read_losses(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert rows[5] == {"step": 6, "d_loss": 7.0, "g_loss": 8.0}  # not (3 + 7) / 2: the checkpoint's sums are known
    # TensorBoard is told to hide what the first attempt wrote from step 5 on.
    starts = [e.step for e in read_events(tmp_path / "tensorboard") if e.HasField("session_log")]
    assert 5 in starts


def test_epoch_writes_scalars_quality_and_the_sample_grid(tmp_path):
    log = events.RunLog(tmp_path, steps_per_epoch=2, total_steps=4, state=state(), log=print)
    run_steps(log, 0, [(0.5, 1.5), (0.7, 1.1)], 2)
    grid = Image.fromarray(np.arange(30 * 40, dtype=np.uint8).reshape(30, 40) % 251)
    grid_path = plots.grid_path(tmp_path / "samples", 1)
    grid_path.parent.mkdir()
    grid.save(grid_path)
    evaluation = {"label_accuracy": 0.25, "frechet_classifier_distance": 40.0, "classifier_score": 3.0,
                  "samples": 1000, "per_class_accuracy": {"a": 0.2}}
    log.epoch({"epoch": 1, "step": 2, "d_loss": 0.6, "g_loss": 1.3, "images_per_sec": 123.0, "seconds": 1.0,
               "evaluation": evaluation}, grid_path.read_bytes())
    # Flushed by epoch(): readable before close, as the published copy is.
    found = scalars(read_events(tmp_path / "tensorboard"))
    assert found["loss/discriminator"] == [(1, 0.5), (2, pytest.approx(0.7))]
    assert found["loss/generator"] == [(1, 1.5), (2, pytest.approx(1.1))]
    assert found["epoch/d_loss"] == [(2, pytest.approx(0.6))] and found["speed/images_per_sec"] == [(2, 123.0)]
    assert found["quality_1000_samples/label_accuracy"] == [(2, 0.25)]
    assert found["quality_1000_samples/frechet_classifier_distance"] == [(2, 40.0)]
    [(step, png, width, height)] = images(read_events(tmp_path / "tensorboard"))["samples"]
    assert (step, width, height) == (2, 40, 30)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("L")), np.asarray(grid))
    log.close()


def test_without_tensorboardx_the_run_keeps_its_loss_points_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if not installed
    said = []
    log = events.RunLog(tmp_path, 2, 2, state(), log=said.append)
    run_steps(log, 0, [(1.0, 2.0), (3.0, 4.0)], 2)
    log.epoch({"epoch": 1, "step": 2, "d_loss": 2.0, "g_loss": 3.0, "images_per_sec": 1.0, "seconds": 1.0})
    log.close()
    assert len(events.read_losses(tmp_path)) == 2 and not (tmp_path / "tensorboard").exists()
    assert any("tensorboardX is not installed" in line for line in said)


def test_a_torn_last_line_is_skipped(tmp_path):
    (tmp_path / events.LOSSES_FILE).write_text(json.dumps({"step": 1, "d_loss": 1, "g_loss": 2}) + '\n{"step": 2, "d_')
    assert [r["step"] for r in events.read_losses(tmp_path)] == [1]


def test_the_grid_goes_in_as_its_png_bytes_with_its_shape_and_a_non_png_is_left_out(tmp_path):
    log = events.RunLog(tmp_path, steps_per_epoch=2, total_steps=4, state=state(), log=print)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 12, 3), dtype=np.uint8)).save(rgb)
    row = {"epoch": 1, "step": 2, "d_loss": 0.6, "g_loss": 1.3, "images_per_sec": 1.0, "seconds": 1.0}
    log.epoch(row, rgb.read_bytes())
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a picture at all, but long enough to have an IHDR where one would be")
    log.epoch(dict(row, step=4), junk.read_bytes())
    log.close()
    found = [(e.step, v.image) for e in read_events(tmp_path / "tensorboard") for v in e.summary.value
             if v.HasField("image")]
    assert [(step, im.width, im.height, im.colorspace) for step, im in found] == [(2, 12, 20, 3)]
    assert found[0][1].encoded_image_string == rgb.read_bytes()  # stored as written, not re-encoded


def test_one_step_epochs_get_a_point_every_step(tmp_path):
    # A batch as large as the dataset: each epoch is one step, and each point's epoch sums start again.
    log = events.RunLog(tmp_path, steps_per_epoch=1, total_steps=3, state=state(), log=print)
    run_steps(log, 0, [(1.0, 2.0), (3.0, 4.0), (5.0, 6.0)], 1)
    assert [(r["step"], r["d_loss"]) for r in events.read_losses(tmp_path)] == [(1, 1.0), (2, 3.0), (3, 5.0)]


def test_a_run_ending_between_points_still_gets_its_last_step(tmp_path):
    # --max-steps 1005 with 1000-step epochs: a point every 10 steps, and one at the run's end, step 1005.
    log = events.RunLog(tmp_path, steps_per_epoch=1000, total_steps=1005, state=state(), log=print)
    run_steps(log, 0, [(1.0, 2.0)] * 1000 + [(3.0, 4.0)] * 5, 1000)
    assert events.read_losses(tmp_path)[-1] == {"step": 1005, "d_loss": 3.0, "g_loss": 4.0}
