"""`python -m trainer ...`: train, generate (and the commands other modules add)."""

from pathlib import Path

import click

from trainer.config import ALIASES, DEFAULT_PRESET, LOSSES, MODELS, PRESET_NAMES, PRESETS, TrainConfig
from trainer.errors import Stopped, UsageError, run_cli


def _per_preset(field: str, unset: str = "") -> str:
    """'[preset: book 32, projection 128, ...]' for an option's help (`unset` names a preset's None)."""
    values = ", ".join(f"{name} {unset if value is None else value}" for name, p in PRESETS.items()
                       for value in [getattr(p, field)])
    return f"[preset: {values}]"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="gankit")
def cli():
    """gankit trainer: train GANs and generate images from exported generators."""


@cli.command()
@click.option("--dataset", required=True, help="mnist, zalando (fashion-mnist), emnist, or folder:PATH.")
@click.option("--output-dir", required=True, help="Where metrics, samples, plots and generator/ go.")
@click.option("--data-dir", default=None, help="Folder with the dataset's canonical files (default: cache, system copy, download).")
@click.option("--model", type=click.Choice(MODELS), default="cgan", show_default=True, help="cgan (conditional) or dcgan.")
@click.option("--preset", type=click.Choice(list(PRESET_NAMES)), default=DEFAULT_PRESET, show_default=True,
              help="; ".join(f"{name}: {p.what}" for name, p in PRESETS.items())
              + "; " + ", ".join(f"{alias} = {name}" for alias, name in ALIASES.items()) + ".")
@click.option("--epochs", type=int, default=64, show_default=True)
@click.option("--batch-size", type=int, default=None, help=f"Images per step {_per_preset('batch_size')}.")
@click.option("--z-dim", type=int, default=None, help=f"Length of the noise vector {_per_preset('z_dim')}.")
@click.option("--lr", type=float, default=None, help=f"The generator's Adam learning rate {_per_preset('lr')}.")
@click.option("--d-lr", type=float, default=None,
              help=f"The discriminator's learning rate (unset: --lr) {_per_preset('d_lr', '= --lr')}.")
@click.option("--beta1", type=float, default=None, help=f"Adam beta1 {_per_preset('beta1')}.")
@click.option("--beta2", type=float, default=None, help=f"Adam beta2 {_per_preset('beta2')}.")
@click.option("--smooth", type=float, default=None,
              help=f"One-sided label smoothing, bce loss only {_per_preset('smooth')}.")
@click.option("--loss", type=click.Choice(LOSSES), default=None,
              help=f"bce (non-saturating) or hinge {_per_preset('loss')}.")
@click.option("--aux-weight", type=float, default=None,
              help=f"Auxiliary classifier head on D, its loss weight on real images; 0: no head {_per_preset('aux_weight')}.")
@click.option("--aux-g-weight", type=float, default=None,
              help=f"That classifier's loss weight in G's loss (unset: --aux-weight) {_per_preset('aux_g_weight', '= --aux-weight')}.")
@click.option("--ema", type=float, default=None,
              help=f"Decay of the generator's weight average, the one sampled and exported; 0: off {_per_preset('ema')}.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (results repeat exactly on CPU).")
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps in all (across resumes).")
@click.option("--checkpoint-dir", default=None, help="[default: OUTPUT_DIR/checkpoints]")
@click.option("--checkpoint-minutes", type=float, default=10.0, show_default=True, help="Checkpoint at least this often.")
@click.option("--keep-checkpoints", type=int, default=3, show_default=True)
@click.option("--image-size", type=int, default=None, help="Resize images to this square size (folder datasets: default 64).")
@click.option("--channels", type=int, default=None, help="1 (grey) or 3 (RGB) (folder datasets: default 3).")
@click.option("--precision", type=click.Choice(["auto", "float32", "mixed_float16", "mixed_bfloat16"]), default="auto",
              show_default=True, help="auto: mixed precision on GPUs that support it, float32 on CPU.")
@click.option("--xla", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Compile the step with XLA (auto: on GPUs).")
@click.option("--strategy", type=click.Choice(["auto", "default", "mirrored", "multiworker"]), default="auto",
              show_default=True, help="tf.distribute strategy (auto: several hosts -> multiworker, several GPUs -> "
              "mirrored). --batch-size is per replica.")
@click.option("--eval-every", type=int, default=None,
              help="Score image quality every K epochs (1,000 samples) and at the end (10,000); default: off.")
@click.option("--framework", type=click.Choice(["tensorflow", "jax"]), default=None,
              help="Keras backend that trains [default: $KERAS_BACKEND, else tensorflow]. Checkpoints and the "
              "exported generator load under either.")
def train(**options):
    """Train a GAN; running the same command again resumes from the last checkpoint."""
    train_until_stopped(TrainConfig(**options))


def train_until_stopped(cfg: TrainConfig) -> dict:
    """Train, turning SIGTERM (spot interruptions, `launcher stop`) and Ctrl-C into a checkpoint and a clean stop.

    The loop polls the flag after every step. After the last step it is not
    polled: the export and the final report are short and complete-or-invisible,
    so they finish, and we say so. A second Ctrl-C interrupts at once.
    """
    import signal
    import sys
    import threading

    from trainer.train import train as run

    stop = threading.Event()
    received = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        summary = run(cfg, stop_requested=stop.is_set)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    name = "Ctrl-C (SIGINT)" if received and received[0] == signal.SIGINT else "SIGTERM"
    if summary["stopped"]:
        stopped = Stopped(f"stopped by {name} at step {summary['steps']}; a checkpoint is written and the same "
                          "command resumes")
        if name != "SIGTERM":
            stopped.exit_code = 130  # 128 + SIGINT, as a shell reports it
        raise stopped
    if received:
        print(f"note: {name} arrived during the export after the last step; the export finished first, "
              "so the run is complete", file=sys.stderr)
    return summary


def generate_options(command):
    """The options of `generate`, shared with `launcher generate`."""
    for option in reversed([
        click.option("--class", "target_class", default=None, help="Class index or name (e.g. 7 or sneaker); omit for a mix."),
        click.option("--count", type=int, default=None, help="How many images (.npy output; default 100)."),
        click.option("--rows", type=int, default=None, help="Grid rows (.png output)."),
        click.option("--cols", type=int, default=None, help="Grid columns (.png output)."),
        click.option("--seed", type=int, default=None, help="Random seed for repeatable images."),
        click.option("--out", required=True, type=click.Path(), help="X.npy: uint8 array (N, H, W, C); X.png: a grid."),
    ]):
        command = option(command)
    return command


@cli.command()
@click.argument("generator_dir", type=click.Path())
@generate_options
def generate(generator_dir, target_class, count, rows, cols, seed, out):
    """Make images with an exported generator."""
    from trainer.generate import generate_to_file

    path = generate_to_file(generator_dir, out, target_class=target_class, count=count, rows=rows, cols=cols, seed=seed)
    click.echo(f"wrote {path}")


@cli.command()
@click.option("--dataset", required=True, help="mnist, zalando (fashion-mnist), emnist or folder:PATH.")
@click.option("--to", "to_uri", required=True, help="S3 prefix (or a local folder), e.g. s3://BUCKET/datasets/zalando.")
@click.option("--data-dir", default=None, help="Take the files from this folder instead of the cache/system copy/download.")
def stage(dataset, to_uri, data_dir):
    """Upload a dataset's files and a checksum manifest to S3 (what is there already is skipped)."""
    from trainer.dataset_staging import stage_dataset

    stage_dataset(dataset, to_uri, data_dir, log=click.echo)


@cli.command()
@click.argument("generator_dir", type=click.Path())
@click.option("--data-dir", default=None, help="Folder with the dataset's files, if not the usual place.")
@click.option("--samples", type=int, default=10_000, show_default=True,
              help="Generated and real images compared; figures only compare at the same count.")
def evaluate(generator_dir, data_dir, samples):
    """Score a generator's images with the judge classifier; writes evaluation.json beside it."""
    from trainer.evaluate import evaluate as run, format_table

    result = run(generator_dir, data_dir, samples, log=click.echo)
    click.echo(format_table(result))
    click.echo(f"wrote {Path(generator_dir).resolve().parent / 'evaluation.json'}")


@cli.command()
@click.argument("output_dir", type=click.Path())
@click.option("--price-per-hour", type=float, default=None, help="Instance price in USD, to show the run's cost.")
def report(output_dir, price_per_hour):
    """Write report.html (self-contained) for a run's output folder."""
    from trainer.report import write_report

    click.echo(f"wrote {write_report(output_dir, price_per_hour=price_per_hour)}")


def main(argv=None):
    run_cli(cli, argv, prog_name="python -m trainer")


__all__ = ["cli", "main", "UsageError"]
