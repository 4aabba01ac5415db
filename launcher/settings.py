"""The launcher's defaults, kept in a small JSON file the user owns.

    $GANKIT_CONFIG (default ~/.config/gankit/config.json)

Keys: backend, region, bucket, role, instance_type, image, subnet (where EC2 instances launch; set by hand), and what
`launcher infra up` records (instance_profile for training instances, jupyter_instance_profile, security_group). An environment variable
GANKIT_<KEY> overrides the file; command-line flags override both. AWS profile and
region otherwise follow the usual AWS conventions (AWS_PROFILE, AWS_DEFAULT_REGION).
"""

import ipaddress
import json
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from launcher.backends import REGISTRY
from trainer.errors import UsageError
from trainer.fsutil import atomic_write_text, folder_held

KEYS = ("backend", "region", "bucket", "role", "instance_type", "image", "instance_profile", "jupyter_instance_profile",
        "security_group", "subnet")


class _Registered(Sequence):
    """The registry's names, read at each use: a backend registered later is in it too."""

    def __getitem__(self, index):
        return tuple(REGISTRY)[index]

    def __len__(self):
        return len(REGISTRY)


BACKENDS = _Registered()


def config_path() -> Path:
    return Path(os.environ.get("GANKIT_CONFIG") or Path.home() / ".config" / "gankit" / "config.json").expanduser()


def config_dir() -> Path:
    return config_path().parent


def load() -> dict:
    """The settings file's values, checked: anything else in it is one line naming the file (it is the
    user's: never silently ignored, never overwritten)."""
    path = config_path()
    if not path.exists():
        return {}
    try:
        values = json.loads(path.read_bytes())
    except ValueError as e:  # UnicodeDecodeError included
        raise UsageError(f"{path} is not valid JSON ({_one_line(e)}); fix or delete it") from None
    except OSError as e:  # a folder in its place, or no permission to read it
        raise UsageError(f"{path} cannot be read ({e.strerror or e}); make it a readable settings file, "
                         "or delete it") from None
    if not isinstance(values, dict):
        raise UsageError(f"{path} holds a JSON {type(values).__name__}, not an object of settings such as "
                         '{"backend": "local"}; fix or delete it')
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise UsageError(f"{path}: unknown setting {', '.join(map(repr, unknown))[:80]}; known: {', '.join(KEYS)}; "
                         "fix or delete it")
    for key, value in values.items():
        if not isinstance(value, str):
            raise UsageError(f"{path}: {key} must be a string, not {json.dumps(value)[:40]}; fix or delete it")
    try:
        _check(values)
    except UsageError as e:
        raise UsageError(f"{path}: {e}; fix or delete it") from None
    return values


def _one_line(e) -> str:
    return " ".join(str(e).split())


def _check(values: dict):
    if values.get("backend") not in (None, "", *BACKENDS):
        raise UsageError(f"backend {values['backend']!r}: choose one of {', '.join(BACKENDS)}")
    if values.get("bucket"):
        check_bucket(values["bucket"], "bucket")
    if values.get("region"):
        from trainer import aws

        aws.region(values["region"])  # its one line when it is not a region's name, set now rather than at submit


# AWS's rules for bucket names (general purpose buckets), checked before any call is made with one.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX = re.compile(r"[A-Za-z0-9._=+/-]*")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def check_bucket(value: str, source: str = "--bucket") -> str:
    """`value` (a name, or s3://NAME[/PREFIX]) if its bucket name follows S3's rules; else one line saying why."""
    name, _, prefix = str(value).removeprefix("s3://").partition("/")
    why = None
    if not _BUCKET.fullmatch(name):
        why = "use 3-63 lower-case letters, digits, hyphens and dots, starting and ending with a letter or digit"
    elif ".." in name:
        why = "two dots may not follow each other"
    elif _is_ip(name):
        why = "it may not look like an IP address"
    elif name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        why = "AWS reserves that prefix or suffix"
    elif prefix and any(part in ("", ".", "..") for part in prefix.rstrip("/").split("/")):
        why = "its prefix may not have empty, '.' or '..' parts"
    elif not _PREFIX.fullmatch(prefix):  # it reaches instances' setup scripts and unit files
        why = "its prefix may hold letters, digits and . _ = + - / only"
    if why:
        raise UsageError(f"{source} {str(value)[:80]!r} is not an S3 bucket name: {why} (e.g. my-gankit-data)")
    return value


# An IAM role's ARN, as SageMaker takes a job's execution role.
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")


def check_role(value, source: str = "--role") -> str:
    """`value` if it is an IAM role's ARN; else one line naming where it came from (`source`)."""
    if not ROLE_ARN.fullmatch(value or ""):
        raise UsageError(f"{source} {str(value)[:80]!r} is not an IAM role ARN; give one like "
                         "arn:aws:iam::123456789012:role/gankit-sagemaker (`launcher infra up` makes and records it)")
    return value


# IAM's rule for an instance profile's name, and its ARN (an optional path before the name).
_PROFILE_NAME = r"[\w+=,.@-]{1,128}"
_PROFILE = re.compile(rf"{_PROFILE_NAME}|arn:aws[a-z-]*:iam::\d{{12}}:instance-profile/(?:[\w+=,.@-]+/)*{_PROFILE_NAME}",
                      re.ASCII)  # IAM's \w is ASCII's


def check_instance_profile(value: str, key: str) -> str:
    """`value` if it is an IAM instance profile's name or ARN: anything else (`a b`) was written, and RunInstances
    refused it at every EC2 launch or `launcher jupyter`, after the job's files were uploaded."""
    if not _PROFILE.fullmatch(value):
        raise UsageError(f"{key} {value[:80]!r} is not an IAM instance profile name or ARN: use up to 128 letters, "
                         "digits and + = , . @ _ - (e.g. gankit-ec2; `launcher infra up` records its own)")
    return value


def check_resource_id(value: str, key: str, prefix: str) -> str:
    """`value` if it is an EC2 id of that kind (sg-..., subnet-...): RunInstances takes a security group and a subnet
    by id only, so a name was refused there, at every launch, after the job's files were uploaded."""
    if not re.fullmatch(rf"{prefix}-[0-9a-f]+", value):
        raise UsageError(f"{key} {value[:80]!r} is not an EC2 {prefix}-... id; give its id, e.g. {prefix}-0123456789abcdef0 "
                         "(`aws ec2 describe-security-groups` / `describe-subnets` list them; `launcher infra up` "
                         "records its own group)")
    return value


# Docker's image reference grammar (distribution/reference), less IPv6 registries: [registry[:port]/]name[:tag][@digest].
_IMAGE = re.compile(r"""
    (?:(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*
       (?::[0-9]+)?/)?                                                   # registry: its host, and port
    [a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*  # name: path components
    (?::[\w][\w.-]{0,127})?                                             # tag
    (?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?  # digest, e.g. sha256:...
    """, re.VERBOSE)


def check_image(value: str, source: str = "--image") -> str:
    """`value` if it is a container image reference as docker reads one; else one line naming `source`. An EC2 job
    hands it to `docker run` on the instance, where one starting with `-` was read as an option and a typo failed only
    once the instance was up, after the job's files were uploaded."""
    if len(value) > 255 or not _IMAGE.fullmatch(value):
        raise UsageError(f"{source} {value[:80]!r} is not a container image reference; give one like "
                         "123456789012.dkr.ecr.us-east-1.amazonaws.com/gankit-trainer:1.0 "
                         "([registry/]name[:tag][@sha256:digest]; `launcher image push` prints its own)")
    return value


def _is_ip(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def env_override(key: str) -> str | None:
    """The GANKIT_<KEY> value that overrides `key`'s setting, if one is set (an empty one does not)."""
    return os.environ.get(f"GANKIT_{key.upper()}") or None


def get(key: str, default=None):
    env = env_override(key)
    if env:
        if key == "backend" and env not in BACKENDS:  # else `submit` blamed a --backend nobody passed
            raise UsageError(f"GANKIT_BACKEND={env[:40]!r}: choose one of {', '.join(BACKENDS)}, or unset it")
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
    _check(values)
    # What only a submit reads, checked as it will be: set now rather than refused at submit. (Not in _check:
    # a file edited by hand with a bad one still serves every other command, and submit names the setting.)
    if values.get("role"):
        check_role(values["role"], "role")
    if values.get("image"):
        check_image(values["image"], "image")
    for key in ("instance_profile", "jupyter_instance_profile"):
        if values.get(key):
            check_instance_profile(values[key], key)
    for key, prefix in (("security_group", "sg"), ("subnet", "subnet")):
        if values.get(key):
            check_resource_id(values[key], key, prefix)
    if values.get("instance_type"):
        from launcher.pricing import check_instance_type_setting

        check_instance_type_setting(values["instance_type"])
    path = config_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with folder_held(path.parent):  # two at once: each reads what the other wrote, so neither setting is lost
            current = load()
            current.update(values)
            current = {k: v for k, v in current.items() if v not in (None, "")}
            target = _file_behind(path)
            atomic_write_text(target, json.dumps(current, indent=2, sort_keys=True) + "\n", mode=_mode_of(target))
    except OSError as e:  # a file where its folder goes, a full disk, no permission: whole or as it was
        raise UsageError(f"{path} could not be written ({e.strerror or e}); make {path.parent} a folder you can "
                         "write to, or set GANKIT_CONFIG to another file") from None
    return current


def _file_behind(path: Path) -> Path:
    """The file `path` names, through any symlinks: a config linked from a dotfiles repo is written there, and the link
    stays (the rename would put a plain file in the link's place, and the file the user keeps would never change)."""
    return Path(os.path.realpath(path))


def _mode_of(path: Path) -> int | None:
    """The permissions `path` has, to give the file that replaces it (a config the user made private stays so); None
    when there is none yet: a new one gets the umask's."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None


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
    root = base.absolute() / "bucket"  # recorded in each job: a relative one meant another folder elsewhere
    for path in (root.parent, root):
        if path.exists() and not path.is_dir():  # before the plan, not as the dataset's copy failing after it
            where = f"GANKIT_HOME={home}" if home else "GANKIT_HOME is not set: its default"
            raise UsageError(f"{path} is not a folder, and the local backend keeps its runs in {root} ({where}); "
                             "move it out of the way, or point GANKIT_HOME at a folder")
    return root
