"""`launcher evaluate` and `launcher report`: image quality and the run report of a job, on any backend.

Both work from the job record's `output_uri` (s3:// or a local folder), so a
local, SageMaker or EC2 job is handled the same way. Registered lazily by
launcher.cli as `launcher.quality:evaluate` / `launcher.quality:report`.
"""

import webbrowser
from pathlib import Path

import click

from trainer import layout, s3
from trainer.errors import UsageError
from trainer.fsutil import cache_root


def job_output(job: str) -> tuple[dict, str]:
    """(job record, its output URI): s3://... or a local folder."""
    from launcher import jobs

    record = jobs.load(job)
    output_uri = record.get("output_uri")
    if not output_uri:
        raise UsageError(f"job {job} has no output location in its record; was it submitted by this launcher?")
    return record, output_uri


def local_copy(job: str, output_uri: str, out_dir=None, skip=()) -> Path:
    """The job's output as a local folder: the folder itself for a local job, else a download of the S3 prefix."""
    if not s3.is_s3(output_uri):
        folder = Path(output_uri)
        if not folder.is_dir():
            raise UsageError(f"job {job} has no output yet at {folder}; wait for it to finish (`launcher status {job}`)")
        return folder
    if not s3.list_objects(output_uri):
        raise UsageError(f"job {job} has no output yet at {output_uri}; wait for it to finish (`launcher status {job}`)")
    target = Path(out_dir) if out_dir else cache_root() / "jobs" / job / "output"
    return s3.download_prefix(output_uri, target, label=f"{job} output")


@click.command()
@click.argument("job_or_generator")
@click.option("--data-dir", default=None, help="Folder with the dataset's files, if not the usual place.")
@click.option("--samples", type=int, default=10_000, show_default=True,
              help="Generated and real images compared; figures only compare at the same count.")
def evaluate(job_or_generator, data_dir, samples):
    """Score a job's (or a generator folder's) images; writes evaluation.json beside the generator.

    For a job whose output is in S3 the generator is fetched, scored here, and
    evaluation.json is uploaded next to it.
    """
    from trainer.evaluate import RESULT_FILE, evaluate as run, format_table

    if Path(job_or_generator).exists():
        from launcher.pull import generator_dir as local_generator

        generator_dir, output_uri = local_generator(job_or_generator), None  # a generator or a pulled run folder
    else:
        _, output_uri = job_output(job_or_generator)
        if s3.is_s3(output_uri):
            generator_uri = layout.join(output_uri, "generator")
            if not s3.list_objects(generator_uri):
                raise UsageError(f"job {job_or_generator} has no generator yet at {generator_uri}; "
                                 f"wait for it to finish (`launcher status {job_or_generator}`)")
            generator_dir = s3.download_prefix(generator_uri, cache_root() / "jobs" / job_or_generator / "output" / "generator",
                                               label="generator")
        else:
            generator_dir = Path(output_uri) / "generator"
    from launcher.quiet import start_tensorflow

    start_tensorflow()  # its start-up lines say nothing to a user (launcher/quiet.py)
    result = run(generator_dir, data_dir, samples, log=click.echo)
    click.echo(format_table(result))
    written = generator_dir.resolve().parent / RESULT_FILE
    if output_uri and s3.is_s3(output_uri):
        s3.write_bytes(layout.join(output_uri, RESULT_FILE), written.read_bytes())
        click.echo(f"wrote {layout.join(output_uri, RESULT_FILE)}")
    else:
        click.echo(f"wrote {written}")


@click.command()
@click.argument("job")
@click.option("--out", "out_dir", type=click.Path(), default=None,
              help="Where to put the job's output and report.html (S3 jobs; default: gankit's cache).")
@click.option("--open", "open_browser", is_flag=True, help="Open the report in the web browser.")
def report(job, out_dir, open_browser):
    """Fetch a job's report.html (rebuilt with its cost when the price is known) and print where it is."""
    from trainer.report import REPORT_FILE, write_report

    record, output_uri = job_output(job)
    folder = local_copy(job, output_uri, out_dir)
    price = _price_per_hour(record)
    path = folder / REPORT_FILE
    if price is not None or not path.is_file():
        from launcher.quiet import tensorflow_quietly

        with tensorflow_quietly():  # the report loads the generator for its class grids
            path = write_report(folder, price_per_hour=price)  # adds the cost, or builds a missing report
    click.echo(f"report: {path}")
    if open_browser and not webbrowser.open(path.resolve().as_uri()):
        click.echo("no web browser found; open the file above by hand")


def _price_per_hour(record: dict):
    """The hourly price of the job's instances, or None (local jobs, unknown types)."""
    if record.get("backend", "local") == "local" or not record.get("instance_type"):
        return None
    try:
        from launcher import pricing

        per_instance = pricing.price_per_hour(record["instance_type"], bool(record.get("spot")))
    except (UsageError, KeyError, ValueError):
        return None
    if not per_instance:
        return None  # not in the price table
    return per_instance * int(record.get("instance_count") or 1)
