"""`launcher evaluate` and `launcher report`: image quality and the run report of a job, on any backend.

One run folder is the truth: the job record's `output_uri` (s3:// or a local
folder). `evaluate JOB` writes evaluation.json into it and rebuilds its
report.html; `report JOB` rebuilds the report from it (with the cost when the
price is known) into a local folder: the run itself for a local job, else a
copy in gankit's cache, or `--out DIR` for any backend. Registered lazily by
launcher.cli as `launcher.quality:evaluate` / `launcher.quality:report`.
"""

import webbrowser
from pathlib import Path

import click

from trainer import layout, s3
from trainer.errors import UsageError, echo
from trainer.fsutil import cache_root


def job_output(job: str) -> tuple[dict, str]:
    """(job record, its output URI): s3://... or a local folder."""
    from launcher import jobs

    record = jobs.load(job)
    output_uri = record.get("output_uri")
    if not output_uri:
        raise UsageError(f"job {job} has no output location in its record; was it submitted by this launcher?")
    return record, output_uri


def local_copy(job: str, output_uri: str, out_dir=None) -> Path:
    """The job's output as a local folder: a local job's own folder, else (or with `out_dir`) a fresh copy."""
    from launcher.pull import copy_tree

    local = not s3.is_s3(output_uri)
    if not (Path(output_uri).is_dir() if local else s3.list_objects(output_uri)):
        raise UsageError(f"job {job} has no output yet at {output_uri}; wait for it to finish (`launcher status {job}`)")
    if local and not out_dir:
        return Path(output_uri)
    target = Path(out_dir) if out_dir else cache_root() / "jobs" / job / "output"
    if local:
        return copy_tree(Path(output_uri), target, label=f"copying {job} output")
    return s3.download_prefix(output_uri, target, label=f"{job} output")


def _is_job(name: str) -> bool:
    from launcher import jobs

    return "/" not in name and (jobs.jobs_dir() / f"{name}.json").is_file()


@click.command()
@click.argument("job_or_generator")
@click.option("--data-dir", default=None, help="Folder with the dataset's files, if not the usual place.")
@click.option("--samples", type=int, default=10_000, show_default=True,
              help="Generated and real images compared; figures only compare at the same count.")
def evaluate(job_or_generator, data_dir, samples):
    """Score a job's (or a folder's) generator; writes evaluation.json into the run and rebuilds its report.

    A job name means the job's run output, wherever you are (a local folder, or S3: the
    generator is scored here and evaluation.json and report.html are uploaded to the run).
    A path (./JOB, a pulled run folder or a generator folder) means that folder.
    """
    from trainer.evaluate import RESULT_FILE, check_samples, evaluate as run, format_table

    check_samples(samples)  # now, not after a download and TensorFlow's start
    if _is_job(job_or_generator):
        record, output_uri = job_output(job_or_generator)
        folder = local_copy(job_or_generator, output_uri)
        if not (folder / "generator" / "generator.json").is_file():
            raise UsageError(f"job {job_or_generator} has no generator yet at {layout.join(output_uri, 'generator')}; "
                             f"wait for it to finish (`launcher status {job_or_generator}`)")
        generator_dir, price, cost_note = folder / "generator", _price_per_hour(record), _cost_note(record)
    elif Path(job_or_generator).exists():
        from launcher.pull import generator_dir as local_generator

        generator_dir, output_uri, price, cost_note = local_generator(job_or_generator), None, None, None
        folder = generator_dir.resolve().parent
    else:
        if "/" not in job_or_generator:
            job_output(job_or_generator)  # an unknown job: says so, and how to list them
        raise UsageError(f"{job_or_generator}: no such generator or run folder (or give a job name)")
    from launcher.quiet import start_tensorflow

    start_tensorflow()  # its start-up lines say nothing to a user (launcher/quiet.py)
    result = run(generator_dir, data_dir, samples, log=echo)
    echo(format_table(result))
    written = [folder / RESULT_FILE]
    if _is_run(folder):
        from trainer.report import write_report

        written.append(write_report(folder, price_per_hour=price, cost_note=cost_note))
    for path in written:
        if output_uri and s3.is_s3(output_uri):  # the evaluation first: a report never shows figures the run lacks
            s3.write_bytes(layout.join(output_uri, path.name), path.read_bytes())
            echo(f"wrote {layout.join(output_uri, path.name)}")
        else:
            echo(f"wrote {path}")


def _is_run(folder: Path) -> bool:
    """A run's output folder (not a bare generator folder somewhere)."""
    return (folder / "metrics.jsonl").is_file() or (folder / "run.json").is_file()


@click.command()
@click.argument("job")
@click.option("--out", "out_dir", type=click.Path(), default=None,
              help="Where to put a copy of the job's output and its report.html [a local job's own folder, "
                   "else gankit's cache].")
@click.option("--open", "open_browser", is_flag=True, help="Open the report in the web browser.")
def report(job, out_dir, open_browser):
    """Rebuild a job's report.html from its run output (with its cost when the price is known); print where it is."""
    from trainer.report import write_report

    record, output_uri = job_output(job)
    folder = local_copy(job, output_uri, out_dir)
    from launcher.quiet import tensorflow_quietly

    with tensorflow_quietly():  # the report loads the generator for its class grids
        path = write_report(folder, price_per_hour=_price_per_hour(record), cost_note=_cost_note(record))
    echo(f"report: {path}")
    if open_browser and not webbrowser.open(path.resolve().as_uri()):
        echo("no web browser found; open the file above by hand")


def _cost_note(record: dict):
    """What the report says of a job's cost where no price applies: nothing, for a job that ran here."""
    from launcher import backends

    return None if backends.get(record.get("backend", "local")).CLOUD else "none: a local job runs on this machine"


def _price_per_hour(record: dict):
    """The hourly price of the job's instances, or None (local jobs, unknown types)."""
    from launcher import backends

    if not backends.get(record.get("backend", "local")).CLOUD or not record.get("instance_type"):
        return None
    try:
        from launcher import pricing

        per_instance = pricing.price_per_hour(record["instance_type"], bool(record.get("spot")))
    except (UsageError, KeyError, ValueError):
        return None
    if not per_instance:
        return None  # not in the price table
    return per_instance * int(record.get("instance_count") or 1)
