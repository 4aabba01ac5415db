"""The launcher's record of every job it submitted: one JSON file per job under the config folder.

A record is a file in the user's folder: an edit, a truncated write or a disk error must give one
line naming the file and the fix, never a traceback or a signal sent to the wrong process.
"""

import contextlib
import json
import os
import re
from pathlib import Path

from launcher import backends, settings
from trainer.errors import GankitError, UsageError
from trainer.fsutil import atomic_write_text, folder_held

OPTIONAL = (str, type(None))
PID_MAX = 2 ** 31 - 1  # pid_t's largest
# The fields the launcher reads and the types they must have; each backend names those its records
# must have besides job, backend and output_uri (its RECORD_FIELDS).
FIELDS = {"job": str, "backend": str, "output_uri": str, "submitted_at": str, "dataset": str, "hyperparameters": dict,
          "instance_type": OPTIONAL, "instance_count": int, "spot": bool, "region": OPTIONAL,
          "pid": int, "log": str, "sm_root": str,  # local
          "instance_id": OPTIONAL, "client_token": str, "status_uri": str, "log_uri": str, "setup_log_uri": str,  # ec2
          "resume": OPTIONAL}
# What `launcher.spec.job_name` makes (SageMaker's rule for a job name). A record's job, and the run it resumes,
# become folders (the local bucket's runs/<run>/, ./<job>) and S3 prefixes: a '..' or a '/' would lead elsewhere.
JOB_NAME = re.compile(r"[A-Za-z0-9](?:-*[A-Za-z0-9]){0,62}")


def jobs_dir():
    return settings.config_dir() / "jobs"


def save(record: dict) -> dict:
    folder = jobs_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / f"{record['job']}.json", json.dumps(record, indent=2, default=str) + "\n")
    except OSError as e:  # a full disk, a folder that is not writable: whole or absent, and one line
        raise not_recorded(record["job"], e) from None
    return record


def not_recorded(job: str, e: OSError) -> GankitError:
    return GankitError(f"the record of job {job} could not be written in {jobs_dir()} ({e.strerror or e}); "
                       "free some space there or fix its permissions, then submit again")


def exists_already(job: str) -> UsageError:
    return UsageError(f"job {job} exists already; submit again, or `launcher status {job}`")


def claim(job: str) -> Path:
    """The job's folder beside its record, made by this submit alone: of two submits that got one name (a sweep,
    in one millisecond), the second is refused. The local backend keeps it as the job's own."""
    folder = jobs_dir() / job
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        raise exists_already(job) from None
    except OSError as e:
        raise not_recorded(job, e) from None
    return folder


@contextlib.contextmanager
def claimed(job: str):
    """The name `job` for this submit alone while the block runs (it records the job there), never overwriting
    another's record: `claim`, let go of once the record holds the name."""
    folder = claim(job)
    try:
        if exists(job):  # recorded by a submit that has let go of its claim
            raise exists_already(job)
        yield
    finally:
        with contextlib.suppress(OSError):
            folder.rmdir()  # once recorded, the record holds the name


def exists(job: str) -> bool:
    return "/" not in job and (jobs_dir() / f"{job}.json").exists()


def load(job: str) -> dict:
    path = jobs_dir() / f"{job}.json"
    if "/" in job or not path.exists():
        raise _unknown(job)
    return read(path)


def _unknown(job: str) -> UsageError:
    return UsageError(f"unknown job {job}; `launcher list` shows your jobs")


def read(path) -> dict:
    """The record in `path`, checked; a UsageError naming the file otherwise."""
    try:
        record = json.loads(path.read_bytes())
        problem = _problem(record, path.stem)
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        if isinstance(e, FileNotFoundError) and not os.path.lexists(path):  # deleted since it was looked for, by
            raise _unknown(path.stem) from None  # another launcher (a refused submit's): no job, not a bad record
        problem = " ".join(str(e).split())[:120]
    if problem:
        raise UsageError(f"{path} is not a valid job record ({problem}); delete it (`rm {path}`) "
                         "or restore it from a backup")
    return record


def _problem(record, stem) -> str | None:
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    backend = record.get("backend")
    if backend not in (None, *settings.BACKENDS):
        return f"backend {json.dumps(backend)[:20]}"
    required = backends.get(backend).RECORD_FIELDS if backend else ()
    missing = [k for k in ("job", "backend", "output_uri", *required) if k not in record]
    if missing:
        return f"no {', '.join(missing)}"
    for key, kind in FIELDS.items():
        if key in record and (not isinstance(record[key], kind) or (kind is int and isinstance(record[key], bool))):
            return f"{key} is {json.dumps(record[key])[:30]}"
    if record["job"] != stem:
        return f"it names job {record['job'][:70]!r}"
    for key in ("job", "resume"):
        if record.get(key) is not None and not JOB_NAME.fullmatch(record[key]):
            return f"{key} {record[key][:70]!r} is not a job name"
    if not _its_runs_output(record["output_uri"], record.get("resume") or record["job"]):
        return f"output_uri {record['output_uri'][:70]!r} is not its run's runs/<run>/output"
    if "sm_root" in record and not _its_job_folder(record["sm_root"], record["job"]):
        return f"sm_root {record['sm_root'][:70]!r} is not its job's folder {jobs_dir() / record['job']}"
    if "log" in record and not _in_its_job_folder(record["log"], record["job"]):
        return f"log {record['log'][:70]!r} is not a file in its job's folder {jobs_dir() / record['job']}"
    # A pid <= 0 signals a process group; one past pid_t's range is an OverflowError from os.kill.
    if record.get("instance_count", 1) < 1 or not 0 < record.get("pid", 1) <= PID_MAX:
        return "instance_count" if record.get("instance_count", 1) < 1 else f"pid {record['pid']}"
    return None


def _its_runs_output(uri: str, run: str) -> bool:
    """Whether `uri` is a run's output prefix (layout.output_prefix) for `run`: `evaluate` and `report` write into
    a local one, and one led anywhere (a folder of the user's) by an edit. A '.' or '..' before runs/<run>/output
    leads to a folder of that name as any other prefix does (the local bucket's own path has one when GANKIT_HOME
    does, as submit records it); among those last three names there is none."""
    return uri.rstrip("/").split("/")[-3:] == ["runs", run, "output"]


def _its_job_folder(path: str, job: str) -> bool:
    """Whether `path` is the local job's own folder beside its record (where `submit` made it): `stop` writes
    stop_sent there and `status` reads what the trainer left there, and an edit led them into any folder."""
    return _names_below(path, jobs_dir() / job) == []


def _in_its_job_folder(path: str, job: str) -> bool:
    """Whether `path` (a local job's log, which `logs` prints) is a file below the job's own folder: an edit had it
    print any file (/etc/passwd, another user's notes)."""
    return bool(_names_below(path, jobs_dir() / job))


def _names_below(path: str, folder: Path) -> list[str] | None:
    """The names leading from `folder` down to `path` ([] for the folder itself), none of them '.' or '..'; None
    when `path` is not in `folder`. `folder` may be spelled as the launcher spells it (submit records it so: a
    GANKIT_CONFIG with '..' in it gives every record one, the user's own) or in full; a '..' after it leads out."""
    spellings = [path, os.path.abspath(path)] if _plain(path) else [path]  # a relative GANKIT_CONFIG: relative paths
    for spelled in spellings:
        for base in (str(folder), os.path.abspath(folder)):
            if spelled == base:
                return []
            if spelled.startswith(base + os.sep):
                names = spelled[len(base) + 1:].split(os.sep)
                if all(name not in ("", ".", "..") for name in names):
                    return names
    return None


def _plain(path: str) -> bool:
    return bool(path) and not any(p in (".", "..") for p in path.split(os.sep))


def all_jobs(on_bad=None) -> list[dict]:
    """Every readable record, newest first; `on_bad(message)` hears of each one that is not."""
    folder = jobs_dir()
    try:
        names = sorted(os.listdir(folder))  # not glob, which takes a folder it cannot read for an empty one
    except FileNotFoundError:
        names = []
    except OSError as e:  # a file in its place, no permission: "no jobs yet" would hide every job there
        raise _unreadable(folder, e) from None
    records = []
    for path in [folder / name for name in names if name.endswith(".json") and not name.startswith(".")]:
        try:
            records.append(read(path))
        except UsageError as e:
            if on_bad and os.path.lexists(path):  # else deleted since the listing, by another launcher: no job
                on_bad(str(e))
    return sorted(records, key=lambda r: r.get("submitted_at", ""), reverse=True)


@contextlib.contextmanager
def held():
    """The records folder for this process alone while the block runs, waiting while another holds it: a
    `--resume` checks that no job continues the run and records its own as one step. No folder, no records:
    nothing to hold (`load` then says there is no such job)."""
    folder = jobs_dir()
    if folder.exists() and not os.access(folder, os.R_OK):
        raise _unreadable(folder, PermissionError(13, "Permission denied"))
    with folder_held(folder, missing_ok=True):
        yield


def _unreadable(folder, e: OSError) -> UsageError:
    return UsageError(f"the job records folder {folder} cannot be read ({e.strerror or e}); make it a folder you can "
                      "read, or move what is there aside")


def delete(job: str):
    (jobs_dir() / f"{job}.json").unlink(missing_ok=True)
