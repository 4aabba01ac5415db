"""The epoch loop's steps, stops and checkpoints, around a backend that makes up its losses (no Keras)."""

from types import SimpleNamespace

import numpy as np

from trainer import epoch_loop
from trainer.run_state import RunState


class Runner:
    """One pair of losses per step: (step, 1)."""

    def __init__(self):
        self.calls = []

    def start_epoch(self, epoch, first, last):
        pass

    def run(self, batch, n, step):
        self.calls.append(n)
        return [(float(step + k), 1.0) for k in range(n)]

    def agree_stop(self, stop):
        return stop

    def sync(self):
        pass


def loop_of(tmp_path, steps_per_epoch, total_steps, stop_requested=lambda: False, checkpoint_minutes=60.0):
    t = SimpleNamespace(
        state=RunState(), steps_per_epoch=steps_per_epoch, total_steps=total_steps, runner=Runner(),
        cfg=SimpleNamespace(epochs=total_steps // steps_per_epoch, keep_checkpoints=2,
                            checkpoint_minutes=checkpoint_minutes),
        save_dir=tmp_path, storage=SimpleNamespace(after_checkpoint=None, output_dir=str(tmp_path / "run"), output_uri=None), placement=None,
        log=lambda *a, **k: None, run_log=SimpleNamespace(steps=lambda *a: None),
        progress=SimpleNamespace(update=lambda *a, **k: None))
    loop = epoch_loop.EpochLoop(t, stop_requested)
    loop.saved = []
    loop.checkpoint = lambda: loop.saved.append(t.state.step)  # which steps a checkpoint is written at
    return loop


def test_a_stop_inside_an_epoch_checkpoints_there_and_one_at_its_end_is_left_to_the_epochs_checkpoint(tmp_path):
    loop = loop_of(tmp_path, steps_per_epoch=8, total_steps=8, stop_requested=lambda: True)
    assert loop.run(0) is False and loop.saved == [1] and loop.t.state.step == 1  # the first call: one step
    loop = loop_of(tmp_path, steps_per_epoch=1, total_steps=1, stop_requested=lambda: True)
    assert loop.run(0) is True and loop.saved == [] and loop.t.state.step == 1  # the epoch's end checkpoints it


def test_the_first_call_is_counted_as_compiling_and_the_sums_as_every_steps_losses(tmp_path):
    loop = loop_of(tmp_path, steps_per_epoch=8, total_steps=8)
    assert loop.run(0) is True
    state = loop.t.state
    assert loop.t.runner.calls[0] == 1 and state.compile_steps == 1 and state.compile_seconds > 0
    assert state.step == state.epoch_steps == 8 and state.epoch_sums == [float(sum(range(8))), 8.0]
    assert sum(loop.t.runner.calls) == 8  # never past the epoch


def test_max_steps_ends_inside_the_epoch_and_a_resumed_epoch_keeps_its_time_so_far(tmp_path):
    loop = loop_of(tmp_path, steps_per_epoch=8, total_steps=13)  # --max-steps 13: epoch 2 ends after 5 steps
    state = loop.t.state
    state.step, state.epoch_steps, state.epoch_seconds = 10, 2, 100.0  # resumed 2 steps and 100 s into epoch 2
    assert loop.run(1) is True
    assert state.step == 13 and state.epoch_steps == 5 and state.epoch_seconds >= 100.0
    assert sum(loop.t.runner.calls) == 3


def test_checkpoint_minutes_passing_checkpoints_inside_the_epoch_and_bounds_each_call(tmp_path):
    loop = loop_of(tmp_path, steps_per_epoch=4, total_steps=4, checkpoint_minutes=1e-9)  # always due
    assert loop.run(0) is True
    assert loop.t.runner.calls == [1, 1, 1, 1]  # no call runs past a checkpoint that is due
    assert loop.saved == [1, 2, 3]  # step 4 ends the epoch: its own checkpoint serves
