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
    return _read(path)


def all_jobs() -> list[dict]:
    """Every readable record, newest first; a corrupted one is skipped with a one-line warning."""
    import sys

    folder = jobs_dir()
    records = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            records.append(_read(path))
        except UsageError as e:
            print(f"warning: skipping {e}", file=sys.stderr)
    return sorted(records, key=lambda r: str(r.get("submitted_at", "")), reverse=True)


def _read(path) -> dict:
    """A record, checked for what every command needs, or a one-line UsageError naming the file."""
    def corrupted(why):
        return UsageError(f"job record {path} is corrupted ({why}); restore it from a backup or delete it")

    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:  # ValueError covers bad UTF-8 too
        raise corrupted(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    if not isinstance(record, dict):
        raise corrupted("not a JSON object")
    if record.get("job") != path.stem:
        raise corrupted(f"it names job {record.get('job')!r}")
    for key in ("backend", "output_uri"):
        if not isinstance(record.get(key), str):
            raise corrupted(f"no {key}")
    return record
