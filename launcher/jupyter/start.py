"""The caller's instance up: reuse a running one, start a stopped one or launch a new one, then wait for it."""

import contextlib
import time

from launcher import instances
from launcher.jupyter import launch, lookup, profile, say, tokens
from launcher.pricing import DEFAULT_INSTANCE_TYPE
from trainer.errors import GankitError, UsageError, aws_error, aws_setup_error
from trainer.progress import Progress, format_duration


def start_or_reuse(ec2, ssm, region_name, who, instance_type, idle_seconds, max_hours) -> tuple[str, str, bool]:
    """(instance id, token, started): reuse a running instance, start a stopped one, or launch a new one;
    `started` is False for one reused (it ran before this run: someone may be using it).

    One `launcher jupyter` of this machine at a time decides: two at once each rotated the token of the
    stopped instance (one printed a token it never read) or each launched an instance. The second now waits,
    then finds the instance started and reuses its token."""
    from trainer.fsutil import cache_root, folder_held

    lock = cache_root() / "jupyter" / f"{region_name}-{who}"
    with contextlib.suppress(OSError):  # a cache that cannot be written: unguarded rather than not at all
        lock.mkdir(parents=True, exist_ok=True)
    with folder_held(lock, missing_ok=True, on_wait=lambda: say("waiting for another `launcher jupyter` on this machine to start "
                                               "the instance")):
        iid, token, started = _start_or_reuse(ec2, ssm, region_name, who, instance_type, idle_seconds, max_hours)
    lookup.record_region(who, region_name, iid)
    return iid, token, started


def _start_or_reuse(ec2, ssm, region_name, who, instance_type, idle_seconds, max_hours) -> tuple[str, str, bool]:
    instance = lookup.find_instance(ec2, who)
    if instance is None:
        lookup.refuse_if_elsewhere(region_name, who)
        lookup.say_legacy_instance(ec2, region_name)
    if instance and instance["State"]["Name"] in ("pending", "running"):
        token = tokens.read_token(ssm, who)
        if token is None:
            raise GankitError(f"{instance['InstanceId']} runs but its token is gone from SSM; "
                              "`launcher jupyter stop` it, then run `launcher jupyter` again")
        tokens.bind_token(ssm, region_name, who, instance["InstanceId"])  # idempotent; binds one an older launcher made
        profile.give_jupyter_profile(ec2, instance)  # it takes the new role at its next credential refresh
        say(f"reusing {instance['InstanceId']} ({instance['InstanceType']}, {instance['State']['Name']})")
        if instance_type and instance_type != instance["InstanceType"]:
            say(f"note: it is a {instance['InstanceType']}; `launcher jupyter stop` first to switch to {instance_type}")
        _note_limits(instance, idle_seconds, max_hours)
        return instance["InstanceId"], token, False
    if instance:  # stopping or stopped
        iid = instance["InstanceId"]
        if instance["State"]["Name"] == "stopping":
            say(f"waiting for {iid} to finish stopping")
            ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid])
        resized = bool(instance_type) and instance_type != instance["InstanceType"]
        if resized:
            change_type(ec2, instance, instance_type)
        _note_limits(instance, idle_seconds, max_hours)
        token = tokens.rotate_token(ssm, who)  # before the start: Jupyter reads it at boot
        tokens.bind_token(ssm, region_name, who, iid)
        profile.give_jupyter_profile(ec2, instance)  # before the start: it boots with the Jupyter role's credentials
        say(f"starting {iid}")
        start_stopped(ec2, instance, instance_type if resized else None)
        return iid, token, True
    instance_type = instance_type or DEFAULT_INSTANCE_TYPE["ec2"]
    token = tokens.rotate_token(ssm, who)
    iid = launch.launch(ssm, region_name, who, instance_type, idle_seconds, max_hours)
    say(f"launched {iid} ({instance_type}); it stops itself after {format_duration(idle_seconds)} idle "
        f"or {max_hours:g} h up")
    return iid, token, True


def change_type(ec2, instance, instance_type):
    """Resize a stopped instance, if its image suits the new type (DLAMI drivers follow the GPU family)."""
    iid, old = instance["InstanceId"], instance["InstanceType"]
    if instances.ami_parameter_for(old) != instances.ami_parameter_for(instance_type):
        raise UsageError(f"{iid} ({old}) has an image for another GPU family than {instance_type}; "
                         "`launcher jupyter stop --terminate`, then launch again with the new type")
    say(f"changing {iid} from {old} to {instance_type}")
    ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": instance_type})


def start_stopped(ec2, instance, new_type=None):
    """Start the stopped instance, just resized to `new_type` if given. A start EC2 refuses (no capacity for
    that type, a vCPU quota) puts the old type back: left resized, every later `launcher jupyter` would fail
    on a type the user asked for once."""
    iid, old = instance["InstanceId"], instance["InstanceType"]
    try:
        ec2.start_instances(InstanceIds=[iid])
    except Exception as e:
        if aws_error(e) is None:
            raise
        setup = aws_setup_error(e)
        if setup:
            raise setup from None
        left = f"it is still a stopped {old}"
        if new_type:
            try:
                ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": old})
                left = f"it is back to a stopped {old}"
            except Exception:
                left = f"it is left a stopped {new_type}; `launcher jupyter --instance-type {old}` starts it as before"
        raise GankitError(f"EC2 did not start {iid} as a {new_type or old}: {instances.refusal_reason(e)}; {left}") from None


def _note_limits(instance, idle_seconds, max_hours):
    """Idle and max-hours are fixed at launch (the instance's own units); say so when they differ."""
    tags = lookup.tags_of(instance)
    if tags.get(lookup.TAG_IDLE) != str(int(idle_seconds)) or tags.get(lookup.TAG_MAX_HOURS) != f"{max_hours:g}":
        say(f"note: this instance keeps the limits it was launched with (--idle {tags.get(lookup.TAG_IDLE, '?')}s, "
            f"--max-hours {tags.get(lookup.TAG_MAX_HOURS, '?')}); `launcher jupyter stop --terminate` to change them")


def wait_running(ec2, iid):
    progress = Progress(None, label=f"waiting for {iid} to run", fmt=format_duration, log_every=15)
    while True:
        state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        name = state["State"]["Name"]
        if name == "running":
            progress.close()
            return state
        if name in ("shutting-down", "terminated", "stopped"):
            raise GankitError(f"{iid} is {name} instead of running: {state.get('StateReason', {}).get('Message', '')}")
        time.sleep(3)
        progress.update(3)
