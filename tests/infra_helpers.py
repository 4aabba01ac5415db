"""Helpers for the infra and EC2 tests.

`launcher.settings` belongs to the launcher branch; until it is merged here, `use_settings`
installs a stand-in with the interface's behaviour (JSON at $GANKIT_CONFIG, GANKIT_<KEY>
overrides) so these tests exercise the infra code, and read back the JSON file either way.
"""

import dataclasses
import json
import os
import sys
import types
from pathlib import Path


def _stand_in():
    module = types.ModuleType("launcher.settings")

    def path():
        return Path(os.environ["GANKIT_CONFIG"])

    def load():
        return json.loads(path().read_text()) if path().exists() else {}

    def get(key, default=None):
        return os.environ.get(f"GANKIT_{key.upper()}") or load().get(key, default)

    def update(**values):
        data = {**load(), **values}
        path().parent.mkdir(parents=True, exist_ok=True)
        path().write_text(json.dumps(data, indent=2))

    module.load, module.get, module.update = load, get, update
    return module


def use_settings(monkeypatch):
    """The launcher's settings module (the real one once merged)."""
    try:
        import launcher.settings as settings  # noqa: F401
    except ImportError:
        import launcher

        settings = _stand_in()
        monkeypatch.setitem(sys.modules, "launcher.settings", settings)
        monkeypatch.setattr(launcher, "settings", settings, raising=False)
    return settings


def config_file() -> dict:
    path = Path(os.environ["GANKIT_CONFIG"])
    return json.loads(path.read_text()) if path.exists() else {}


def _jobs_stand_in():
    module = types.ModuleType("launcher.jobs")

    def folder():
        return Path(os.environ["GANKIT_CONFIG"]).parent / "jobs"

    def save(record):
        folder().mkdir(parents=True, exist_ok=True)
        (folder() / f"{record['job']}.json").write_text(json.dumps(record, indent=1))

    def load(job):
        return json.loads((folder() / f"{job}.json").read_text())

    module.save, module.load = save, load
    return module


def use_jobs(monkeypatch):
    """The launcher's job records (the real module once merged)."""
    try:
        import launcher.jobs as jobs  # noqa: F401
    except ImportError:
        import launcher

        jobs = _jobs_stand_in()
        monkeypatch.setitem(sys.modules, "launcher.jobs", jobs)
        monkeypatch.setattr(launcher, "jobs", jobs, raising=False)
    return jobs


@dataclasses.dataclass
class Spec:
    """The fields of `launcher.spec.JobSpec` the EC2 backend reads (the interface's names)."""

    job: str
    root: str
    dataset: str = "mnist"
    hyperparameters: dict = dataclasses.field(default_factory=dict)
    backend: str = "ec2"
    instance_type: str = "g5.xlarge"
    instance_count: int = 1
    spot: bool = False
    max_run: int = 3600
    max_wait: int | None = None
    role: str | None = None
    image: str | None = None
    region: str | None = "us-east-1"
    resume: str | None = None

    @property
    def data_uri(self):
        from trainer import layout

        return layout.dataset_prefix(self.root, self.dataset)

    @property
    def checkpoint_uri(self):
        from trainer import layout

        return layout.checkpoints_prefix(self.root, self.resume or self.job)

    @property
    def output_uri(self):
        from trainer import layout

        return layout.output_prefix(self.root, self.resume or self.job)

    def to_dict(self):
        return dataclasses.asdict(self)
