"""What a run records as it goes, besides metrics.jsonl: loss points every few steps and TensorBoard events.

    <output-dir>/losses.jsonl     {"step", "d_loss", "g_loss"}: the mean over the steps since the previous point
    <output-dir>/tensorboard/     event files for `tensorboard --logdir` (losses, images/s, quality, sample grids)

The loop calls `RunLog.steps` after every step (or compiled chunk of steps) and
`RunLog.epoch` once per epoch. A point costs one device-to-host copy of the
running loss sums, taken only every `interval` steps, so the loop keeps not
syncing per step. Event files are written by tensorboardX (protobuf and numpy
only: no TensorFlow, so this works on Keras' JAX backend too); without it the
run goes on with losses.jsonl alone.
"""

import json
import os
import struct
import threading
import time
from pathlib import Path

import numpy as np

from trainer.fsutil import atomic_write_text, written_or_one_line

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # grey, RGB, palette, grey + alpha, RGBA

LOSSES_FILE = "losses.jsonl"
TENSORBOARD_DIR = "tensorboard"
POINTS_PER_EPOCH = 100
QUALITY = ("label_accuracy", "frechet_classifier_distance", "classifier_score")


def read_losses(out) -> list[dict]:
    """The loss points of a run folder. A line that is not one is skipped: a torn last line, from a killed run, and
    in a run pulled from a bucket (remote content) anything else, which the report's plot took for a point and
    failed on with a traceback."""
    return read_rows(Path(out) / LOSSES_FILE, is_loss_point)


def read_rows(path, is_row) -> list[dict]:
    """The lines of a JSON-lines file that parse and pass `is_row`; none where the file cannot be read."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if is_row(row):
            rows.append(row)
    return rows


def is_loss_point(row) -> bool:
    """What RunLog writes: a step, and both losses as numbers (a metrics.jsonl row is one too)."""
    return (isinstance(row, dict) and is_number(row.get("step"), int)
            and all(is_number(row.get(key)) for key in ("d_loss", "g_loss")))


def is_number(value, kinds=(int, float)) -> bool:
    return isinstance(value, kinds) and not isinstance(value, bool)  # JSON's true is no step nor loss


class RunLog:
    """losses.jsonl and the TensorBoard writer of one run, resumed at `state["step"]`."""

    def __init__(self, out, steps_per_epoch: int, total_steps: int, state: dict, log=print):
        self.out = Path(out)
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        # ~100 points an epoch, or over the whole run when --max-steps ends it inside its first epoch.
        self.interval = max(1, min(steps_per_epoch, total_steps) // POINTS_PER_EPOCH)
        start = state["step"]
        # A resumed run drops the points written after its checkpoint, as metrics.jsonl does.
        kept = [row for row in read_losses(self.out) if row["step"] <= start]
        atomic_write_text(self.out / LOSSES_FILE, "".join(json.dumps(row) + "\n" for row in kept))
        self._last = (start, state["epoch_steps"], np.array(state["epoch_sums"], np.float64))
        self.writer = _tensorboard_writer(self.out / TENSORBOARD_DIR, start, log)

    def steps(self, step: int, sums, epoch_steps: int):
        """After a step (or chunk) ending at `step`: `sums` are the epoch's running [d, g] loss sums
        (a device array is fine), `epoch_steps` the steps they cover. Records a point when one is due."""
        last_step, last_epoch_steps, last_sums = self._last
        epoch_end = epoch_steps >= self.steps_per_epoch or step >= self.total_steps
        if step - last_step < self.interval and not epoch_end:
            return
        sums = np.array(sums, np.float64)  # a copy: the caller may add to its array in place
        if epoch_steps < last_epoch_steps or last_epoch_steps >= self.steps_per_epoch:
            last_epoch_steps, last_sums = 0, np.zeros(2)  # a new epoch's sums started from zero
        n = epoch_steps - last_epoch_steps
        if n <= 0:
            return
        d_loss, g_loss = ((sums - last_sums) / n).tolist()
        self._last = (step, epoch_steps, sums)
        with written_or_one_line(f"the loss point of step {step}", self.out):  # a torn line is skipped on reading
            with open(self.out / LOSSES_FILE, "a") as f:
                f.write(json.dumps({"step": step, "d_loss": d_loss, "g_loss": g_loss}) + "\n")
            if self.writer:
                self.writer.scalar("loss/discriminator", d_loss, step)
                self.writer.scalar("loss/generator", g_loss, step)

    def epoch(self, row: dict, grid_png: bytes | None = None):
        """The epoch's metrics row (with its "evaluation", if any) and its sample grid (a PNG file's
        bytes), then a flush, so the outputs published after every epoch carry them."""
        if not self.writer:
            return
        step = row["step"]
        self.writer.scalar("epoch/d_loss", row["d_loss"], step)
        self.writer.scalar("epoch/g_loss", row["g_loss"], step)
        self.writer.scalar("speed/images_per_sec", row["images_per_sec"], step)
        evaluation = row.get("evaluation") or {}
        for key in QUALITY:
            if evaluation.get(key) is not None:
                # One tag per sample count: the figures compare only at the same count.
                self.writer.scalar(f"quality_{evaluation['samples']}_samples/{key}", evaluation[key], step)
        if grid_png is not None:
            self.writer.png("samples", grid_png, step)
        self.writer.flush()

    def close(self):
        if self.writer:
            self.writer.close()
            self.writer = None


class _Writer:
    """TensorBoard events written in the caller's thread: `flush` means on disk (tensorboardX's
    SummaryWriter queues them for a thread of its own, which a flush does not wait for). The loop's
    loss points and the epoch's record (trainer/train.py: epoch_files) come from two threads, so
    each write holds a lock."""

    def __init__(self, folder: Path, start_step: int):
        from tensorboardX import summary
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary

        folder.mkdir(parents=True, exist_ok=True)
        self._summary, self._event, self._summary_pb = summary, Event, Summary
        self._lock = threading.Lock()
        # The pid keeps two starts within one second (a quick resume) from sharing a file name.
        self._file = EventsWriter(str(folder / "events"), filename_suffix=f".{os.getpid()}")
        # A start at step N: TensorBoard drops what an earlier attempt wrote from step N on (after the
        # checkpoint this run resumed from), so a resumed run shows one clean curve.
        self._file.write_event(Event(wall_time=time.time(), step=start_step,
                                     session_log=SessionLog(status=SessionLog.START)))

    def scalar(self, tag, value, step):
        self._write(self._summary.scalar(tag, float(value)), step)

    def png(self, tag, data: bytes, step):
        """A PNG file's bytes as they are: TensorBoard stores encoded images, so the grid is not decoded,
        resized and encoded again (tensorboardX's image() does all three). Anything else is left out."""
        if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
            return
        width, height = struct.unpack(">II", data[16:24])
        channels = PNG_CHANNELS.get(data[25], 3)  # IHDR's colour type
        proto = self._summary_pb
        image = proto.Image(height=height, width=width, colorspace=channels, encoded_image_string=data)
        self._write(proto(value=[proto.Value(tag=tag, image=image)]), step)

    def _write(self, summary, step):
        event = self._event(wall_time=time.time(), step=int(step), summary=summary)
        with self._lock:
            self._file.write_event(event)

    def flush(self):
        with self._lock:
            self._file.flush()

    def close(self):
        with self._lock:
            self._file.close()


def _tensorboard_writer(folder: Path, start_step: int, log):
    try:
        return _Writer(folder, start_step)
    except ImportError:
        log("TensorBoard events are off: tensorboardX is not installed (pip install tensorboardX); "
            f"losses still go to {LOSSES_FILE}")
        return None
