"""Helpers for the infra and EC2 tests.

`launcher.settings` belongs to the launcher branch; until it is merged here, `use_settings`
installs a stand-in with the interface's behaviour (JSON at $GANKIT_CONFIG, GANKIT_<KEY>
overrides) so these tests exercise the infra code, and read back the JSON file either way.
"""

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
