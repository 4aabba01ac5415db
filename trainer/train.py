"""The training loop: data in, checkpoints, samples, metrics and a generator out.

Read `train()` top to bottom; everything it calls does one job:
trainer/run_setup.py gets the run ready, trainer/epoch_loop.py runs an epoch's
steps, `end_epoch` and `finish` below write what an epoch and a run leave behind.
"""

import shutil
import time

from trainer import events, plots
from trainer.config import TrainConfig
from trainer.device import policy_kept
from trainer.epoch_loop import EpochLoop
from trainer.errors import RESUME_BY_HAND, GankitError
from trainer.fsutil import written_or_one_line
from trainer.progress import format_duration
from trainer.run_info import record_stop, write_metrics
from trainer.run_setup import build_training, prepare_run, release
from trainer.weights import weights_fingerprint

LOSS_PLOT_SECONDS = 10.0


def train(cfg: TrainConfig, stop_requested=lambda: False, log=print, resume_hint=RESUME_BY_HAND) -> dict:
    """Train (or resume) the run `cfg` describes; returns its summary.

    `stop_requested` is polled after every compiled call (SIGTERM sets it): the loop
    then writes a checkpoint at once and returns with summary["stopped"] = True; its caller says so
    (`train_until_stopped`: one line, which names the signal). `resume_hint` ends a failure's one line
    (a failing disk's) in place of "run the same command to resume".
    Keras' global precision policy is the caller's again when it returns.
    """
    try:
        with policy_kept():
            summary = _train(cfg, stop_requested, log, resume_hint)
    except GankitError as e:  # a job is resumed through the launcher, not by running its command again
        e.args = (str(e).replace(RESUME_BY_HAND, resume_hint),)
        raise
    return summary


def _train(cfg, stop_requested, log, resume_hint) -> dict:
    prepared = prepare_run(cfg, log)  # options, folders, data, the checkpoint's architecture: before the backend loads
    try:
        return _run(build_training(prepared, log), stop_requested, resume_hint)  # backend, placement, networks (resumed), run.json
    finally:
        release(prepared.lock)  # the checkpoint folder is free for the next run (one in this process too)


def _run(t, stop_requested, resume_hint) -> dict:
    loop = EpochLoop(t, stop_requested)
    while t.state.step < t.total_steps and not loop.stopped:
        epoch = t.state.step // t.steps_per_epoch
        if not loop.run(epoch):
            break  # stopped inside the epoch; its checkpoint is written
        row = end_epoch(t, epoch, loop)
        loop.checkpoint()
        t.log(f"epoch {row['epoch']}/{t.cfg.epochs}  step {row['step']}  d_loss {row['d_loss']:.4f}  "
              f"g_loss {row['g_loss']:.4f}  {row['images_per_sec']:.0f} img/s  {format_duration(row['seconds'])}")
    loop.wait()  # the last (or the stop's) checkpoint is complete, and pushed, before we export or return
    # A stop polled after the last call came once the run had every step: its export is seconds, and the stop
    # waits for it (train_until_stopped says so) rather than leave a resume to do only that.
    return finish(t, loop.stopped and t.state.step < t.total_steps, resume_hint)


def end_epoch(t, epoch: int, loop) -> dict:
    """The epoch's row in metrics.jsonl, its quality figures and sample grid; the files they go to are
    written beside the next epoch's steps (`epoch_files`)."""
    from trainer.export import Generator

    final = t.state.step >= t.total_steps
    if final:
        t.progress.close()  # end the bar's line, then say what the wait after 100% is for
        t.log(_after_last_step(t.total_steps, t.evaluate and t.evaluate.final_samples()))
    row = t.state.close_epoch(epoch, t.steps_per_epoch, t.global_batch)
    t.runner.sync()
    sampler = Generator(_sampled(t), t.meta)
    if t.evaluate:
        with written_or_one_line(f"epoch {row['epoch']}'s best generator and evaluation", t.out):
            t.evaluate(sampler, row, final, t.out)  # adds the figures to the row
    if final:  # kept in the checkpoint: a run stopped (or killed) before its export still exports with it
        t.state.selection = dict(t.evaluate.last) if t.evaluate else {}
    # The loss plot (matplotlib, ~0.1 s) at most every LOSS_PLOT_SECONDS and at the end: on a GPU an epoch can take less.
    plot = final or time.monotonic() - t.last_plot >= LOSS_PLOT_SECONDS
    if plot:
        t.last_plot = time.monotonic()
    # Only the grid's drawing needs the generator; encoding it is host work for the files thread.
    rows = list(t.state.metric_rows(t.global_batch))  # a copy: the next epoch appends to the history
    loop.write_files(epoch_files, t, row, rows, sampler.grid(seed=t.cfg.seed), plot)
    return row


def epoch_files(t, row: dict, rows: list[dict], grid, plot: bool):
    """metrics.jsonl, the grid's PNG and GIF frame, the loss plot when due, the TensorBoard record. They
    run beside the next epoch: their ~0.1 s of host work would leave a GPU idle for a quarter of an epoch."""
    with written_or_one_line(f"epoch {row['epoch']}'s outputs", t.out):
        write_metrics(t.out, rows)
        png = plots.save_epoch_grid(grid, t.out / "samples", row["epoch"])
        plots.append_progress_gif(t.out / "samples", row["epoch"])
        if plot:
            plots.save_loss_plot(rows, t.out / "losses.png", step_rows=events.read_losses(t.out))
        t.run_log.epoch(row, png)


def finish(t, stopped: bool, resume_hint: str) -> dict:
    """After the last step (or a stop): the exported generator (not at a stop), report.html, the last upload;
    the summary (`train` says how a stop resumes, and so does the report)."""
    t.progress.close()
    with written_or_one_line("the TensorBoard record", t.out):
        t.run_log.close()
    state, out = t.state, t.out
    if stopped:
        rows = state.metric_rows(t.global_batch)
        with written_or_one_line("metrics.jsonl and the loss plot", out):
            write_metrics(out, rows)  # with the open epoch's row: the report's step and training time reach the stop
            if t.chief and rows:  # drawn at most every LOSS_PLOT_SECONDS so far: a stopped run's plot shows every epoch
                plots.save_loss_plot(rows, out / "losses.png", step_rows=events.read_losses(out))
        if t.chief:  # ~0.1 s, ~1 s with a generator/ to draw (2-core CPU): well inside a stop's seconds
            from trainer.report import report_at_end

            with written_or_one_line("run.json", out):
                record_stop(out, state.step, resume_hint)
            report_at_end(out, log=t.log)
        t.storage.publish_outputs()  # the upload an epoch's end skipped while one was running, too
    else:
        from trainer.export import export_generator

        t.runner.sync()
        with written_or_one_line("the exported generator", out):  # the last checkpoint is whole: a rerun exports
            write_metrics(out, state.metric_rows(t.global_batch))
            export_generator(_float32_copy(t), dict(t.meta, steps=state.step, **t.state.selection), out / "generator")
        if t.chief:
            from trainer.report import report_at_end

            report_at_end(out, log=t.log)
        t.storage.publish_outputs()
        t.log(f"done: {state.step} steps; generator in {t.storage.output_uri or out}/generator; "
              f"weights {weights_fingerprint(t.nets.generator)}")
    if not t.chief:
        shutil.rmtree(out.parent, ignore_errors=True)  # the scratch folder
    return {"steps": state.step, "total_steps": t.total_steps, "stopped": stopped, "history": state.history,
            "output_dir": str(out), "output_uri": t.storage.output_uri, "chief": t.chief}


def _after_last_step(total_steps, samples) -> str:
    """What the wait after the last step is for; `samples`: the final evaluation's count (None: no evaluation)."""
    quality = f"scoring image quality ({samples:,} samples), " if samples else ""
    return (f"all {total_steps} steps done; now {quality}the last sample grid, a checkpoint, the exported "
            "generator and report.html")


def _float32_copy(t):
    """The generator rebuilt in float32, so an export loads and runs anywhere, CPUs included."""
    from trainer.export import float32_model
    from trainer.models import build_generator

    cfg = t.cfg
    return float32_model(_sampled(t), lambda: build_generator(cfg.preset, cfg.z_dim, t.image_shape, t.num_classes))


def _sampled(t):
    """The generator that is sampled, evaluated and exported, with batch-norm statistics of its own:
    measured once per step (the last epoch's grid and the export share one pass)."""
    from trainer.standing_stats import standing_inputs

    if t.sampled is None or t.sampled[0] != t.state.step:
        inputs = standing_inputs(t.cfg.z_dim, t.num_classes, t.cfg.z_distribution, seed=t.cfg.seed)
        t.sampled = (t.state.step, t.nets.sampler(inputs))
    return t.sampled[1]
