"""A toy backend, registered only by tests/test_backend_registry.py: a new backend is this one module and
one registry entry. Its "job" is a state file beside the launcher's job records: submitted InProgress,
ended by `stop`; its log is the state's lines."""

import json
from datetime import datetime, timezone
from pathlib import Path

from launcher import jobs
from launcher.backends.base import container_inputs, recorded_output_uri

DEFAULT_INSTANCE_TYPE = "toy.machine"
ML_INSTANCE_TYPES = False
CLOUD = False
SETUP_HINT = ""
NO_ROLE = None
RECORD_FIELDS = ("state",)
SETUP_SECONDS = 0
output_uri = recorded_output_uri


def check_spec(spec) -> None:
    """It runs any spec build_spec lets through."""


def _read(record) -> dict:
    return json.loads(Path(record["state"]).read_text())


def submit(spec, dry_run: bool = False) -> dict:
    plan = {"backend": "toy", "job": spec.job, "instance_type": spec.instance_type, "hyperparameters":
            container_inputs(spec.hyperparameters, output_uri=spec.output_uri, checkpoint_uri=spec.checkpoint_uri)}
    if dry_run:
        return plan
    state = jobs.jobs_dir() / f"{spec.job}.toy-state"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"status": "InProgress", "log": [f"toy: training {spec.job}", "toy: epoch 1"],
                                 "plan": plan}))
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return jobs.save({**spec.to_dict(), "submitted_at": now, "state": str(state)})


def describe(record: dict) -> dict:
    return {"status": _read(record)["status"], "started": record["submitted_at"], "ended": None,
            "failure_reason": None, "instance_type": record["instance_type"]}


def logs(record: dict, follow: bool, print_line) -> None:
    for line in _read(record)["log"]:
        print_line(line)


def stop(record: dict) -> None:
    state = _read(record)
    Path(record["state"]).write_text(json.dumps({**state, "status": "Stopped"}))


def plan_rows(spec) -> list[tuple[str, str]]:
    return [("toy", f"a toy run of {spec.job}")]
