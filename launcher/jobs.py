"""The launcher's record of every job it submitted: one JSON file per job under the config folder."""

import json

from launcher import settings
from trainer.errors import UsageError
from trainer.fsutil import atomic_write_text


def jobs_dir():
    return settings.config_dir() / "jobs"


def save(record: dict) -> dict:
    folder = jobs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / f"{record['job']}.json", json.dumps(record, indent=2, default=str) + "\n")
    return record


def load(job: str) -> dict:
    path = jobs_dir() / f"{job}.json"
    if "/" in job or not path.exists():
        raise UsageError(f"unknown job {job}; `launcher list` shows your jobs")
    return json.loads(path.read_text())


def all_jobs() -> list[dict]:
    folder = jobs_dir()
    records = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.exists() else []
    return sorted(records, key=lambda r: r.get("submitted_at", ""), reverse=True)
