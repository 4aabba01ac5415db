"""The caller's Jupyter instance: found by its tags in this region, or by the bucket's note in another one."""

import contextlib
import json

from launcher import instances
from launcher.jupyter import owners, say
from trainer.errors import UsageError

PURPOSE = "jupyter"
LIVE_STATES = ("pending", "running", "stopping", "stopped")
TAG_PURPOSE, TAG_OWNER = instances.TAG_PURPOSE, "gankit:owner"
TAG_IDLE, TAG_MAX_HOURS = "gankit:idle", "gankit:max-hours"


def tags_of(instance) -> dict:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def is_jupyter_of(instance, who: str) -> bool:
    tags = tags_of(instance)
    return tags.get(TAG_PURPOSE) == PURPOSE and tags.get(TAG_OWNER) == who


def find_instance(ec2, who: str) -> dict | None:
    """The caller's Jupyter instance (newest if several), not yet terminated."""
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": f"tag:{TAG_PURPOSE}", "Values": [PURPOSE]},
        {"Name": f"tag:{TAG_OWNER}", "Values": [who]},
        {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
    ])
    found = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
    return max(found, key=lambda i: i["LaunchTime"]) if found else None


# --- in another region ------------------------------------------------------------------------------

def region_record(who: str) -> str | None:
    """Where the region of the caller's instance is noted: the bucket is one for every region, EC2 is not."""
    from launcher import settings

    bucket = settings.get("bucket")
    return f"s3://{bucket.removeprefix('s3://').rstrip('/')}/jupyter/{who}/instance.json" if bucket else None


def record_region(who: str, region_name: str, iid: str):
    """Note the instance's region, so `launcher jupyter` run with another region finds it there."""
    from trainer import s3

    uri = region_record(who)
    with contextlib.suppress(Exception):  # only a pointer: the instance serves all the same without it
        s3.write_bytes(uri, json.dumps({"region": region_name, "instance": iid}).encode())


def found_elsewhere(region_name: str, who: str) -> tuple[str, dict] | None:
    """(region, instance): the caller's live Jupyter instance in another region than `region_name`, as noted.

    The note is an object in the bucket, which anyone who may write there (every user of the account) may
    replace: its instance counts only if EC2 says it is the caller's Jupyter (its tags, as find_instance asks),
    not a training instance or another's."""
    from trainer import s3

    uri = region_record(who)
    try:
        noted = json.loads(s3.read_bytes(uri) or b"{}") if uri else {}
        other, iid = noted.get("region"), noted.get("instance")
        if not other or other == region_name or not iid:
            return None
        instance = instances.describe_instance(iid, other)
    except Exception:  # an unreadable note says nothing: the instance is looked for here only, as before
        return None
    if not instance or instance["State"]["Name"] not in LIVE_STATES or not is_jupyter_of(instance, who):
        return None
    return other, instance


def elsewhere_line(region_name: str, found: tuple[str, dict]) -> str:
    other, instance = found
    return (f"your Jupyter instance {instance['InstanceId']} ({instance['State']['Name']}) is in {other}, not "
            f"{region_name}: set the region to {other} to use it (GANKIT_REGION={other}, or `launcher config set "
            f"region {other}`)")


def refuse_if_elsewhere(region_name: str, who: str):
    """One instance per identity: a region set otherwise must not launch a second one beside the first."""
    found = found_elsewhere(region_name, who)
    if found:
        raise UsageError(f"{elsewhere_line(region_name, found)}, or `launcher jupyter stop --terminate` it there "
                         f"before launching one in {region_name}")


# --- under the caller's old, shared name --------------------------------------------------------------

def legacy_instance_line(ec2, region_name) -> str | None:
    """What to say of a Jupyter instance a launcher before `owner_name` tagged with the caller's old name,
    when that name is not the caller's any more (a plain IAM user's is, and finds its instance as before).

    It is not reused, since nothing shows it is the caller's: that launcher tagged only the shared name, not
    who launched it, and its token parameter (/gankit/jupyter/<old name>/token, fixed in the instance's own
    units) stays the one a user named so still uses as its own, so reusing it would give two people one token
    again. A new instance of the caller's own is the safe side; the line names the old one, which may be theirs."""
    with contextlib.suppress(Exception):  # only a note: the caller's own instance is found all the same
        legacy, now = owners.former_owner_name(region_name) or (None, None)
        old = legacy and find_instance(ec2, legacy)
        if old:
            return (f"note: {old['InstanceId']} ({old['State']['Name']}) is tagged for '{legacy}', the name older "
                    "launchers gave your identity and others alike (user/Dev-alice and assumed-role/Dev/alice were both "
                    f"'Dev-alice'), so it is not taken for yours, which is now '{now}'. It may be the "
                    f"instance of an IAM user named '{legacy}', so leave it be unless you launched it; if you did, "
                    f"`aws ec2 terminate-instances --region {region_name} --instance-ids {old['InstanceId']}` deletes "
                    "it (stopped, it still bills its disk)")
    return None


def say_legacy_instance(ec2, region_name):
    line = legacy_instance_line(ec2, region_name)
    if line:
        say(line)
