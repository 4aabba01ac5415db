"""What a job's own run.json says (written when training starts), for `launcher status`."""

import json
from pathlib import Path

from trainer import layout, s3
from trainer.errors import GankitError


def read_run_json(record: dict) -> dict | None:
    """The job's run.json from its output location (a folder or S3), or None if it is not there (yet)."""
    uri = layout.join(record["output_uri"], "run.json")
    try:
        raw = s3.read_bytes(uri) if s3.is_s3(uri) else Path(uri).read_bytes()
        return json.loads(raw) if raw else None
    except (OSError, ValueError, GankitError):
        return None  # status shows what the backend says; this is only a detail


def cut_short_note(record: dict, status: str = "InProgress") -> str | None:
    """A line when --max-steps ends the run before its last epoch does, in the tense of the job's `status`;
    None otherwise."""
    from trainer.report import CUT_SHORT_END, cut_short_text

    # SageMaker's Stopping: the stop is under way, so the run will not reach the step it was set to end at
    state = {"Completed": "ended", "Stopped": "stopped", "Stopping": "stopped",
             "Failed": "stopped"}.get(status, "running")
    run = read_run_json(record)
    if run is not None:
        return cut_short_text(run, state)
    max_steps = record.get("hyperparameters", {}).get("max_steps")
    if not max_steps:
        return None
    end = CUT_SHORT_END["running" if state == "running" else "stopped"]  # no run.json: it never trained to its end
    return f"by --max-steps {max_steps} if its epochs take more steps ({end} at step {max_steps})"
