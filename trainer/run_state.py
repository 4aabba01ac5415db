"""Where a run stands: what a checkpoint's state.json records, and the metrics rows it yields.

state.json is `RunState.to_json()`: {"step", "history", "epoch_sums", "epoch_steps", "epoch_seconds",
"architecture", "schedule", "selection", "recipe", "open_row", "compile_steps", "compile_seconds"}, the same
keys as before this was a dataclass plus later ones, so checkpoints resume across versions (a key an older
checkpoint lacks takes its default).
"""

import dataclasses
from dataclasses import dataclass, field


@dataclass
class RunState:
    step: int = 0
    history: list[dict] = field(default_factory=list)  # one row per whole epoch (metrics.jsonl)
    epoch_sums: list[float] = field(default_factory=lambda: [0.0, 0.0])  # the open epoch's [d, g] loss sums
    epoch_steps: int = 0  # steps of the open epoch done
    epoch_seconds: float = 0.0  # its time so far
    architecture: dict = field(default_factory=dict)  # what its networks depend on (checkpoints.architecture)
    schedule: dict = field(default_factory=dict)  # global batch, steps per epoch, dataset size (checkpoints.schedule)
    selection: dict = field(default_factory=dict)  # the final evaluation's keys for generator.json, once done
    recipe: dict = field(default_factory=dict)  # seed, loss, betas, ... a resume must keep (checkpoints.recipe)
    open_row: dict = field(default_factory=dict)  # the partial epoch's row as last closed, quality figures and all
    # The open epoch's steps and seconds in a process's first call (of a run, or of a resume), which compiles the
    # step: the epoch's images/s leaves them out, or epoch 1's would count compiling as training.
    compile_steps: int = 0
    compile_seconds: float = 0.0

    @classmethod
    def from_json(cls, saved: dict, architecture: dict, schedule: dict, recipe: dict | None = None) -> "RunState":
        known = {f.name for f in dataclasses.fields(cls)} - {"architecture", "schedule", "recipe"}
        return cls(**{k: v for k, v in saved.items() if k in known}, architecture=architecture, schedule=schedule,
                   recipe=recipe or {})

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def epoch_row(self, epoch: int, batch_size: int) -> dict:
        """metrics.jsonl's row for the open epoch (0-based `epoch`)."""
        d_loss, g_loss = (x / max(self.epoch_steps, 1) for x in self.epoch_sums)
        return {"epoch": epoch + 1, "step": self.step, "d_loss": d_loss, "g_loss": g_loss,
                "images_per_sec": self._compiled_steps_per_sec() * batch_size, "seconds": self.epoch_seconds}

    def _compiled_steps_per_sec(self) -> float:
        """The open epoch's steps per second once compiled: its steps after a first call, from that call's end.
        An epoch that was nothing but that call has only its own figure."""
        steps, seconds = self.epoch_steps - self.compile_steps, self.epoch_seconds - self.compile_seconds
        if steps <= 0 or seconds <= 0:
            steps, seconds = self.epoch_steps, self.epoch_seconds
        return steps / max(seconds, 1e-9)

    def close_epoch(self, epoch: int, steps_per_epoch: int, batch_size: int) -> dict:
        """The epoch's row. A whole epoch joins the history; a partial one (--max-steps) stays
        in the running sums, so a longer rerun finishes that same epoch."""
        row = self.epoch_row(epoch, batch_size)
        if self.epoch_steps == steps_per_epoch:
            self.history.append(row)
            self.epoch_sums, self.epoch_steps, self.epoch_seconds = [0.0, 0.0], 0, 0.0
            self.compile_steps, self.compile_seconds = 0, 0.0
            self.open_row = {}
        else:  # the caller adds the final evaluation to this very row: metric_rows returns it, not a new one without
            self.open_row = row
        return row

    def metric_rows(self, batch_size: int) -> list[dict]:
        """metrics.jsonl: every whole epoch, plus the partial one a --max-steps run ended in."""
        if self.epoch_steps == 0:
            return self.history
        if self.open_row.get("step") == self.step:  # closed at this step: its figures are this step's
            return self.history + [self.open_row]
        return self.history + [self.epoch_row(len(self.history), batch_size)]
