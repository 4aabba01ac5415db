"""`python -m trainer ...`: train, generate (and the commands other modules add)."""

from pathlib import Path

import click

from trainer.config import TrainConfig, options
from trainer.errors import UsageError, echo, run_cli
from trainer.stopping import train_until_stopped


class InOrder(click.Group):
    """Lists its commands in the order this module defines them: the order a run uses them, not by name."""

    def list_commands(self, ctx):
        return list(self.commands)


@click.group(cls=InOrder, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="gankit")
def cli():
    """gankit trainer: train a GAN, make images with its generator, score it and report on the run; stage data.

    \b
    Example (Fashion-MNIST, 64 epochs):
      python -m trainer train --dataset zalando --epochs 64 --output-dir runs/z1
    """


def config_option(name: str, **overrides):
    """TrainConfig's field `name` as a Click option (its flag, type, choices, default and help);
    `overrides` replace any of Click's arguments (the launcher's `submit` leaves defaults to the trainer)."""
    o = options()[name]
    kwargs = dict(type=click.Choice(list(o.choices)) if o.choices else o.type, required=o.required,
                  show_default=o.show_default, help=o.help)
    if not o.required:  # Click 8.3 takes an explicit default=None as a value, so a required option gets none
        kwargs["default"] = o.default
    return click.option(o.flag, **{**kwargs, **overrides})


def config_options(command):
    """Every TrainConfig field as an option, in the dataclass's order."""
    for name in reversed(options()):
        command = config_option(name)(command)
    return command


@cli.command(short_help="Train a GAN; the same command again resumes it.")
@config_options
def train(**values):
    """Train a GAN; running the same command again resumes from the last checkpoint."""
    train_until_stopped(TrainConfig(**values))


def generate_options(command):
    """The options of `generate`, shared with `launcher generate`."""
    for option in reversed([
        click.option("--class", "target_class", default=None, help="Class index or name (e.g. 7 or sneaker); omit for a mix."),
        click.option("--count", type=int, default=None, help="How many images [.npy: 100; .png: as the grid holds, "
                     "a grid sized to fit when --count is given]."),
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
    echo(f"wrote {path}")


@cli.command(short_help="Score a generator's images; writes evaluation.json.")
@click.argument("generator_dir", type=click.Path())
@click.option("--data-dir", default=None, help="Folder with the dataset's files, if not the usual place.")
@click.option("--samples", type=int, default=10_000, show_default=True,
              help="Generated and real images compared; figures only compare at the same count.")
def evaluate(generator_dir, data_dir, samples):
    """Score a generator's images with the judge classifier; writes evaluation.json beside it.
    GENERATOR_DIR is its generator/ folder, or the run's output folder as `generate` takes it."""
    from trainer.evaluate import check_samples, evaluate as run, format_table
    from trainer.layout import local_generator

    check_samples(samples)  # now, not after the generator and TensorFlow have loaded
    generator_dir = local_generator(generator_dir)
    result = run(generator_dir, data_dir, samples, log=echo)
    echo(format_table(result))
    echo(f"wrote {Path(generator_dir).resolve().parent / 'evaluation.json'}")


@cli.command()
@click.argument("output_dir", type=click.Path())
@click.option("--price-per-hour", type=float, default=None, help="Instance price in USD, to show the run's cost.")
def report(output_dir, price_per_hour):
    """Write report.html (self-contained) for a run's output folder."""
    import math

    from trainer.report import write_report

    if price_per_hour is not None and not (math.isfinite(price_per_hour) and price_per_hour >= 0):  # "$nan" once
        raise UsageError(f"--price-per-hour {price_per_hour}: must be the instance's price in USD, 0 or more, e.g. 1.21")
    echo(f"wrote {write_report(output_dir, price_per_hour=price_per_hour)}")


@cli.command(short_help="Upload a dataset and its checksum manifest to S3.")
@click.option("--dataset", required=True, help="mnist, zalando (fashion-mnist), emnist or folder:PATH.")
@click.option("--to", "to_uri", required=True, help="S3 prefix (or a local folder), e.g. s3://BUCKET/datasets/zalando.")
@click.option("--data-dir", default=None, help="Take the files from this folder instead of the cache/system copy/download.")
def stage(dataset, to_uri, data_dir):
    """Upload a dataset's files and a checksum manifest to S3 (what is there already is skipped)."""
    from trainer.dataset_staging import stage_dataset

    stage_dataset(dataset, to_uri, data_dir, log=echo)


def main(argv=None):
    run_cli(cli, argv, prog_name="python -m trainer")


__all__ = ["cli", "main", "train_until_stopped", "UsageError"]
