"""The training loop: data in, checkpoints, samples, metrics and a generator out.

Read `train()` top to bottom; everything it calls does one job.
"""

import contextlib
import dataclasses
import hashlib
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import trainer
from trainer import checkpoints, events, plots
from trainer.config import TrainConfig, check_resumed_preset
from trainer.errors import UsageError
from trainer.fsutil import atomic_write_text, ensure_writable_dir, removed_on_error
from trainer.layout import job_of_output
from trainer.progress import Progress, format_duration

LOSS_PLOT_SECONDS = 10.0


def train(cfg: TrainConfig, stop_requested=lambda: False, log=print) -> dict:
    """Train (or resume) the run `cfg` describes; returns its summary.

    `stop_requested` is polled after every step (SIGTERM sets it): the loop then
    writes a checkpoint at once and returns with summary["stopped"] = True.
    """
    from trainer.data import load_dataset
    from trainer.run_storage import prepare

    # Validate everything cheap before the backend's seconds-long import.
    cfg = cfg.resolve()
    storage = prepare(cfg)  # local folders; S3 paths are staged and mirrored
    with removed_on_error(storage.output_dir, storage.checkpoint_dir):  # a run that fails here leaves no folders
        out = ensure_writable_dir(storage.output_dir, "--output-dir")
        ckpt_dir = ensure_writable_dir(storage.checkpoint_dir, "--checkpoint-dir")
        data = load_dataset(cfg.dataset, storage.data_dir, "train", cfg.image_size, cfg.channels, log=log)
        num_classes = _num_classes(cfg, data)
        _schedule(cfg, len(data.images), replicas=1)  # fail fast, before the backend loads
        architecture = checkpoints.architecture(cfg, num_classes, data.images.shape[1:])
        latest = checkpoints.latest_checkpoint(ckpt_dir)
        if latest is not None:
            check_resumed_preset(_recorded_preset(out), cfg.preset)  # its checkpoint holds that preset's networks
        checkpoints.check_architecture(latest, architecture)  # z_dim, shape, classes: before a shape error in the backend

    from trainer.backend import select

    select(cfg.framework)  # before anything imports keras
    import keras

    from trainer.layout import sm_root
    from trainer.device import configure
    from trainer.distribute import choose_placement, split_cpu
    from trainer.export import Generator, export_generator
    from trainer.steps import Pacer, build_nets, make_runner, spec_from

    if cfg.framework == "tensorflow":
        split_cpu()
    setup = configure(cfg.precision, cfg.xla, cfg.seed, cfg.framework)
    placement = choose_placement(cfg.framework, cfg.strategy, sm_root())
    replicas = placement.replicas
    global_batch = cfg.batch_size * replicas
    steps_per_epoch, total_steps = _schedule(cfg, len(data.images), replicas)
    save_dir, chief = ckpt_dir, placement.chief
    if not chief:
        # Other workers save where nobody looks (TensorFlow's multi-worker guide) and publish nothing.
        scratch = Path(tempfile.mkdtemp(prefix=f"gankit-worker{placement.worker}-"))
        out, save_dir = ensure_writable_dir(scratch / "output", "scratch"), scratch / "checkpoints"
        storage = dataclasses.replace(storage, output_uri=None, checkpoint_uri=None)

    image_shape = data.images.shape[1:]
    scope = placement.strategy.scope() if placement.strategy is not None else contextlib.nullcontext()
    with scope:
        # Synchronised batch norm is tf.distribute's; under JAX's DataParallel XLA already sees the global batch.
        nets = build_nets(cfg, image_shape, num_classes, setup.precision,
                          sync_bn=replicas > 1 and cfg.framework == "tensorflow")

    state = {"step": 0, "history": [], "epoch_sums": [0.0, 0.0], "epoch_steps": 0, "epoch_seconds": 0.0,
             "architecture": architecture}
    if latest is not None:
        arrays, state = checkpoints.read_checkpoint(latest)
        state = dict(state, architecture=architecture)
        load_arrays(nets.groups(), arrays, latest)
        log(f"resuming from {latest} at step {state['step']}")
    runner = make_runner(cfg.framework, nets, spec_from(cfg, num_classes, global_batch), data, placement, setup)
    _write_metrics(out, state["history"])  # drop rows written after the checkpoint we resumed from
    run_log = events.RunLog(out, steps_per_epoch, total_steps, state, log)  # losses.jsonl, TensorBoard
    meta = _generator_meta(cfg, data, num_classes, image_shape)
    _write_run_info(out, cfg, setup, data, steps_per_epoch, total_steps, placement)
    log(f"training {cfg.model}/{cfg.preset} on {data.name} ({len(data.images)} images, {image_shape[0]}x{image_shape[1]}x{image_shape[2]}) "
        f"for {total_steps} steps of {global_batch} on {_where(setup, placement)}, {setup.precision}, "
        f"{cfg.framework}{', XLA' if setup.jit_compile and replicas == 1 else ''}")

    writer = checkpoints.CheckpointWriter(save_dir, cfg.keep_checkpoints, after=storage.after_checkpoint)

    def save_checkpoint():  # the loop pays for the host copy; the write and S3 push run beside it
        runner.sync()
        writer.save(state["step"], arrays_of(nets.groups()), state)

    from trainer.evaluate import epoch_hook  # quality figures every --eval-every epochs; None when off

    evaluate_epoch = epoch_hook(cfg, storage.data_dir, image_shape, log) if chief else None
    progress = Progress(total_steps, label="train", start=state["step"])
    log = progress.around(log)  # on a terminal, messages print above the bar instead of on its line
    pacer = Pacer()
    checkpoint_seconds = cfg.checkpoint_minutes * 60
    last_checkpoint = last_plot = time.monotonic()
    stopped = False
    while state["step"] < total_steps and not stopped:
        epoch = state["step"] // steps_per_epoch
        first, last = state["step"] - epoch * steps_per_epoch, min(total_steps - epoch * steps_per_epoch, steps_per_epoch)
        sums = np.asarray(state["epoch_sums"], np.float64)
        t0 = time.monotonic() - state["epoch_seconds"]
        runner.start_epoch(epoch, first, last)
        batch = first
        while batch < last:
            # Many steps per compiled call, but never past the epoch, --max-steps or the next checkpoint.
            n = pacer.steps(last - batch, checkpoint_seconds - (time.monotonic() - last_checkpoint))
            for losses in pacer.timed(lambda: runner.run(batch, n, state["step"]), n):
                sums = sums + losses  # one step at a time, in order: the same sums however steps were grouped
                state["step"] += 1
                state["epoch_steps"] += 1
                run_log.steps(state["step"], sums, state["epoch_steps"])
            batch += n
            progress.update(n, extra=lambda: _progress_text(epoch, cfg.epochs, sums, state["epoch_steps"]))
            stopped = stop_requested()
            # At the epoch's end the epoch's own checkpoint (below) serves both a stop and the clock.
            if batch < last and (stopped or time.monotonic() - last_checkpoint > checkpoint_seconds):
                state.update(epoch_sums=sums.tolist(), epoch_seconds=time.monotonic() - t0)
                save_checkpoint()
                last_checkpoint = time.monotonic()
                if stopped:
                    break
        if stopped and batch < last:
            break
        if state["step"] >= total_steps:
            progress.close()  # end the bar's line, then say what the wait after 100% is for
            log(_after_last_step(total_steps, evaluate_epoch is not None))
        state.update(epoch_sums=sums.tolist(), epoch_seconds=time.monotonic() - t0)
        row = _epoch_row(epoch, state, global_batch)
        if state["epoch_steps"] == steps_per_epoch:
            # A whole epoch joins the history; a partial one (--max-steps) stays
            # in the running sums, so a longer rerun finishes that same epoch.
            state["history"].append(row)
            state.update(epoch_sums=[0.0, 0.0], epoch_steps=0, epoch_seconds=0.0)
        runner.sync()
        sampler = Generator(nets.sampler(), meta)
        if evaluate_epoch:
            evaluate_epoch(sampler, row, state["step"] >= total_steps, out)
        # The loss plot (matplotlib, ~0.1 s) at most every LOSS_PLOT_SECONDS and at the end: on a GPU an epoch can take less.
        plot = state["step"] >= total_steps or time.monotonic() - last_plot >= LOSS_PLOT_SECONDS
        last_plot = time.monotonic() if plot else last_plot
        _end_of_epoch(out, sampler, row["epoch"], _metric_rows(state, global_batch), cfg.seed, plot)
        run_log.epoch(row, plots.grid_path(out / "samples", row["epoch"]))
        save_checkpoint()
        storage.publish_outputs()
        last_checkpoint = time.monotonic()
        log(f"epoch {row['epoch']}/{cfg.epochs}  step {row['step']}  d_loss {row['d_loss']:.4f}  g_loss {row['g_loss']:.4f}  "
            f"{row['images_per_sec']:.0f} img/s  {format_duration(row['seconds'])}")
    progress.close()
    run_log.close()
    writer.wait()  # the last (or the stop's) checkpoint is complete, and pushed, before we export or return

    if stopped:
        log(f"stopped at step {state['step']}; checkpoint written, run the same command to resume")
    else:
        runner.sync()
        _write_metrics(out, _metric_rows(state, global_batch))
        export_generator(_float32_copy(nets.sampler(), cfg, image_shape, num_classes),
                         dict(meta, steps=state["step"], framework=cfg.framework, keras_version=keras.__version__,
                              **(evaluate_epoch.last if evaluate_epoch else {})),
                         out / "generator")
        if chief:
            from trainer.report import report_at_end

            report_at_end(out, log=log)
        storage.publish_outputs()
        log(f"done: {state['step']} steps; generator in {storage.output_uri or out}/generator; "
            f"weights {weights_fingerprint(nets.generator)}")
    if not chief:
        shutil.rmtree(out.parent, ignore_errors=True)  # the scratch folder
    return {"steps": state["step"], "total_steps": total_steps, "stopped": stopped, "history": state["history"],
            "output_dir": str(out), "output_uri": storage.output_uri, "chief": chief}


def arrays_of(groups: dict) -> dict:
    """Every variable as a numpy array, named group/index (the checkpoint payload, the same on both backends)."""
    from keras import ops

    return {f"{name}/{i:04d}": np.asarray(ops.convert_to_numpy(v.value)) for name, variables in groups.items()
            for i, v in enumerate(variables)}


def load_arrays(groups: dict, arrays: dict, where):
    """Assign a checkpoint's arrays to the variables, or fail in one line if they are another network's."""
    expected = {f"{name}/{i:04d}": v for name, variables in groups.items() for i, v in enumerate(variables)}
    mismatch = sorted(set(expected) ^ set(arrays)) or [k for k, v in expected.items() if tuple(v.shape) != arrays[k].shape]
    if mismatch:
        raise UsageError(f"checkpoint {where} holds other networks than this run builds (first difference: "
                         f"{mismatch[0]}); resume with the same options, or use another --checkpoint-dir")
    for key, variable in expected.items():
        variable.assign(arrays[key].astype(variable.dtype))


def _after_last_step(total_steps, evaluating) -> str:
    from trainer.evaluate import DEFAULT_SAMPLES

    quality = f"scoring image quality ({DEFAULT_SAMPLES:,} samples), " if evaluating else ""
    return (f"all {total_steps} steps done; now {quality}the last sample grid, a checkpoint, the exported "
            "generator and report.html")


def _schedule(cfg, n_images, replicas) -> tuple[int, int]:
    """(steps per epoch, total steps) for a global batch of batch size x replicas."""
    steps_per_epoch = n_images // (cfg.batch_size * replicas)
    if steps_per_epoch == 0:
        raise UsageError(f"--batch-size {cfg.batch_size} x {replicas} replica(s) is larger than the dataset "
                         f"({n_images} images); use a smaller batch")
    epochs_steps = cfg.epochs * steps_per_epoch
    return steps_per_epoch, epochs_steps if cfg.max_steps is None else min(cfg.max_steps, epochs_steps)


def _where(setup, placement) -> str:
    replicas = placement.replicas
    return setup.device if replicas == 1 else f"{replicas} replicas ({placement.kind}, {setup.device})"


def weights_fingerprint(model) -> str:
    """A short digest of a model's weights: equal on every worker of a synchronous run."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:16]


def _num_classes(cfg, data) -> int:
    if cfg.model == "dcgan":
        return 0
    if not data.conditional:
        raise UsageError(f"dataset {data.name} has no classes, so it cannot train a cgan; use --model dcgan "
                         "(or put the images in one subfolder per class)")
    return data.num_classes


def _epoch_row(epoch, state, batch_size) -> dict:
    steps, seconds = state["epoch_steps"], state["epoch_seconds"]
    d_loss, g_loss = (x / max(steps, 1) for x in state["epoch_sums"])
    return {"epoch": epoch + 1, "step": state["step"], "d_loss": d_loss, "g_loss": g_loss,
            "images_per_sec": steps * batch_size / max(seconds, 1e-9), "seconds": seconds}


def _metric_rows(state, batch_size) -> list[dict]:
    """metrics.jsonl: every whole epoch, plus the partial one a --max-steps run ended in."""
    if state["epoch_steps"] == 0:
        return state["history"]
    return state["history"] + [_epoch_row(len(state["history"]), state, batch_size)]


def _progress_text(epoch, epochs, sums, steps):
    d_loss, g_loss = (np.asarray(sums) / max(steps, 1)).tolist()
    return f"epoch {epoch + 1}/{epochs}  d_loss {d_loss:.4f}  g_loss {g_loss:.4f}"


def _end_of_epoch(out: Path, generator, epoch_number, rows, seed, plot=True):
    _write_metrics(out, rows)
    plots.save_epoch_grid(generator, out / "samples", epoch_number, seed)
    plots.append_progress_gif(out / "samples", epoch_number)
    if plot:
        plots.save_loss_plot(rows, out / "losses.png", step_rows=events.read_losses(out))


def _write_metrics(out: Path, history):
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))


def _generator_meta(cfg, data, num_classes, image_shape) -> dict:
    return {
        "dataset": data.name,
        "class_names": list(data.class_names) if num_classes else [],
        "conditional": num_classes > 0,
        "model": cfg.model,
        "preset": cfg.preset,
        "z_dim": cfg.z_dim,
        "z_distribution": cfg.z_distribution,
        "image_shape": list(image_shape),
        "value_range": [-1.0, 1.0],
        "steps": 0,
        "selected": "last",  # generator-best/ (with --eval-every) says "best"
        "trainer_version": trainer.__version__,
    }


def _recorded_preset(out: Path) -> str | None:
    try:
        return json.loads((out / "run.json").read_text())["config"]["preset"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_run_info(out, cfg, setup, data, steps_per_epoch, total_steps, placement):
    from trainer.backend import version

    replicas = placement.replicas
    info = {
        "config": cfg.to_dict(),
        "device": setup.device,
        "precision": setup.precision,
        "xla": setup.jit_compile and replicas == 1,
        "strategy": placement.kind,
        "replicas": replicas,
        "global_batch_size": cfg.batch_size * replicas,
        "host": platform.node(),
        "framework": cfg.framework,
        cfg.framework: version(cfg.framework),
        "trainer_version": trainer.__version__,
        "dataset_size": len(data.images),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        # For report titles and `launcher status`: the job (from the run's layout) and whether --max-steps cut it short.
        "job": job_of_output(cfg.output_dir),
        "cut_short": total_steps < cfg.epochs * steps_per_epoch,
    }
    atomic_write_text(out / "run.json", json.dumps(info, indent=2))


def _float32_copy(generator, cfg, image_shape, num_classes):
    """The generator rebuilt in float32, so an export loads and runs anywhere, CPUs included."""
    from trainer.export import float32_model
    from trainer.models import build_generator

    return float32_model(generator, lambda: build_generator(cfg.preset, cfg.z_dim, image_shape, num_classes))
