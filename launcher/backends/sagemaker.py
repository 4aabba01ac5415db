"""The SageMaker backend, through sagemaker-core's typed resources: TrainingJob.create, get, refresh and stop.

The image is the project's own (`--image`, from ECR: SageMaker runs its `train`)
or AWS's prebuilt TensorFlow training image in script mode, running
`sagemaker_entry.py` from a source tarball the launcher uploads to the run prefix.
Either way the trainer's container contract takes over: hyperparameters as
strings, data from the `training` channel, checkpoints synced by SageMaker with
the run's checkpoints prefix, outputs published to the run's output prefix.
"""

import contextlib
import io
import re
import tarfile
import time
from pathlib import Path

from launcher.backends.base import (FINAL_STATES, aws_session, container_inputs, ensure_dataset, recorded_output_uri,
                                    utc_now)
from launcher.pricing import DEFAULT_INSTANCE_TYPE as DEFAULTS
from trainer import TENSORFLOW_MINOR, layout, s3
from trainer.errors import GankitError, UsageError, aws_failure

# The Backend protocol's facts (launcher/backends/base.py): a bucket, ml. instance types, a role.
DEFAULT_INSTANCE_TYPE = DEFAULTS["sagemaker"]
ML_INSTANCE_TYPES = True
CLOUD = True
SETUP_HINT = "--role ARN"
NO_ROLE = "no SageMaker execution role: run `launcher infra up`, or pass --role ARN, or `launcher config set role ARN`"
RECORD_FIELDS = ()
SETUP_SECONDS = 0  # MaxRuntimeInSeconds counts from the job's start, downloads included
output_uri = recorded_output_uri  # the trainer publishes there as it trains


# Script mode's training toolkit (sagemaker-training-toolkit: mapping.to_cmd_args, process.run_async) passes
# every hyperparameter to the entry point as `--key value`, joined unquoted into one `/bin/sh -c` line. These
# characters make that line a shell syntax error or run something else, so the job fails before the trainer starts;
# whitespace splits a value into two arguments ("folder:/pics/My Pictures"), a backslash is eaten, * ? [ glob.
SHELL_SPECIAL = re.compile(r"""['"`$&|;<>()\s\\*?\[]""")


def check_spec(spec) -> None:
    from launcher.settings import check_role

    check_role(spec.role)  # build_spec checked it already, naming where it came from
    if not spec.image:
        for key, value in hyperparameters(spec).items():  # what the job is sent (a local data_dir is not)
            if not key.startswith("sagemaker_") and SHELL_SPECIAL.search(value):
                shown = "--dataset" if key == "dataset" else f"--hp {key}"
                raise UsageError(f"{shown} {str(value)[:80]!r}: AWS's prebuilt image passes hyperparameters to the "
                                 "trainer through an unquoted shell command line, and this value's spaces, quotes, "
                                 "brackets or $&|;<>\\*? would break it; rename it, or run your own image with --image")

TF_VERSION, PY_VERSION = TENSORFLOW_MINOR, "py312"  # the prebuilt image matching the trainer's TensorFlow
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
POLL_SECONDS = 10.0
PAGE = 1000  # log events or streams per request
VOLUME_GB = 30
# What script mode adds to the prebuilt image (it has TensorFlow, numpy and boto3); its training toolkit
# pip-installs requirements.txt at job start. The trainer extra's Keras floor too: the image's own Keras may be
# older (the image is py312, so its line applies). framework=jax adds JAX with CUDA.
REQUIREMENTS = "keras>=3.14\nclick>=8.1\nmatplotlib>=3.8\npillow>=10\ntensorboardX>=2.6\n"
JAX_REQUIREMENTS = "jax[cuda12]>=0.4.30\n"


def _session(region: str | None):
    """A fresh session per call: sagemaker-core caches its clients per session, and an expired token
    needs new credentials."""
    return aws_session(region)


def client(service: str, region: str | None):
    return _session(region).client(service)


def prebuilt_image(region: str, instance_type: str) -> str:
    from sagemaker.core import image_uris

    return image_uris.retrieve(framework="tensorflow", region=region, version=TF_VERSION, py_version=PY_VERSION,
                               instance_type=instance_type, image_scope="training")


def prebuilt_image_account(region: str) -> str | None:
    """The AWS account whose ECR serves the prebuilt image in `region` (the execution role must be allowed to
    pull from it: infra/base.yaml's PrebuiltImageAccount); None when sagemaker-core cannot say (the template's
    default then)."""
    try:
        uri = prebuilt_image(region, DEFAULT_INSTANCE_TYPE)
    except (ImportError, ValueError):  # no sagemaker-core here, or no prebuilt image in that region
        return None
    return uri.split(".", 1)[0]


def source_uri(spec) -> str:
    return layout.join(layout.run_prefix(spec.root, spec.job), "source", "sourcedir.tar.gz")


def hyperparameters(spec) -> dict:
    # Published to the shared layout as it trains; SageMaker syncs the checkpoints (CheckpointConfig).
    values = container_inputs(spec.hyperparameters, output_uri=spec.output_uri)
    if not spec.image:  # script mode in AWS's TensorFlow image
        values.update(sagemaker_program="sagemaker_entry.py", sagemaker_submit_directory=source_uri(spec),
                      sagemaker_region=spec.region, sagemaker_job_name=spec.job, sagemaker_container_log_level="20")
        if spec.instance_count > 1:
            # The image's toolkit then writes TF_CONFIG for MultiWorkerMirroredStrategy on every host.
            values["sagemaker_multi_worker_mirrored_strategy_enabled"] = "true"
    return values


def training_job_args(spec, image: str) -> dict:
    """TrainingJob.create's keywords for the job: sagemaker-core's typed shapes."""
    from sagemaker.core.resources import Tag  # the resource module's Tag: what create() accepts
    from sagemaker.core.shapes import (AlgorithmSpecification, Channel, CheckpointConfig, DataSource,
                                       MetricDefinition, OutputDataConfig, ResourceConfig, S3DataSource,
                                       StoppingCondition)

    stopping = StoppingCondition(max_runtime_in_seconds=spec.max_run)
    if spec.spot:
        stopping.max_wait_time_in_seconds = max(spec.max_wait or 0, spec.max_run)
    return dict(
        training_job_name=spec.job,
        role_arn=spec.role,
        algorithm_specification=AlgorithmSpecification(
            training_image=image, training_input_mode="File",
            metric_definitions=[MetricDefinition(name="d_loss", regex=r"d_loss ([0-9.eE+-]+)"),
                                MetricDefinition(name="g_loss", regex=r"g_loss ([0-9.eE+-]+)"),
                                MetricDefinition(name="images_per_sec", regex=r"([0-9.]+) img/s")]),
        hyper_parameters=hyperparameters(spec),
        input_data_config=[Channel(channel_name="training", input_mode="File", data_source=DataSource(
            s3_data_source=S3DataSource(s3_data_type="S3Prefix", s3_uri=spec.data_uri + "/",
                                        s3_data_distribution_type="FullyReplicated")))],
        # Required by the API. The trainer publishes its outputs to the run's output prefix itself; no
        # tarballs here, so whatever SageMaker copies can be read file by file.
        output_data_config=OutputDataConfig(
            s3_output_path=layout.join(layout.run_prefix(spec.root, spec.job), "sagemaker"), compression_type="NONE"),
        resource_config=ResourceConfig(instance_type=spec.instance_type, instance_count=spec.instance_count,
                                       volume_size_in_gb=VOLUME_GB),
        stopping_condition=stopping,
        checkpoint_config=CheckpointConfig(s3_uri=spec.checkpoint_uri, local_path="/opt/ml/checkpoints"),
        enable_managed_spot_training=spec.spot,
        # Several hosts exchange gradients, which are the model: encrypted between them (a one-host job is
        # unaffected, AWS says). No network isolation: the trainer reads and writes its run in S3 itself.
        enable_inter_container_traffic_encryption=True,
        # GANKIT_JOB and the region: what the trainer's stop watcher asks SageMaker about (trainer/sagemaker_stop.py).
        environment={"GANKIT_JOB": spec.job, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "1",
                     **({"AWS_DEFAULT_REGION": spec.region} if spec.region else {})},
        # The staged dataset's name (mnist, faces-<hash>): a folder's path may hold characters tags refuse (~).
        tags=[Tag(key="project", value="gankit"), Tag(key="dataset", value=spec.data_uri.rsplit("/", 1)[-1]),
              Tag(key="gankit:job", value=spec.job)],
    )


class _DryRun(Exception):
    """Raised by a dry run's client where the request would go on the wire: nothing is signed or sent."""


def _create(spec, image: str, session, dry_run: bool) -> tuple[dict, str | None]:
    """TrainingJob.create with the job's shapes: (the CreateTrainingJob parameters it sent, the job's ARN).

    The parameters are caught from botocore as sagemaker-core hands them over, after its own steps (defaults
    from a SageMaker config file, serialisation), so a dry run prints exactly what a submit sends.
    """
    import copy

    from sagemaker.core.resources import TrainingJob

    sent, created = {}, {}

    def capture(params, **_):
        sent.update(copy.deepcopy(params))

    def halt(**_):
        raise _DryRun

    def arn(parsed, **_):
        created["arn"] = parsed.get("TrainingJobArn")

    # The client create() calls: sagemaker-core keeps one per session and region.
    events = TrainingJob.get_sagemaker_client(session=session, region_name=spec.region).meta.events
    hooks = [("before-parameter-build.sagemaker.CreateTrainingJob", capture),
             ("after-call.sagemaker.CreateTrainingJob", arn)]
    if dry_run:
        hooks.append(("before-call.sagemaker.CreateTrainingJob", halt))  # after botocore's own checks
    for event, hook in hooks:
        events.register(event, hook)
    try:
        TrainingJob.create(**training_job_args(spec, image), session=session, region=spec.region)
    except _DryRun:
        pass
    except Exception:
        if not created.get("arn") and not dry_run:
            created["arn"] = _created_anyway(spec, sent, session)
        if not created.get("arn"):
            raise
        # Created: only the DescribeTrainingJob create() makes after it failed, or only the reply to the create
        # was lost. The job runs, so it gets its record (`launcher status` describes it again).
    finally:
        for event, hook in hooks:
            events.unregister(event, hook)
    return sent, created.get("arn")


def _created_anyway(spec, sent: dict, session) -> str | None:
    """The ARN of the job this request created although the create failed, else None. A create whose reply
    was lost (a read timeout) is retried by botocore, and the retry is refused (ResourceInUse: the name is
    taken, by the job the first try started): that job runs, and bills, all the same. It is this request's if
    it has this request's hyperparameters (they hold the job's name, unique to the millisecond)."""
    try:
        job = session.client("sagemaker", region_name=spec.region).describe_training_job(TrainingJobName=spec.job)
    except Exception:  # no such job (ValidationException), or AWS out of reach: the create's own error stands
        return None
    if job.get("HyperParameters") != sent.get("HyperParameters") or job.get("RoleArn") != sent.get("RoleArn"):
        return None
    return job.get("TrainingJobArn")


def build_request(spec, image: str) -> dict:
    """The CreateTrainingJob request a submit of `spec` sends, without AWS (no credentials, no call)."""
    import boto3

    # Placeholder keys so botocore does not look for real ones; the call stops before anything is signed.
    session = boto3.session.Session(region_name=spec.region, aws_access_key_id="dry-run",
                                    aws_secret_access_key="dry-run")
    return _create(spec, image, session, dry_run=True)[0]


def requirements(framework: str = "tensorflow") -> str:
    return REQUIREMENTS + (JAX_REQUIREMENTS if framework == "jax" else "")


def source_tarball(framework: str = "tensorflow") -> bytes:
    """sagemaker_entry.py, the trainer package and its extra requirements, for script mode."""
    import trainer
    from launcher.resources import resource_path

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(resource_path("docker/sagemaker_entry.py"), arcname="sagemaker_entry.py")
        tar.add(Path(trainer.__file__).parent, arcname="trainer",  # the installed package, checkout or wheel
                filter=lambda t: None if "__pycache__" in t.name else t)
        text = requirements(framework).encode()
        info = tarfile.TarInfo("requirements.txt")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    return buffer.getvalue()


def submit(spec, dry_run: bool = False) -> dict:
    check_spec(spec)
    image = spec.image or prebuilt_image(spec.region, spec.instance_type)
    if dry_run:
        return _refused(build_request, ensure_dataset(spec, upload=False), image)
    from launcher import jobs

    session = _session(spec.region)
    with jobs.claimed(spec.job):  # of two submits that got one name, only one gets it (as the local backend)
        return _submit(spec, image, session)


def _submit(spec, image: str, session) -> dict:
    from launcher import jobs

    spec = ensure_dataset(spec)  # a folder's channel is named by its content, known once it is read
    if not spec.image:
        s3.write_bytes(source_uri(spec), source_tarball(spec.framework))
    # Recorded first, as the EC2 backend does: a job created as Ctrl-C, a closed terminal or a kill stopped the
    # launcher still has the record `launcher status`, `list` and `stop` find it by (its name is all they need).
    record = jobs.save({**spec.to_dict(), "submitted_at": utc_now(), "arn": None, "image": image})
    try:
        request, arn = _refused(_create, spec, image, session, dry_run=False)
    except GankitError:  # refused: nothing runs (_create has checked that a lost reply did not create it anyway)
        jobs.delete(spec.job)
        raise
    except KeyboardInterrupt as e:
        _interrupted_create(record, session, e)
        raise
    record.update(arn=arn, request=request)
    with contextlib.suppress(GankitError):  # a full disk now: the record saved before finds the job all the same
        jobs.save(record)
    return record


CREATE_SETTLE_SECONDS = 2.0  # a create SageMaker received as Ctrl-C came may take this long to be described


def _interrupted_create(record: dict, session, interrupt: KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, SIGHUP) came while CreateTrainingJob was on its way: the request may have reached
    SageMaker, whose job then runs whether or not its reply came back. Found: its record says so, and the
    line how to stop or watch it. Not there: its record goes, and the interrupt goes on as any other. Unknown
    (AWS out of reach, another Ctrl-C): the record stays, the one thing that can still find it."""
    from launcher import jobs
    from trainer.errors import Interrupted, interrupt_name

    job = record["job"]
    stopped = f"{interrupt_name(interrupt)} stopped the submit of {job}"
    try:
        arn = _created_arn(record, session)
    except BaseException:  # noqa: BLE001 - out of reach, or interrupted again: whether it runs is unknown
        raise Interrupted(f"{stopped} as SageMaker was asked to create it, and whether it did is unknown; "
                          f"`launcher status {job}` says, `launcher stop {job}` stops it if it runs", interrupt) from None
    if arn is None:
        jobs.delete(job)
        return
    record["arn"] = arn
    with contextlib.suppress(GankitError):
        jobs.save(record)
    raise Interrupted(f"{stopped} after SageMaker created it: it runs (and bills) up to its max run; `launcher stop "
                      f"{job}` stops it, `launcher logs {job} --follow` watches it", interrupt) from None


def _created_arn(record: dict, session) -> str | None:
    """The ARN of the job named in `record`, once SageMaker has had time to create it, else None."""
    sm = session.client("sagemaker", region_name=record.get("region"))
    for wait in (0, CREATE_SETTLE_SECONDS):
        time.sleep(wait)
        try:
            return sm.describe_training_job(TrainingJobName=record["job"])["TrainingJobArn"]
        except sm.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ValidationException":  # SageMaker's "not found"
                raise
    return None


def _refused(create, *args, **kwargs):
    with _one_line_errors("SageMaker refused the job"):
        return create(*args, **kwargs)


@contextlib.contextmanager
def _one_line_errors(what: str):
    """botocore's ClientError and ParamValidationError, pydantic's checks: `what: the reason`, one line
    (credentials missing or refused: the line with their fix, as everywhere)."""
    try:
        yield
    except Exception as e:
        raise aws_failure(what, e) from None


def _iso(value):
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else value


def _job(record: dict):
    """The job as sagemaker-core's TrainingJob (one DescribeTrainingJob), with a fresh session."""
    from sagemaker.core.resources import TrainingJob

    region = record.get("region")
    session = _session(region)
    with _one_line_errors(f"cannot describe {record['job']}"):
        return TrainingJob.get(training_job_name=record["job"], session=session, region=region)


def _refresh(job, record: dict):
    """The job described again; long jobs outlive credentials, so an expired token gets a fresh session."""
    if job is None:
        return _job(record)
    try:
        return job.refresh()
    except Exception as e:
        if "ExpiredToken" in str(e):
            return _job(record)
        raise aws_failure(f"cannot describe {record['job']}", e) from None


def _set(value):
    """None for sagemaker-core's Unassigned (a field the response left out), else the value."""
    from sagemaker.core.utils.utils import Unassigned

    return None if isinstance(value, Unassigned) else value


def _info(job, record: dict) -> dict:
    resources = _set(job.resource_config)
    info = {"status": job.training_job_status, "secondary_status": _set(job.secondary_status),
            "started": _iso(_set(job.training_start_time) or _set(job.creation_time)),
            "ended": _iso(_set(job.training_end_time)), "failure_reason": _set(job.failure_reason),
            "instance_type": resources.instance_type if resources else None}
    billable, total = _set(job.billable_time_in_seconds), _set(job.training_time_in_seconds)
    if record.get("spot") and billable and total:
        info["spot_savings"] = 1 - billable / total
    return info


def describe(record: dict) -> dict:
    return _info(_job(record), record)


def logs(record: dict, follow: bool, print_line) -> None:
    """Every `<job>/algo-N-...` stream of the job, in order; with follow, until the job ends.

    The job's state comes from sagemaker-core (TrainingJob.get, then refresh). Its events are read with boto3:
    sagemaker-core's log streaming (TrainingJob.wait(logs=True), utils.logs.MultiLogStreamHandler) reads
    through a process-wide CloudWatch client made from a default session (not the job's region, and no fresh
    credentials when a long job's expire), stops looking for streams once it has seen `instance_count` of them
    (a spot restart's new stream would be missed), and wait() prints through logging under a live progress
    panel and raises on failure instead of handing lines to `print_line`.
    """
    region = record.get("region")
    cw = client("logs", region)
    tokens: dict[str, str | None] = {}
    job, renewed, ended, final = None, False, False, not follow
    while True:
        if follow and not ended:
            job = _refresh(job, record)
            ended = job.training_job_status in FINAL_STATES
        try:
            for stream in _streams(cw, record["job"]):
                _print_events(cw, stream, tokens, print_line)
        except Exception as e:
            if "ExpiredToken" in str(e) and not renewed:  # long jobs outlive credentials: fresh ones, read again
                cw, renewed = client("logs", region), True
                continue  # now: a last read (or the only one) must not be skipped
            if "ResourceNotFound" not in str(e):  # still expired after renewal: the line that says how to renew
                raise aws_failure(f"cannot read the logs of {record['job']}", e) from None
        else:
            renewed = False
        if final:
            if not tokens:  # no group yet (the account's first job), or none of this job's streams in it yet
                print_line("no logs yet" if not follow else "the job ended without logs")
            return
        # The job's last lines may reach CloudWatch after it is described as ended (sagemaker-core's own tailing
        # pauses and reads once more for them): so one more pause and read once it has ended.
        final = ended
        time.sleep(POLL_SECONDS)


def _streams(cw, job: str) -> list[str]:
    names, token = [], None
    while True:
        kwargs = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{job}/", "limit": min(PAGE, 50)}
        if token:
            kwargs["nextToken"] = token
        page = cw.describe_log_streams(**kwargs)
        names += [s["logStreamName"] for s in page.get("logStreams", [])]
        token = page.get("nextToken")
        if not token:
            return sorted(names, key=_in_host_order)


def _in_host_order(stream: str) -> list:
    """`<job>/algo-<host>-<epoch seconds>` by its numbers, not its characters: algo-2 before algo-10, and a host's
    later stream (a spot restart) after its earlier one."""
    parts = re.split(r"([0-9]+)", stream)  # text, number, text, ...: like with like at every place
    return [int(part) if i % 2 else part for i, part in enumerate(parts)]


def _print_events(cw, stream: str, tokens: dict, print_line):
    """The stream's events after its place in `tokens`, which moves on page by page: a read that fails midway
    (expired credentials, renewed and read again) goes on after the last page printed, not from the start."""
    tokens.setdefault(stream, None)
    while True:
        token = tokens[stream]
        kwargs = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True, "limit": PAGE}
        if token:
            kwargs["nextToken"] = token
        page = cw.get_log_events(**kwargs)
        for event in page.get("events", []):
            print_line(event["message"])
        if page.get("nextForwardToken") in (None, token):  # the same token back: the end for now
            return
        tokens[stream] = page["nextForwardToken"]


def stop(record: dict) -> None:
    job = _job(record)
    with _one_line_errors(f"cannot stop {record['job']}"):
        job.stop()


def plan_rows(spec) -> list[tuple[str, str]]:
    return [("console", console_url(spec))]


def console_url(record_or_spec) -> str:
    region = record_or_spec["region"] if isinstance(record_or_spec, dict) else record_or_spec.region
    job = record_or_spec["job"] if isinstance(record_or_spec, dict) else record_or_spec.job
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{job}"
