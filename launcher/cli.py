"""`launcher`: submit GAN training jobs (local, SageMaker, EC2), watch them, and bring the generator home.

    options -> launcher.spec.build_spec -> JobSpec -> launcher.backends.<name>.submit -> the trainer's contract

Heavy imports (TensorFlow, boto3, the SageMaker SDK) live inside the commands
that need them, so `launcher --help` answers at once.
"""

import contextlib
import importlib
import json
from pathlib import Path

import click

from launcher.pricing import DEFAULT_INSTANCE_TYPE
from trainer.aws import REGION_HELP
from trainer.cli import config_option, generate_options
from trainer.config import options as train_options
from trainer.errors import GankitError, UsageError, echo, printable_cell, run_cli

# Commands that live in other modules, imported only when run: name -> (module:attr, short help).
LAZY = {
    "infra": ("launcher.infra:infra", "Provision, show or delete the AWS stacks (bucket, roles, security group)."),
    "jupyter": ("launcher.jupyter.cli:jupyter", "Open a private Jupyter on a GPU instance (stop, status)."),
    "evaluate": ("launcher.quality:evaluate", "Measure a generator's image quality (job or folder)."),
    "report": ("launcher.quality:report", "Rebuild a job's report.html from its run output (--open opens it)."),
}
# `launcher --help` lists the commands in the order a run meets them, set-up last; one left out here comes after.
ORDER = ("submit", "status", "logs", "list", "stop", "pull", "generate", "evaluate", "report",
         "config", "infra", "image", "jupyter")


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        names = set(super().list_commands(ctx)) | set(LAZY)
        return [name for name in ORDER if name in names] + sorted(names - set(ORDER))

    def get_command(self, ctx, name):
        if name in LAZY:
            module, attr = LAZY[name][0].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = [(name, LAZY[name][1] if name in LAZY else click.Group.get_command(self, ctx, name).get_short_help_str(90))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="gankit")
def cli():
    """Train GANs on cloud GPUs (SageMaker, EC2) or on this machine, and bring the generator home.

    Without AWS set up, jobs run here (the local backend); `launcher infra up` switches the default to SageMaker.

    \b
    Example (Fashion-MNIST, 64 epochs):
      launcher submit --dataset zalando --epochs 64
    """


def backend_choice() -> click.Choice:
    """The registered backends as `--backend`'s choices, read when the option is used, not frozen when this
    module loads (settings.BACKENDS is a live view of launcher.backends.REGISTRY): a new backend is one entry."""
    from launcher import settings

    choice = click.Choice(())
    choice.choices = settings.BACKENDS
    return choice


def _echo_table(rows: list[tuple[str, str]]):
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        echo(f"{key.ljust(width)}  {printable_cell(value)}")  # a value is one line, whatever AWS sent


# --- submit -------------------------------------------------------------------------------------

TRAIN = train_options()  # the trainer's schema (TrainConfig's fields as options)

@cli.command()
@click.option("--dataset", default=None, help="mnist, zalando (fashion-mnist), emnist, or folder:PATH "
              "[required; with --resume, the job's own].")
@config_option("model")
# The trainer's own options, so names, choices and defaults cannot drift; the trainer fills what is unset.
@config_option("preset", default=None, show_default=False, help=f"[trainer default: {TRAIN['preset'].default}] "
               "(`python -m trainer train --help` says what each is).")
@config_option("epochs", default=None, show_default=False,
               help=f"{TRAIN['epochs'].help} [trainer default: {TRAIN['epochs'].default}]")
@config_option("batch_size", help=f"{TRAIN['batch_size'].help} Per GPU (replica).")
@click.option("--hp", multiple=True, metavar="KEY=VALUE", help="Any other trainer option, e.g. --hp lr=1e-4 (repeatable); with --resume, "
              "--hp KEY= drops one JOB set.")
@click.option("--backend", type=backend_choice(), default=None,
              help="Where the job runs [default: from `launcher config`; local until AWS is set up].")
@click.option("--instance-type", default=None, help="GPU instance type, e.g. g5.xlarge [config, else " + ", ".join(
              f"{kind} on {name}" for name, kind in DEFAULT_INSTANCE_TYPE.items() if kind != name) + "].")
@click.option("--instance-count", type=int, default=1, show_default=True, help="Instances (multi-worker training).")
@click.option("--spot/--on-demand", default=True, show_default=True, help="Spot capacity (cheaper, may be interrupted).")
@click.option("--max-run", default=None, help="Longest the job may run, e.g. 2h, 90m, 3600 (seconds) [cloud: 2h; local: no limit]; "
              "it is then stopped with a checkpoint.")
@click.option("--bucket", default=None, help="S3 bucket for data and runs [config].")
@click.option("--role", default=None, help="SageMaker execution role ARN [config].")
@click.option("--image", default=None, help="Your trainer image in ECR [default: AWS's TensorFlow image, with gankit's code uploaded for it].")
@click.option("--region", default=None, help=REGION_HELP)
@click.option("--resume", default=None, metavar="JOB", help="Continue JOB's run from its last checkpoint, with "
              "JOB's own dataset, model, trainer options, backend, region, instance type and count, and spot or "
              "on-demand, except those given again.")
@click.option("--wait/--detach", default=None, help="Stream logs until done, then pull [default: wait locally, detach in the cloud].")
@click.option("--dest", type=click.Path(), default=None, help="Where --wait pulls to [./JOB].")
@click.option("--dry-run", is_flag=True, help="Print the request and submit nothing.")
def submit(dataset, model, preset, epochs, batch_size, hp, backend, instance_type, instance_count, spot, max_run,
           bucket, role, image, region, resume, wait, dest, dry_run):
    """Start a training job; prints its name, where outputs land and what it may cost."""
    from launcher import backends, jobs
    from launcher.spec import build_spec

    held = contextlib.ExitStack()  # two resumes of one run at once: the second waits, then sees the first's job
    click.get_current_context().call_on_close(held.close)
    if resume:
        held.enter_context(jobs.held())
    resumed = _resumable(resume) if resume else None
    if resumed:  # `launcher submit --resume JOB`, as stop and the job's log print it, continues the job as asked
        dataset, model = _resumed_defaults(resumed, dataset, model)
        # where its checkpoints are: its backend, and its region (SageMaker reads a bucket of its own region only)
        backend = backend or resumed.get("backend")
        if _in_the_cloud(backend) and _in_the_cloud(resumed.get("backend")):
            # Not for a local job: build_spec refuses these there, and this command was never given them.
            region, instance_type, instance_count, spot = _resumed_machines(resumed, backend, region, instance_type,
                                                                            instance_count, spot)
    elif not dataset:
        raise click.MissingParameter(param_type="option", param_hint="'--dataset'")
    spec = build_spec(dataset=dataset, model=model, preset=preset, epochs=epochs, batch_size=batch_size, hp=hp,
                      backend=backend, instance_type=instance_type, instance_count=instance_count, spot=spot,
                      max_run=max_run, bucket=bucket, role=role, image=image, region=region,
                      resume=resumed and (resumed.get("resume") or resumed["job"]),  # a resumed job's run is its own
                      inherited=resumed and resumed.get("hyperparameters"))
    if resumed and resumed.get("root") and resumed["root"] != spec.root:
        raise UsageError(f"job {resume} keeps its checkpoints under {resumed['root']}, not {spec.root}; resume it "
                         f"with --backend {resumed['backend']} and the same bucket")
    if resumed:
        _check_same_run(resume, resumed, spec)
    backend_module = backends.get(spec.backend)
    backend_module.check_spec(spec)  # the backend's own refusals, before the plan and its cost are printed
    if spec.dataset.startswith("folder:"):  # a missing or mis-laid folder too (a listing: pictures decode later)
        from launcher.backends.base import folder_source
        from trainer.data.folder import list_folder

        list_folder(folder_source(spec))
    if dry_run:
        echo(json.dumps(backend_module.submit(spec, dry_run=True), indent=2, default=str))
        return
    if backend_module.CLOUD:
        from launcher.backends.base import aws_session

        aws_session()  # no credentials: say so before the plan, which would read as if the job had started
    wait = wait if wait is not None else not backend_module.CLOUD
    if wait:
        from trainer.fsutil import refuse_file_in_the_way

        refuse_file_in_the_way(dest or spec.job, "--dest")  # now, not after the whole run
    _echo_table(_plan_rows(spec, backend_module))
    record = backend_module.submit(spec)
    held.close()  # recorded: another resume of its run now finds it
    echo(f"submitted {record['job']}")
    if wait:
        _wait_and_pull(record, Path(dest or record["job"]))
    else:
        echo(f"follow it with `launcher logs {record['job']} --follow`; `launcher pull {record['job']}` when done")


def _resumable(job: str) -> dict:
    """The record of a job that `--resume` may continue: known, and ended (two jobs writing one run's
    checkpoints would overwrite each other)."""
    from launcher import backends, jobs

    record = jobs.load(job)  # an unknown job is a usage error before anything starts
    status = _describe(record).get("status")
    if status not in backends.FINAL_STATES:
        raise UsageError(f"job {job} is {status}; `launcher stop {job}` (it checkpoints) or wait for it to end, "
                         f"then resume it")
    run = record.get("resume") or record["job"]  # another job may be continuing the same run already
    for other in jobs.all_jobs():
        if other["job"] != job and (other.get("resume") or other["job"]) == run:
            status = _describe(other).get("status")
            if status not in backends.FINAL_STATES:
                raise UsageError(f"job {other['job']} is {status} and continues the same run as {job}; "
                                 f"`launcher stop {other['job']}` (it checkpoints) or wait for it to end, then "
                                 f"resume {other['job']}")
    return record


def _given(option: str) -> bool:
    """Whether this command's `option` was given, not left at its default: an option with a default cannot say so
    by being None."""
    from click.core import ParameterSource

    return click.get_current_context().get_parameter_source(option) != ParameterSource.DEFAULT


def _resumed_defaults(resumed: dict, dataset, model) -> tuple:
    """The dataset and model a resume trains: those given, else the resumed job's own (then _check_same_run
    compares what was given with them)."""
    if not _given("model"):
        model = (resumed.get("hyperparameters") or {}).get("model", model)
    return dataset or resumed.get("dataset"), model


def _in_the_cloud(backend) -> bool:
    from launcher import backends

    return backend in backends.REGISTRY and backends.get(backend).CLOUD


def _resumed_machines(resumed: dict, backend, region, instance_type, instance_count, spot) -> tuple:
    """The region, instance type, count and capacity (spot or on-demand) a cloud resume runs on: those given, else
    the resumed job's own. Its region is where its bucket is (SageMaker reads a bucket of its own region only); its
    count, with its GPUs, makes the global batch its checkpoint was written at, which the trainer refuses to change
    once billing. The count only on JOB's own backend: EC2 runs one instance, and would refuse an --instance-count
    never given."""
    if not _given("instance_count") and backend == resumed.get("backend"):
        instance_count = resumed.get("instance_count") or instance_count
    if not _given("spot") and isinstance(resumed.get("spot"), bool):  # an on-demand job stays on demand
        spot = resumed["spot"]
    return region or resumed.get("region"), instance_type or resumed.get("instance_type"), instance_count, spot


def _check_same_run(job: str, resumed: dict, spec):
    """A checkpoint continues only its own model on its own data: the trainer refuses anything else, but only
    once the job has started (and a cloud instance has billed). A folder may have moved: the trainer compares
    its classes and image shape."""
    was = {"dataset": resumed.get("dataset"), "model": resumed.get("hyperparameters", {}).get("model", "cgan")}
    now = {"dataset": spec.dataset, "model": spec.hyperparameters["model"]}
    if all(str(v).startswith("folder:") for v in (was["dataset"], now["dataset"])):
        now["dataset"] = was["dataset"]
    for key in ("dataset", "model"):
        if was[key] and was[key] != now[key]:
            raise UsageError(f"--resume {job}: that run trained --{key} {was[key]}, not {now[key]}; resume it with "
                             f"--dataset {was['dataset']} --model {was['model']}, or leave out --resume to start afresh")
    _check_same_recipe(job, resumed, spec)


def _check_same_recipe(job: str, resumed: dict, spec):
    """The preset, batch and recipe (seed, loss, EMA...) a resume must keep, as the trainer checks them against the
    checkpoint: here before anything bills. A record this gankit cannot read is left to the trainer."""
    from launcher.spec import resolved_config
    from trainer.checkpoints import RECIPE

    try:
        was = resolved_config(resumed.get("hyperparameters") or {})
    except GankitError:
        return
    now = resolved_config(spec.hyperparameters)
    for name in ("preset", "batch_size", *RECIPE):
        before, after = getattr(was, name), getattr(now, name)
        if before != after:
            flag = f"--{name.replace('_', '-')} {before}" if name in ("preset", "batch_size") else f"--hp {name}={before}"
            raise UsageError(f"--resume {job}: that run trained with {name} {before}, not {after}; resume it with "
                             f"{flag}, or leave out --resume to start afresh")


def _plan_rows(spec, backend) -> list[tuple[str, str]]:
    from launcher.durations import format_hms
    from launcher.pricing import PRICES_AS_OF, estimate

    rows = [("job", spec.job), ("backend", spec.backend), ("outputs", spec.output_uri)]
    if backend.CLOUD:
        count = f" x{spec.instance_count}" if spec.instance_count > 1 else ""
        rows.append(("instance", f"{spec.instance_type}{count}, {'spot' if spec.spot else 'on-demand'}"))
        billed = spec.max_run + backend.SETUP_SECONDS
        setup = f" + up to {backend.SETUP_SECONDS // 60} min of setup" if backend.SETUP_SECONDS else ""
        span = f"{format_hms(billed)} (--max-run{setup})"
        on_demand = estimate(spec.instance_type, spec.instance_count, False, billed)
        cost = f"at most ${on_demand:,.2f} on-demand for {span}"
        if spec.spot:
            cost = (f"at most ~${estimate(spec.instance_type, spec.instance_count, True, billed):,.2f} spot "
                    f"(typical), ${on_demand:,.2f} on-demand, for {span}")
        rows.append(("cost", f"{cost}; list prices of {PRICES_AS_OF}, us-east-1"))
    return rows + backend.plan_rows(spec)


def _wait_and_pull(record: dict, dest: Path):
    from launcher import backends
    from launcher.pull import pull

    from launcher.quiet import LineFilter

    from trainer.errors import Interrupted, interrupt_name

    job = record["job"]
    backend = backends.get(record["backend"])
    log_lines = LineFilter(echo)  # `launcher logs JOB --verbose` shows TensorFlow's lines too
    try:
        backend.logs(record, follow=True, print_line=log_lines)
    except KeyboardInterrupt as e:
        raise _stopped_watching(job, backend, e, dest) from None
    log_lines.flush()
    info = backend.describe(record)
    _raise_if_failed(record, info)
    if info["status"] != "Completed":
        raise GankitError(f"job {job} is {info['status']}; `launcher submit --resume {job}` "
                          "continues it from its last checkpoint")
    try:
        pull(record, dest, log=echo)
    except KeyboardInterrupt as e:
        raise Interrupted(f"the pull of {job} stopped on {interrupt_name(e)}; the job has completed, and "
                          f"`launcher pull {job} --dest {dest}` fetches the rest", e) from None
    echo(f"pulled {job} to {dest}")


def _stopped_watching(job: str, backend, interrupt: KeyboardInterrupt, dest=None):
    """Ctrl-C (SIGTERM, SIGHUP) while following a job's log stops only the watching: the one line that says so,
    and how to go on (exit 128 + the signal)."""
    from trainer.errors import Interrupted, interrupt_name

    bills = " (and bills)" if backend.CLOUD else ""
    pull = f"`launcher pull {job} --dest {dest}`" if dest else f"`launcher pull {job}`"
    return Interrupted(f"stopped watching {job} on {interrupt_name(interrupt)}; the job runs on{bills}: "
                       f"`launcher stop {job}` stops it, `launcher logs {job} --follow` watches it again, "
                       f"{pull} fetches its outputs once it completes", interrupt)


def _raise_if_failed(record, info):
    if info["status"] == "Failed":
        raise GankitError(f"job {record['job']} failed: {info.get('failure_reason') or 'no reason given'}")


# --- watching -----------------------------------------------------------------------------------

def _describe(record) -> dict:
    from launcher import backends

    return backends.get(record["backend"]).describe(record)


def _duration(info) -> str:
    from datetime import datetime, timezone

    from launcher.backends import FINAL_STATES
    from launcher.durations import format_hms

    if not info.get("started") or (info.get("status") in FINAL_STATES and not info.get("ended")):
        return "-"  # not started, or ended at a moment nobody recorded: a clock still running would mislead
    try:
        start = datetime.fromisoformat(str(info["started"]))
        end = datetime.fromisoformat(str(info["ended"])) if info.get("ended") else datetime.now(timezone.utc)
    except ValueError:  # a record edited by hand
        return "-"
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    return format_hms(max((end - start).total_seconds(), 0))


def _row(record, info) -> dict:
    hp = record.get("hyperparameters", {})
    savings = info.get("spot_savings")
    return {"name": record["job"], "backend": record["backend"], "status": info.get("status", "?"),
            "dataset": record.get("dataset"), "epochs": hp.get("epochs", "64"),
            "started": (info.get("started") or record.get("submitted_at") or "-")[:19].replace("T", " "),
            "duration": _duration(info), "instance": f"{record.get('instance_type')}"
            + (f" x{record['instance_count']}" if record.get("instance_count", 1) > 1 else ""),
            "spot_savings": f"{savings:.0%}" if savings is not None else "-",
            "failure_reason": info.get("failure_reason")}


@cli.command()
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(job, as_json):
    """Show a job's state, duration, instance and (spot) savings."""
    from launcher import backends, jobs
    from launcher.runinfo import cut_short_note

    record = jobs.load(job)
    backend = backends.get(record["backend"])
    info = backend.describe(record)
    outputs = backend.output_uri(record)
    row = dict(_row(record, info), cut_short=cut_short_note(record, info.get("status")))
    if as_json:
        echo(json.dumps({**row, "output_uri": outputs, "details": info}, indent=2, default=str))
    else:
        _echo_table([(k.replace("_", " "), str(v)) for k, v in row.items() if v is not None] + [("outputs", outputs)])
    _raise_if_failed(record, info)


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_jobs(as_json):
    """List the jobs this launcher submitted, newest first."""
    from launcher import jobs

    rows, unknown = [], {}
    for record in jobs.all_jobs(on_bad=lambda message: echo(f"warning: {message}", err=True)):
        try:
            info = _describe(record)
        except GankitError as e:
            info = {"status": "unknown", "failure_reason": str(e)}
            unknown[str(e)] = None  # why, said once (expired credentials are the same line for every job)
        rows.append(_row(record, info))
    for message in unknown:
        echo(f"warning: status unknown: {message}", err=True)
    if as_json:
        echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        echo("no jobs yet: `launcher submit --dataset zalando --epochs 1` starts one")
        return
    columns = ["name", "backend", "status", "dataset", "epochs", "started", "duration", "instance", "spot_savings"]
    cells = [{c: printable_cell(r[c]) for c in columns} for r in rows]  # one line each, and as wide as it is shown
    widths = {c: max(len(c), *(len(r[c]) for r in cells)) for c in columns}
    echo("  ".join(c.replace("_", " ").upper().ljust(widths[c]) for c in columns).rstrip())
    for r in cells:
        echo("  ".join(r[c].ljust(widths[c]) for c in columns).rstrip())


@cli.command()
@click.argument("job")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the job ends.")
@click.option("--verbose", "-v", is_flag=True, help="Keep TensorFlow's own start-up and info lines.")
def logs(job, follow, verbose):
    """Print a job's log (CloudWatch for SageMaker, the run prefix for EC2, a file locally).

    With --follow it ends with the job, and exits 1 if the job failed, as `status` does."""
    from launcher import backends, jobs
    from launcher.quiet import log_echo

    record = jobs.load(job)
    log_lines = log_echo(echo, verbose)
    backend = backends.get(record["backend"])
    try:
        backend.logs(record, follow=follow, print_line=log_lines)
    except KeyboardInterrupt as e:
        if not follow:
            raise
        raise _stopped_watching(job, backend, e) from None
    getattr(log_lines, "flush", lambda: None)()
    if follow:  # it watched to the end: `logs -f JOB && launcher pull JOB` must not go on after a failure
        _raise_if_failed(record, backend.describe(record))


@cli.command()
@click.argument("job")
def stop(job):
    """Stop a job; it writes a checkpoint first, and `submit --resume JOB` continues it.

    An EC2 job is asked to stop: its trainer writes the checkpoint to S3, and once the job says it has (or about
    3 minutes passed) its instance is terminated, so this waits. Ctrl-C leaves the request in place (the job
    stops itself), and `launcher stop JOB` again waits for the rest. An EC2 job still installing, with nothing
    trained yet, is terminated at once."""
    from launcher import backends, jobs

    record = jobs.load(job)
    status = _describe(record).get("status")
    if status not in backends.FINAL_STATES:  # else nothing to stop (SageMaker would refuse; the others did nothing)
        status = backends.get(record["backend"]).stop(record)  # the status it ended with since, if it did
    if status:
        echo(f"{job} has ended already ({status}); nothing to stop")
        return
    echo(f"stopping {job}")


# --- results ------------------------------------------------------------------------------------

@cli.command(short_help="Download a job's outputs (resumable) and check its generator loads.")
@click.argument("job")
@click.option("--dest", type=click.Path(), default=None, help="Folder to pull into [./JOB].")
def pull(job, dest):
    """Download a job's generator, samples, metrics and plots (resumable) and check the generator loads."""
    from launcher import jobs
    from launcher.pull import pull as pull_run

    from trainer.errors import Interrupted, interrupt_name

    record = jobs.load(job)
    dest = Path(dest or job)
    try:
        folder = pull_run(record, dest, log=echo)
    except KeyboardInterrupt as e:  # what arrived is whole (atomic files): a second pull fetches only the rest
        raise Interrupted(f"the pull of {job} stopped on {interrupt_name(e)}; `launcher pull {job} --dest {dest}` "
                          "fetches the rest", e) from None
    echo(f"pulled {job} to {folder}")


@cli.command(short_help="Make images from a generator: a pulled folder, a job or an S3 prefix.")
@click.argument("source")
@generate_options
def generate(source, target_class, count, rows, cols, seed, out):
    """Make images from a generator: a pulled folder, a job name, or an s3://.../generator prefix."""
    from launcher.pull import generator_dir
    from launcher.quiet import start_tensorflow
    from trainer.generate import generate_to_file

    folder = generator_dir(source)
    # TensorFlow's start-up lines are caught and dropped as it starts, not for the whole command: the progress
    # of a large --count shows live. A wrong --class or --out is refused before it starts at all.
    path = generate_to_file(folder, out, target_class=target_class, count=count, rows=rows, cols=cols, seed=seed,
                            before_load=start_tensorflow)
    echo(f"wrote {path}")


# --- settings and image -------------------------------------------------------------------------

@cli.group()
def config():
    """Show or set defaults (backend, region, bucket, role, instance_type, image)."""


@config.command(name="show")
def config_show():
    """Print the settings file and the defaults in force."""
    from launcher import settings

    settings.load()  # a malformed file is one line, before anything is printed
    values = {key: value for key in settings.KEYS if (value := settings.get(key)) is not None}
    from_env = [key for key in values if settings.env_override(key)]
    # What the environment sets goes under a header of its own: under the file's name it read as the file's.
    path = settings.config_path()
    echo(f"# {path}" + ("" if path.exists() else " (not written yet: `launcher config set KEY VALUE` writes it)"))
    for key in (key for key in values if key not in from_env):
        echo(f"{key} = {values[key]}")
    if from_env:
        echo("# from the environment (GANKIT_<KEY>), over the file:")
        for key in from_env:
            echo(f"{key} = {values[key]}")
    echo(f"# backend in force: {settings.default_backend()}")


@config.command(name="set")
@click.argument("key")
@click.argument("value")
def config_set(key, value):
    """Set KEY to VALUE (`none` removes it).

    For example `launcher config set backend sagemaker`; `launcher config show` lists what is set."""
    from launcher import settings

    name, setting = key.replace("-", "_"), None if value.lower() == "none" else value
    if name not in settings.KEYS:  # named as typed: update's own line names backend_x for `backend-x`
        raise UsageError(f"unknown setting {key}; known: {', '.join(settings.KEYS)}")
    settings.update(**{name: setting})
    echo(f"{key} = {value}")
    env = settings.env_override(name)
    if env and env != setting:  # else the file changed and every command went on with the variable's value
        echo(f"warning: GANKIT_{name.upper()}={env} overrides this setting; unset it for `{key} = {value}` to apply",
             err=True)


@cli.group()
def image():
    """Build the trainer's Docker image and push it to ECR."""


@image.command(name="push", short_help="Build the trainer's image and push it to ECR.")
@click.option("--repository", default="gankit-trainer", show_default=True, help="ECR repository name.")
@click.option("--tag", default=None, help="Image tag [the gankit version].")
@click.option("--region", default=None, help=REGION_HELP)
def image_push(repository, tag, region):
    """Build docker/Dockerfile and push it to ECR; then `launcher config set image URI`."""
    from launcher.image import push

    uri = push(repository, tag, region)
    echo(f"pushed {uri}; use it with `launcher submit --image {uri}` or `launcher config set image {uri}`")


def main(argv=None):
    from launcher.quiet import quiet_this_process

    quiet_this_process()  # TensorFlow's INFO/WARNING lines say nothing to a launcher user (launcher/quiet.py)
    run_cli(cli, argv, prog_name="launcher")


if __name__ == "__main__":
    main()
