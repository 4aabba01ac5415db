"""The SageMaker container contract, also emulated locally and on EC2.

SageMaker starts the container's `train` with this layout (GANKIT_SM_ROOT moves
the root, default /opt/ml):

    input/config/hyperparameters.json   the `train` flags, underscores for dashes, values as strings
    input/data/training/                the dataset's canonical files
    checkpoints/                        synced with S3 by SageMaker, restored on restart
    model/                              the exported generator (uploaded as output/model/)
    output/data/                        everything else under --output-dir (uploaded as output/data/)
    output/failure                      why the job failed, shown by DescribeTrainingJob

`output_dir` and `checkpoint_dir` hyperparameters (the launcher passes the run's
`runs/<job>/output` and, off SageMaker, `runs/<job>/checkpoints`) make the
trainer write straight into the shared layout, so every backend leaves the same
one; the generator is still copied to model/.
"""

import json
import os
import shutil
from pathlib import Path

import click

from trainer.errors import UsageError, run_cli

# Keys SageMaker or its script mode add that are not ours.
FOREIGN_KEYS = ("model_dir",)


def sm_root() -> Path:
    return Path(os.environ.get("GANKIT_SM_ROOT", "/opt/ml"))


def _plain(value) -> str:
    # The SageMaker SDK JSON-encodes values ('"zalando"'); the API passes them as is.
    if isinstance(value, str) and value.startswith('"') and value.endswith('"'):
        try:
            return str(json.loads(value))
        except ValueError:
            pass
    return str(value)


def train_argv(root: Path) -> list[str]:
    """hyperparameters.json and the contract's folders -> the `train` command's arguments."""
    path = root / "input" / "config" / "hyperparameters.json"
    try:
        hyperparameters = json.loads(path.read_text()) if path.exists() else {}
    except ValueError as e:
        raise UsageError(f"{path} is not valid JSON ({e}); pass hyperparameters as a JSON object of strings") from None
    if not isinstance(hyperparameters, dict):
        raise UsageError(f"{path} must hold a JSON object of strings")
    argv = []
    for key, value in hyperparameters.items():
        if key.startswith("sagemaker_") or key in FOREIGN_KEYS or key in ("output_dir", "checkpoint_dir"):
            continue
        argv += [f"--{key.replace('_', '-')}", _plain(value)]
    training = root / "input" / "data" / "training"
    if training.is_dir() and "data_dir" not in hyperparameters:
        argv += ["--data-dir", str(training)]
    output_dir = _plain(hyperparameters.get("output_dir", root / "output" / "data"))
    checkpoint_dir = _plain(hyperparameters.get("checkpoint_dir", root / "checkpoints"))
    return argv + ["--output-dir", output_dir, "--checkpoint-dir", checkpoint_dir]


def write_failure(root: Path, message: str):
    failure = root / "output" / "failure"
    failure.parent.mkdir(parents=True, exist_ok=True)
    failure.write_text(message + "\n")


def run_contract(root: Path) -> dict:
    from trainer.cli import train, train_until_stopped
    from trainer.config import TrainConfig

    argv = train_argv(root)
    print("gankit: starting the trainer: train " + " ".join(argv), flush=True)
    with train.make_context("train", argv) as ctx:  # the CLI's own parsing and checks
        summary = train_until_stopped(TrainConfig(**ctx.params))
    if not summary["chief"]:
        return summary  # only the chief's results leave the container
    out = Path(summary["output_dir"])
    shutil.copytree(out / "generator", root / "model", dirs_exist_ok=True)
    if summary["output_uri"]:  # published to S3 already; SageMaker's own output gets a copy too
        shutil.copytree(out, root / "output" / "data", dirs_exist_ok=True,
                        ignore=lambda folder, names: ["checkpoints"] if Path(folder) == out else [])
    return summary


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
