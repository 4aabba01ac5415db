"""What the end of an epoch costs the training thread, piece by piece (no training steps).

    KERAS_BACKEND=jax python benchmarks/epoch_overhead.py [--preset sn-hinge] [--repeats 7] [--s3]

Builds the preset's networks at Fashion-MNIST size (28x28x1, 10 classes: the
checkpoint's size is fixed by the networks, not the dataset), then times each
piece `trainer.train` runs after an epoch, as it runs them: the device-to-host
copy (`arrays_of`), the checkpoint write (npz, manifest digests, rename,
pruning), the sample grid, the GIF append, metrics.jsonl, the TensorBoard
epoch record, the loss plot (throttled to every 10 s in training) and, with
--s3, the checkpoint push and output publish to an in-process moto S3 (its
latency is not real S3's), and what trainer.run_storage.OutputPublisher's snapshot
costs the thread that publishes (the upload runs on its own thread). It also times
what the training thread pays to hand a checkpoint to trainer.checkpoints.CheckpointWriter,
and the write that then runs beside training. Prints the median of --repeats runs in ms, and
what of it the training thread pays (the generator's work and the checkpoint's hand-over) and what
the epoch's files thread does beside the next epoch.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without installing


def timed(fn, repeats):
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sn-hinge")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epoch", type=int, default=32, help="the epoch timed: its GIF already has epoch-1 frames")
    parser.add_argument("--s3", action="store_true", help="also push checkpoints and outputs to an in-process moto S3")
    args = parser.parse_args()

    from trainer import checkpoints, events, plots
    from trainer.backend import select
    from trainer.config import TrainConfig

    work = Path(tempfile.mkdtemp(prefix="epoch-overhead-"))
    cfg = TrainConfig(dataset="zalando", output_dir=str(work / "out"), preset=args.preset).resolve()
    select(cfg.framework)
    import keras

    from trainer.device import configure
    from trainer.export import Generator
    from trainer.steps import build_nets
    from trainer.run_info import write_metrics
    from trainer.standing_stats import standing_inputs
    from trainer.weights import arrays_of

    setup = configure("float32", "off", 0, cfg.framework)
    image_shape, classes = (28, 28, 1), 10
    nets = build_nets(cfg, image_shape, classes, setup.precision)
    out, ckpt_dir = Path(cfg.output_dir), work / "out" / "checkpoints"
    samples = out / "samples"
    meta = {"class_names": [str(c) for c in range(classes)], "conditional": True, "z_dim": cfg.z_dim,
            "z_distribution": cfg.z_distribution, "image_shape": list(image_shape)}
    standing = standing_inputs(cfg.z_dim, classes, cfg.z_distribution)
    sampler = Generator(nets.sampler(standing), meta)
    rows = [{"epoch": e, "step": e * 468, "d_loss": 1.0, "g_loss": 1.0, "images_per_sec": 1e5, "seconds": 0.4}
            for e in range(1, 65)]
    state = {"step": 0, "history": rows, "epoch_sums": [0.0, 0.0], "epoch_steps": 0, "epoch_seconds": 0.0}

    arrays = arrays_of(nets.groups())
    size = sum(a.nbytes for a in arrays.values())
    print(f"{keras.backend.backend()} backend, preset {cfg.preset}: {len(arrays)} arrays, {size / 2**20:.1f} MiB "
          f"per checkpoint; median of {args.repeats} (shared 2-core machine: other jobs run beside this)")

    results = {}
    results["sampler (EMA copy + batch-norm standing statistics)"] = timed(lambda i: nets.sampler(standing), args.repeats)
    results["arrays_of (device->host copy)"] = timed(lambda i: arrays_of(nets.groups()), args.repeats)
    step = iter(range(1, 10**6))
    results["write_checkpoint (sync: npz, digests, rename, prune)"] = timed(
        lambda i: checkpoints.write_checkpoint(ckpt_dir, next(step), arrays, state, cfg.keep_checkpoints), args.repeats)
    writer = getattr(checkpoints, "CheckpointWriter", None)
    if writer is not None:
        w = writer(ckpt_dir, cfg.keep_checkpoints)
        handed, behind = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            w.save(next(step), arrays_of(nets.groups()), state)
            t1 = time.perf_counter()
            w.wait()
            handed.append((t1 - t0) * 1000)
            behind.append((time.perf_counter() - t1) * 1000)
        results["CheckpointWriter.save incl. arrays_of (training thread)"] = statistics.median(handed)
        results["  the write it runs beside training"] = statistics.median(behind)

    frames = iter(range(args.epoch, args.epoch + 10**6))
    picture = sampler.grid(seed=cfg.seed)
    for e in range(1, args.epoch):  # the GIF as it is at this epoch
        plots.save_epoch_grid(picture, samples, e)
        plots.append_progress_gif(samples, e)
    results["sample grid: drawing (generate + tile)"] = timed(lambda i: sampler.grid(seed=cfg.seed), args.repeats)
    results["sample grid: PNG"] = timed(lambda i: plots.save_epoch_grid(picture, samples, args.epoch + i),
                                        args.repeats)
    results[f"GIF append (to {args.epoch - 1} frames)"] = timed(
        lambda i: plots.append_progress_gif(samples, next(frames)), args.repeats)
    results["metrics.jsonl (64 rows)"] = timed(lambda i: write_metrics(out, rows), args.repeats)
    run_log = events.RunLog(out, 468, 468 * 64, dict(state, epoch_steps=0), log=lambda *a: None)
    results["TensorBoard epoch record (+ grid image)"] = timed(
        lambda i: run_log.epoch(dict(rows[i % 64], step=1000 + i), plots.grid_path(samples, args.epoch).read_bytes()),
        args.repeats)
    loss_rows = [{"step": s, "d_loss": 1.0, "g_loss": 1.0} for s in range(0, 468 * 64, 4)]
    results["loss plot (every 10 s, not every epoch)"] = timed(
        lambda i: plots.save_loss_plot(rows, out / "losses.png", step_rows=loss_rows), max(3, args.repeats // 2))

    if args.s3:
        results.update(s3_pieces(cfg, ckpt_dir, args.repeats))

    width = max(map(len, results))
    for name, ms in results.items():
        print(f"  {name:<{width}}  {ms:8.1f} ms")
    every_epoch = [ms for name, ms in results.items()
                   if not name.startswith(("loss plot", "  ", "CheckpointWriter", "OutputPublisher"))]
    print(f"  {'total per epoch, synchronous pieces (no loss plot)':<{width}}  {sum(every_epoch):8.1f} ms")
    if writer is not None:
        # What trainer/train.py leaves on the training thread: the generator's work and the checkpoint's
        # hand-over; the files (PNG, GIF, metrics, TensorBoard, plot) and the S3 mirror run beside it.
        training_thread = [ms for name, ms in results.items() if name.startswith(
            ("sampler", "sample grid: drawing", "CheckpointWriter"))]
        print(f"  {'total per epoch on the training thread':<{width}}  {sum(training_thread):8.1f} ms")
        files_thread = [ms for name, ms in results.items() if name.startswith(
            ("sample grid: PNG", "GIF", "metrics", "TensorBoard", "OutputPublisher"))]
        print(f"  {'total per epoch on the files thread (no loss plot)':<{width}}  {sum(files_thread):8.1f} ms")
    print(json.dumps({k.strip(): round(v, 2) for k, v in results.items()}))


def s3_pieces(cfg, ckpt_dir, repeats) -> dict:
    import boto3
    from moto import mock_aws

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    from trainer import checkpoints, run_storage

    results = {}
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="bench")
        storage = run_storage.Storage(None, cfg.output_dir, str(ckpt_dir), "s3://bench/out", "s3://bench/ckpt",
                                      cfg.keep_checkpoints)
        latest = checkpoints.latest_checkpoint(ckpt_dir)
        results["S3 checkpoint push (moto, in-process)"] = timed(lambda i: storage.after_checkpoint(latest), repeats)
        storage.publish_outputs()  # the first publish sends everything; later ones only what changed

        def changed_outputs(i):
            (Path(cfg.output_dir) / "metrics.jsonl").write_text(f"{i}\n" * 64)
            storage.publish_outputs()

        results["S3 output publish (moto, one changed file)"] = timed(changed_outputs, repeats)

        publisher = run_storage.OutputPublisher(storage)
        handed = []
        for i in range(repeats):
            (Path(cfg.output_dir) / "metrics.jsonl").write_text(f"{i}\n" * 65)
            t0 = time.perf_counter()
            publisher.publish()
            handed.append((time.perf_counter() - t0) * 1000)
            publisher.wait()
        results["OutputPublisher.publish (files thread: the snapshot)"] = statistics.median(handed)
    return results


if __name__ == "__main__":
    main()
