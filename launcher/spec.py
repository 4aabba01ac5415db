"""One validated job spec: the only place CLI options become a job.

    CLI options -> build_spec() -> JobSpec -> a backend -> the trainer's container contract

A spec knows where its run lives in the shared layout (trainer.layout) and
carries the trainer's hyperparameters as strings, exactly as SageMaker passes them.
"""

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from launcher import settings
from launcher.durations import MAX_SECONDS, parse_duration
from launcher.pricing import check_instance_type
from trainer import aws, layout
from trainer.errors import UsageError

# Set by the launcher itself, never by --hp.
RESERVED = {"output_dir": "the run's layout decides it", "checkpoint_dir": "the run's layout decides it",
            "dataset": "use --dataset (it also names the job and stages the data)", "model": "use --model"}
DEFAULT_MAX_RUN = "2h"


@dataclass
class JobSpec:
    job: str
    backend: str
    dataset: str
    hyperparameters: dict = field(default_factory=dict)  # train flags, underscores, string values
    root: str = ""  # s3://BUCKET or the local folder standing in for one
    instance_type: str = "local"
    instance_count: int = 1
    spot: bool = True
    max_run: int | None = 7200  # None: a local job given no --max-run runs until done
    max_wait: int | None = None
    role: str | None = None
    image: str | None = None
    region: str | None = None
    resume: str | None = None
    data_prefix: str | None = None  # a staged folder's content-named prefix (launcher.backends.base.ensure_dataset)

    @property
    def framework(self) -> str:
        """The Keras backend the job trains with (its `framework` hyperparameter; TensorFlow by default)."""
        return self.hyperparameters.get("framework") or "tensorflow"

    @property
    def run_name(self) -> str:
        """The run whose checkpoints and outputs this job continues (itself unless --resume)."""
        return self.resume or self.job

    @property
    def data_uri(self) -> str:
        return self.data_prefix or layout.dataset_prefix(self.root, self.dataset)

    @property
    def checkpoint_uri(self) -> str:
        return layout.checkpoints_prefix(self.root, self.run_name)

    @property
    def output_uri(self) -> str:
        return layout.output_prefix(self.root, self.run_name)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "data_uri": self.data_uri, "checkpoint_uri": self.checkpoint_uri,
                "output_uri": self.output_uri}


def job_name(dataset: str, model: str, now: datetime | None = None) -> str:
    """gan-<dataset>-<model>-<timestamp>: letters, digits and hyphens, at most 63 characters (SageMaker's rule).

    The timestamp goes to the millisecond (as the SageMaker SDK's names do), so a sweep that submits
    several jobs in one second, in a loop or in parallel, gets a name for each.
    """
    now = now or datetime.now(timezone.utc)
    stamp = f"{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}"
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", layout.dataset_slug(dataset)).strip("-").lower() or "data"
    room = 63 - len(f"gan--{model}-{stamp}")
    return f"gan-{slug[:room].strip('-')}-{model}-{stamp}"


def parse_hp(pairs) -> dict:
    """Repeated --hp key=value -> {key: value}, keys with underscores as the trainer's hyperparameters.json has them.
    An empty value (`--hp max_steps=`) is kept as "": build_spec drops that option inherited by a resume."""
    found = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", key):
            raise UsageError(f"--hp {pair!r} is malformed; write --hp key=value, e.g. --hp lr=1e-4")
        if key in RESERVED:
            raise UsageError(f"--hp {key} cannot be set: {RESERVED[key]}")
        if key in found and found[key] != value.strip():  # the last would win without a word
            raise UsageError(f"--hp {key} is given twice ({found[key]} and {value.strip()}); give it once")
        found[key] = value.strip()
    return found


def check_hyperparameters(hyperparameters: dict):
    """Check them against the trainer's schema (TrainConfig): its parsing and validation, without TensorFlow."""
    resolved_config(hyperparameters)


def resolved_config(hyperparameters: dict):
    """The trainer's complete config for a job's hyperparameters (its preset's values filled in), without TensorFlow."""
    from trainer.config import TrainConfig

    return TrainConfig.from_hyperparameters({**hyperparameters, "output_dir": "unused"}, source="--hp").resolve()


def build_spec(*, dataset, model="cgan", preset=None, epochs=None, batch_size=None, hp=(), backend=None,
               instance_type=None, instance_count=1, spot=True, max_run=None, bucket=None, role=None, image=None,
               region=None, resume=None, inherited=None, job=None, now=None) -> JobSpec:
    """`inherited`: the hyperparameters of the job a resume continues, kept but for what this command gives."""
    from launcher import backends
    from trainer.data import canonical_name

    backend = backend or settings.default_backend()
    if backend not in backends.REGISTRY:
        raise UsageError(f"--backend {backend}: choose one of {', '.join(backends.REGISTRY)}")
    kind = backends.get(backend)
    dataset = canonical_name(dataset)
    given = {key: str(value) for key, value in (("preset", preset), ("epochs", epochs), ("batch_size", batch_size))
             if value is not None}
    extra = parse_hp(hp)
    for key in extra.keys() & given.keys():  # --epochs 5 --hp epochs=3 ran 3 epochs without a word
        flag = "--" + key.replace("_", "-")
        raise UsageError(f"{flag} {given[key]} and --hp {key}={extra[key]} both set {key}; give it once, as {flag}")
    kept = {key: value for key, value in (inherited or {}).items() if key not in RESERVED}
    for key in [key for key, value in extra.items() if value.strip() == ""]:
        if key not in kept:  # a new job, or one the resumed job never had: an empty value is a slip
            raise UsageError(f"--hp {key}= is empty; give it a value (--hp {key}=VALUE), or, with --resume JOB, "
                             f"leave it empty only to drop an option JOB set")
        del kept[key], extra[key]  # `--resume JOB --hp max_steps=`: back to the trainer's default
    hyperparameters = {"dataset": dataset, "model": model, **kept, **given, **extra}
    check_hyperparameters(hyperparameters)
    if instance_count < 1:
        raise UsageError(f"--instance-count {instance_count}: must be at least 1")
    if instance_count > 1 and hyperparameters.get("framework") == "jax":
        raise UsageError(f"--instance-count {instance_count} with framework=jax: JAX trains on one host (all its GPUs); "
                         "use --instance-count 1, or --hp framework=tensorflow for several hosts")

    cloud = kind.CLOUD
    if cloud and instance_count == 1 and hyperparameters.get("strategy") == "multiworker":
        # The trainer refuses it on one host too, but only once the instance is up and billing.
        raise UsageError("--hp strategy=multiworker trains across several hosts, and this job has one; give "
                         "--instance-count 2 or more (SageMaker), or drop it (auto uses this host's GPUs)")
    given = [flag for flag, value in (("--instance-type", instance_type), ("--bucket", bucket), ("--role", role),
                                      ("--image", image), ("--region", region)) if value]
    if given and not cloud:  # once ignored: `--bucket B --role R` without `infra up` trained on this machine
        raise UsageError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for a cloud job, and this one would "
                         f"run here on the {backend} backend; add --backend sagemaker (or ec2), or drop "
                         f"{'it' if len(given) == 1 else 'them'}")
    if cloud:
        source = None if instance_type else "the instance_type setting: GANKIT_INSTANCE_TYPE or `launcher config`"
        chosen = instance_type = instance_type or settings.get("instance_type")
        if not instance_type or instance_type == "local" or instance_type.startswith("ml.") != kind.ML_INSTANCE_TYPES:
            instance_type = _matching_default(instance_type, kind)
        check_instance_type(instance_type, backend, chosen, source)  # the error shows what was set, not ml.<it>
    else:
        instance_type = kind.DEFAULT_INSTANCE_TYPE
    max_run_s = parse_duration(max_run or DEFAULT_MAX_RUN)
    if not cloud:
        root = str(settings.local_root())
    else:
        source = "--bucket" if bucket else "the bucket setting (GANKIT_BUCKET or `launcher config`)"
        bucket = bucket or settings.get("bucket")
        if not bucket:
            raise UsageError(f"no bucket for the {backend} backend: run `launcher infra up` (it makes what "
                             f"{backend} needs), or pass --bucket NAME with {kind.SETUP_HINT}")
        settings.check_bucket(bucket, source)
        root = bucket if bucket.startswith("s3://") else f"s3://{bucket}"
        role_source = "--role" if role else "the role setting (GANKIT_ROLE or `launcher config`)"
        role = role or settings.get("role")
        if kind.NO_ROLE and not role:
            raise UsageError(kind.NO_ROLE)
        if kind.NO_ROLE:  # a backend that takes an execution role
            settings.check_role(role, role_source)
        region = aws.region(region, settings.get("region"))
        if image or settings.get("image"):
            settings.check_image(image or settings.get("image"),
                                 "--image" if image else "the image setting (GANKIT_IMAGE or `launcher config`)")
        # The roles `launcher infra up` makes pull only what check_pullable allows; a role of one's own may pull more.
        if (image or settings.get("image")) and (not kind.NO_ROLE or role == settings.get("role")):
            from launcher.image import check_pullable

            check_pullable(image or settings.get("image"), region,
                           "--image" if image else "the image setting (`launcher config`)")
    return JobSpec(job=job or job_name(dataset, model, now), backend=backend, dataset=dataset,
                   hyperparameters=hyperparameters, root=root.rstrip("/"), instance_type=instance_type,
                   instance_count=instance_count, spot=bool(spot) and cloud,
                   max_run=max_run_s if cloud or max_run else None,
                   max_wait=spot_max_wait(max_run_s) if spot and cloud else None, role=role,
                   image=image or settings.get("image"), region=region, resume=resume)


def spot_max_wait(max_run_s: int) -> int:
    """How long a spot job may take, waits for capacity included: twice its run, but at most 28 days. The
    run's own limit (MaxRuntimeInSeconds, at most 28 days) is what bills; this one bounds when the result
    comes. SageMaker documents 30 days as the most any training job lasts, stops and uploads included, so
    twice a long --max-run (56 days for 28d) asked for a wait no job can have."""
    return min(2 * max_run_s, MAX_SECONDS)


def _matching_default(instance_type, kind) -> str:
    """The backend's own name for `instance_type`, or its default when none (or "local") is given."""
    if instance_type and instance_type != "local":
        # ml.p3.2xlarge on ec2 or p3.2xlarge on SageMaker: the same machine under the other name.
        bare = instance_type.removeprefix("ml.")
        return f"ml.{bare}" if kind.ML_INSTANCE_TYPES else bare
    return kind.DEFAULT_INSTANCE_TYPE
