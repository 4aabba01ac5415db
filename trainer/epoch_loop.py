"""The steps of an epoch: compiled calls paced to about a second, the checkpoint clock, and stop requests.

`stop_requested` is polled after every call (SIGTERM sets it). A stop, or
--checkpoint-minutes passing, inside an epoch writes a checkpoint there; at an
epoch's end the epoch's own checkpoint serves both. Three threads work beside
the steps, one job each at a time: the checkpoint writer, the epoch's files
(`write_files`), and the outputs' S3 mirror, which follows the files.
"""

import time

import numpy as np

from trainer import checkpoints
from trainer.background import Background
from trainer.errors import Diverged
from trainer.pacer import Pacer
from trainer.run_storage import OutputPublisher
from trainer.weights import arrays_of


# Said before the first call, which on our 2-core CPU took 10 to 14 s of compiling with no line at all.
COMPILING = "compiling the training step (its first call); progress lines follow"


class EpochLoop:
    def __init__(self, t, stop_requested):
        self.t, self.stop_requested = t, stop_requested  # t: trainer.run_setup.Training
        self.pacer = Pacer()
        # The loop pays for the host copy only; the write, pruning and S3 push run beside the next steps.
        self.writer = checkpoints.CheckpointWriter(t.save_dir, t.cfg.keep_checkpoints, after=t.storage.after_checkpoint)
        self.publisher = OutputPublisher(t.storage)  # likewise the outputs' S3 mirror (a snapshot, then a thread)
        self.files = Background()  # an epoch's grid, GIF, plots and logs (trainer/train.py: epoch_files)
        self.checkpoint_seconds = t.cfg.checkpoint_minutes * 60
        self.compiled = False  # until the first call: it compiles the step, before any progress line can come
        self.last_checkpoint = time.monotonic()
        self.stopped = False
        self.workers = getattr(t.placement, "workers", 1)

    def run(self, epoch: int) -> bool:
        """Run `epoch` on from where the state stands; False when a stop came first (its checkpoint written)."""
        t, state = self.t, self.t.state
        first = state.step - epoch * t.steps_per_epoch
        last = min(t.total_steps - epoch * t.steps_per_epoch, t.steps_per_epoch)
        sums = np.asarray(state.epoch_sums, np.float64)
        t0 = time.monotonic() - state.epoch_seconds
        t.runner.start_epoch(epoch, first, last)
        batch = first
        while batch < last:
            # Many steps per compiled call, but never past the epoch, --max-steps or the next checkpoint.
            n = self.pacer.steps(last - batch, self.checkpoint_seconds - (time.monotonic() - self.last_checkpoint))
            if self.workers > 1:
                n = 1  # every worker must poll (and agree on) a stop after the same step; they run step by step anyway
            compiling = not self.compiled
            if compiling:
                t.log(COMPILING)
                self.compiled = True
            called_at = time.monotonic()
            called = np.asarray(self.pacer.timed(lambda: t.runner.run(batch, n, state.step), n))  # the losses: done
            if compiling:  # out of the epoch's images/s (RunState.compile_steps)
                state.compile_steps += n
                state.compile_seconds += time.monotonic() - called_at
            finite = np.isfinite(called).all(axis=1)  # one look per call, not per step: this is the hot path
            if not finite.all():
                bad = int(np.argmin(finite))  # the first step whose losses are not numbers
                self.wait()  # the checkpoint in flight (of good weights) is finished, not cut off
                raise Diverged(state.step + bad + 1, "d_loss {:.4g}, g_loss {:.4g}".format(*called[bad]))
            for losses in called:
                sums = sums + losses  # one step at a time, in order: the same sums however steps were grouped
                state.step += 1
                state.epoch_steps += 1
                t.run_log.steps(state.step, sums, state.epoch_steps)
            batch += n
            # Bound now: the bar's close() may draw them after the epoch closed and its counts were reset.
            t.progress.update(n, extra=lambda sums=sums, steps=state.epoch_steps: _progress_text(epoch, t.cfg.epochs,
                                                                                                  sums, steps))
            # Several workers stop together: one that stopped alone would leave the others in a collective forever.
            self.stopped = t.runner.agree_stop(bool(self.stop_requested()))
            if batch < last and (self.stopped or time.monotonic() - self.last_checkpoint > self.checkpoint_seconds):
                state.epoch_sums, state.epoch_seconds = sums.tolist(), time.monotonic() - t0
                self.checkpoint()
                if self.stopped:
                    return False
        state.epoch_sums, state.epoch_seconds = sums.tolist(), time.monotonic() - t0
        self.files.wait()  # the last epoch's files are written: this epoch's end may plot and publish
        return True

    def checkpoint(self):
        """A checkpoint of the state now; restarts the clock."""
        t = self.t
        t.runner.sync()
        self.writer.save(t.state.step, arrays_of(t.nets.groups()), t.state.to_json())
        self.last_checkpoint = time.monotonic()

    def write_files(self, job, *args):
        """Run job(*args), which writes an epoch's files, beside the next epoch's steps; then start the
        outputs' S3 mirror, so each upload sees an epoch's files complete."""
        self.files.wait()
        self.files.start(self._files_then_publish, job, args, name="epoch-files")

    def _files_then_publish(self, job, args):
        job(*args)
        self.publisher.publish()

    def wait(self):
        """Block until the epoch's files are written, the last checkpoint is complete (and pushed) and the
        outputs' upload in flight is done; a failed write or upload raises here."""
        try:
            self.files.wait()
        finally:
            self.writer.wait()
            self.publisher.wait()


def _progress_text(epoch, epochs, sums, steps):
    d_loss, g_loss = (np.asarray(sums) / max(steps, 1)).tolist()
    return f"epoch {epoch + 1}/{epochs}  d_loss {d_loss:.4f}  g_loss {g_loss:.4f}"
