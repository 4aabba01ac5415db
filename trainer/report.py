"""report.html: one self-contained page per run (every image embedded), readable without a server.

Built from what the run leaves in its output folder: run.json, metrics.jsonl,
losses.png, samples/, generator/ and evaluation.json. Parts whose inputs are
missing (e.g. no evaluation yet) say so instead of breaking the page.
"""

import base64
import html
import json
from pathlib import Path

from trainer import plots
from trainer.events import is_loss_point, is_number, read_losses, read_rows
from trainer.errors import GankitError, UsageError
from trainer.fsutil import atomic_write_bytes, atomic_write_text
from trainer.progress import format_duration

REPORT_FILE = "report.html"
STRIP_FRAMES = 12  # sample grids shown in the strip, evenly spread over the epochs
THUMB_WIDTH = 200

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;background:#fff}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:14px}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.strip{display:flex;gap:8px;overflow-x:auto}
figure{margin:0;text-align:center;font-size:12px;color:#555}.grids{display:flex;flex-wrap:wrap;gap:12px}
.note{color:#666;font-size:13px}img{image-rendering:pixelated}img.plot{image-rendering:auto;max-width:100%}
"""


def write_report(output_dir, price_per_hour=None, log=lambda *a: None, cost_note=None) -> Path:
    """Write OUTPUT_DIR/report.html (atomically) and return its path. `cost_note` says what the run cost
    where no price applies (a local job)."""
    out = Path(output_dir)
    if not (out / "metrics.jsonl").is_file() and not (out / "run.json").is_file():
        raise UsageError(f"{out} is not a run's output folder (no metrics.jsonl or run.json); "
                         "point at the --output-dir of a training run")
    path = out / REPORT_FILE
    # A name that was not UTF-8 (a folder:PATH dataset's path; Python holds it as surrogates) shown as its bytes.
    page = render(out, price_per_hour, cost_note).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    try:
        atomic_write_text(path, page)
    except OSError as e:  # a full disk, a folder that is not writable: one line, the old report (if any) intact
        raise GankitError(f"{path} could not be written ({e.strerror or e}); free some space there or make "
                          "the folder writable, then run report again") from None
    log(f"report: {path}")
    return path


def report_at_end(output_dir, log=print):
    """The training loop's call: the generator is already exported, so a report that fails says so and
    leaves the run a success (`python -m trainer report OUTPUT_DIR` tries again)."""
    try:
        return write_report(output_dir, log=log)
    except Exception as e:  # noqa: BLE001 - whatever broke, the trained generator must not be lost to it
        log(f"report.html not written ({type(e).__name__}: {e}); `python -m trainer report {output_dir}` retries")
        return None


def render(out: Path, price_per_hour=None, cost_note=None) -> str:
    run = _read_json(out / "run.json") or {}
    history = _read_metrics(out / "metrics.jsonl")
    evaluation = _read_json(out / "evaluation.json")
    meta = _read_json(out / "generator" / "generator.json") or {}
    config = run.get("config", {})
    title = f"{run_name(out, run)}: {meta.get('model', config.get('model', ''))}/{meta.get('preset', config.get('preset', ''))} " \
            f"on {meta.get('dataset', config.get('dataset', '?'))}"
    parts = [f"<h1>{_e(title)}</h1>", f"<p class=sub>gankit run report · {_e(str(out.resolve()))}</p>",
             _summary(run, history, price_per_hour, cost_note), _evaluation_section(evaluation, run, history),
             _losses_section(out, history), _quality_section(history, evaluation),
             _samples_section(out, meta, config), _class_grids_section(out, meta), _hyperparameters_section(run)]
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def _framework(run) -> str:
    framework = run.get("framework", "tensorflow")  # runs before the JAX backend name none
    return f"{'JAX' if framework == 'jax' else 'TensorFlow'} {run.get(framework, '?')}"


def run_name(out: Path, run: dict) -> str:
    """The job's name when the run had one (run.json), else its folder's (a job's folder is named `output`)."""
    folder = out.resolve()
    return run.get("job") or (folder.parent.name if folder.name == "output" else folder.name)


# How a run cut short by --max-steps ends, in the tense of where it is: still training, past its last step, or
# stopped (or failed) before it.
CUT_SHORT_END = {"running": "it is set to end", "ended": "it ended", "stopped": "it was set to end"}


def cut_short_text(run: dict, state: str = "running") -> str | None:
    """What --max-steps did to a run that it ended before its last epoch, from run.json, said as fits `state`
    (a key of CUT_SHORT_END); else None."""
    if not run.get("cut_short"):
        return None
    config, per_epoch = run.get("config", {}), run.get("steps_per_epoch")
    epochs = config.get("epochs")
    planned = f" of the {epochs * per_epoch:,} its {epochs} epoch{'s take' if epochs != 1 else ' takes'}" if epochs and per_epoch else ""
    return (f"by --max-steps {config.get('max_steps')}: {CUT_SHORT_END[state]} at step {run.get('total_steps'):,}"
            f"{planned} (a larger max_steps resumes it from its checkpoint)")


def _reached_the_end(run, history) -> bool:
    """Whether the metrics reach the run's last step (a report is mostly of a finished run; `launcher report`
    may build one while it trains or once it stopped)."""
    total = run.get("total_steps")
    return bool(history and total and history[-1].get("step", 0) >= total)


def _where_it_is(run, history) -> str:
    """The tense of a --max-steps end (a key of CUT_SHORT_END): past its last step, stopped before it (as
    `launcher status` says of a stopped job), or still training."""
    if _reached_the_end(run, history):
        return "ended"
    return "stopped" if run.get("stopped") else "running"


def stopped_text(run: dict) -> str:
    """Where a stop (SIGTERM, `launcher stop`, --max-run) left the run, from run.json, and how it resumes."""
    stopped = run["stopped"]
    return f"at step {stopped.get('step', 0):,} of {_count(run.get('total_steps'))}; {stopped.get('resume', '')}"


def _summary(run, history, price_per_hour, cost_note=None) -> str:
    seconds = sum(r.get("seconds", 0) for r in history)
    batch = run.get("global_batch_size")
    # Every image over the whole wall time, compiling included (an epoch's own images_per_sec leaves that out).
    images = history[-1]["step"] * batch if history and is_number(batch, int) else 0
    replicas = run.get("replicas", 1)
    where = f"{replicas} replicas ({run.get('strategy')}) on " if replicas > 1 else ""
    rows = [("ran on", f"{where}{run.get('device', '?')} ({run.get('precision', '?')}{', XLA' if run.get('xla') else ''})"
                       f" · host {run.get('host', '?')} · {_framework(run)}"),
            ("epochs / steps", _epochs_and_steps(run, history)),
            *([("stopped", stopped_text(run))] if run.get("stopped") else []),
            ("training time", format_duration(seconds) if history else "n/a"),
            *([("cut short", cut)] if (cut := cut_short_text(run, _where_it_is(run, history))) else []),
            ("images per second", f"{images / seconds:,.0f} (all steps over the training time)" if images and seconds
                                  else "n/a")]
    if price_per_hour is not None:
        rows.append(("cost", f"${price_per_hour * seconds / 3600:,.2f} (at ${price_per_hour:.3f}/hour, training time only)"))
    else:
        rows.append(("cost", cost_note or "unknown (pass --price-per-hour, or use `launcher report`)"))
    return "<h2>Run</h2>" + _table(rows)


def _epochs_and_steps(run, history) -> str:
    """Whole epochs / the step reached, of the run's total. The last row of metrics.jsonl may be part of an
    epoch (a stop or --max-steps ended it there): that one is no whole epoch, and the text says so."""
    step = history[-1]["step"] if history else 0
    per_epoch = run.get("steps_per_epoch")
    partial = bool(history and per_epoch) and step != history[-1]["epoch"] * per_epoch
    inside = f" (inside epoch {history[-1]['epoch']})" if partial else ""
    return f"{len(history) - partial} / {step:,} of {_count(run.get('total_steps'))}{inside}"


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _evaluation_section(evaluation, run, history) -> str:
    if not evaluation and run.get("stopped"):
        return "<h2>Image quality</h2><p class=note>" + _stopped_before_scoring(history) + "</p>"
    if not evaluation:
        return ("<h2>Image quality</h2><p class=note>Not evaluated yet: train with --eval-every K, "
                "or run <code>launcher evaluate JOB</code> (<code>python -m trainer evaluate OUTPUT_DIR/generator"
                "</code>), which adds the figures to this report.</p>")
    from trainer.evaluate import table_rows

    n, real = evaluation["samples"], evaluation["real"]
    body = "".join(f"<tr><td>{_e(a)}</td><td class=n>{_e(b)}</td><td class=n>{_e(c)}</td></tr>"
                   for a, b, c in table_rows(evaluation))
    return (f"<h2>Image quality</h2><table><tr><th>figure</th><th>generated</th><th>real (ceiling)</th></tr>{body}</table>"
            f"<p class=note>{n} generated images vs {n} real test images; the real column scores real test images "
            f"(distance: {real['samples']} test vs {real['samples']} train images). The Fréchet distance is biased "
            f"at small counts: compare only figures taken at the same count. Judge accuracy on the whole real test "
            f"split: {evaluation['judge_test_accuracy']:.4f}.{_scored_text(evaluation)}</p>")


def _stopped_before_scoring(history) -> str:
    """A stopped run has no generator/ to evaluate yet: the advice to train with --eval-every or to evaluate
    generator/ is not for it (it may have been trained with --eval-every all along)."""
    scored = any("evaluation" in row for row in history)
    return ("Not evaluated yet: the run stopped before its end, where its final evaluation scores the generator it "
            "exports then; resume it (as the Run table says) to get both."
            + (" The epochs --eval-every scored so far are below." if scored else ""))


def _scored_text(evaluation) -> str:
    """Which generator the figures are of (evaluation.json's "generator"; older ones do not say)."""
    from trainer.evaluate import BEST_DIR

    scored = evaluation.get("generator")
    if not isinstance(scored, dict):
        return ""
    folder = f"{BEST_DIR}/ (the best" if scored.get("selected") == "best" else "generator/ (the last"
    return f" Figures of {folder}: step {scored.get('steps')})."


def _losses_section(out, history) -> str:
    step_rows = read_losses(out)  # a run stopped (or still) inside its first epoch has these and no epoch row yet
    if not history and len(step_rows) < 2:
        return "<h2>Losses</h2><p class=note>No finished epoch yet.</p>"
    # Drawn again every time: the trainer redraws losses.png at most every 10 s (trainer/train.py) and not at
    # a stop, so the run's copy can end epochs before metrics.jsonl does. The copy is brought up to date too,
    # where it can be (a full disk is said once, of report.html).
    png = plots.loss_plot_png(history, step_rows=step_rows)
    try:
        atomic_write_bytes(out / "losses.png", png)
    except OSError:
        pass
    return "<h2>Losses</h2>" + _img(png, "losses per recorded step and per epoch, with trend lines", "plot")


def _quality_section(history, evaluation) -> str:
    png = plots.quality_plot_png(history, (evaluation or {}).get("real"))
    if png is None:
        return ""
    return "<h2>Quality per evaluated epoch</h2>" + _img(png, "quality figures per evaluated epoch", "plot")


def _samples_section(out, meta, config) -> str:
    from PIL import Image

    from trainer.export import GRID_ROWS

    grids = sorted((out / "samples").glob("epoch-*.png"))
    if not grids:
        return ""
    step = max(1, -(-len(grids) // STRIP_FRAMES))
    chosen = grids[::step]
    if chosen[-1] != grids[-1]:
        chosen.append(grids[-1])
    figures = []
    for path in chosen:
        picture = Image.open(path)
        height = round(picture.height * THUMB_WIDTH / picture.width)
        thumb = picture.resize((THUMB_WIDTH, height), Image.BILINEAR)
        label = f"epoch {int(path.stem.split('-')[1])}"
        figures.append(f"<figure>{_img(plots.png_bytes(thumb), label)}<figcaption>{label}</figcaption></figure>")
    classes = len(meta.get("class_names") or []) if meta.get("conditional", True) else 0
    if not meta and config.get("model") != "dcgan":
        rows = ", one row per class"  # no generator exported yet to say how many
    elif classes > GRID_ROWS:
        rows = f", one row per class for {GRID_ROWS} of the {classes} classes, spread evenly over them"
    else:
        rows = ", one row per class" if classes else ""
    parts = [f"<h2>Samples during training</h2><p class=note>The same noise every epoch{rows}.</p>",
             f"<div class=strip>{''.join(figures)}</div>"]
    gif = out / "samples" / "progress.gif"
    if gif.is_file():
        parts.append("<h3>Progress</h3>" + _img(gif.read_bytes(), "progress over the epochs", mime="image/gif"))
    return "".join(parts)


def _class_grids_section(out, meta) -> str:
    if not (out / "generator" / "generator.json").is_file():
        return ""
    from trainer.export import load_generator

    generator = load_generator(out / "generator")
    which = f"generator/, the last: step {meta.get('steps')}"
    best = _best_text(out)
    if not generator.conditional:
        return f"<h2>Final samples ({which})</h2>{best}" + _img(plots.png_bytes(generator.grid(seed=0)), "final samples")
    figures = []
    for k, name in enumerate(generator.class_names):
        picture = plots.png_bytes(generator.grid(target_class=k, rows=2, cols=6, seed=0))
        figures.append(f"<figure>{_img(picture, f'class {name}')}<figcaption>{_e(name)}</figcaption></figure>")
    return f"<h2>Final generator ({which}), per class</h2>{best}<div class=grids>{''.join(figures)}</div>"


def _best_text(out) -> str:
    """What generator-best/ (kept with --eval-every) is, and that these grids and `generate` are of generator/."""
    from trainer.evaluate import BEST_DIR

    best = _read_json(out / BEST_DIR / "generator.json")
    if not best:
        return ""
    return (f"<p class=note>{BEST_DIR}/ holds the generator with the best FCD at {best.get('fcd_samples')} samples"
            f" (epoch {best.get('epoch')}, step {best.get('step')}, FCD {_number(best.get('fcd'))}), compared at every "
            "evaluation at that one count. These grids are of generator/, as is <code>launcher generate</code> given "
            f"this run's folder; name its <code>{BEST_DIR}</code> to sample the best.</p>")


def _number(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "?"


def _hyperparameters_section(run) -> str:
    config = run.get("config")
    if not config:
        return ""
    rows = [(k, "" if v is None else str(v)) for k, v in config.items()]
    rows += [(k, str(run[k])) for k in ("global_batch_size", "dataset_size", "steps_per_epoch", "trainer_version")
             if k in run]
    return "<h2>Hyperparameters</h2>" + _table(rows)


def _table(rows) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _img(data: bytes, alt: str, cls: str = "", mime="image/png") -> str:
    src = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    return f'<img src="{src}" alt="{_e(alt)}"' + (f' class="{cls}"' if cls else "") + ">"


def _e(text) -> str:
    return html.escape(str(text))


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _read_metrics(path) -> list[dict]:
    """metrics.jsonl's epoch rows. A line that is not one is skipped: a pulled run's file is remote content, and a
    line of another shape ({"epoch": 1}) ended `report` in a traceback, while one line that was not JSON lost all."""
    return read_rows(path, _is_epoch_row)


def _is_epoch_row(row) -> bool:
    """What the trainer writes, as far as the report reads it: an epoch, a step and the losses, numbers for the
    time, and the quality figures (with the real images') as numbers where there are any."""
    def figures(values, samples_needed=True):
        return (isinstance(values, dict) and (is_number(values.get("samples"), int) or not samples_needed)
                and all(values.get(key) is None or is_number(values[key]) for key, _ in plots.QUALITY_PANELS))

    evaluation = row.get("evaluation") if isinstance(row, dict) else None
    return (is_loss_point(row) and is_number(row.get("epoch"), int)
            and all(is_number(row.get(key, 0)) for key in ("seconds", "images_per_sec"))
            and (evaluation is None or (figures(evaluation)
                                        and (evaluation.get("real") is None or figures(evaluation["real"], False)))))
