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


def save_epoch_grid(generator, samples_dir, epoch: int, seed: int) -> Path:
    """The fixed-z grid for one epoch (same z every epoch, so frames compare)."""
    path = Path(samples_dir) / f"epoch-{epoch:04d}.png"
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


def save_loss_plot(history: list[dict], path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, colour in (("d_loss", "tab:blue"), ("g_loss", "tab:orange")):
        values = [row[key] for row in history]
        ax.plot(epochs, values, "o-", color=colour, label=key.replace("_", " "), markersize=3)
        if len(history) >= 2:
            slope, intercept = trend(epochs, values)
            ax.plot(epochs, [slope * e + intercept for e in epochs], "--", color=colour, alpha=0.6,
                    label=f"{key.replace('_', ' ')} trend ({slope:+.3f}/epoch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("Discriminator and generator losses")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
