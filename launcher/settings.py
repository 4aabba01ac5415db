"""The launcher's defaults, kept in a small JSON file the user owns.

    $GANKIT_CONFIG (default ~/.config/gankit/config.json)

Keys: backend, region, bucket, role, instance_type, image, and what `launcher infra up`
records (instance_profile, security_group, subnet). An environment variable
GANKIT_<KEY> overrides the file; command-line flags override both. AWS profile and
region otherwise follow the usual AWS conventions (AWS_PROFILE, AWS_DEFAULT_REGION).
"""

import json
import os
from pathlib import Path

from trainer.errors import UsageError
from trainer.fsutil import atomic_write_text

KEYS = ("backend", "region", "bucket", "role", "instance_type", "image", "instance_profile", "security_group", "subnet")
BACKENDS = ("local", "sagemaker", "ec2")


def config_path() -> Path:
    return Path(os.environ.get("GANKIT_CONFIG") or Path.home() / ".config" / "gankit" / "config.json").expanduser()


def config_dir() -> Path:
    return config_path().parent


def load() -> dict:
    path = config_path()
    if not path.exists():
        return {}
    try:
        values = json.loads(path.read_text())
    except ValueError as e:
        raise UsageError(f"{path} is not valid JSON ({e}); fix or delete it") from None
    return values if isinstance(values, dict) else {}


def get(key: str, default=None):
    env = os.environ.get(f"GANKIT_{key.upper()}")
    if env:
        return env
    value = load().get(key)
    return default if value in (None, "") else value


def effective() -> dict:
    """The file's settings with the GANKIT_<KEY> overrides applied: `get` for every key at once."""
    return {**load(), **{k: get(k) for k in KEYS if get(k) is not None}}


def update(**values):
    """Set keys (None deletes one) and write the file atomically."""
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise UsageError(f"unknown setting {', '.join(unknown)}; known: {', '.join(KEYS)}")
    if values.get("backend") not in (None, *BACKENDS):
        raise UsageError(f"backend {values['backend']!r}: choose one of {', '.join(BACKENDS)}")
    current = load()
    current.update(values)
    current = {k: v for k, v in current.items() if v not in (None, "")}
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(current, indent=2, sort_keys=True) + "\n")
    return current


def default_backend() -> str:
    """local until AWS is configured (`launcher infra up`, or a bucket and role set)."""
    backend = get("backend")
    if backend:
        return backend
    return "sagemaker" if get("bucket") and get("role") else "local"


def local_root() -> Path:
    """The folder standing in for the bucket on the local backend."""
    home = os.environ.get("GANKIT_HOME")
    base = Path(home).expanduser() if home else Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share").expanduser() / "gankit"
    return base / "bucket"
