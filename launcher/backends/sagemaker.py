"""The SageMaker backend: one CreateTrainingJob request, built as a plain dict so it can be printed and checked.

The image is the project's own (`--image`, from ECR: SageMaker runs its `train`)
or AWS's prebuilt TensorFlow training image in script mode, running
`sagemaker_entry.py` from a source tarball the launcher uploads to the run prefix.
Either way the trainer's container contract takes over: hyperparameters as
strings, data from the `training` channel, checkpoints synced by SageMaker with
the run's checkpoints prefix, outputs published to the run's output prefix.
"""

import io
import tarfile
import time
from pathlib import Path

from launcher.backends import FINAL_STATES, ensure_dataset
from trainer import TENSORFLOW_MINOR, layout, s3
from trainer.errors import NO_CREDENTIALS, GankitError, UsageError

TF_VERSION, PY_VERSION = TENSORFLOW_MINOR, "py312"  # the prebuilt image matching the trainer's TensorFlow
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
POLL_SECONDS = 10.0
PAGE = 1000  # log events or streams per request
VOLUME_GB = 30
# What script mode adds to the prebuilt image (it has TensorFlow, Keras 3, numpy and boto3); its
# training toolkit pip-installs requirements.txt at job start. framework=jax adds JAX with CUDA.
REQUIREMENTS = "click>=8.1\nmatplotlib>=3.8\npillow>=10\ntensorboardX>=2.6\n"
JAX_REQUIREMENTS = "jax[cuda12]>=0.4.30\n"


def client(service: str, region: str | None):
    import boto3

    session = boto3.session.Session(region_name=region)
    if session.get_credentials() is None:
        raise UsageError(NO_CREDENTIALS)
    return session.client(service)


def prebuilt_image(region: str, instance_type: str) -> str:
    from sagemaker.core import image_uris

    return image_uris.retrieve(framework="tensorflow", region=region, version=TF_VERSION, py_version=PY_VERSION,
                               instance_type=instance_type, image_scope="training")


def source_uri(spec) -> str:
    return layout.join(layout.run_prefix(spec.root, spec.job), "source", "sourcedir.tar.gz")


def hyperparameters(spec) -> dict:
    values = {k: str(v) for k, v in spec.hyperparameters.items() if k != "data_dir"}
    values["output_dir"] = spec.output_uri  # published to the shared layout as it trains
    if not spec.image:  # script mode in AWS's TensorFlow image
        values.update(sagemaker_program="sagemaker_entry.py", sagemaker_submit_directory=source_uri(spec),
                      sagemaker_region=spec.region, sagemaker_job_name=spec.job, sagemaker_container_log_level="20")
        if spec.instance_count > 1:
            # The image's toolkit then writes TF_CONFIG for MultiWorkerMirroredStrategy on every host.
            values["sagemaker_multi_worker_mirrored_strategy_enabled"] = "true"
    return values


def build_request(spec, image: str) -> dict:
    request = {
        "TrainingJobName": spec.job,
        "RoleArn": spec.role,
        "AlgorithmSpecification": {
            "TrainingImage": image,
            "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "d_loss", "Regex": r"d_loss ([0-9.eE+-]+)"},
                                  {"Name": "g_loss", "Regex": r"g_loss ([0-9.eE+-]+)"},
                                  {"Name": "images_per_sec", "Regex": r"([0-9.]+) img/s"}],
        },
        "HyperParameters": hyperparameters(spec),
        "InputDataConfig": [{
            "ChannelName": "training",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": spec.data_uri + "/",
                                            "S3DataDistributionType": "FullyReplicated"}},
            "InputMode": "File",
        }],
        # No tarballs: the generator and samples can be pulled file by file.
        "OutputDataConfig": {"S3OutputPath": layout.join(layout.run_prefix(spec.root, spec.job), "sagemaker"),
                             "CompressionType": "NONE"},
        "ResourceConfig": {"InstanceType": spec.instance_type, "InstanceCount": spec.instance_count,
                           "VolumeSizeInGB": VOLUME_GB},
        "StoppingCondition": {"MaxRuntimeInSeconds": spec.max_run},
        "CheckpointConfig": {"S3Uri": spec.checkpoint_uri, "LocalPath": "/opt/ml/checkpoints"},
        "EnableManagedSpotTraining": spec.spot,
        "Environment": {"GANKIT_JOB": spec.job, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "1"},
        # The staged dataset's name (mnist, faces-<hash>): a folder's path may hold characters tags refuse (~).
        "Tags": [{"Key": "project", "Value": "gankit"}, {"Key": "dataset", "Value": spec.data_uri.rsplit("/", 1)[-1]},
                 {"Key": "gankit:job", "Value": spec.job}],
    }
    if spec.spot:
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = max(spec.max_wait or 0, spec.max_run)
    return request


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
    image = spec.image or prebuilt_image(spec.region, spec.instance_type)
    if dry_run:
        return build_request(ensure_dataset(spec, upload=False), image)
    sm = client("sagemaker", spec.region)
    spec = ensure_dataset(spec)  # a folder's channel is named by its content, known once it is read
    request = build_request(spec, image)
    if not spec.image:
        s3.write_bytes(source_uri(spec), source_tarball(spec.framework))
    try:
        arn = sm.create_training_job(**request)["TrainingJobArn"]
    except Exception as e:  # botocore's ClientError and friends: one line
        raise GankitError(f"SageMaker refused the job: {e}") from None
    from launcher import jobs

    return jobs.save({**spec.to_dict(), "submitted_at": _now(), "arn": arn, "image": image, "request": request})


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _iso(value):
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else value


def describe(record: dict) -> dict:
    sm = client("sagemaker", record.get("region"))
    try:
        job = sm.describe_training_job(TrainingJobName=record["job"])
    except Exception as e:
        raise GankitError(f"cannot describe {record['job']}: {e}") from None
    info = {"status": job["TrainingJobStatus"], "secondary_status": job.get("SecondaryStatus"),
            "started": _iso(job.get("TrainingStartTime") or job.get("CreationTime")),
            "ended": _iso(job.get("TrainingEndTime")), "failure_reason": job.get("FailureReason"),
            "instance_type": job.get("ResourceConfig", {}).get("InstanceType")}
    billable, total = job.get("BillableTimeInSeconds"), job.get("TrainingTimeInSeconds")
    if record.get("spot") and billable and total:
        info["spot_savings"] = 1 - billable / total
    return info


def logs(record: dict, follow: bool, echo) -> None:
    """Every `<job>/algo-N-...` stream of the job, in order; with follow, until the job ends."""
    region = record.get("region")
    cw = client("logs", region)
    tokens: dict[str, str | None] = {}
    while True:
        final = not follow or describe(record)["status"] in FINAL_STATES
        try:
            for stream in _streams(cw, record["job"]):
                tokens[stream] = _print_events(cw, stream, tokens.get(stream), echo)
        except Exception as e:
            if "ExpiredToken" not in str(e):  # long jobs outlive credentials: get fresh ones and go on
                if "ResourceNotFound" in str(e):
                    if final:
                        echo("no logs yet" if not follow else "the job ended without logs")
                        return
                else:
                    raise GankitError(f"cannot read the logs of {record['job']}: {e}") from None
            cw = client("logs", region)
        if final:
            return
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
            return sorted(names)


def _print_events(cw, stream: str, token, echo):
    while True:
        kwargs = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True, "limit": PAGE}
        if token:
            kwargs["nextToken"] = token
        page = cw.get_log_events(**kwargs)
        for event in page.get("events", []):
            echo(event["message"])
        if page.get("nextForwardToken") in (None, token):  # the same token back: the end for now
            return token
        token = page["nextForwardToken"]


def stop(record: dict) -> None:
    sm = client("sagemaker", record.get("region"))
    try:
        sm.stop_training_job(TrainingJobName=record["job"])
    except Exception as e:
        raise GankitError(f"cannot stop {record['job']}: {e}") from None


def console_url(record_or_spec) -> str:
    region = record_or_spec["region"] if isinstance(record_or_spec, dict) else record_or_spec.region
    job = record_or_spec["job"] if isinstance(record_or_spec, dict) else record_or_spec.job
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{job}"


