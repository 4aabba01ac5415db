"""The training loop: data in, checkpoints, samples, metrics and a generator out.

Read `train()` top to bottom; everything it calls does one job.
"""

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


def train(cfg: TrainConfig, stop_requested=lambda: False, log=print) -> dict:
    """Train (or resume) the run `cfg` describes; returns its summary.

    `stop_requested` is polled after every step (SIGTERM sets it): the loop then
    writes a checkpoint at once and returns with summary["stopped"] = True.
    """
    from trainer.data import load_dataset
    from trainer.storage import prepare

    # Validate everything cheap before TensorFlow's seconds-long import.
    cfg = cfg.resolve()
    storage = prepare(cfg)  # local folders; S3 paths are staged and mirrored
    with removed_on_error(storage.output_dir, storage.checkpoint_dir):  # a run that fails here leaves no folders
        out = ensure_writable_dir(storage.output_dir, "--output-dir")
        ckpt_dir = ensure_writable_dir(storage.checkpoint_dir, "--checkpoint-dir")
        data = load_dataset(cfg.dataset, storage.data_dir, "train", cfg.image_size, cfg.channels, log=log)
        num_classes = _num_classes(cfg, data)
        _schedule(cfg, len(data.images), replicas=1)  # fail fast, before TensorFlow loads
        architecture = checkpoints.architecture(cfg, num_classes, data.images.shape[1:])
        latest = checkpoints.latest_checkpoint(ckpt_dir)
        if latest is not None:
            check_resumed_preset(_recorded_preset(out), cfg.preset)  # its checkpoint holds that preset's networks
        checkpoints.check_architecture(latest, architecture)  # z_dim, shape, classes: before a shape error in TF

    import tensorflow as tf

    from trainer.contract import sm_root
    from trainer.device import configure
    from trainer.distribute import choose_strategy, is_chief, split_cpu, worker_id
    from trainer.export import Generator, export_generator
    from trainer.models import build_discriminator, build_generator
    from trainer.train_step import make_optimizer, make_train_step

    split_cpu()
    setup = configure(cfg.precision, cfg.xla, cfg.seed)
    strategy = choose_strategy(cfg.strategy, sm_root())
    replicas = strategy.num_replicas_in_sync
    global_batch = cfg.batch_size * replicas
    steps_per_epoch, total_steps = _schedule(cfg, len(data.images), replicas)
    save_dir, chief = ckpt_dir, is_chief(strategy)
    if not chief:
        # Other workers save where nobody looks (TensorFlow's multi-worker guide) and publish nothing.
        scratch = Path(tempfile.mkdtemp(prefix=f"gankit-worker{worker_id(strategy)}-"))
        out, save_dir = ensure_writable_dir(scratch / "output", "scratch"), scratch / "checkpoints"
        storage = dataclasses.replace(storage, output_uri=None, checkpoint_uri=None)

    image_shape = data.images.shape[1:]
    with strategy.scope():
        generator = build_generator(cfg.preset, cfg.z_dim, image_shape, num_classes, sync_bn=replicas > 1)
        discriminator = build_discriminator(cfg.preset, image_shape, num_classes, sync_bn=replicas > 1,
                                            aux_weight=cfg.aux_weight)
        g_opt = make_optimizer(cfg.lr, cfg.beta1, setup.precision, cfg.beta2)
        d_opt = make_optimizer(cfg.d_lr, cfg.beta1, setup.precision, cfg.beta2)
        g_opt.build(generator.trainable_variables)
        d_opt.build(discriminator.trainable_variables)
    tf_ckpt = tf.train.Checkpoint(generator=generator, discriminator=discriminator, g_opt=g_opt, d_opt=d_opt)
    train_step = make_train_step(generator, discriminator, g_opt, d_opt, seed=cfg.seed, z_dim=cfg.z_dim,
                                 num_classes=num_classes, smooth=cfg.smooth, z_distribution=cfg.z_distribution,
                                 jit_compile=setup.jit_compile and replicas == 1, strategy=strategy,
                                 loss=cfg.loss, aux_weight=cfg.aux_weight, aux_g_weight=cfg.aux_g_weight)

    state = {"step": 0, "history": [], "epoch_sums": [0.0, 0.0], "epoch_steps": 0, "epoch_seconds": 0.0,
             "architecture": architecture}
    if latest is not None:
        state = dict(checkpoints.read_checkpoint(latest, tf_ckpt), architecture=architecture)
        log(f"resuming from {latest} at step {state['step']}")
    _write_metrics(out, state["history"])  # drop rows written after the checkpoint we resumed from
    run_log = events.RunLog(out, steps_per_epoch, total_steps, state, log)  # losses.jsonl, TensorBoard
    meta = _generator_meta(cfg, data, num_classes, image_shape)
    _write_run_info(out, cfg, setup, data, steps_per_epoch, total_steps, strategy)
    log(f"training {cfg.model}/{cfg.preset} on {data.name} ({len(data.images)} images, {image_shape[0]}x{image_shape[1]}x{image_shape[2]}) "
        f"for {total_steps} steps of {global_batch} on {_where(setup, strategy)}, {setup.precision}"
        f"{', XLA' if setup.jit_compile and replicas == 1 else ''}")

    def save_checkpoint():
        storage.after_checkpoint(checkpoints.write_checkpoint(save_dir, state["step"], tf_ckpt, state, cfg.keep_checkpoints))

    from trainer.evaluate import epoch_hook  # quality figures every --eval-every epochs; None when off

    evaluate_epoch = epoch_hook(cfg, storage.data_dir, image_shape, log) if chief else None
    progress = Progress(total_steps, label="train", start=state["step"])
    log = progress.around(log)  # on a terminal, messages print above the bar instead of on its line
    last_checkpoint = time.monotonic()
    stopped = False
    while state["step"] < total_steps and not stopped:
        epoch = state["step"] // steps_per_epoch
        first, last = state["step"] - epoch * steps_per_epoch, min(total_steps - epoch * steps_per_epoch, steps_per_epoch)
        sums = tf.constant(state["epoch_sums"], tf.float32)
        t0 = time.monotonic() - state["epoch_seconds"]
        for images, labels in _epoch_batches(data, cfg.batch_size, cfg.seed, epoch, first, last, strategy):
            sums += train_step(images, labels, tf.constant(state["step"], tf.int64))  # stays on the device: no sync per step
            state["step"] += 1
            state["epoch_steps"] += 1
            run_log.steps(state["step"], sums, state["epoch_steps"])
            progress.update(extra=lambda: _progress_text(epoch, cfg.epochs, sums, state["epoch_steps"]))
            stopped = stop_requested()
            if stopped or time.monotonic() - last_checkpoint > cfg.checkpoint_minutes * 60:
                state.update(epoch_sums=sums.numpy().tolist(), epoch_seconds=time.monotonic() - t0)
                save_checkpoint()
                last_checkpoint = time.monotonic()
                if stopped:
                    break
        if stopped:
            break
        if state["step"] >= total_steps:
            progress.close()  # end the bar's line, then say what the wait after 100% is for
            log(_after_last_step(total_steps, evaluate_epoch is not None))
        state.update(epoch_sums=sums.numpy().tolist(), epoch_seconds=time.monotonic() - t0)
        row = _epoch_row(epoch, state, global_batch)
        if state["epoch_steps"] == steps_per_epoch:
            # A whole epoch joins the history; a partial one (--max-steps) stays
            # in the running sums, so a longer rerun finishes that same epoch.
            state["history"].append(row)
            state.update(epoch_sums=[0.0, 0.0], epoch_steps=0, epoch_seconds=0.0)
        if evaluate_epoch:
            evaluate_epoch(Generator(generator, meta), row, state["step"] >= total_steps, out)
        _end_of_epoch(out, Generator(generator, meta), row["epoch"], _metric_rows(state, global_batch), cfg.seed)
        run_log.epoch(row, plots.grid_path(out / "samples", row["epoch"]))
        save_checkpoint()
        storage.publish_outputs()
        last_checkpoint = time.monotonic()
        log(f"epoch {row['epoch']}/{cfg.epochs}  step {row['step']}  d_loss {row['d_loss']:.4f}  g_loss {row['g_loss']:.4f}  "
            f"{row['images_per_sec']:.0f} img/s  {format_duration(row['seconds'])}")
    progress.close()
    run_log.close()

    if stopped:
        log(f"stopped at step {state['step']}; checkpoint written, run the same command to resume")
    else:
        _write_metrics(out, _metric_rows(state, global_batch))
        export_generator(_float32_copy(generator, cfg, image_shape, num_classes),
                         dict(meta, steps=state["step"], **(evaluate_epoch.last if evaluate_epoch else {})),
                         out / "generator")
        if chief:
            from trainer.report import report_at_end

            report_at_end(out, log=log)
        storage.publish_outputs()
        log(f"done: {state['step']} steps; generator in {storage.output_uri or out}/generator; "
            f"weights {weights_fingerprint(generator)}")
    if not chief:
        shutil.rmtree(out.parent, ignore_errors=True)  # the scratch folder
    return {"steps": state["step"], "total_steps": total_steps, "stopped": stopped, "history": state["history"],
            "output_dir": str(out), "output_uri": storage.output_uri, "chief": chief}


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


def _where(setup, strategy) -> str:
    replicas = strategy.num_replicas_in_sync
    return setup.device if replicas == 1 else f"{replicas} replicas ({type(strategy).__name__}, {setup.device})"


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


def _epoch_batches(data, batch_size, seed, epoch, first, last, strategy):
    """Global batches `first`..`last`-1 of `epoch`, in an order fixed by (seed, epoch) so a resumed run sees the same data.

    Under several replicas, replica r gets rows r*batch_size.. of each global
    batch (each worker builds only its own replicas' slices), so every example
    is seen once per epoch, as on one device.
    """
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    order = np.random.default_rng([seed, epoch]).permutation(len(data.images))
    labels = data.labels if data.labels is not None else np.zeros(len(data.images), np.int64)
    signature = (tf.TensorSpec((batch_size, *data.images.shape[1:]), tf.uint8), tf.TensorSpec((batch_size,), tf.int64))

    def pipeline(worker=0, workers=1):
        local = replicas // workers

        def batches():
            for b in range(first, last):
                rows = order[b * batch_size * replicas:(b + 1) * batch_size * replicas]
                for r in range(worker * local, (worker + 1) * local):
                    idx = rows[r * batch_size:(r + 1) * batch_size]
                    yield data.images[idx], labels[idx]

        return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(tf.data.AUTOTUNE)

    if replicas == 1:
        return pipeline()
    return strategy.distribute_datasets_from_function(
        lambda ctx: pipeline(ctx.input_pipeline_id, ctx.num_input_pipelines))


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
    d_loss, g_loss = (sums / max(steps, 1)).numpy().tolist()
    return f"epoch {epoch + 1}/{epochs}  d_loss {d_loss:.4f}  g_loss {g_loss:.4f}"


def _end_of_epoch(out: Path, generator, epoch_number, rows, seed):
    _write_metrics(out, rows)
    plots.save_epoch_grid(generator, out / "samples", epoch_number, seed)
    plots.save_progress_gif(out / "samples")
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


def _write_run_info(out, cfg, setup, data, steps_per_epoch, total_steps, strategy):
    import tensorflow as tf

    info = {
        "config": cfg.to_dict(),
        "device": setup.device,
        "precision": setup.precision,
        "xla": setup.jit_compile and strategy.num_replicas_in_sync == 1,
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "global_batch_size": cfg.batch_size * strategy.num_replicas_in_sync,
        "host": platform.node(),
        "tensorflow": tf.__version__,
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
