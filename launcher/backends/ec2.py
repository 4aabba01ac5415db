"""The EC2 backend: one GPU instance per job, which trains and then terminates itself.

`submit` uploads the project's wheel and the job (`job.json`: hyperparameters and the
run's S3 data, checkpoint and output paths) to the run prefix and launches an instance
whose user data (`launcher.train_userdata`) runs `launcher.remote.train_job`. The instance
reports through S3 only: `train.log` as it goes, `status.json` at the end, `setup.log`
when it shuts down, so `describe` and `logs` need nothing but the bucket and EC2's view
of the instance. `stop` asks the runner to stop the job (`runs/<job>/stop.json`): the trainer checkpoints
to S3, the runner writes its status, and then `stop` terminates the instance. A stop, a spot
interruption or the max run leaves the checkpoints: submit again with `--resume JOB`.
"""

import contextlib
import json
import os
import time
import uuid
from datetime import datetime

from launcher import instances, train_userdata
from launcher.backends.base import FINAL_STATES, ensure_dataset, no_plan_rows, recorded_output_uri, utc_now
from launcher.pricing import DEFAULT_INSTANCE_TYPE as DEFAULTS
from launcher.remote import train_job
from trainer import layout, s3
from trainer.errors import GankitError, Interrupted, UsageError, echo, interrupt_name
from trainer.progress import Progress, format_duration

# The Backend protocol's facts (launcher/backends/base.py): a bucket, EC2's instance type names, and
# the instance profile and security group `launcher infra up` records (checked at submit).
DEFAULT_INSTANCE_TYPE = DEFAULTS["ec2"]
ML_INSTANCE_TYPES = False
CLOUD = True
SETUP_HINT = "`launcher config set instance_profile NAME` and `launcher config set security_group sg-...`"
NO_ROLE = None
RECORD_FIELDS = ("status_uri", "log_uri", "setup_log_uri")
SETUP_SECONDS = train_userdata.SETUP_MINUTES * 60  # the instance's own hard stop allows this before --max-run
output_uri = recorded_output_uri  # the trainer on the instance publishes there as it trains
plan_rows = no_plan_rows
LOG_POLL_SECONDS = 5.0
STOP_POLL_SECONDS = 5.0  # between looks at the runner's status while `stop` waits for it
# How long `stop` waits for the runner after its request: a look for it (every 15 s), the trainer's grace to
# checkpoint, and the final log and status uploads. Then the instance is terminated all the same.
STOP_WAIT = int(train_job.REQUEST_POLL + train_job.STOP_GRACE + 45)
# How long `stop` waits, after the runner's last word, for the setup log the instance's script ships as it ends (the
# AWS CLI's upload, a few seconds): terminated at that word, the instance lost it.
SETUP_LOG_WAIT = 30
STATES = {"pending": "Pending", "running": "InProgress", "stopping": "Stopping", "shutting-down": "Stopping",
          "stopped": "Stopped", "terminated": "Stopped"}


def _uris(root, job) -> dict:
    run = layout.run_prefix(root, job)
    return {"job_uri": train_job.job_uri(root, job), "log_uri": train_job.log_uri(root, job),
            "status_uri": train_job.status_uri(root, job), "setup_log_uri": layout.join(run, "setup.log")}


def job_document(spec) -> dict:
    """What the instance's runner reads: no secrets, only names and S3 paths."""
    return {"job": spec.job, "root": spec.root, "hyperparameters": dict(spec.hyperparameters),
            "data_uri": spec.data_uri, "checkpoint_uri": spec.checkpoint_uri, "output_uri": spec.output_uri,
            "max_run": int(spec.max_run), "image": spec.image or None, "region": spec.region, "resume": spec.resume}


def _config(spec) -> dict:
    from launcher import settings

    return {**settings.effective(), "region": spec.region or settings.get("region")}


def _request(spec, config, wheel_uri, wheel_sha256, image_id=None, client_token=None) -> dict:
    uris = _uris(spec.root, spec.job)
    boot = train_userdata.TrainBoot(job_uri=uris["job_uri"], wheel_uri=wheel_uri, wheel_sha256=wheel_sha256,
                              setup_log_uri=uris["setup_log_uri"],
                              region=config["region"], max_run=int(spec.max_run), image=spec.image or None,
                              framework=spec.framework)
    tags = {"Name": f"gankit-{spec.job}", "gankit:job": spec.job}
    return instances.run_instances_request("job", spec.instance_type, train_userdata.render(boot), spot=spec.spot, tags=tags,
                                     settings=config, shutdown="terminate", image_id=image_id,
                                     client_token=client_token)


def _check(spec, config):
    if not s3.is_s3(spec.root):
        raise UsageError(f"the ec2 backend needs a bucket, not {spec.root}: run `launcher infra up` first")
    instances.check_settings(config)  # before anything is staged or uploaded
    if not spec.max_run or spec.max_run <= 0:
        raise UsageError("an EC2 job needs a max run: pass --max-run, e.g. --max-run 2h")
    if getattr(spec, "instance_count", 1) not in (None, 1):
        raise UsageError("the ec2 backend runs one instance per job; drop --instance-count or use SageMaker")


def check_spec(spec) -> None:
    _check(spec, _config(spec))


def submit(spec, dry_run: bool = False) -> dict:
    config = _config(spec)
    _check(spec, config)
    if dry_run:  # nothing is read or written: EC2 resolves the AMI's SSM parameter itself
        spec = ensure_dataset(spec, upload=False)  # a folder: checked here, its prefix named, nothing sent
        wheel = layout.join(layout.run_prefix(spec.root, spec.job), "gankit-<version>-py3-none-any.whl")
        request = _request(spec, config, wheel, "0" * 64,  # the digest of a wheel not built yet
                           image_id=instances.image_reference(spec.instance_type, os.environ.get("GANKIT_AMI")))
        return {"backend": "ec2", "job_document": job_document(spec), "run_instances": request}
    uris = _uris(spec.root, spec.job)
    from launcher import jobs

    with jobs.claimed(spec.job):  # of two submits that got one name, only one gets it (as the local backend)
        return _submit(spec, config, uris)


def _submit(spec, config, uris) -> dict:
    from launcher import jobs

    if s3.read_bytes(uris["job_uri"]) is not None:  # another machine's job of that name (unique to the millisecond)
        raise jobs.exists_already(spec.job)
    spec = ensure_dataset(spec)
    wheel_uri, wheel_sha256 = instances.upload_wheel(layout.run_prefix(spec.root, spec.job))
    s3.write_bytes(uris["job_uri"], json.dumps(job_document(spec), indent=1).encode())
    token = f"gankit-{uuid.uuid4().hex}"
    request = _request(spec, config, wheel_uri, wheel_sha256, client_token=token)
    # Recorded first: no instance ever runs without a record that finds it (by its client token, when
    # the launcher dies before RunInstances answers), so `status` and `stop` always reach it.
    record = {**spec.to_dict(), **uris, "instance_id": None, "client_token": token, "region": config["region"],
              "submitted_at": utc_now(), "wheel_uri": wheel_uri, "wheel_sha256": wheel_sha256}
    jobs.save(record)
    try:
        record["instance_id"] = instances.launch(request, config["region"])
        jobs.save(record)
    except BaseException as e:  # Ctrl-C too: an instance nobody knows of bills until max run
        refused = isinstance(e, GankitError) and not isinstance(e, instances.LaunchUnanswered)
        after = _abandon(record, maybe_started=not refused)
        if isinstance(e, KeyboardInterrupt):  # Ctrl-C, SIGTERM, SIGHUP: what became of the instance, if anything
            _say_interrupted(spec.job, e, after)
        if not isinstance(e, Exception):
            raise
        message = str(e) if isinstance(e, GankitError) else f"submitting {spec.job} failed: {e}"
        raise (UsageError if isinstance(e, UsageError) else GankitError)(message + after) from None
    return record


def _say_interrupted(job: str, interrupt: KeyboardInterrupt, after: str):
    """An interrupted launch that left something to say (an instance terminated, or a record kept for one that
    may run): the one line that says it, exit 128 + the signal. Nothing to say: the interrupt goes on."""
    if after:
        raise Interrupted(f"{interrupt_name(interrupt)} stopped the submit of {job} as its instance was "
                          f"launched{after}", interrupt) from None


def _abandon(record, maybe_started: bool = True) -> str:
    """The launch did not complete: terminate what it started, if anything, and forget the job. What the
    user should know, as the end of the error's line. `maybe_started`: EC2 did not say no (no answer, Ctrl-C),
    so an instance not found may only not be listed yet (DescribeInstances is eventually consistent): then
    the record stays, the one thing that still finds it."""
    from launcher import jobs

    left = f"; {record['job']} may have left an instance running: `launcher stop {record['job']}` terminates it"
    try:
        launched = _instances(record)
        for instance_id in launched:
            instances.terminate(instance_id, record["region"])
    except Exception:
        return left
    if not launched and maybe_started:
        return left
    jobs.delete(record["job"])
    return f"; terminated {', '.join(launched)}" if launched else ""


def _instances(record) -> list[str]:
    """The job's instance: the one recorded, else whatever its launch started (the launcher died first)."""
    if record.get("instance_id"):
        return [record["instance_id"]]
    if record.get("client_token"):
        return instances.find_launched(record["client_token"], record.get("region"))
    return []


def _failure_for(instance) -> str:
    reason = (instance or {}).get("StateReason", {})
    if "Spot" in reason.get("Code", "") or "spot" in reason.get("Message", "").lower():
        return "spot interruption"
    return "the instance ended before the job reported (see `launcher logs`, which includes the setup log)"


def describe(record) -> dict:
    status = json.loads(s3.read_bytes(record["status_uri"]) or b"{}")
    instance_id = next(iter(_instances(record)), None)
    instance = instances.describe_instance(instance_id, record.get("region")) if instance_id else None
    launched = instance["LaunchTime"].isoformat(timespec="seconds") if instance else None
    result = {"status": None, "started": status.get("started") or launched, "ended": status.get("ended"),
              "failure_reason": status.get("failure_reason"), "instance_type": record.get("instance_type"),
              "instance_id": instance_id}
    if status.get("status") in FINAL_STATES:
        result["status"] = status["status"]
        return result
    state = instance["State"]["Name"] if instance else "terminated"
    result["status"] = STATES.get(state, "InProgress")
    if result["status"] == "Stopped":  # gone without a final word from the runner
        result["status"] = "Failed"
        cause = _failure_for(instance)
        result["failure_reason"] = f"{cause}; `launcher submit ... --resume {record['job']}` continues from its checkpoints"
    return result


def _read_log(record, status=None) -> str:
    train = _read_text(record["log_uri"])
    if train is None:  # the runner never started: the setup log (shipped at shutdown) says why
        return _read_text(record["setup_log_uri"]) or ""
    if status != "Failed":
        return train
    return train + _setup_log_extras(train, _read_text(record["setup_log_uri"]) or "")


def _read_text(uri) -> str | None:
    data = s3.read_bytes(uri)
    return None if data is None else data.decode("utf-8", errors="replace")


def _setup_log_extras(train: str, setup: str) -> str:
    """The setup log's lines that train.log lacks, under a line saying where they come from; "" when there are none.
    The setup log is the instance's whole output: the install, then every line the runner echoed as it trained,
    then whatever the runner said itself, such as the traceback of a runner that died before its final status.
    Shown once the job failed, for that last part; the training lines it repeats are left out."""
    shown = set(_lines(train))
    extras = [line for line in _lines(setup) if line not in shown]
    if not extras:
        return ""
    header = "gankit: the instance's setup log (setup.log, beside train.log), less the training lines above:"
    return ("" if train.endswith("\n") or not train else "\n") + "\n".join([header, *extras]) + "\n"


def logs(record, follow: bool, print_line) -> None:
    shown = 0
    while True:
        status = describe(record)["status"]
        final = not follow or status in FINAL_STATES
        text = _read_log(record, status)
        if len(text) > shown:
            # Whole lines only, so a line half-written at upload time is shown once, complete.
            end = len(text) if final else text.rfind("\n") + 1
            for line in _lines(text[shown:end]):
                print_line(line)
            shown = max(shown, end)
        if final:
            if not text and status in FINAL_STATES:
                print_line(f"no log for {record['job']}: it ended ({status}) before training wrote one; "
                           f"`launcher status {record['job']}` says why")
            elif not text:
                print_line(f"no log yet for {record['job']}: the instance is still installing (a few minutes)")
            return
        time.sleep(LOG_POLL_SECONDS)


def _lines(text: str) -> list[str]:
    """The log's lines, broken at \\n only, as the local and CloudWatch logs are (LineFilter): str.splitlines()
    would also break at \\r, \\x0b, \\x0c, \\x1c-\\x1e, \\x85, U+2028 and U+2029, which `echo` shows escaped
    within the line, so the same log would read differently from S3."""
    return text.removesuffix("\n").split("\n") if text else []


def stop(record) -> str | None:
    """Ask the runner to stop the job (the trainer checkpoints to S3 first), wait until it says it has, then terminate
    the instance (it shuts itself down anyway; this makes sure it bills no longer). An instance whose runner has not
    started (no status yet) has nothing to checkpoint: it is terminated at once, and so is one S3 will not take the
    request for. The job's status where it ended otherwise (Completed, Failed) meanwhile, else None."""
    launched = _instances(record)
    status = _asked_to_stop(record, launched)
    for instance_id in launched:
        instances.terminate(instance_id, record.get("region"))
    if status.get("status") not in FINAL_STATES:
        with contextlib.suppress(GankitError):  # unread, it is overwritten below if S3 lets us (terminated either way)
            status = _runner_status(record)  # its last word may have come meanwhile: it is not overwritten
    if status.get("status") in ("Completed", "Failed"):
        return status["status"]
    if status.get("status") not in FINAL_STATES:
        try:
            train_job.write_status(record["status_uri"], "Stopped", started=status.get("started"), ended=utc_now(),
                                   failure_reason=f"terminated by `launcher stop`; `launcher submit ... --resume "
                                                  f"{record['job']}` continues from its checkpoints")
        except GankitError:
            pass  # the instance is gone either way; describe then says so from EC2's side
    return None


def _asked_to_stop(record, launched) -> dict:
    """The runner's status once it has stopped the job, as `stop` asked; at once where there is no runner to ask.
    S3 refusing the request or the status (a transient failure, a user who may terminate instances but not write
    runs/) is said, and the instance is terminated all the same: a stop that cannot ask must not leave it billing."""
    try:
        status = _runner_status(record)
        if status.get("status") == "InProgress" and any(_running(i, record) for i in launched):
            status = _wait_for_the_stop(record, _request_stop(record))
        return status
    except Interrupted:
        raise
    except GankitError as e:
        echo(f"could not ask {record['job']} to stop ({e}): terminating its instance; the checkpoints it wrote "
             "stay", err=True)
        return {}


def _runner_status(record) -> dict:
    return json.loads(s3.read_bytes(record["status_uri"]) or b"{}")


def _running(instance_id, record) -> bool:
    instance = instances.describe_instance(instance_id, record.get("region"))
    return bool(instance) and instance["State"]["Name"] == "running"


def _wait_for_the_setup_log(record):
    """Until the instance's script has shipped its setup log (it does once the runner has written its last status,
    then shuts down), or SETUP_LOG_WAIT has passed."""
    since = time.time()
    with contextlib.suppress(GankitError):  # S3 refusing the look: the log is not worth keeping the instance for
        while not s3.exists(record["setup_log_uri"]) and time.time() - since < SETUP_LOG_WAIT:
            time.sleep(STOP_POLL_SECONDS)


def _stop_uri(record) -> str:
    """Beside the status the runner writes (train_job.stop_uri of the job's run)."""
    return layout.join(record["status_uri"].rsplit("/", 1)[0], train_job.STOP_NAME)


def _request_stop(record) -> float:
    """Write the stop request the runner looks for (with your credentials); when it was made, as a Unix time. A
    request made already (a wait cut short by Ctrl-C) is kept, so a second `launcher stop` waits only the rest."""
    uri = _stop_uri(record)
    with contextlib.suppress(ValueError, TypeError, KeyError):  # none yet, or not one of ours: a new one
        return datetime.fromisoformat(json.loads(s3.read_bytes(uri) or b"")["requested"]).timestamp()
    requested = utc_now()
    s3.write_bytes(uri, json.dumps({"requested": requested, "by": "launcher stop"}).encode())
    return datetime.fromisoformat(requested).timestamp()


def _wait_for_the_stop(record, requested: float) -> dict:
    """The runner's status once it is final, or when STOP_WAIT has passed since the request (the runner then did not
    see it, or could not say so). Ctrl-C leaves the request in place: the job stops itself all the same."""
    job = record["job"]
    echo(f"asked {job} to stop: its trainer writes a checkpoint to S3, then its instance is terminated "
         f"(within about {STOP_WAIT // 60} minutes)", err=True)
    progress = Progress(None, label=f"waiting for {job} to checkpoint and stop", fmt=format_duration,
                        log_every=15, start=max(0, int(time.time() - requested)))
    try:
        while True:
            status = _runner_status(record)
            if status.get("status") in FINAL_STATES or time.time() - requested >= STOP_WAIT:
                progress.close()
                if status.get("status") in FINAL_STATES:
                    _wait_for_the_setup_log(record)
                if status.get("status") == "Stopped":
                    echo(f"{job}: {status.get('failure_reason')}", err=True)
                elif status.get("status") not in FINAL_STATES:
                    echo(f"{job} did not report within {STOP_WAIT} s of the request: terminating its instance; "
                         "the checkpoints it wrote stay", err=True)
                return status
            time.sleep(STOP_POLL_SECONDS)
            progress.update(STOP_POLL_SECONDS)
    except KeyboardInterrupt as e:
        raise Interrupted(f"stopped waiting for {job} on {interrupt_name(e)}; it has the stop request and stops "
                          f"itself within about {STOP_WAIT // 60} minutes, its checkpoint first: `launcher stop {job}` "
                          f"again waits for that and terminates its instance", e) from None
