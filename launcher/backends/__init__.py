"""The backends: name -> the module implementing `launcher.backends.base.Backend`.

A new backend is one module and one entry here; nothing else in the launcher names backends
(settings.BACKENDS, `--backend` and the job records all read this registry). The modules are
imported when a job uses them, so `launcher --help` loads none of them (nor boto3).
"""

import importlib
from typing import cast

from launcher.backends.base import FINAL_STATES, Backend
from trainer.errors import UsageError

__all__ = ["REGISTRY", "get", "Backend", "FINAL_STATES"]

# In the order messages list them.
REGISTRY: dict[str, str] = {
    "local": "launcher.backends.local",
    "sagemaker": "launcher.backends.sagemaker",
    "ec2": "launcher.backends.ec2",
}


def get(name: str) -> Backend:
    if name not in REGISTRY:
        raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(REGISTRY)}")
    return cast(Backend, importlib.import_module(REGISTRY[name]))

