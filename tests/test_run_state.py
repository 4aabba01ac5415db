"""The run's state (state.json both ways) and the loop's pacing, without a backend."""

import json

from trainer.pacer import MAX_STEPS_PER_CALL, Pacer
from trainer.run_state import RunState

ARCH = {"model": "cgan", "preset": "book", "z_dim": 96, "image_shape": [28, 28, 1], "num_classes": 10}
SCHEDULE = {"global_batch": 32, "steps_per_epoch": 1875}
RECIPE = {"seed": 0, "loss": "bce", "smooth": 0.1, "beta1": 0.35, "beta2": 0.999, "aux_weight": 0, "aux_g_weight": 0,
          "ema": 0.999}


def test_state_json_keeps_the_keys_checkpoints_always_had():
    state = RunState(step=5, history=[{"epoch": 1}], epoch_sums=[1.5, 2.5], epoch_steps=1, epoch_seconds=0.25,
                     architecture=ARCH, schedule=SCHEDULE, selection={"fcd": 1.5, "selected": "last"}, recipe=RECIPE)
    assert list(state.to_json()) == ["step", "history", "epoch_sums", "epoch_steps", "epoch_seconds", "architecture",
                                     "schedule", "selection", "recipe", "open_row", "compile_steps", "compile_seconds"]
    assert RunState.from_json(json.loads(json.dumps(state.to_json())), ARCH, SCHEDULE, RECIPE) == state


def test_an_older_state_resumes_with_this_runs_architecture():
    old = {"step": 8, "history": [{"epoch": 1}, {"epoch": 2}], "epoch_sums": [0.0, 0.0], "epoch_steps": 0,
           "epoch_seconds": 0.0, "written_by": "an older gankit"}  # no architecture, a key this one does not know
    state = RunState.from_json(old, ARCH, SCHEDULE)
    assert (state.step, len(state.history), state.architecture, state.schedule) == (8, 2, ARCH, SCHEDULE)
    assert state.selection == {}
    assert "written_by" not in state.to_json()


def test_a_whole_epoch_joins_the_history_a_partial_one_stays_open():
    state = RunState(step=4, epoch_sums=[4.0, 8.0], epoch_steps=4, epoch_seconds=2.0)
    row = state.close_epoch(0, steps_per_epoch=4, batch_size=16)
    assert row == {"epoch": 1, "step": 4, "d_loss": 1.0, "g_loss": 2.0, "images_per_sec": 32.0, "seconds": 2.0}
    assert state.history == [row] and (state.epoch_sums, state.epoch_steps, state.epoch_seconds) == ([0.0, 0.0], 0, 0.0)
    assert state.metric_rows(16) == [row]

    state.step, state.epoch_sums, state.epoch_steps, state.epoch_seconds = 6, [2.0, 2.0], 2, 1.0
    partial = state.close_epoch(1, steps_per_epoch=4, batch_size=16)  # --max-steps ended inside epoch 2
    assert state.history == [row] and state.epoch_steps == 2  # a longer rerun finishes this same epoch
    assert state.metric_rows(16) == [row, partial] and partial["epoch"] == 2


def test_an_epochs_images_per_second_leave_out_the_first_calls_compiling():
    # A 40-step CPU run showed 184 img/s for epoch 1 against ~260 once compiled: the first call's compiling counted.
    state = RunState(step=9, epoch_sums=[9.0, 9.0], epoch_steps=9, epoch_seconds=12.0, compile_steps=1,
                     compile_seconds=10.0)
    row = state.close_epoch(0, steps_per_epoch=9, batch_size=16)
    assert row["images_per_sec"] == 8 * 16 / 2.0 and row["seconds"] == 12.0  # the epoch's own time stays whole
    assert (state.compile_steps, state.compile_seconds) == (0, 0.0)  # the next epoch has no first call

    state.step, state.epoch_sums, state.epoch_steps, state.epoch_seconds = 10, [1.0, 1.0], 1, 10.0
    state.compile_steps, state.compile_seconds = 1, 10.0  # --max-steps 1: that call was all there was
    assert state.close_epoch(1, steps_per_epoch=9, batch_size=16)["images_per_sec"] == 1.6


def test_the_pacer_measures_first_then_grows_in_powers_of_two_within_its_limits():
    pacer = Pacer(target=1.0)
    assert pacer.steps(100) == 1  # the first call compiles
    pacer.record(1, 30.0)  # ... so its time says nothing
    assert pacer.steps(100) == 1
    pacer.record(1, 0.01)
    assert pacer.steps(1000) == 64  # ~1 s of 0.01 s steps, rounded down to a power of two
    assert pacer.steps(10) == 10  # never past the epoch or --max-steps
    assert pacer.steps(1000, seconds_left=0.1) == 8  # nor (roughly) past the next checkpoint
    pacer.seconds_per_step = 1e-9
    assert pacer.steps(10**9) == MAX_STEPS_PER_CALL


def test_a_partial_last_epochs_quality_figures_stay_in_its_row():
    # --max-steps 40 with --eval-every: the final evaluation is added to the row end_epoch got from close_epoch;
    # metrics.jsonl (written from metric_rows, at the epoch's end, at the export and at a re-export from the
    # checkpoint) lost it, and with it the report's quality plot.
    state = RunState(step=6, epoch_sums=[2.0, 2.0], epoch_steps=2, epoch_seconds=1.0)
    partial = state.close_epoch(0, steps_per_epoch=4, batch_size=16)
    partial["evaluation"] = {"frechet_classifier_distance": 95.6, "samples": 10_000}
    assert state.metric_rows(16)[-1]["evaluation"] == partial["evaluation"]
    resumed = RunState.from_json(json.loads(json.dumps(state.to_json())), ARCH, SCHEDULE, RECIPE)
    assert resumed.metric_rows(16)[-1]["evaluation"] == partial["evaluation"]  # a re-export keeps them

    resumed.step, resumed.epoch_steps = 8, 4  # a longer rerun finishes the epoch: its figures were of step 6
    assert "evaluation" not in resumed.close_epoch(0, steps_per_epoch=4, batch_size=16)
    assert "evaluation" not in resumed.metric_rows(16)[-1]


def test_an_epoch_one_step_short_stays_open():
    state = RunState(step=3, epoch_sums=[3.0, 3.0], epoch_steps=3, epoch_seconds=1.5)
    state.close_epoch(0, steps_per_epoch=4, batch_size=16)  # --max-steps 3: epoch 1 lacks its last step
    assert state.history == [] and state.epoch_steps == 3 and state.epoch_sums == [3.0, 3.0]



def test_a_partial_row_closed_at_an_earlier_step_is_not_the_open_epochs_row():
    # Closed at step 2 (--max-steps 2), then a longer rerun stopped at step 3, inside the same epoch: metrics.jsonl's
    # last row is step 3's figures, not the stale row of step 2.
    state = RunState(step=2, epoch_sums=[2.0, 2.0], epoch_steps=2, epoch_seconds=1.0)
    state.close_epoch(0, steps_per_epoch=4, batch_size=16)
    state.step, state.epoch_sums, state.epoch_steps, state.epoch_seconds = 3, [3.0, 6.0], 3, 1.5
    assert state.metric_rows(16)[-1] == {"epoch": 1, "step": 3, "d_loss": 1.0, "g_loss": 2.0, "images_per_sec": 32.0,
                                         "seconds": 1.5}
