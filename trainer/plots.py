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


def save_epoch_grid(picture: Image.Image, samples_dir, epoch: int) -> bytes:
    """One epoch's sample grid (drawn from the same z every epoch, so frames compare) as its PNG; the bytes."""
    data = png_bytes(picture)
    atomic_write_bytes(grid_path(samples_dir, epoch), data)
    return data


GIF_FRAMES = 64  # a 64-epoch run shows every epoch; a longer one every 2nd, 4th, ... so the file stops growing


def gif_epochs(pngs: list, most: int = GIF_FRAMES) -> list:
    """The epoch grids progress.gif shows: every stride-th from the first and always the last, within `most`.

    The stride is the smallest power of two that fits, so it changes (and the
    GIF is rebuilt) only each time the run doubles; between, a new epoch only
    appends, and at most replaces the previous last frame. Without a bound the
    GIF, the report that embeds it and an S3 output's upload of it every epoch
    grew with the run (24.5 MB at 150 epochs of noisy grids).
    """
    stride = 1
    while -(-len(pngs) // stride) + bool((len(pngs) - 1) % stride) > most:
        stride *= 2
    chosen = list(pngs[::stride])
    if chosen and chosen[-1] != pngs[-1]:
        chosen.append(pngs[-1])
    return chosen


def save_progress_gif(samples_dir, ms_per_frame=400) -> Path | None:
    """progress.gif of the epoch-*.png that gif_epochs picks, built from scratch (append_progress_gif is the per-epoch way)."""
    pngs = gif_epochs(sorted(Path(samples_dir).glob("epoch-*.png")))
    if not pngs:
        return None
    frames = [_gif_frame(Image.open(p), ms_per_frame) for p in pngs]
    path = Path(samples_dir) / "progress.gif"
    atomic_write_bytes(path, _gif_file(frames[0][0], [f for _, f in frames], ms_per_frame))
    return path


def append_progress_gif(samples_dir, epoch: int, ms_per_frame=400) -> Path:
    """Add epoch-<epoch>.png to progress.gif as its last frame, without decoding or re-encoding the others.

    A GIF is a header, frames and a trailer byte, so appending is: drop the
    trailer (and the previous last frame, when gif_epochs no longer shows it),
    give the new second-to-last frame the normal delay, add the new frame (with
    its own colour table), put the trailer back. The cost per epoch is one
    frame's encoding plus a copy of the file's bytes, not a rebuild of every
    frame. A GIF that does not hold exactly the frames gif_epochs picks from the
    earlier epochs (a resumed run, a crash between writes), or whose stride just
    doubled, is rebuilt from the PNGs.
    """
    samples_dir = Path(samples_dir)
    path = samples_dir / "progress.gif"
    png = samples_dir / f"epoch-{epoch:04d}.png"
    try:
        data = path.read_bytes()
        head, frames = _gif_parse(data)
    except (OSError, ValueError, IndexError):
        frames = None
    earlier = sorted(p for p in samples_dir.glob("epoch-*.png") if p.name < png.name)
    shown, wanted = gif_epochs(earlier), gif_epochs(earlier + [png])
    if not shown or frames is None or len(frames) != len(shown):
        _remove_grids_after(samples_dir, png)
        return save_progress_gif(samples_dir, ms_per_frame)
    if wanted[:-1] == shown:
        kept = frames
    elif wanted[:-1] == shown[:-1]:
        kept = frames[:-1]  # the previous last epoch is off the stride: it was shown only as the latest
    else:
        return save_progress_gif(samples_dir, ms_per_frame)
    _, frame = _gif_frame(Image.open(png), ms_per_frame)
    atomic_write_bytes(path, _gif_appended(data, head, kept[-1], frame, ms_per_frame))
    return path


def _remove_grids_after(samples_dir: Path, png: Path):
    """The grids of epochs after `png`'s (a resumed run's, from before its resume point): they are drawn again."""
    for stale in sorted(samples_dir.glob("epoch-*.png")):
        if stale.name > png.name:
            stale.unlink()


def _gif_appended(data: bytes, head: bytes, last_kept, frame: bytes, ms_per_frame) -> bytes:
    """The GIF `data` up to its frame `last_kept` (start, end, graphic-control offset), that frame back at the
    normal delay, then `frame` as the new last one."""
    body = bytearray(data[:last_kept[1]])
    gce = last_kept[2]
    if gce is not None:
        body[gce + 4:gce + 6] = (ms_per_frame // 10).to_bytes(2, "little")
    return _gif_file(bytes(body[:len(head)]), [bytes(body[len(head):]), frame], ms_per_frame)


def _gif_file(head: bytes, frames: list[bytes], ms_per_frame) -> bytes:
    """head + frames + trailer; the last frame is held five times longer, so the result is easy to see."""
    last = bytearray(frames[-1])
    if last[:2] == b"\x21\xf9":
        last[4:6] = (ms_per_frame * 5 // 10).to_bytes(2, "little")
    return head + b"".join(frames[:-1]) + bytes(last) + b"\x3b"


def _gif_frame(picture: Image.Image, ms_per_frame) -> tuple[bytes, bytes]:
    """(file head, one frame with a local colour table) of `picture` as a GIF."""
    buf = io.BytesIO()
    # A grey grid (every 1-channel dataset) is already a GIF palette: quantising it as RGB took 5x longer.
    picture = picture if picture.mode == "L" else picture.convert("RGB")
    picture.save(buf, format="GIF", duration=ms_per_frame, loop=0)
    data = buf.getvalue()
    head, frames = _gif_parse(data)
    start, end, _ = frames[0]
    frame = bytearray(data[start:end])
    descriptor = 8 if frame[:2] == b"\x21\xf9" else 0  # after the 8-byte graphic control extension
    packed = frame[descriptor + 9]
    if not packed & 0x80:  # no local colour table: move the global one in
        lsd = data[10]
        table = data[13:13 + 3 * 2 ** ((lsd & 7) + 1)] if lsd & 0x80 else b""
        frame[descriptor + 9] = packed | 0x80 | (lsd & 7)
        frame[descriptor + 10:descriptor + 10] = table
    return bytes(head), bytes(frame)


def _gif_parse(data: bytes) -> tuple[bytes, list[tuple[int, int, int | None]]]:
    """(head: header, screen, global table, app extensions; frames as (start, end, graphic-control offset))."""
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        raise ValueError("not a GIF")
    pos = 13 + (3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    head_end, frames, gce, start = None, [], None, None

    def skip_blocks(p):
        while data[p]:
            p += data[p] + 1
        return p + 1

    while data[pos] != 0x3B:
        if data[pos] == 0x21:
            if data[pos + 1] == 0xF9:
                head_end = pos if head_end is None else head_end
                gce, start = pos, pos
            pos = skip_blocks(pos + 2)
        elif data[pos] == 0x2C:
            head_end = pos if head_end is None else head_end
            start = pos if start is None else start
            packed = data[pos + 9]
            pos += 10 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
            pos = skip_blocks(pos + 1)
            frames.append((start, pos, gce))
            gce, start = None, None
        else:
            raise ValueError("unknown GIF block")
    return data[:head_end], frames


def trend(x, y):
    """Least-squares line through (x, y): the book's check that losses settle."""
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return slope, intercept


def smooth(values, window: int) -> np.ndarray:
    """A centred moving average of `window` points (an odd number; narrower at the ends), so a noisy per-step
    curve shows its course."""
    v = np.asarray(values, float)
    sums = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(len(v))
    lo, hi = np.maximum(0, i - window // 2), np.minimum(len(v), i + window // 2 + 1)
    return (sums[hi] - sums[lo]) / (hi - lo)


def save_loss_plot(history: list[dict], path, step_rows=None) -> Path:
    """losses.png: `loss_plot_png`."""
    atomic_write_bytes(path, loss_plot_png(history, step_rows))
    return Path(path)


def loss_plot_png(history: list[dict], step_rows=None) -> bytes:
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
            # 3 of 30 points, 5 of 100, 41 of 6,400: odd, so the mean is centred on its point (smooth) and of
            # as many points as the legend says
            window = max(1, round(len(values) ** 0.5 / 2)) | 1
            ax.plot(steps, values, "-", color=colour, alpha=0.3, linewidth=0.8, label=f"{name}, every point")
            if window > 1:
                ax.plot(steps, smooth(values, window), "-", color=colour, linewidth=1.8,
                        label=f"{name}, mean of {window} points")
        values = [row[key] for row in history]
        if not history:  # stopped inside its first epoch: no epoch mean to draw, nor to name in the legend
            continue
        ax.plot(x_epochs, values, "o" if per_step else "o-", color=colour, markersize=5 if per_step else 3,
                markeredgecolor="white" if per_step else colour,
                label=f"{name}, epoch mean" if per_step else name)
        if len(history) >= 2:
            slope, intercept = trend(epochs, values)
            ax.plot(x_epochs, [slope * e + intercept for e in epochs], "--", color=colour, alpha=0.6,
                    label=f"{name} trend ({slope:+.3f}/epoch)")
    ax.set_xlabel("step" if per_step else "epoch")
    _whole_numbers(ax.xaxis)
    ax.set_ylabel("loss")
    ax.set_title("Discriminator and generator losses")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, never over them
    return _png(fig)


QUALITY_PANELS = (("label_accuracy", "label accuracy (higher is better)"),
                  ("frechet_classifier_distance", "Fréchet classifier distance (lower is better)"),
                  ("classifier_score", "classifier score (higher is better)"))


def quality_plot_png(history: list[dict], real: dict | None = None) -> bytes | None:
    """The quality figures of every evaluated epoch (rows with an "evaluation"), one panel each; the
    real-data figures as dashed lines, one per sample count in its points' colour (rows recorded before
    evaluations carried their own real figures: `real`, the final one's, in grey). Points are labelled with
    their sample count: compare like with like (FCD is biased at small counts: real at 1,000 is ~0.9,
    at 10,000 ~0.07)."""
    rows = [row for row in history if row.get("evaluation")]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(key, title) for key, title in QUALITY_PANELS if any(r["evaluation"].get(key) is not None for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), dpi=100, squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        drawn = set()
        for count in sorted({r["evaluation"]["samples"] for r in rows}):
            at_count = [r["evaluation"] for r in rows if r["evaluation"]["samples"] == count]
            points = [(r["epoch"], r["evaluation"][key]) for r in rows
                      if r["evaluation"]["samples"] == count and r["evaluation"].get(key) is not None]
            if not points:
                continue
            (line,) = ax.plot(*zip(*points), "o-", markersize=4, label=f"{count} samples")
            real_here = next((e["real"][key] for e in at_count if (e.get("real") or {}).get(key) is not None), None)
            if real_here is not None:
                ax.axhline(real_here, color=line.get_color(), linestyle="--", label=f"real ({count})")
                drawn.add(count)
        if real and real.get(key) is not None and real.get("samples") not in drawn:
            ax.axhline(real[key], color="grey", linestyle="--", label=f"real ({real['samples']})")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        _whole_numbers(ax.xaxis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def _whole_numbers(axis):
    """Ticks at whole epochs (or steps) only: matplotlib put a 3-epoch run's at 1.0, 1.5, ... 3.0."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10], integer=True))  # matplotlib's own, whole


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
