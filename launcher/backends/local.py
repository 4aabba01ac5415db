"""The local backend: the trainer as a subprocess on this machine, under the cloud's contract and layout.

Each job gets a fake /opt/ml tree under the config folder (GANKIT_SM_ROOT), with
hyperparameters.json and the staged dataset as its `training` channel, and
writes checkpoints and outputs into the local folder standing in for the
bucket (`<root>/runs/<job>/...`), exactly where a cloud job puts them in S3.
The trainer runs under this module's own small wrapper (`run_and_record`), which
keeps its exit code for `status` and, given --max-run, stops it when that is up.
"""

import codecs
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from launcher import jobs
from launcher.backends.base import (check_folder, container_inputs, ensure_dataset, folder_source, launcher_flags,
                                    recorded_output_uri, say_in_launcher_words, utc_now, write_container_inputs)
from trainer.errors import STOPPED_EXIT_CODES, GankitError, UsageError
from trainer.fsutil import atomic_write_text

POLL_SECONDS = 0.5
# The Backend protocol's facts (launcher/backends/base.py): this machine, no bucket, no role.
DEFAULT_INSTANCE_TYPE = "local"
ML_INSTANCE_TYPES = False
CLOUD = False
SETUP_HINT = ""
NO_ROLE = None
RECORD_FIELDS = ("pid", "log", "sm_root")
SETUP_SECONDS = 0
STOP_GRACE = 120  # seconds the trainer gets to checkpoint after --max-run's SIGTERM, as on EC2
MAX_RUN_REACHED = "max_run_reached"  # in the job's folder: why its trainer was stopped
STOP_SENT = "stop_sent"  # in the job's folder: `stop` signalled a trainer whose wrapper was gone
TRAINER_MODULE = b"trainer.contract"  # in the trainer's command line (run_and_record's; `_command` is the wrapper's)
output_uri = recorded_output_uri  # the local folder standing in for the bucket


def check_spec(spec) -> None:
    """One trainer on this machine: several instances would be recorded (`status` said "local x2") but not run."""
    if getattr(spec, "instance_count", 1) not in (None, 1):
        raise UsageError("the local backend runs one trainer on this machine; drop --instance-count, or use "
                         "--backend sagemaker for several instances")


def job_root(job: str) -> Path:
    return jobs.jobs_dir() / job


def plan_rows(spec) -> list[tuple[str, str]]:
    if spec.max_run is None:
        return [("max run", "none: it runs until done (--max-run sets one)")]
    from launcher.durations import format_hms

    return [("max run", f"{format_hms(spec.max_run)}, then it is stopped with a checkpoint (--resume continues it)")]


def _command(exit_file: Path, max_run: int | None) -> list[str]:
    return [sys.executable, "-m", "launcher.backends.local", str(exit_file), *([str(max_run)] if max_run else [])]


def run_and_record(exit_file: str, max_run: float | None = None, command=None) -> int:
    """Run the contract, pass SIGTERM on, and keep its exit status in a file that outlives the process. After
    `max_run` seconds the trainer gets SIGTERM (it checkpoints and exits 143), as a cloud job's does."""
    child = None
    stopped = []  # `launcher stop` came first: the trainer is checkpointing for it, not for the max run

    def relay(*_):
        stopped.append(True)
        if child is not None:
            child.send_signal(signal.SIGTERM)

    # Before the trainer starts: a stop as it starts would otherwise end this wrapper alone, the trainer
    # running on with no one to stop it at its max run or to record how it ended.
    signal.signal(signal.SIGTERM, relay)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # held since `submit` forked us (_sigterm_held)
    child = subprocess.Popen(command or [sys.executable, "-m", "trainer.contract"])
    if stopped:  # the stop came while it started, before it could be passed on (a second one does no harm)
        child.send_signal(signal.SIGTERM)
    try:
        code = child.wait(max_run)
    except subprocess.TimeoutExpired:
        if not stopped:
            atomic_write_text(Path(exit_file).with_name(MAX_RUN_REACHED), f"{max_run:.0f}\n")
            print(f"gankit: max run of {max_run:.0f} s reached: stopping the trainer", flush=True)
            child.send_signal(signal.SIGTERM)
        try:
            code = child.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
    if code == -signal.SIGTERM:  # a stop in the trainer's first seconds, before its own handler: not a failure
        code = 128 + signal.SIGTERM
    atomic_write_text(Path(exit_file), f"{code}\n")  # status never reads a half-written code
    return code


def _prepare(spec, root: Path, plan: dict, folder: bool):
    """Check or stage the dataset, then write the job's container inputs under `root`; returns the spec with the
    prefix its data is staged at: your own copy's is named by its content, as in the cloud (in datasets/<name>/,
    a second job's copy replaced the first's under it)."""
    if folder:
        check_folder(spec)  # a broken picture is named now, not as the job's channel copy after it started
        training = str(folder_source(spec).resolve())  # a folder is read where it is
    elif spec.hyperparameters.get("data_dir"):
        spec = ensure_dataset(spec)
        training = spec.data_uri
    else:  # staged again unless the same checksums are there: an older gankit left your own copy in datasets/<name>/
        from trainer.dataset_staging import stage_dataset

        with launcher_flags():
            stage_dataset(spec.dataset, spec.data_uri, log=say_in_launcher_words)
        training = spec.data_uri
    write_container_inputs(root, plan["hyperparameters"], training)  # the data arrives as the training channel
    return spec


def submit(spec, dry_run: bool = False) -> dict:
    root = job_root(spec.job)
    folder = spec.dataset.startswith("folder:")
    if dry_run and not folder:
        spec = ensure_dataset(spec, upload=False)  # checks --hp data_dir, as the cloud ones' dry runs do
    training = str(folder_source(spec).resolve()) if folder else spec.data_uri
    plan = {"backend": "local", "job": spec.job, "sm_root": str(root), "hyperparameters": container_inputs(
                spec.hyperparameters, output_uri=spec.output_uri, checkpoint_uri=spec.checkpoint_uri),
            "training_channel": training, "command": [sys.executable, "-m", "trainer.contract"],
            "max_run": spec.max_run}
    if dry_run:
        return plan
    jobs.claim(spec.job)  # root: of two submits that got one name, only one gets the folder
    log = root / "train.log"
    from launcher.quiet import trainer_env

    env = trainer_env(dict(os.environ, GANKIT_SM_ROOT=str(root), PYTHONUNBUFFERED="1"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")]))
    try:
        spec = _prepare(spec, root, plan, folder)
        out = open(log, "ab")
    except BaseException as e:  # a refused dataset or Ctrl-C: a job that never started leaves no folder behind
        shutil.rmtree(root, ignore_errors=True)
        if isinstance(e, OSError):  # its inputs or log beside its record, on a full disk: one line
            raise jobs.not_recorded(spec.job, e) from None
        raise
    with out, _sigterm_held():
        proc = subprocess.Popen(_command(root / "exit_code", spec.max_run), env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    record = {**spec.to_dict(), "submitted_at": utc_now(), "pid": proc.pid, "pid_started": _start_time(proc.pid),
              "sm_root": str(root), "log": str(log)}
    try:
        return jobs.save(record)
    except GankitError as e:  # without its record nobody could find, stop or pull it: it must not run on unseen
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the wrapper and the trainer, seconds into start-up
        proc.wait()
        shutil.rmtree(root, ignore_errors=True)
        raise GankitError(f"{e}; the job's trainer was stopped before it trained") from None


@contextlib.contextmanager
def _sigterm_held():
    """SIGTERM blocked while the wrapper is started, which inherits the mask until run_and_record relays it: a
    `launcher stop` right after `submit` came while Python was still starting it and killed it (the job then read
    as Failed, not Stopped). A blocked signal waits, and arrives once the relay is set."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields from the state on (field 3; the command name before it may hold spaces),
    or None where there is no /proc (macOS) or no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """When the process started (field 22, clock ticks since boot): with the pid, it names one process."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def _wrapper_alive(record: dict) -> bool:
    """Whether the job's own process (the wrapper) still runs: not a zombie, and not another process that got
    its pid after a reboot (so `stop` never signals a stranger)."""
    pid = record["pid"]
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    fields = _proc_stat(pid)
    if fields is None:  # no /proc (macOS): the pid is all there is to go by
        return not _reaped(pid)
    if fields[0] == "Z":  # a zombie (our own child, not yet reaped) has finished
        return False
    return record.get("pid_started") in (None, fields[19])


def _reaped(pid: int) -> bool:
    """Whether `pid` is a child of this process (the wrapper `submit --wait` started) that had ended, a zombie
    that kill(pid, 0) still finds; it is reaped now. Not our child, or still running: False."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return False


def _orphans(record: dict) -> list[int]:
    """The job's trainer when its wrapper is gone (kill -9, the OOM killer): it trains on, in the session
    `submit` started the wrapper in (whose id is the wrapper's pid, kept while one of its processes lives), as
    the contract, started after the wrapper; never a stranger that reuses the session's id after a reboot."""
    pid, started = record["pid"], record.get("pid_started")
    try:
        os.killpg(pid, 0)  # the trainer stays in the wrapper's process group: none there, nothing to look for
        entries = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:  # no such group, or no /proc (macOS: the wrapper's pid is all there is to go by)
        return []
    found = []
    for entry in entries:
        fields = _proc_stat(entry)
        if not fields or fields[0] == "Z" or fields[3] != str(pid):
            continue
        try:
            if started is not None and int(fields[19]) < int(started):
                continue
            if TRAINER_MODULE in Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0"):
                found.append(entry)
        except (OSError, ValueError):
            continue
    return found


def _alive(record: dict) -> bool:
    """Whether the job still runs: its wrapper, or its trainer after the wrapper was killed."""
    return _wrapper_alive(record) or bool(_orphans(record))


def describe(record: dict) -> dict:
    root = Path(record["sm_root"])
    exit_file = root / "exit_code"
    info = {"status": "InProgress", "started": record.get("submitted_at"), "ended": None, "failure_reason": None,
            "instance_type": "local"}
    code_text = exit_file.read_text(errors="replace").strip() if exit_file.exists() else ""
    if not code_text:
        if _alive(record):
            return info
        return {**info, **_ended_unrecorded(root, record.get("job", "JOB"))}
    try:
        code = int(code_text)
    except ValueError:  # damaged by hand or by a full disk: say so rather than trace back
        return {**info, "status": "Failed", "failure_reason": f"{exit_file} holds {code_text[:40]!r}, not an exit "
                f"status; the run's files are in {root / 'output'} and its log in {record.get('log')}"}
    info["ended"] = datetime.fromtimestamp(exit_file.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
    if code == 0:
        info["status"] = "Completed"
    elif code in STOPPED_EXIT_CODES or (root / MAX_RUN_REACHED).exists():  # or killed after the stop's grace
        info["status"] = "Stopped"
        if (root / MAX_RUN_REACHED).exists():
            info["failure_reason"] = (f"max run reached; its checkpoints are kept: `launcher submit ... --resume "
                                      f"{record.get('job', 'JOB')}` continues")
    else:
        info["status"] = "Failed"
        info["failure_reason"] = _failure_line(root) or _exit_reason(code, record.get("job", "JOB"))
    return info


def _exit_reason(code: int, job: str) -> str:
    """A trainer that said nothing: its exit code, or the signal that killed it (Popen's -N: kill -9, the OOM
    killer), which left its last complete checkpoint for --resume."""
    try:
        killed = f"was killed by {signal.Signals(-code).name}" if code < 0 else None
    except ValueError:
        killed = None
    if not killed:
        return f"the trainer exited with {code}"
    return f"the trainer {killed}; `launcher submit ... --resume {job}` continues from its last checkpoint"


def _ended_unrecorded(root: Path, job: str) -> dict:
    """A job whose wrapper ended without recording its trainer's exit status (the wrapper was killed, or the
    machine restarted): what the trainer itself left behind says how it ended."""
    failure = _failure_line(root)
    if (root / STOP_SENT).exists():
        return {"status": "Stopped"}
    if _exported(root / "model") and not failure:
        return {"status": "Completed"}  # the trainer's last step, after it published the run's outputs
    reason = ("the trainer process vanished without an exit status (its wrapper was killed, the machine restarted, "
              f"or the disk holding {root} is full)")
    if (root / "model").is_dir():
        reason += f" while it copied the generator into {root / 'model'}, after training"
    reason += f"; `launcher submit ... --resume {job}` continues from its last checkpoint"
    return {"status": "Failed", "failure_reason": f"{failure} ({reason})" if failure else reason}


def _exported(model: Path) -> bool:
    """Whether the contract's copy of the generator into model/ is whole: generator.json, which it copies last,
    and the network that it describes. A trainer killed during the copy leaves the folder without them."""
    from trainer.export import META_FILE, MODEL_FILE

    return (model / META_FILE).is_file() and (model / MODEL_FILE).is_file()


def _failure_line(root: Path) -> str:
    """What the trainer wrote in output/failure; empty where it wrote nothing (or an empty file, on a full disk)."""
    try:
        return (root / "output" / "failure").read_text(errors="replace").strip()
    except OSError:
        return ""


def logs(record: dict, follow: bool, print_line) -> None:
    log = Path(record["log"])
    position = 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a read may end inside a character
    while True:
        final = describe(record)["status"] != "InProgress"  # read the status first, so no last line is missed
        if log.exists():
            with open(log, "rb") as f:
                f.seek(position)
                chunk = f.read()
                position += len(chunk)
            text = decoder.decode(chunk, final=not follow or final)  # the last read: a cut character as U+FFFD
            if text:
                print_line(text, nl=False)
        if not follow or final:
            return
        time.sleep(POLL_SECONDS)


def stop(record: dict) -> str | None:
    status = describe(record)["status"]
    if status != "InProgress":
        return status
    # SIGTERM: the trainer writes a checkpoint and exits with 143 (Stopped).
    try:
        if _wrapper_alive(record):
            os.kill(record["pid"], signal.SIGTERM)  # it relays the signal and records the exit status
            return None
        orphans = _orphans(record)  # its wrapper was killed: nobody else relays or records the stop
        if orphans:
            with contextlib.suppress(OSError):  # unwritten (a full disk): the trainer's own failure line says it stopped
                atomic_write_text(Path(record["sm_root"]) / STOP_SENT, "SIGTERM\n")
            for pid in orphans:
                os.kill(pid, signal.SIGTERM)
            return None
    except ProcessLookupError:
        pass
    return describe(record)["status"]  # it ended since that look


if __name__ == "__main__":
    sys.exit(run_and_record(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else None))
