"""The EC2 training job's runner, started on the instance by its user data.

    python -m launcher.remote.train_job --job-uri s3://BUCKET/runs/JOB/job.json

It reads the job (written by `launcher.backends.ec2`), lays out SageMaker's /opt/ml
contract (hyperparameters.json with the run's S3 data, checkpoint and output paths) and
runs the trainer through it: `python -m trainer.contract` in this Python, or the image's
`train` entrypoint under Docker when the job names an image. While it trains, its log goes
to `<run>/train.log` every few seconds; at the end `<run>/status.json` says how it went.
After `max_run` seconds the trainer gets SIGTERM (it checkpoints and stops), then SIGKILL (an image's container
is killed by name: killing `docker run` would leave it running); so it
does as soon as AWS posts a spot instance's two-minute interruption notice (polled from IMDSv2), so
the checkpoint is in S3 before the instance goes, and when `launcher stop` asks for it (it writes
`<run>/stop.json`, looked for every 15 s). The user data shuts the instance down when this
returns, whatever happened.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import click

from launcher.backends.base import container_inputs, utc_now, write_container_inputs
from trainer import layout, s3
from trainer.errors import STOPPED_EXIT_CODES, GankitError, UsageError, run_cli, signal_name

LOG_NAME = "train.log"
STATUS_NAME = "status.json"
JOB_NAME = "job.json"
STOP_NAME = "stop.json"  # written by `launcher stop`: the runner stops the trainer as at its max run
UPLOAD_EVERY = 15.0  # seconds between log uploads: `launcher logs -f` lags at most this much
STOP_GRACE = 120  # seconds the trainer gets to checkpoint after SIGTERM
CLIENT_GRACE = 10  # seconds `docker run` gets to end once its container is killed
IMDS = "http://169.254.169.254"  # the instance metadata service (IMDSv2: a session token first)
SPOT_POLL = 5.0  # seconds between looks for a spot interruption notice (AWS gives two minutes)
REQUEST_POLL = 15.0  # seconds between looks for `launcher stop`'s request (it waits for the stop to end)
STOPPED_BY_LAUNCHER = "stopped by `launcher stop`"
# The image's unprivileged user (docker/Dockerfile makes uid 1000: gankit, or the base's own): an image job never trains
# as root, and uid:gid works in any image, whatever its user is called.
CONTAINER_USER = (1000, 1000)


def job_uri(root: str, job: str) -> str:
    return layout.join(layout.run_prefix(root, job), JOB_NAME)


def log_uri(root: str, job: str) -> str:
    return layout.join(layout.run_prefix(root, job), LOG_NAME)


def status_uri(root: str, job: str) -> str:
    return layout.join(layout.run_prefix(root, job), STATUS_NAME)


def stop_uri(root: str, job: str) -> str:
    return layout.join(layout.run_prefix(root, job), STOP_NAME)


def stop_requested(uri: str) -> bool:
    """Whether `launcher stop` wrote its request at `uri`. A listing of that one key, not a read: to a role whose
    s3:ListBucket is limited to prefixes (the instance role's) S3 may answer a read of a missing key 403, not
    404. A failed look is no request: the next one asks again, and the training goes on meanwhile."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = s3.split_s3(uri)
    try:
        found = s3.client().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents", [])
    except (BotoCoreError, ClientError) as e:  # said in the runner's output (the setup log), and asked again
        print(f"gankit: could not look for a stop request: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        return False
    return any(entry["Key"] == key for entry in found)


def write_status(uri: str, status: str, **fields):
    s3.write_bytes(uri, json.dumps({"status": status, **fields}, indent=1).encode())


def read_job(uri: str) -> dict:
    data = s3.read_bytes(uri)
    if data is None:
        raise UsageError(f"{uri} does not exist; the launcher writes it before starting the instance")
    try:
        job = json.loads(data)
    except ValueError as e:
        raise UsageError(f"{uri} is not valid JSON ({e}); submit the job again") from None
    if not isinstance(job, dict):
        raise UsageError(f"{uri} holds a JSON {type(job).__name__}, not a job; submit the job again")
    missing = [k for k in ("job", "root", "hyperparameters", "data_uri", "checkpoint_uri", "output_uri", "max_run")
               if k not in job]
    if missing:
        raise UsageError(f"{uri} lacks {', '.join(missing)}; submit the job again with this launcher version")
    try:
        max_run = float(job["max_run"])
    except (TypeError, ValueError):
        max_run = float("nan")
    if not max_run > 0:
        raise UsageError(f"{uri}: max_run {job['max_run']!r} is not a positive number of seconds; submit the job again")
    return job


def write_contract(sm_root: Path, job: dict):
    """The /opt/ml layout the trainer's contract reads: hyperparameters with the run's S3 paths. The
    trainer reads the data from S3 and publishes outputs and checkpoints there itself, as it trains:
    nothing on the instance copies them again."""
    hyperparameters = container_inputs(job["hyperparameters"], data_uri=job["data_uri"],
                                       output_uri=job["output_uri"], checkpoint_uri=job["checkpoint_uri"])
    write_container_inputs(sm_root, hyperparameters)


def trainer_command(job: dict, sm_root: Path) -> list[str]:
    image = job.get("image")
    if not image:
        return [sys.executable, "-m", "trainer.contract"]
    # The image's own entrypoint on the same contract; it reaches S3 with the instance's role
    # through IMDSv2 (host networking: the instance's own hop, so hop limit 1 lets it through).
    # Named, so the runner can end the container itself (`kill_container`); --init puts a real init as its PID 1:
    # the trainer as PID 1 would ignore a SIGTERM that comes before it sets its handler (during its imports).
    user = ":".join(map(str, CONTAINER_USER))
    return ["docker", "run", "--rm", "--init", "--name", container_name(job), "--user", user, "--gpus", "all",
            "--network", "host", "--ipc", "host", "-v", f"{sm_root}:/opt/ml",
            "-e", f"AWS_DEFAULT_REGION={job.get('region') or ''}", image, "train"]


def container_name(job: dict) -> str:
    return f"gankit-{job['job']}"  # a job name (letters, digits, dashes) is a valid container name


def kill_container(name: str, out):
    """End the container itself: a killed `docker run` client leaves its container running (and writing to the
    run's checkpoints and outputs) until the instance shuts down."""
    try:
        done = subprocess.run(["docker", "kill", name], capture_output=True, text=True, timeout=60)
        failed = done.returncode != 0 and (done.stderr.strip().splitlines() or ["no output"])[-1]
    except (OSError, subprocess.TimeoutExpired) as e:
        failed = str(e)
    if failed:  # most often it ended meanwhile ("No such container"); said in the log all the same
        out.write(f"gankit: docker kill {name} failed: {failed}\n".encode())


def hand_to_container(sm_root: Path):
    """The container's user owns the /opt/ml tree it is given (the runner is root on the instance), so the
    trainer can write its outputs, model and failure file there and nowhere else on the host."""
    for path in (sm_root, *sm_root.rglob("*")):
        os.chown(path, *CONTAINER_USER)


def ecr_login(image: str, region: str | None):
    """`docker login` to the image's ECR registry with the instance role (nothing stored in user data)."""
    import base64

    import boto3

    registry = image.split("/", 1)[0]
    if ".dkr.ecr." not in registry:
        return  # a public image needs no login
    auth = boto3.client("ecr", region_name=region).get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)
    subprocess.run(["docker", "login", "--username", user, "--password-stdin", registry],
                   input=password, text=True, check=True, capture_output=True)


class LogShipper:
    """Copies a growing local log file to S3 every `every` seconds, and once more at the end."""

    def __init__(self, path: Path, uri: str, every: float = UPLOAD_EVERY):
        self.path, self.uri, self.every = path, uri, every
        self.done = threading.Event()
        self.sent = -1
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def _run(self):
        while not self.done.wait(self.every):
            self.ship()

    def ship(self):
        size = self.path.stat().st_size if self.path.exists() else 0
        if size == self.sent:
            return
        try:
            s3.write_bytes(self.uri, self.path.read_bytes())
            self.sent = size
        except GankitError as e:  # a failed upload must not stop the training; the next one retries
            print(f"gankit: log upload failed: {e}", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.ship()


def spot_notice(base: str = IMDS, timeout: float = 2.0) -> str | None:
    """When AWS will reclaim this spot instance, once it has said so (IMDSv2's spot/instance-action); None
    before that, on an on-demand instance, or with no metadata service."""
    import urllib.request

    try:
        ask = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                     headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        token = urllib.request.urlopen(ask, timeout=timeout).read().decode()
        ask = urllib.request.Request(f"{base}/latest/meta-data/spot/instance-action",
                                     headers={"X-aws-ec2-metadata-token": token})
        notice = json.loads(urllib.request.urlopen(ask, timeout=timeout).read())
    except (OSError, ValueError):  # 404 (no notice yet) is an HTTPError, an OSError
        return None
    return str(notice.get("time") or "soon") if isinstance(notice, dict) and notice.get("action") else None


def run_with_deadline(command, env, log, max_run: float, notice=spot_notice, poll: float = SPOT_POLL,
                      container: str | None = None, requested=lambda: False) -> tuple[int, str | None]:
    """Run `command`, its output appended to `log` and echoed; (exit code, why the runner stopped it:
    "max run reached", "spot interruption", STOPPED_BY_LAUNCHER, or None when it ended by itself).
    `container`: the name of the container `command` (`docker run`) runs, killed with it when the grace period
    is over. `requested()`: whether `launcher stop` asked for a stop, looked at every REQUEST_POLL seconds."""
    with open(log, "ab", buffering=0) as out:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        stopped, lock, done = [], threading.Lock(), threading.Event()

        def stop(why, what):
            with lock:
                if stopped or process.poll() is not None:
                    return
                stopped.append(why)
            out.write(f"gankit: {what}: stopping the trainer\n".encode())
            process.send_signal(signal.SIGTERM)  # the trainer checkpoints, then exits 143 (docker run passes it on)
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                if container:
                    kill_container(container, out)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(CLIENT_GRACE)  # the client then ends, with the container's exit code
                process.kill()

        def watch_for_spot_notice():
            while not done.wait(poll):
                when = notice()
                if when:
                    return stop("spot interruption", f"spot interruption notice (AWS reclaims the instance at {when})")

        def watch_for_stop_request():
            while True:  # a first look at once: a request made as the runner started is seen without a wait
                if requested():
                    return stop(STOPPED_BY_LAUNCHER, "`launcher stop` asked for a stop")
                if done.wait(REQUEST_POLL):  # read now, not bound when the module loaded
                    return

        timer = threading.Timer(max_run, stop, args=("max run reached", f"max run of {max_run:.0f} s reached"))
        watchers = [threading.Thread(target=watch, daemon=True) for watch in (watch_for_spot_notice,
                                                                                watch_for_stop_request)]
        for thread in (timer, *watchers):
            thread.daemon = True
            thread.start()
        try:
            for line in process.stdout:
                out.write(line)
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
            code = process.wait()
        finally:
            timer.cancel()
            done.set()
        return code, (stopped[0] if stopped else None)


def run_job(uri: str, work_dir: Path) -> dict:
    """Run the job described at `uri`; its final status (also written to S3)."""
    job = read_job(uri)
    root, name = job["root"], job["job"]
    status_at, log = status_uri(root, name), work_dir / LOG_NAME
    sm_root = work_dir / "ml"
    write_contract(sm_root, job)
    started = utc_now()
    write_status(status_at, "InProgress", started=started, instance_id=os.environ.get("GANKIT_INSTANCE_ID"))
    env = {**os.environ, "GANKIT_SM_ROOT": str(sm_root), "PYTHONUNBUFFERED": "1"}
    with LogShipper(log, log_uri(root, name)):
        with open(log, "ab") as out:
            out.write(f"gankit: job {name} started {started}; max run {float(job['max_run']):.0f} s\n".encode())
        try:
            if job.get("image"):
                hand_to_container(sm_root)
                ecr_login(job["image"], job.get("region"))
            asked = stop_uri(root, name)
            code, stopped_for = run_with_deadline(trainer_command(job, sm_root), env, log, float(job["max_run"]),
                                                  container=container_name(job) if job.get("image") else None,
                                                  requested=lambda: stop_requested(asked))
        except Exception as e:  # an ECR refusal, a bad max_run, a missing tool: the status must still say why
            code, stopped_for = 1, None
            (sm_root / "output" / "failure").write_text(f"could not start the trainer: {' '.join(str(e).split())}\n")
        failure = sm_root / "output" / "failure"
        reason = failure.read_text().strip() if failure.exists() else None
        if code == 0:
            status = "Completed"
        elif stopped_for or code in STOPPED_EXIT_CODES:
            status = "Stopped"
            why = stopped_for or f"stopped by {signal_name(code - 128)}"  # the trainer's own words name its command
            reason = f"{why}; its checkpoints are kept: `launcher submit ... --resume {name}` continues"
        else:
            status = "Failed"
            reason = reason or f"the trainer exited with code {code}; see `launcher logs {name}`"
        result = {"status": status, "exit_code": code, "failure_reason": None if code == 0 else reason,
                  "started": started, "ended": utc_now()}
        with open(log, "ab") as out:
            out.write(f"gankit: job {name} {status.lower()} (exit code {code})\n".encode())
    write_status(status_at, **result)
    return result


@click.command()
@click.option("--job-uri", required=True, help="s3:// URI of the job's job.json.")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Local scratch folder (default: a temporary one).")
def main(job_uri, work_dir):
    """Run one gankit EC2 training job (on the instance)."""
    with tempfile.TemporaryDirectory(prefix="gankit-job-") as tmp:
        folder = Path(work_dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        result = run_job(job_uri, folder)
    if result["status"] != "Completed":
        raise GankitError(result["failure_reason"])


if __name__ == "__main__":
    run_cli(main, prog_name="train_job")
