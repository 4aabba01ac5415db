"""The SageMaker container contract, also emulated locally and on EC2.

SageMaker starts the container's `train` with this layout (GANKIT_SM_ROOT moves
the root, default /opt/ml):

    input/config/hyperparameters.json   the `train` flags, underscores for dashes, values as strings
    input/data/training/                the dataset's canonical files
    checkpoints/                        synced with S3 by SageMaker, restored on restart
    model/                              the exported generator (uploaded as output/model/)
    output/data/                        --output-dir when no `output_dir` is given (uploaded as output/data/)
    output/failure                      why the job failed, shown by DescribeTrainingJob

`output_dir` and `checkpoint_dir` hyperparameters (the launcher passes the run's
`runs/<job>/output` and, off SageMaker, `runs/<job>/checkpoints`) make the
trainer write straight into the shared layout, so every backend leaves the same
one. Outputs then have one transport, the trainer's mirror; only the generator
is still copied to model/.
"""

import contextlib
import json
import os
import shlex
import shutil
from pathlib import Path

import click

from trainer.config import TrainConfig
from trainer.errors import GankitError, UsageError, run_cli
from trainer.export import META_FILE
from trainer.fsutil import atomic_file, atomic_write_text
from trainer.layout import job_of_output, sm_root
from trainer.sagemaker_stop import stop_watcher
from trainer.stopping import train_until_stopped

# Keys SageMaker or its script mode add that are not ours.
FOREIGN_KEYS = ("model_dir",)


def read_config(root: Path) -> TrainConfig:
    """hyperparameters.json and the contract's folders -> the run's (unresolved) TrainConfig."""
    path = root / "input" / "config" / "hyperparameters.json"
    try:
        hyperparameters = json.loads(path.read_text()) if path.exists() else {}
    except ValueError as e:
        raise UsageError(f"{path} is not valid JSON ({e}); pass hyperparameters as a JSON object of strings") from None
    if not isinstance(hyperparameters, dict):
        raise UsageError(f"{path} must hold a JSON object of strings")
    values = {"output_dir": str(root / "output" / "data"), "checkpoint_dir": str(root / "checkpoints")}
    training = root / "input" / "data" / "training"
    if training.is_dir():
        values["data_dir"] = str(training)
    values.update((k, v) for k, v in hyperparameters.items()
                  if not (k.startswith("sagemaker_") or k in FOREIGN_KEYS))
    return TrainConfig.from_hyperparameters(values)


def command_line(cfg: TrainConfig) -> str:
    """The `train` command a config amounts to, for the job's log."""
    return " ".join(f"--{k.replace('_', '-')} {shlex.quote(v)}" for k, v in cfg.to_hyperparameters().items())


def resume_hint(cfg: TrainConfig, environ=os.environ) -> str:
    """How a stopped job resumes: not by running its command again (the launcher ran it) but with
    `launcher submit --resume JOB`: the job SageMaker runs, else the one whose run the layout names."""
    job = environ.get("TRAINING_JOB_NAME") or environ.get("GANKIT_JOB") or job_of_output(cfg.output_dir) or "JOB"
    return f"`launcher submit --resume {job}` continues it"


@contextlib.contextmanager
def staged_copy_advice(cfg: TrainConfig):
    """A job's data is the copy the launcher staged, not a --data-dir of the user's: a damaged or missing file
    there is mended by staging it again, which the launcher does for a prefix without a manifest."""
    from trainer.data.fetch import DATA_DIR_FIX, DATA_DIR_MISSING_FIX, STAGED_COPY_FIX

    try:
        yield
    except UsageError as e:
        message = str(e)
        # STAGED_COPY_FIX first: it ends with DATA_DIR_FIX, and its advice for a folder of one's own is not a job's.
        fix = next((f for f in (STAGED_COPY_FIX, DATA_DIR_FIX, DATA_DIR_MISSING_FIX) if message.endswith(f)), None)
        if fix is None:
            raise
        output = str(cfg.output_dir).rstrip("/")
        job = job_of_output(output)
        datasets = output[:-len(f"/runs/{job}/output")] + "/datasets/" if job else "the bucket's datasets/"
        raise UsageError(message[:-len(fix)] + f"the dataset staged for this job is damaged: delete the "
                         f"MANIFEST.json of its copy in {datasets} and submit the job again; the launcher then "
                         f"stages it anew") from None


def write_failure(root: Path, message: str):
    """Whole or not at all: on a full disk (a likely reason to fail) the message still reaches the log, and the
    exit code stays the failure's own (143 for a stop, not 1 and a traceback from here)."""
    with contextlib.suppress(OSError):
        atomic_write_text(root / "output" / "failure", message + "\n")


def run_contract(root: Path) -> dict:
    cfg = read_config(root)
    print(f"gankit: starting the trainer: train {command_line(cfg)}", flush=True)
    # A SageMaker stop script mode never passes on arrives as SIGTERM all the same.
    with stop_watcher(), staged_copy_advice(cfg):
        summary = train_until_stopped(cfg, resume=resume_hint(cfg))
    if not summary["chief"]:
        return summary  # only the chief's results leave the container
    # SageMaker's model artifact (ModelArtifacts.S3ModelArtifacts) is how its users deploy a model, so the
    # generator goes to model/ even when the run's layout has it too: a few MB, the one copy kept on purpose.
    # The other outputs are not copied to output/data: with an `output_dir` the trainer publishes them to
    # the run's prefix, and SageMaker storing them again would be a second transport.
    copy_generator(Path(summary["output_dir"]) / "generator", root / "model")
    return summary


def copy_generator(source: Path, model: Path):
    """The exported generator into model/, each file complete or absent and generator.json last, so that a
    generator.json there vouches for the files it describes (`launcher status` of a local job whose wrapper died
    goes by it). Not a folder renamed into place: SageMaker's /opt/ml/model may be a mount point."""
    try:
        model.mkdir(parents=True, exist_ok=True)
        files = sorted((p for p in source.iterdir() if p.is_file()), key=lambda p: p.name == META_FILE)
        (model / META_FILE).unlink(missing_ok=True)  # an older copy's must not vouch for files being replaced
        for path in files:
            with path.open("rb") as src, atomic_file(model / path.name) as out:
                shutil.copyfileobj(src, out)
    except OSError as e:  # a full disk: one line, as any failure of the run
        raise GankitError(f"the generator could not be copied into {model} ({e.strerror or e}); the run's own copy "
                          f"is in {source}") from None


def main(argv=None):
    """The container's `train` entrypoint (also a script-mode entry point)."""
    root = sm_root()

    @click.command()
    def entry():
        run_contract(root)

    # Script mode passes the hyperparameters as arguments too; the JSON file is the source of truth.
    run_cli(entry, [], prog_name="train", on_error=lambda message: write_failure(root, message))


if __name__ == "__main__":
    main()
