"""progress.gif grows by one frame per epoch without being rebuilt, and repairs itself after a resume."""

import numpy as np
import pytest
from PIL import Image

from trainer import plots


def frame(path, value):
    Image.fromarray(np.full((12, 20, 3), value, np.uint8)).save(path)


def frames_of(path):
    gif = Image.open(path)
    out = []
    for i in range(gif.n_frames):
        gif.seek(i)
        out.append((int(np.asarray(gif.convert("RGB"))[0, 0, 0]), gif.info["duration"]))
    return out


def test_frames_are_appended_in_order_and_the_last_is_held(tmp_path):
    for epoch, value in enumerate((10, 120, 250), start=1):
        frame(tmp_path / f"epoch-{epoch:04d}.png", value)
        before = (tmp_path / "progress.gif").read_bytes() if epoch > 1 else b""
        plots.append_progress_gif(tmp_path, epoch)
        after = (tmp_path / "progress.gif").read_bytes()
        # Appended, not re-encoded: everything but the previous frame's delay and the trailer is kept byte for byte.
        assert len(after) > len(before) and after[:20] == (before[:20] if before else after[:20])
    assert frames_of(tmp_path / "progress.gif") == [(10, 400), (120, 400), (250, 2000)]


def test_a_gif_that_disagrees_with_the_epochs_is_rebuilt(tmp_path):
    for epoch, value in enumerate((10, 120, 250), start=1):
        frame(tmp_path / f"epoch-{epoch:04d}.png", value)
        plots.append_progress_gif(tmp_path, epoch)
    # A run resumed from epoch 1's checkpoint redraws epoch 2: frames 2 and 3 are stale.
    frame(tmp_path / "epoch-0002.png", 60)
    plots.append_progress_gif(tmp_path, 2)
    assert frames_of(tmp_path / "progress.gif") == [(10, 400), (60, 2000)]
    assert not (tmp_path / "epoch-0003.png").exists()
    (tmp_path / "progress.gif").write_bytes(b"GIF89a broken")
    frame(tmp_path / "epoch-0003.png", 200)
    plots.append_progress_gif(tmp_path, 3)
    assert frames_of(tmp_path / "progress.gif") == [(10, 400), (60, 400), (200, 2000)]


def test_grey_labelled_grids_are_appended_pixel_for_pixel(tmp_path):
    from trainer.images import tile

    rng = np.random.default_rng(0)
    grids = [tile((rng.random((20, 8, 8, 1)) * 255).astype(np.uint8), 4, 5, scale=2, row_labels=list("abcd"))
             for _ in range(3)]
    for epoch, grid in enumerate(grids, start=1):
        assert grid.mode == "L"
        grid.save(tmp_path / f"epoch-{epoch:04d}.png")
        plots.append_progress_gif(tmp_path, epoch)
    gif = Image.open(tmp_path / "progress.gif")
    assert gif.n_frames == 3
    for i, grid in enumerate(grids):
        gif.seek(i)
        np.testing.assert_array_equal(np.asarray(gif.convert("L")), np.asarray(grid))


def test_the_gif_shows_at_most_64_epochs_always_the_first_and_the_last():
    rebuilds = []
    for n in range(1, 300):
        epochs = list(range(1, n + 1))
        shown = plots.gif_epochs(epochs)
        assert len(shown) <= plots.GIF_FRAMES and shown[0] == 1 and shown[-1] == n
        assert shown == epochs if n <= 64 else len(shown) > 64 // 2
        # A new epoch appends, or replaces the last frame, except when the stride doubles.
        grown = plots.gif_epochs(epochs + [n + 1])
        if grown[:-1] not in (shown, shown[:-1]):
            rebuilds.append(n)
    assert len(rebuilds) == 3  # to every 2nd, 4th and 8th epoch


def test_a_long_run_keeps_appending_to_a_bounded_gif(tmp_path):
    before = None
    for epoch in range(1, 71):
        frame(tmp_path / f"epoch-{epoch:04d}.png", 3 * epoch)
        plots.append_progress_gif(tmp_path, epoch)
        after = (tmp_path / "progress.gif").read_bytes()
        if epoch in (67, 68, 69):  # past the doubling, frames before the last two are kept byte for byte
            end = plots._gif_parse(before)[1][-3][1]
            assert after[:end] == before[:end]
        before = after
    shown = [1 + 2 * i for i in range(35)] + [70]
    assert frames_of(tmp_path / "progress.gif") == [(3 * e, 400) for e in shown[:-1]] + [(210, 2000)]


def plotted_lines(monkeypatch, draw):
    """(label, x, y) of every line `draw()` plots with matplotlib."""
    import matplotlib.axes

    lines, plot = [], matplotlib.axes.Axes.plot

    def record(ax, *args, **kwargs):
        drawn = plot(ax, *args, **kwargs)
        lines.extend((kwargs.get("label"), list(line.get_xdata()), list(line.get_ydata())) for line in drawn)
        return drawn

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", record)
    draw()
    return lines


def test_the_smoothed_loss_curve_is_the_mean_of_as_many_points_as_its_label_says(tmp_path, monkeypatch):
    # 60 points (a 60-step run) were labelled "mean of 4 points" but averaged 5: an even window cannot be centred.
    import re

    for count in (9, 20, 60, 100):
        rows = [{"step": s, "d_loss": 1.0 if s == count // 2 else 0.0, "g_loss": 0.0} for s in range(1, count + 1)]
        history = [{"epoch": 1, "step": count, "d_loss": 0.5, "g_loss": 0.5}]
        lines = plotted_lines(monkeypatch, lambda: plots.save_loss_plot(history, tmp_path / "losses.png", rows))
        (label, steps, values), = [line for line in lines if line[0] and line[0].startswith("discriminator, mean of")]
        window = int(re.search(r"mean of (\d+) points", label).group(1))
        assert values[steps.index(count // 2)] == pytest.approx(1.0 / window)  # the spike, shared by `window` points
        assert sum(v > 0 for v in values) == window


def test_epoch_axes_tick_whole_epochs(tmp_path, monkeypatch):
    # The quality plot of a 3-epoch run ticked epochs 1.0, 1.5, 2.0, 2.5, 3.0.
    figures, png = [], plots._png
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or png(fig))
    figure = {"label_accuracy": 0.5, "frechet_classifier_distance": 9.0, "classifier_score": 2.0, "samples": 100}
    history = [{"epoch": e, "step": 10 * e, "d_loss": 1.0 / e, "g_loss": e, "evaluation": figure} for e in (1, 2, 3)]
    plots.quality_plot_png(history)
    plots.save_loss_plot(history, tmp_path / "losses.png")  # no step rows: the losses against the epoch
    axes = [ax for fig in figures for ax in fig.axes]
    assert len(axes) == 4
    for ax in axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_row_labels_draw_accented_class_names(monkeypatch):
    # Pillow's built-in font has no "é": a folder class "café" was labelled "caf" and a box, the same box as
    # a character no font has.
    from trainer.images import tile

    def label(text):
        picture = tile(np.zeros((1, 16, 16, 1), np.uint8), 1, 1, scale=2, row_labels=[text])
        return np.asarray(picture)[:, :-20]  # the label margin, without the cell

    missing = label("\U0010fffd")  # a private-use character: no glyph anywhere
    for text in ("é", "ü", "ß", "ж"):
        assert label(text).shape != missing.shape or (label(text) != missing).any(), text


def test_each_sample_count_is_drawn_beside_the_real_figure_at_that_count(monkeypatch):
    # A run with --eval-every drew its 1,000-sample FCDs against the 10,000-sample real line (0.07): real images
    # themselves score ~0.9 at 1,000, so every point looked ten times further from real than it was.
    figures, png = [], plots._png
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or png(fig))

    def evaluation(samples, fcd, real_fcd):
        return {"label_accuracy": 0.8, "frechet_classifier_distance": fcd, "classifier_score": 7.0, "samples": samples,
                "real": {"label_accuracy": 0.9, "frechet_classifier_distance": real_fcd, "classifier_score": 7.8,
                         "samples": samples}}

    history = [{"epoch": 1, "step": 10, "evaluation": evaluation(1000, 3.0, 0.9)},
               {"epoch": 2, "step": 20, "evaluation": evaluation(10000, 0.5, 0.07)}]
    plots.quality_plot_png(history, real={"frechet_classifier_distance": 0.07, "samples": 10000})
    (fcd_axes,) = [ax for ax in figures[0].axes if ax.get_title().startswith("Fréchet")]
    real_lines = {line.get_label(): line for line in fcd_axes.get_lines() if line.get_label().startswith("real")}
    assert {label: line.get_ydata()[0] for label, line in real_lines.items()} == {"real (1000)": 0.9,
                                                                                 "real (10000)": 0.07}
    points = {line.get_label(): line for line in fcd_axes.get_lines() if line.get_label().endswith("samples")}
    for count in (1000, 10000):  # each real line in its points' colour
        assert real_lines[f"real ({count})"].get_color() == points[f"{count} samples"].get_color()
