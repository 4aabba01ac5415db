"""Whose Jupyter instance: one owner name per AWS identity, and the shared name older launchers gave it."""

import hashlib
import re

from launcher import instances


def caller_arn(region_name) -> str:
    return instances.client("sts", region_name).get_caller_identity()["Arn"]


def owner(region_name) -> str:
    """The owner name of the caller's AWS identity (`owner_name`)."""
    return owner_name(caller_arn(region_name))


# A name with a hash: readable, then 12 hex digits of the ARN's sha256 (48 bits: no two of a team's alike).
_HASHED = re.compile(r".+-[0-9a-f]{12}")
# Its readable part at most: the name goes into the SSH rule's description (255 in all) and a lock folder's name.
READABLE_MAX = 128


def owner_name(arn: str) -> str:
    """A name for the identity `arn`, one per identity, safe in tags, SSM names, S3 keys and file names:
    'alice' for user/alice; for any other identity, its readable form and a short hash of its ARN:
    'Dev-alice-3f0c…' for assumed-role/Dev/alice (its session name, so each SSO user is one owner).

    The readable form alone (what launchers before this one used) was shared: user/Dev-alice,
    assumed-role/Dev/alice, user/Dev/alice (a path), federated-user/Dev-alice, and names differing only
    in a character it replaces, all read 'Dev-alice', so they shared one instance and one token. A
    plain name is now only ever an IAM user's own name (unique in the account, a path-less user's ARN
    says no more), and never looks like a hashed one: a user named so gets a hash too."""
    readable = legacy_owner_name(arn)
    if arn.split(":", 5)[-1] == f"user/{readable}" and not _HASHED.fullmatch(readable):
        return readable
    return f"{readable[:READABLE_MAX]}-{hashlib.sha256(arn.encode()).hexdigest()[:12]}"


def legacy_owner_name(arn: str) -> str:
    """The owner name launchers before `owner_name` gave `arn`: 'Dev-alice' for user/Dev-alice and for
    assumed-role/Dev/alice alike."""
    resource = arn.split(":", 5)[-1]
    name = resource.split("/", 1)[1] if "/" in resource else resource
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "root"


def former_owner_name(region_name) -> tuple[str, str] | None:
    """(the caller's name under launchers before `owner_name`, its name now), where the two differ: a plain IAM
    user's did not change, and finds its instance and rules as before."""
    arn = caller_arn(region_name)
    legacy, now = legacy_owner_name(arn), owner_name(arn)
    return None if legacy == now else (legacy, now)
