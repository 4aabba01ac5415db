"""Images/s of gankit's training step against the straightforward Keras way, same network.

    python benchmarks/train_throughput.py [--preset book] [--batch-size 32] [--steps 20]

Baseline: the book's structure in plain Keras: float images from a shuffled
tf.data pipeline, and two separate tf.functions per batch (a D step, then a G
step that runs the generator forward again). Ours: trainer.steps' runner (many
steps per compiled call, one generator pass, uint8 batches gathered and scaled
on the device), as `trainer.train` runs it. Both use the same networks from trainer.models,
the same optimizer settings and the same batch size, in one process.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without installing

import numpy as np  # noqa: E402


def synthetic(n=2048, size=28, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, size, size, 1)) * 255).astype(np.uint8), rng.integers(0, classes, n).astype(np.int64)


def baseline_steps(cfg, images, labels, classes):
    import keras
    import tensorflow as tf

    from trainer.models import build_discriminator, build_generator

    G = build_generator(cfg.preset, cfg.z_dim, images.shape[1:], classes)
    D = build_discriminator(cfg.preset, images.shape[1:], classes)
    g_opt = keras.optimizers.Adam(cfg.lr, beta_1=cfg.beta1)
    d_opt = keras.optimizers.Adam(cfg.lr, beta_1=cfg.beta1)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    def z(n):
        return tf.random.uniform((n, cfg.z_dim), -1.0, 1.0)

    @tf.function
    def d_step(x, y):
        with tf.GradientTape() as tape:
            fake = G([z(tf.shape(x)[0]), y], training=True)
            real_logits, fake_logits = D([x, y], training=True), D([fake, y], training=True)
            loss = bce(tf.ones_like(real_logits) * (1 - cfg.smooth), real_logits) + bce(tf.zeros_like(fake_logits), fake_logits)
        d_opt.apply_gradients(zip(tape.gradient(loss, D.trainable_variables), D.trainable_variables))
        return loss

    @tf.function
    def g_step(y):
        with tf.GradientTape() as tape:
            fake_logits = D([G([z(tf.shape(y)[0]), y], training=True), y], training=True)
            loss = bce(tf.ones_like(fake_logits), fake_logits)
        g_opt.apply_gradients(zip(tape.gradient(loss, G.trainable_variables), G.trainable_variables))
        return loss

    floats = images.astype(np.float32) / 127.5 - 1.0
    onehot = np.eye(classes, dtype=np.float32)[labels]
    data = tf.data.Dataset.from_tensor_slices((floats, onehot)).shuffle(len(floats)).batch(cfg.batch_size, drop_remainder=True).repeat()

    def run(steps):
        for x, y in data.take(steps):
            d_step(x, y)
            loss = g_step(y)
        float(loss)

    return run


def gankit_steps(cfg, images, labels, classes, jit):
    from trainer.data import Dataset
    from trainer.device import DeviceSetup
    from trainer.distribute import Placement
    from trainer.steps import build_nets, make_runner, spec_from

    nets = build_nets(cfg, images.shape[1:], classes, "float32")
    data = Dataset("bench", images, labels, tuple(str(i) for i in range(classes)))
    runner = make_runner("tensorflow", nets, spec_from(cfg, classes, cfg.batch_size), data, Placement(1, "default"),
                         DeviceSetup("CPU", "float32", jit))
    per_epoch = len(images) // cfg.batch_size

    def run(steps):
        done, epoch = 0, 0
        while done < steps:
            n = min(per_epoch, steps - done)
            runner.start_epoch(epoch, 0, n)
            runner.run(0, n, done)  # every step of the epoch in one compiled call, as trainer.train does
            done, epoch = done + n, epoch + 1

    return run


def images_per_sec(runs: dict, steps, batch, rounds=3, warmup=2) -> dict:
    """Best of `rounds`, taking turns, so a busy neighbour on the machine hurts all alike."""
    for run in runs.values():
        run(warmup)  # tracing and first-call costs stay out of the figures
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run(steps)
            best[name] = max(best[name], steps * batch / (time.perf_counter() - t0))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="book")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--xla", action="store_true", help="also time gankit's step compiled with XLA")
    args = parser.parse_args()

    from trainer.config import TrainConfig
    from trainer.device import configure

    cfg = TrainConfig(dataset="bench", output_dir="-", preset=args.preset, batch_size=args.batch_size).resolve()
    setup = configure("auto", "off", 0)
    images, labels = synthetic()
    print(f"device: {setup.device}  preset: {cfg.preset}  batch: {cfg.batch_size}  steps timed: {args.steps}")
    runs = {"base": baseline_steps(cfg, images, labels, 10), "ours": gankit_steps(cfg, images, labels, 10, jit=False)}
    if args.xla:
        runs["xla"] = gankit_steps(cfg, images, labels, 10, jit=True)
    best = images_per_sec(runs, args.steps, cfg.batch_size)
    print(f"plain Keras, two tf.function steps: {best['base']:8.1f} images/s")
    print(f"gankit fused step:                  {best['ours']:8.1f} images/s")
    print(f"ratio:                              {best['ours'] / best['base']:8.2f}x (target 1.3x)")
    if args.xla:
        print(f"gankit fused step with XLA:         {best['xla']:8.1f} images/s ({best['xla'] / best['ours']:.2f}x of without)")


if __name__ == "__main__":
    main()
