"""What a run folder says about its run: run.json, metrics.jsonl and the generator's metadata."""

import json
import platform
from pathlib import Path

import trainer
from trainer.fsutil import atomic_write_text
from trainer.layout import job_of_output


def write_metrics(out: Path, rows: list[dict]):
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in rows))


def recorded_config(out: Path) -> dict | None:
    """The config a run folder's run.json records (None: no readable run.json, or no config in it)."""
    try:
        config = json.loads((out / "run.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return config if isinstance(config, dict) else None


def preset_of(config: dict | None) -> str | None:
    """The preset a recorded config (`recorded_config`) names, None where it names none."""
    preset = (config or {}).get("preset")
    return preset if isinstance(preset, str) else None


def write_run_info(out, cfg, setup, data, steps_per_epoch, total_steps, placement):
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


def record_stop(out: Path, step: int, resume_hint: str):
    """run.json's "stopped": where a stop left the run and how it resumes, for the report; the resumed run
    writes run.json anew, without it."""
    info = json.loads((out / "run.json").read_text())
    info["stopped"] = {"step": step, "resume": resume_hint}
    atomic_write_text(out / "run.json", json.dumps(info, indent=2))


def generator_meta(cfg, data, num_classes, image_shape) -> dict:
    """generator.json's keys, known at the start; both exports (generator/ and generator-best/) add their
    steps and figures."""
    import keras

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
        "framework": cfg.framework,
        "keras_version": keras.__version__,
    }
