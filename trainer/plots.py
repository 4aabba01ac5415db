"""Pictures of a run: per-epoch sample grids, the progress GIF, the loss plot."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from trainer.fsutil import atomic_write_bytes


def png_bytes(picture: Image.Image) -> bytes:
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


def grid_path(samples_dir, epoch: int) -> Path:
    return Path(samples_dir) / f"epoch-{epoch:04d}.png"


def save_epoch_grid(generator, samples_dir, epoch: int, seed: int) -> Path:
    """The fixed-z grid for one epoch (same z every epoch, so frames compare)."""
    path = grid_path(samples_dir, epoch)
    atomic_write_bytes(path, png_bytes(generator.grid(seed=seed)))
    return path


def save_progress_gif(samples_dir, ms_per_frame=400) -> Path | None:
    frames = [Image.open(p).convert("RGB") for p in sorted(Path(samples_dir).glob("epoch-*.png"))]
    if not frames:
        return None
    buf = io.BytesIO()
    # Hold the last frame a while so the result is easy to see.
    durations = [ms_per_frame] * (len(frames) - 1) + [ms_per_frame * 5]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    path = Path(samples_dir) / "progress.gif"
    atomic_write_bytes(path, buf.getvalue())
    return path


def trend(x, y):
    """Least-squares line through (x, y): the book's check that losses settle."""
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return slope, intercept


def smooth(values, window: int) -> np.ndarray:
    """A centred moving average (narrower at the ends), so a noisy per-step curve shows its course."""
    v = np.asarray(values, float)
    sums = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(len(v))
    lo, hi = np.maximum(0, i - window // 2), np.minimum(len(v), i + window // 2 + 1)
    return (sums[hi] - sums[lo]) / (hi - lo)


def save_loss_plot(history: list[dict], path, step_rows=None) -> Path:
    """Both losses: every recorded point (losses.jsonl) faint with a smoothed curve over it, against the
    step, plus the epoch means with trend lines; without step rows, the epoch means against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=100)
    per_step = step_rows is not None and len(step_rows) >= 2
    epochs = [row["epoch"] for row in history]
    x_epochs = [row["step"] for row in history] if per_step else epochs
    for key, colour in (("d_loss", "tab:blue"), ("g_loss", "tab:orange")):
        name = {"d_loss": "discriminator", "g_loss": "generator"}[key]
        if per_step:
            steps, values = [r["step"] for r in step_rows], [r[key] for r in step_rows]
            window = max(1, round(len(values) ** 0.5 / 2))  # 3 of 30 points, 5 of 100, 40 of 6,400
            ax.plot(steps, values, "-", color=colour, alpha=0.3, linewidth=0.8, label=f"{name}, every point")
            if window > 1:
                ax.plot(steps, smooth(values, window), "-", color=colour, linewidth=1.8,
                        label=f"{name}, mean of {window} points")
        values = [row[key] for row in history]
        ax.plot(x_epochs, values, "o" if per_step else "o-", color=colour, markersize=5 if per_step else 3,
                markeredgecolor="white" if per_step else colour,
                label=f"{name}, epoch mean" if per_step else name)
        if len(history) >= 2:
            slope, intercept = trend(epochs, values)
            ax.plot(x_epochs, [slope * e + intercept for e in epochs], "--", color=colour, alpha=0.6,
                    label=f"{name} trend ({slope:+.3f}/epoch)")
    ax.set_xlabel("step" if per_step else "epoch")
    ax.set_ylabel("loss")
    ax.set_title("Discriminator and generator losses")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, never over them
    atomic_write_bytes(path, _png(fig))
    return Path(path)


QUALITY_PANELS = (("label_accuracy", "label accuracy (higher is better)"),
                  ("frechet_classifier_distance", "Fréchet classifier distance (lower is better)"),
                  ("classifier_score", "classifier score (higher is better)"))


def quality_plot_png(history: list[dict], real: dict | None = None) -> bytes | None:
    """The quality figures of every evaluated epoch (rows with an "evaluation"), one panel each; the
    real-data figures as dashed lines. Points are labelled with their sample count: compare like with like."""
    rows = [row for row in history if row.get("evaluation")]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(key, title) for key, title in QUALITY_PANELS if any(r["evaluation"].get(key) is not None for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), dpi=100, squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for count in sorted({r["evaluation"]["samples"] for r in rows}):
            points = [(r["epoch"], r["evaluation"][key]) for r in rows
                      if r["evaluation"]["samples"] == count and r["evaluation"].get(key) is not None]
            if points:
                ax.plot(*zip(*points), "o-", markersize=4, label=f"{count} samples")
        if real and real.get(key) is not None:
            ax.axhline(real[key], color="grey", linestyle="--", label=f"real ({real['samples']})")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
