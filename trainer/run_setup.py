"""A run made ready to train: everything `train()` needs before its first step.

`prepare_run` checks all that is cheap (options, folders, data, the resumed
checkpoint's architecture) before `build_training` pays for the backend's
seconds-long import, builds the networks and resumes them.
"""

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

from trainer import checkpoints, events
from trainer.config import TrainConfig, check_resumed_preset
from trainer.errors import UsageError
from trainer.fsutil import (ensure_writable_dir, lock_folder, recover_dir, refuse_to_replace, removed_on_error,
                            written_or_one_line)
from trainer.progress import Progress
from trainer.run_info import generator_meta, preset_of, recorded_config, write_metrics, write_run_info
from trainer.run_state import RunState


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What `prepare_run` checked, before any backend loads."""

    cfg: TrainConfig  # resolved: presets filled in, validated
    storage: object  # trainer.run_storage.Storage
    out: Path
    ckpt_dir: Path
    data: object  # trainer.data's dataset
    num_classes: int
    architecture: dict
    latest: Path | None  # the checkpoint to resume, if any
    created: dict = dataclasses.field(default_factory=dict)  # folders this run made (fsutil.removed_on_error)
    lock: int | None = None  # the checkpoint folder's lock (fsutil.lock_folder), released when the run ends


def prepare_run(cfg: TrainConfig, log=print) -> Prepared:
    from trainer.data import load_dataset
    from trainer.dataset_staging import check_staged_copy
    from trainer.distribute import check_placement
    from trainer.layout import sm_root
    from trainer.run_storage import prepare

    cfg = cfg.resolve()
    check_placement(cfg.framework, cfg.strategy, sm_root())  # before any data is staged or loaded
    storage = prepare(cfg)  # local folders; S3 paths are staged and mirrored
    if storage.data_dir:
        check_staged_copy(storage.data_dir)  # a staged copy is what its manifest lists, before it is trained on
    with removed_on_error(storage.output_dir, storage.checkpoint_dir) as created:  # a run that fails here leaves no folders
        out = ensure_writable_dir(storage.output_dir, "--output-dir")
        refuse_replaced_exports(out)  # now, not after hours of training, when the export would replace them
        ckpt_dir = ensure_writable_dir(storage.checkpoint_dir, "--checkpoint-dir")
        lock = _lock(ckpt_dir)  # before anything reads or clears up the folder
        try:
            data = load_dataset(cfg.dataset, storage.data_dir, "train", cfg.image_size, cfg.channels, log=log)
            num_classes = _num_classes(cfg, data)
            schedule(cfg, len(data.images), replicas=1)  # fail fast, before the backend loads
            architecture = checkpoints.architecture(cfg, num_classes, data.images.shape[1:], data.class_names)
            latest = checkpoints.latest_checkpoint(ckpt_dir)
            was = recorded_config(out) if latest is not None else None  # run.json: what the resumed run trained with
            if latest is not None:
                check_resumed_preset(preset_of(was), cfg.preset)  # its checkpoint holds that preset's networks
            checkpoints.check_architecture(latest, architecture)  # z_dim, shape, classes: before a shape error in the backend
            # seed, loss, EMA...: the same experiment (an older checkpoint's from run.json)
            checkpoints.check_recipe(latest, checkpoints.recipe(cfg), was)
        except BaseException:
            release(lock)
            raise
    return Prepared(cfg, storage, out, ckpt_dir, data, num_classes, architecture, latest, created, lock)


def _lock(ckpt_dir: Path) -> int | None:
    """The checkpoint folder held for this run alone, or a one-line UsageError. A run of several workers shares
    the folder among them (tests put them on one machine): there SageMaker or EC2 owns the machines."""
    from trainer.distribute import export_tf_config
    from trainer.layout import sm_root

    if export_tf_config(sm_root()) > 1:
        return None
    return lock_folder(ckpt_dir, "--checkpoint-dir")


def release(lock: int | None):
    if lock is not None:
        os.close(lock)


@dataclasses.dataclass
class Training:
    """A run ready for its first (or resumed) step; the loop's pieces read it and advance `state`."""

    cfg: TrainConfig
    storage: object
    out: Path  # where outputs go (a scratch folder on workers other than the chief)
    save_dir: Path  # where checkpoints go (likewise)
    chief: bool
    data: object
    num_classes: int
    image_shape: tuple
    setup: object  # trainer.device's Setup
    placement: object  # trainer.distribute's Placement
    nets: object  # trainer.steps.Nets
    runner: object  # trainer.steps' runner
    state: RunState
    steps_per_epoch: int
    total_steps: int
    global_batch: int
    meta: dict  # generator.json's keys known at the start
    run_log: events.RunLog
    evaluate: object  # trainer.evaluate.epoch_hook's hook; None when off or not the chief
    progress: Progress
    log: object  # prints above the progress bar
    last_plot: float = dataclasses.field(default_factory=time.monotonic)
    sampled: tuple | None = None  # (step, generator): the last standing-statistics pass (trainer/train.py)


def build_training(p: Prepared, log=print) -> Training:
    """Load the backend, place the run, build (or resume) the networks and write run.json. A check that fails
    here (no GPU for --precision mixed_float16, a placement JAX cannot train) leaves no empty folders either."""
    with removed_on_error(created=p.created):
        return _build_training(p, log)


def _build_training(p: Prepared, log) -> Training:
    from trainer.backend import select

    cfg, data = p.cfg, p.data
    select(cfg.framework)  # before anything imports keras
    from trainer.layout import sm_root
    from trainer.device import configure
    from trainer.distribute import choose_placement, split_cpu
    from trainer.evaluate import epoch_hook
    from trainer.steps import build_nets, make_runner, spec_from

    if cfg.framework == "tensorflow":
        split_cpu()
    setup = configure(cfg.precision, cfg.xla, cfg.seed, cfg.framework)
    placement = choose_placement(cfg.framework, cfg.strategy, sm_root())
    replicas = placement.replicas
    global_batch = cfg.batch_size * replicas
    steps_per_epoch, total_steps = schedule(cfg, len(data.images), replicas)
    out, save_dir, storage = _own_folders(p, placement)
    if p.latest is None and placement.chief:
        _forget_earlier_best(out, log)
    image_shape = data.images.shape[1:]
    scope = placement.strategy.scope() if placement.strategy is not None else contextlib.nullcontext()
    with scope:
        # Synchronised batch norm is tf.distribute's; under JAX's DataParallel XLA already sees the global batch.
        nets = build_nets(cfg, image_shape, p.num_classes, setup.precision,
                          sync_bn=replicas > 1 and cfg.framework == "tensorflow")
    state = _start_state(p, nets, global_batch, steps_per_epoch, total_steps, log)
    runner = make_runner(cfg.framework, nets, spec_from(cfg, p.num_classes, global_batch), data, placement, setup)
    with written_or_one_line("run.json and the run's logs", out):
        write_metrics(out, state.history)  # drop rows written after the checkpoint we resumed from
        run_log = events.RunLog(out, steps_per_epoch, total_steps, state.to_json(), log)  # losses.jsonl, TensorBoard
        write_run_info(out, cfg, setup, data, steps_per_epoch, total_steps, placement)
    meta = generator_meta(cfg, data, p.num_classes, image_shape)
    log(f"training {cfg.model}/{cfg.preset} on {data.name} ({len(data.images)} images, {image_shape[0]}x{image_shape[1]}x{image_shape[2]}) "
        f"for {total_steps} steps of {global_batch} on {_where(setup, placement)}, {setup.precision}, "
        f"{cfg.framework}{', XLA' if setup.jit_compile and replicas == 1 else ''}")
    if cfg.framework == "jax" and setup.device == "CPU":
        log(JAX_ON_CPU)
    # Every --eval-every epochs; the chief alone scores.
    evaluate = epoch_hook(cfg, storage.data_dir, image_shape, data.class_names, log) if placement.chief else None
    progress = Progress(total_steps, label="train", start=state.step, warmup=True)  # its first call compiles
    return Training(cfg, storage, out, save_dir, placement.chief, data, p.num_classes, image_shape, setup, placement,
                    nets, runner, state, steps_per_epoch, total_steps, global_batch, meta, run_log, evaluate,
                    progress, log=progress.around(log))  # on a terminal, messages print above the bar


# XLA:CPU's gradient of a transposed convolution takes its slow generic path: on our 2-core CPU one generator
# gradient at the preset's batch took 12.4 s (projection) and 12.5 s (book) on JAX, 0.23 s and 0.31 s on TensorFlow.
JAX_ON_CPU = ("note: JAX on a CPU trains these generators about 50x slower than TensorFlow (XLA:CPU's transposed "
              "convolution gradients); `--framework tensorflow` is the one for a CPU, JAX the one for a GPU")


def _own_folders(p: Prepared, placement) -> tuple[Path, Path, object]:
    """(outputs, checkpoints, storage) this worker writes: the run's for the chief. Other workers save where
    nobody looks (TensorFlow's multi-worker guide) and publish nothing."""
    if placement.chief:
        return p.out, p.ckpt_dir, p.storage
    scratch = Path(tempfile.mkdtemp(prefix=f"gankit-worker{placement.worker}-"))
    storage = dataclasses.replace(p.storage, output_uri=None, checkpoint_uri=None)
    return ensure_writable_dir(scratch / "output", "scratch"), scratch / "checkpoints", storage


def _start_state(p: Prepared, nets, global_batch, steps_per_epoch, total_steps, log) -> RunState:
    """A fresh run's state, or the resumed checkpoint's, its weights loaded into `nets`."""
    from trainer.steps import keep_command_learning_rates
    from trainer.weights import load_arrays

    run_schedule = checkpoints.schedule(global_batch, steps_per_epoch, len(p.data.images))
    run_recipe = checkpoints.recipe(p.cfg)
    if p.latest is None:
        return RunState(architecture=p.architecture, schedule=run_schedule, recipe=run_recipe)
    checkpoints.check_schedule(p.latest, run_schedule)
    checkpoints.check_not_past(p.latest, total_steps, steps_per_epoch)
    arrays, saved = checkpoints.read_checkpoint(p.latest)
    state = RunState.from_json(saved, p.architecture, run_schedule, run_recipe)
    load_arrays(nets.groups(), arrays, p.latest)
    log(f"resuming from {p.latest} at step {state.step}")
    keep_command_learning_rates(nets, p.cfg, state.step, log)
    return state


def refuse_replaced_exports(out: Path):
    """The folders a run replaces whole (generator/, generator-best/) must be real folders of the run, or absent:
    a symlink among them would have the export replace, or a fresh run delete, what it points to."""
    from trainer.evaluate import BEST_DIR

    for name in ("generator", BEST_DIR):
        refuse_to_replace(out / name, "--output-dir")


def _forget_earlier_best(out: Path, log):
    """A fresh run (nothing resumed) competes with its own evaluations only, not with a best generator an
    earlier run left in the same --output-dir."""
    from trainer.evaluate import BEST_DIR

    recover_dir(out / BEST_DIR)  # a kill mid-replace left it aside: otherwise the first evaluation would put it back
    if (out / BEST_DIR).is_dir():  # a real folder: refuse_replaced_exports refused a symlink or a file
        shutil.rmtree(out / BEST_DIR)
        log(f"note: removed {BEST_DIR}/ left in {out} by an earlier run; this run starts from step 0")


def schedule(cfg, n_images, replicas) -> tuple[int, int]:
    """(steps per epoch, total steps) for a global batch of batch size x replicas."""
    steps_per_epoch = n_images // (cfg.batch_size * replicas)
    if steps_per_epoch == 0:
        raise UsageError(f"--batch-size {cfg.batch_size} x {replicas} replica(s) is larger than the dataset "
                         f"({n_images} images); use a smaller batch")
    epochs_steps = cfg.epochs * steps_per_epoch
    return steps_per_epoch, epochs_steps if cfg.max_steps is None else min(cfg.max_steps, epochs_steps)


def _num_classes(cfg, data) -> int:
    if cfg.model == "dcgan":
        return 0
    if not data.conditional:
        raise UsageError(f"dataset {data.name} has no classes, so it cannot train a cgan; use --model dcgan "
                         "(or put the images in one subfolder per class)")
    return data.num_classes


def _where(setup, placement) -> str:
    replicas = placement.replicas
    return setup.device if replicas == 1 else f"{replicas} replicas ({placement.kind}, {setup.device})"
