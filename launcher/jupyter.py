"""`launcher jupyter`: your own Jupyter on a GPU instance, reachable only by you.

The instance is found by its tags (one per AWS identity), started or launched as needed,
and stops itself when idle (see `launcher.remote.idle_check`). Jupyter listens on the
instance's loopback with a token kept in SSM; the launcher reaches it through an SSM
port-forwarding session, or an SSH tunnel with `--ssh`.
"""

import contextlib
import hashlib
import json
import re
import secrets
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import click

from launcher import instances
from launcher.pricing import DEFAULT_INSTANCE_TYPE
from trainer import aws
from trainer.errors import GankitError, UsageError, aws_error, aws_setup_error, echo, one_line, printable
from trainer.progress import Progress, format_duration

PURPOSE = "jupyter"
PORT = 8888  # Jupyter's port on the instance's loopback
READY_TIMEOUT = 25 * 60  # first boot installs TensorFlow, the project and JupyterLab
STATE_CHECK_SECONDS = 30  # how often the wait for Jupyter asks EC2 whether the instance still runs
LIVE_STATES = ("pending", "running", "stopping", "stopped")
TAG_PURPOSE, TAG_OWNER = instances.TAG_PURPOSE, "gankit:owner"
TAG_IDLE, TAG_MAX_HOURS = "gankit:idle", "gankit:max-hours"
# On the token parameter: the ARN of the one instance whose role may read it (infra/base.yaml's
# ReadOwnJupyterToken matches it against the caller's ec2:SourceInstanceARN).
TAG_INSTANCE = "gankit:instance"


def say(message):
    try:
        echo(message, err=True)  # progress on stderr; stdout carries only the URL
    except OSError:
        pass  # a closed terminal (SIGHUP) must not stop the clean-up that follows


# --- who, where, and the token ------------------------------------------------------------------

def region() -> str:
    from launcher import settings

    return aws.region(settings.get("region"))


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


def token_parameter(who: str) -> str:
    return f"/gankit/jupyter/{who}/token"


def rotate_token(ssm, who: str) -> str:
    """A fresh random token, stored only as an SSM SecureString (the instance reads it at boot)."""
    token = secrets.token_urlsafe(32)
    ssm.put_parameter(Name=token_parameter(who), Value=token, Type="SecureString", Overwrite=True,
                      Description="gankit Jupyter token (rotated at every start)")
    return token


def instance_arn(region_name, iid: str) -> str:
    arn = instances.client("sts", region_name).get_caller_identity()["Arn"]
    partition, account = arn.split(":")[1], arn.split(":")[4]
    return f"arn:{partition}:ec2:{region_name}:{account}:instance/{iid}"


def bind_token(ssm, region_name, who: str, iid: str):
    """Let only instance `iid` read the token: tag the parameter with its ARN (the role's condition)."""
    ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=token_parameter(who),
                             Tags=[{"Key": TAG_INSTANCE, "Value": instance_arn(region_name, iid)}])


def read_token(ssm, who: str) -> str | None:
    try:
        return ssm.get_parameter(Name=token_parameter(who), WithDecryption=True)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        return None


# --- the instance ---------------------------------------------------------------------------------

# Said when the config has no jupyter_instance_profile: a stack from before Jupyter's role, or a config set
# by hand (or GANKIT_* variables) that names only the training profile.
OLD_STACK_NOTE = ("note: no jupyter_instance_profile is configured, so your Jupyter instance runs with the training "
                  "instances' profile, which may also write runs/; `launcher infra up` updates a base stack from "
                  "before Jupyter's own role and records both profiles (or `launcher config set "
                  "jupyter_instance_profile NAME`), and the next `launcher jupyter` gives the instance its own")


def jupyter_profile() -> str | None:
    """The instance profile of Jupyter instances, as `launcher infra up` records it; None for a stack from before
    Jupyter had a role of its own, whose only profile (the training instances') serves Jupyter too."""
    from launcher import settings

    return settings.get("jupyter_instance_profile")


def give_jupyter_profile(ec2, instance):
    """An instance launched before Jupyter had a role of its own has the training instances' profile, which may
    write runs/: swap it for the Jupyter one. Failing that (your identity may not pass the role), it keeps the
    one it has and serves as before; the note says so."""
    profile = jupyter_profile()
    have = instance.get("IamInstanceProfile", {}).get("Arn", "")
    if profile is None or instances.is_profile(have, profile):
        return
    iid, had = instance["InstanceId"], have.rsplit("/", 1)[-1] or "none"
    try:
        associations = ec2.describe_iam_instance_profile_associations(Filters=[
            {"Name": "instance-id", "Values": [iid]}, {"Name": "state", "Values": ["associated"]}
        ])["IamInstanceProfileAssociations"]
        if associations:
            ec2.replace_iam_instance_profile_association(AssociationId=associations[0]["AssociationId"],
                                                         IamInstanceProfile=instances.profile_spec(profile))
        else:
            ec2.associate_iam_instance_profile(InstanceId=iid, IamInstanceProfile=instances.profile_spec(profile))
    except Exception as e:
        if aws_error(e) is None:
            raise
        say(f"note: could not give {iid} the Jupyter instance profile {profile} ({one_line(aws_error(e))}); it keeps "
            f"{had}, which may also write runs/ (replacing it needs ec2:ReplaceIamInstanceProfileAssociation and "
            "iam:PassRole on the Jupyter role)")
        return
    say(f"gave {iid} the Jupyter instance profile {profile} in place of {had}")

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


def is_jupyter_of(instance, who: str) -> bool:
    tags = tags_of(instance)
    return tags.get(TAG_PURPOSE) == PURPOSE and tags.get(TAG_OWNER) == who


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


def find_instance(ec2, who: str) -> dict | None:
    """The caller's Jupyter instance (newest if several), not yet terminated."""
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": f"tag:{TAG_PURPOSE}", "Values": [PURPOSE]},
        {"Name": f"tag:{TAG_OWNER}", "Values": [who]},
        {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
    ])
    found = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
    return max(found, key=lambda i: i["LaunchTime"]) if found else None


def former_owner_name(region_name) -> tuple[str, str] | None:
    """(the caller's name under launchers before `owner_name`, its name now), where the two differ: a plain IAM
    user's did not change, and finds its instance and rules as before."""
    arn = caller_arn(region_name)
    legacy, now = legacy_owner_name(arn), owner_name(arn)
    return None if legacy == now else (legacy, now)


def legacy_instance_line(ec2, region_name) -> str | None:
    """What to say of a Jupyter instance a launcher before `owner_name` tagged with the caller's old name,
    when that name is not the caller's any more (a plain IAM user's is, and finds its instance as before).

    It is not reused, since nothing shows it is the caller's: that launcher tagged only the shared name, not
    who launched it, and its token parameter (/gankit/jupyter/<old name>/token, fixed in the instance's own
    units) stays the one a user named so still uses as its own, so reusing it would give two people one token
    again. A new instance of the caller's own is the safe side; the line names the old one, which may be theirs."""
    with contextlib.suppress(Exception):  # only a note: the caller's own instance is found all the same
        legacy, now = former_owner_name(region_name) or (None, None)
        old = legacy and find_instance(ec2, legacy)
        if old:
            return (f"note: {old['InstanceId']} ({old['State']['Name']}) is tagged for '{legacy}', the name older "
                    "launchers gave your identity and others alike (user/Dev-alice and assumed-role/Dev/alice were both "
                    f"'Dev-alice'), so it is not taken for yours, which is now '{now}'. It may be the "
                    f"instance of an IAM user named '{legacy}', so leave it be unless you launched it; if you did, "
                    f"`aws ec2 terminate-instances --region {region_name} --instance-ids {old['InstanceId']}` deletes "
                    "it (stopped, it still bills its disk)")
    return None


def legacy_rules_line(ec2, group_id, region_name) -> str | None:
    """What to say of temporary SSH rules a launcher before `owner_name` left "for <the caller's old name>",
    when that name is not the caller's any more (a plain IAM user's is, and sweeps them as its own).

    They are named, not removed. The old name is shared: user/Dev-alice and assumed-role/Dev/alice both read
    'Dev-alice', and for user/Dev-alice it is still the current name, so a rule "for Dev-alice" may hold open
    another person's live tunnel. Revoked, their new connections (a dropped tunnel's reconnect) would be refused
    and their own clean-up would fail on a rule gone. Left, it is a /32 for port 22 on an instance that answers
    only to keys pushed through EC2 Instance Connect: far less harm than cutting someone off. The caller, who
    knows whether it is theirs, gets the command that removes it."""
    from launcher import tunnel

    with contextlib.suppress(Exception):  # only a note: the tunnel opens all the same
        legacy, _ = former_owner_name(region_name) or (None, None)
        rules = legacy and tunnel.temporary_rules(ec2, group_id, (tunnel.rule_description(legacy),))
        if rules:
            return (f"note: {group_id} allows SSH from {_cidrs(rules)} for '{legacy}', the name older launchers gave "
                    "your identity and others alike, so it is left as it is: it may be another person's open tunnel; "
                    f"if it is yours and no tunnel of yours is open, {_revoke_commands(rules, group_id, region_name)} "
                    "removes it")
    return None


def ownerless_rules_are_stale(ec2, group_id, iid) -> bool:
    """May the temporary SSH rules of launchers that named no owner (the bare tunnel.RULE_DESCRIPTION) go?

    Nothing in such a rule says whose or how old it is (no owner, no time), and any identity's launcher of that
    time wrote it, so it is removed only when it provably holds open no one else's tunnel: the only use of such
    a rule is an SSH tunnel to a running Jupyter instance in this group, and none runs here but `iid`, the
    caller's own, which this run is connecting to; a tunnel to the caller's own instance is the caller's to
    close, as the rules "for <the caller>" are. While another Jupyter instance runs in the group, the rule may
    be its owner's, so it stays and ownerless_rules_line names it, as legacy_rules_line does for the old shared
    names. An answer EC2 does not give proves nothing: the rule stays."""
    try:
        pages = ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": "instance.group-id", "Values": [group_id]},
            {"Name": f"tag:{TAG_PURPOSE}", "Values": [PURPOSE]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ])
        running = {i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]}
    except Exception as e:
        if aws_error(e) is None:
            raise
        return False
    return running <= {iid}


def ownerless_rules_line(ec2, group_id, region_name) -> str | None:
    """What to say of temporary SSH rules of launchers that named no owner, left because they may be another's."""
    from launcher import tunnel

    with contextlib.suppress(Exception):  # only a note: the tunnel opens all the same
        rules = tunnel.temporary_rules(ec2, group_id, (tunnel.RULE_DESCRIPTION,))
        if rules:
            return (f"note: {group_id} allows SSH from {_cidrs(rules)} for no owner named (an older launcher's rule) "
                    "while a Jupyter instance not yours may run in it, so it is left as it is: it may be another "
                    f"person's open tunnel; if it is yours and no tunnel of yours is open, "
                    f"{_revoke_commands(rules, group_id, region_name)} removes it")
    return None


def _cidrs(rules) -> str:
    return ", ".join(r["IpRanges"][0]["CidrIp"] for r in rules)


def _revoke_commands(rules, group_id, region_name) -> str:
    return "; ".join(f"`aws ec2 revoke-security-group-ingress --region {region_name} --group-id {group_id} "
                     f"--protocol tcp --port {r['FromPort']} --cidr {r['IpRanges'][0]['CidrIp']}`" for r in rules)


def say_legacy_instance(ec2, region_name):
    line = legacy_instance_line(ec2, region_name)
    if line:
        say(line)


def tags_of(instance) -> dict:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def stage_project(root: str, who: str) -> tuple[str, str, str, str]:
    """Upload the project's wheel and the example notebook where the instance fetches them;
    (wheel URI, its sha256, notebook URI, its sha256). The instance takes each only if it still matches."""
    from launcher.jupyter_userdata import NOTEBOOK
    from launcher.resources import resource_path
    from trainer import layout, s3

    notebook = resource_path(f"examples/{NOTEBOOK}")
    prefix = layout.join(root, "jupyter", who)
    wheel_uri, wheel_sha256 = instances.upload_wheel(prefix)
    notebook_uri = layout.join(prefix, NOTEBOOK)
    data = Path(notebook).read_bytes()  # the bytes hashed are the bytes sent
    s3.write_bytes(notebook_uri, data)
    return wheel_uri, wheel_sha256, notebook_uri, hashlib.sha256(data).hexdigest()


def configured_bucket() -> str:
    """The user's bucket (NAME or NAME/PREFIX) from the settings, checked: it reaches the instance's setup."""
    from launcher import settings

    bucket = settings.get("bucket")
    if not bucket:
        raise UsageError("no bucket configured: run `launcher infra up` first")
    settings.check_bucket(bucket, "the bucket setting (GANKIT_BUCKET or `launcher config`)")
    return bucket.removeprefix("s3://").rstrip("/")


def launch(ssm, region_name, who, instance_type, idle_seconds, max_hours) -> str:
    """Launch the instance and let it alone read its token; the new instance's id."""
    from launcher import settings
    from launcher import jupyter_userdata

    config = {**settings.effective(), "region": region_name}
    bucket = configured_bucket()
    wheel_uri, wheel_sha256, notebook_uri, notebook_sha256 = stage_project(f"s3://{bucket}", who)
    boot = jupyter_userdata.JupyterBoot(token_parameter=token_parameter(who), region=region_name, wheel_uri=wheel_uri,
                                wheel_sha256=wheel_sha256,
                                notebook_uri=notebook_uri, notebook_sha256=notebook_sha256, bucket=bucket, idle_seconds=int(idle_seconds),
                                max_hours=max_hours)
    tags = {TAG_OWNER: who, "Name": f"gankit-jupyter-{who}",
            TAG_IDLE: str(int(idle_seconds)), TAG_MAX_HOURS: f"{max_hours:g}"}
    # The client token: EC2 starts one instance however often botocore resends a request whose reply was lost.
    client_token = f"gankit-{secrets.token_hex(16)}"
    request = instances.run_instances_request(PURPOSE, instance_type, jupyter_userdata.render(boot), spot=False,
                                                tags=tags, settings=config, shutdown="stop", client_token=client_token,
                                                profile=jupyter_profile())
    iid = None
    try:
        iid = instances.launch(request, region_name)
        # The instance boots for minutes before it reads the token: time enough to bind it.
        bind_token(ssm, region_name, who, iid)
        return iid
    except BaseException as e:  # Ctrl-C too: an instance that cannot read its token would bill for nothing
        if iid is None and isinstance(e, GankitError) and not isinstance(e, instances.LaunchUnanswered):
            raise  # EC2 said no: nothing started
        raise _launch_failure(e, iid, _abandon_launch(client_token, region_name, iid)) from None


def _launch_failure(e: BaseException, iid: str | None, after: str) -> GankitError:
    """The one line for a launch stopped once RunInstances was sent; `after` says what became of the instance."""
    if isinstance(e, KeyboardInterrupt):  # Ctrl-C, SIGTERM or SIGHUP: exit 128 + the signal
        from trainer.errors import Interrupted, interrupt_signal, signal_name

        return Interrupted(f"stopped by {signal_name(interrupt_signal(e))} while launching the instance{after}",
                           interrupt_signal(e))
    if iid:
        return GankitError(f"could not let {iid} read its token ({one_line(aws_error(e) or e)}){after}")
    return GankitError(f"{e if isinstance(e, GankitError) else f'launching the instance failed: {one_line(e)}'}{after}")


def _abandon_launch(client_token, region_name, iid=None) -> str:
    """The launch did not complete, so EC2 may have started an instance that cannot serve Jupyter (its token not
    bound to it): terminate `iid`, or what the launch with `client_token` started when its id never came.
    What the user should know, as the end of the line: what became of it, or its id and how to delete it."""
    maybe = ((f"; {iid} may still run" if iid else "; it may have started an instance all the same")
             + ": `launcher jupyter status` shows it, `launcher jupyter stop --terminate` deletes it")
    try:
        launched = [iid] if iid else instances.find_launched(client_token, region_name)
        for each in launched:
            instances.terminate(each, region_name)
    except KeyboardInterrupt:  # a second Ctrl-C: the clean-up is cut short, the line still says what may be left
        return maybe
    except Exception as e:
        return f"; could not terminate {iid or 'what it started'} either ({one_line(aws_error(e) or e)}){maybe}"
    # DescribeInstances is eventually consistent: one not listed yet may still have started.
    return f"; terminated {', '.join(launched)}, which it had started; run `launcher jupyter` again" if launched else maybe


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
    record_region(who, region_name, iid)
    return iid, token, started


def _start_or_reuse(ec2, ssm, region_name, who, instance_type, idle_seconds, max_hours) -> tuple[str, str, bool]:
    instance = find_instance(ec2, who)
    if instance is None:
        refuse_if_elsewhere(region_name, who)
        say_legacy_instance(ec2, region_name)
    if instance and instance["State"]["Name"] in ("pending", "running"):
        token = read_token(ssm, who)
        if token is None:
            raise GankitError(f"{instance['InstanceId']} runs but its token is gone from SSM; "
                              "`launcher jupyter stop` it, then run `launcher jupyter` again")
        bind_token(ssm, region_name, who, instance["InstanceId"])  # idempotent; binds one an older launcher made
        give_jupyter_profile(ec2, instance)  # it takes the new role at its next credential refresh
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
        token = rotate_token(ssm, who)  # before the start: Jupyter reads it at boot
        bind_token(ssm, region_name, who, iid)
        give_jupyter_profile(ec2, instance)  # before the start: it boots with the Jupyter role's credentials
        say(f"starting {iid}")
        start_stopped(ec2, instance, instance_type if resized else None)
        return iid, token, True
    instance_type = instance_type or DEFAULT_INSTANCE_TYPE["ec2"]
    token = rotate_token(ssm, who)
    iid = launch(ssm, region_name, who, instance_type, idle_seconds, max_hours)
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
    tags = tags_of(instance)
    if tags.get(TAG_IDLE) != str(int(idle_seconds)) or tags.get(TAG_MAX_HOURS) != f"{max_hours:g}":
        say(f"note: this instance keeps the limits it was launched with (--idle {tags.get(TAG_IDLE, '?')}s, "
            f"--max-hours {tags.get(TAG_MAX_HOURS, '?')}); `launcher jupyter stop --terminate` to change them")


def _idle_limit(ec2, iid, idle: str, idle_seconds: float) -> str:
    """The idle limit `iid` stops itself at: the one it was launched with (a reused or restarted instance keeps
    its own, whatever --idle says now); --idle when its tags cannot be read."""
    try:
        [reservation] = ec2.describe_instances(InstanceIds=[iid])["Reservations"]
        own = tags_of(reservation["Instances"][0]).get(TAG_IDLE)
    except Exception:  # only a detail of the message: never a traceback in its place
        return idle
    return idle if own in (None, str(int(idle_seconds))) else format_duration(float(own))


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


# --- connecting -------------------------------------------------------------------------------------

def connect(ec2, region_name, who, instance, token, local_port, use_ssh, my_ip, open_browser, started=True):
    """Tunnel to Jupyter on `instance` and print its URL; `started`: this run launched or started it."""
    from launcher import tunnel
    iid = instance["InstanceId"]
    progress = Progress(None, label="waiting for Jupyter through the tunnel (first boot installs it: ~5 min)",
                        fmt=format_duration, log_every=30)
    access = ssh_access(ec2, instance, my_ip, who) if use_ssh else contextlib.nullcontext()
    # SIGTERM and SIGHUP close it as Ctrl-C does: the SSH rule, the key, the tunnel and its log all go.
    with tunnel.signals_as_interrupt(), tempfile.TemporaryDirectory(prefix="gankit-ssh-") as tmp, access as host:
        if use_ssh:
            key, public = tunnel.ssh_key(tmp)
            connect_ = instances.client("ec2-instance-connect", region_name)

            def command():  # EC2 Instance Connect accepts the key for 60 s: push it before every attempt
                connect_.send_ssh_public_key(InstanceId=iid, InstanceOSUser=tunnel.SSH_USER, SSHPublicKey=public)
                return tunnel.ssh_command(host, key, Path(tmp) / "known_hosts", PORT, local_port)
        else:
            def command():
                return tunnel.ssm_command(iid, region_name, PORT, local_port)

        session = tunnel.Tunnel(command, local_port)
        try:
            try:
                tunnel.wait_until_ready(session, local_port, token, READY_TIMEOUT, progress,
                                        check=_still_running(ec2, iid))
            except tunnel.PortTaken as e:  # nothing wrong with the instance: connect again on a free port
                raise tunnel.PortTaken(f"{e}; {iid} runs on and stops itself when idle: connect to it on a free "
                                       f"port, {tunnel.free_port_hint(local_port)}") from None
            except tunnel.NotReady as e:
                raise _not_ready(ec2, iid, e, started) from None
            progress.close()
            url = f"http://localhost:{local_port}/lab?token={token}"
            say(f"Jupyter on {iid} is ready; the tunnel stays open until you press Ctrl-C")
            echo(url)
            if open_browser:
                open_in_browser(url, tmp)
            session.wait()
            say("the tunnel closed; the instance stops itself when idle (`launcher jupyter stop` stops it now)")
        except KeyboardInterrupt:
            say("\nclosing the tunnel; the instance stops itself when idle (`launcher jupyter stop` stops it now)")
        finally:
            session.close()


def _not_ready(ec2, iid, e, started: bool) -> GankitError:
    """Jupyter never answered through the tunnel. One this run started is set up wrong or unreachable and
    would bill until max-hours: stop it. One that ran before is left running: a notebook may be open on it
    (another tab, another machine), the fault may be this machine's network, and it stops itself when idle."""
    if not started:
        return GankitError(f"{e}. It ran before this run (a notebook may be open on it), so left {iid} running; "
                           "it stops itself when idle. Check this machine's network and the tunnel, then run "
                           "`launcher jupyter` again; `launcher jupyter stop` stops it now")
    ec2.stop_instances(InstanceIds=[iid])
    return GankitError(f"{e}. Stopped {iid} so it does not bill on; `launcher jupyter` starts it "
                       "again, `launcher jupyter stop --terminate` discards it")


def open_in_browser(url: str, folder):
    """Open `url` through a redirect page only its owner can read, in `folder` (private, and deleted with the
    tunnel): a browser's command line, token and all, is in `ps` for every user of this machine for as long
    as that browser runs. Jupyter opens its own URL the same way."""
    import html
    import os
    import webbrowser

    page = Path(folder) / "open-jupyter.html"
    with os.fdopen(os.open(page, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(f'<!DOCTYPE html><meta http-equiv="refresh" content="0;url={html.escape(url)}">'
                f'<a href="{html.escape(url)}">Jupyter</a>\n')
    webbrowser.open(page.as_uri())


def _still_running(ec2, iid):
    """A check for the wait on Jupyter: one line as soon as the instance stops (its setup failed, its
    max-hours came, someone stopped it) rather than minutes of waiting on a machine that is not there.
    It asks EC2 at most every STATE_CHECK_SECONDS."""
    last = time.monotonic()

    def check():
        nonlocal last
        if time.monotonic() - last < STATE_CHECK_SECONDS:
            return
        last = time.monotonic()
        state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
        if state not in ("pending", "running"):
            # Two causes, two remedies: --terminate would throw away the disk of one that was merely stopped.
            raise GankitError(f"{iid} is {state} while waiting for Jupyter: it was stopped (its idle check, "
                              "--max-hours, or by hand), and `launcher jupyter` starts it again with its disk; or its "
                              "setup failed (the log is /var/log/gankit-jupyter-setup.log on it), and `launcher "
                              "jupyter stop --terminate`, then `launcher jupyter`, launches a fresh one")
    return check


@contextlib.contextmanager
def ssh_access(ec2, instance, my_ip, who):
    """For --ssh: the instance's public address, with SSH allowed from the caller's /32 while in use."""
    from launcher import tunnel

    host = instance.get("PublicIpAddress")
    if not host:
        raise UsageError(f"{instance['InstanceId']} has no public IP address for --ssh; "
                         "connect without --ssh (SSM needs none)")
    groups = [g["GroupId"] for g in instance.get("SecurityGroups", [])]
    if not groups:
        raise GankitError(f"{instance['InstanceId']} has no security group to open SSH in")
    ip = tunnel.my_ip(my_ip)
    ownerless_too = ownerless_rules_are_stale(ec2, groups[0], instance["InstanceId"])
    stale = tunnel.sweep_stale_rules(ec2, groups[0], who, ownerless_too)
    if stale:
        say(f"removed {len(stale)} stale temporary SSH rules an earlier run left in {groups[0]}: {', '.join(stale)}")
    notes = [legacy_rules_line(ec2, groups[0], ec2.meta.region_name),
             None if ownerless_too else ownerless_rules_line(ec2, groups[0], ec2.meta.region_name)]
    for line in filter(None, notes):
        say(line)
    with tunnel.ssh_rule(ec2, groups[0], ip, who) as cidr:
        say(f"SSH allowed from {cidr} only, until this tunnel closes")
        yield host
    say("removed the temporary SSH rule")


# --- the commands ----------------------------------------------------------------------------------

@click.group(invoke_without_command=True)
@click.option("--instance-type", default=None,
              help=f"EC2 GPU instance type for a new instance (default: {DEFAULT_INSTANCE_TYPE['ec2']}; "
                   "an existing one keeps its type unless given).")
@click.option("--idle", default="60m", show_default=True,
              help="Stop the instance after this long (e.g. 2h, 90m, 3600 seconds) with no kernel or terminal "
                   "activity, no file saved in the folder Jupyter serves and no GPU use; fixed at launch.")
@click.option("--max-hours", type=float, default=8.0, show_default=True,
              help="Stop the instance after this many hours up, whatever happens; fixed at launch.")
@click.option("--ssh", "use_ssh", is_flag=True,
              help="Tunnel over SSH (a temporary rule for your own /32) instead of SSM.")
@click.option("--my-ip", default=None, help="Your public IPv4 address for --ssh (default: asked of checkip.amazonaws.com).")
@click.option("--local-port", type=click.IntRange(1, 65535), default=PORT, show_default=True,
              help="Port on this machine the tunnel listens on.")
@click.option("--open", "open_browser", is_flag=True, help="Open Jupyter in your browser.")
@click.pass_context
def jupyter(ctx, instance_type, idle, max_hours, use_ssh, my_ip, local_port, open_browser):
    """Start (or reuse) your Jupyter GPU instance and connect to it privately.

    Prints http://localhost:8888/lab?token=... once Jupyter answers. The instance stops
    itself after --idle without use and after --max-hours regardless; `launcher jupyter
    stop` stops it now, `launcher jupyter status` shows what it has cost so far.
    """
    if ctx.invoked_subcommand:  # `launcher jupyter --ssh stop` once stopped the instance and ignored --ssh
        given = [p.opts[0] for p in ctx.command.params
                 if ctx.get_parameter_source(p.name) is click.core.ParameterSource.COMMANDLINE]
        if given:
            one = len(given) == 1
            raise UsageError(f"{', '.join(given)} {'is an option' if one else 'are options'} of `launcher jupyter` "
                             f"itself (starting Jupyter), not of `launcher jupyter {ctx.invoked_subcommand}`; drop "
                             f"{'it' if one else 'them'}")
        return
    from launcher import tunnel
    from launcher.durations import parse_duration
    from launcher.pricing import check_instance_type

    if instance_type:
        check_instance_type(instance_type, "ec2")
    idle_seconds = parse_duration(idle, flag="--idle")
    if idle_seconds < 60:
        raise UsageError(f"--idle {idle} is too short to work in; give at least 1m, e.g. --idle 60m")
    if not 0 < max_hours <= 24 * 7:
        raise UsageError(f"--max-hours {max_hours:g} is out of range; give 0-168 hours, e.g. --max-hours 8")
    # Check the local tools before anything that bills.
    tunnel.check_ssh_tools() if use_ssh else tunnel.check_ssm_tools()
    tunnel.check_local_port(local_port)
    if use_ssh and my_ip:
        tunnel.my_ip(my_ip)  # a bad --my-ip fails now, not after the instance is up

    region_name = region()
    ec2, ssm = instances.client("ec2", region_name), instances.client("ssm", region_name)
    who = owner(region_name)
    configured_bucket()  # a missing or unsafe bucket setting, before a token or an instance exists
    from launcher import settings

    # No profile (Jupyter's own, or the training one it falls back on) or security group: said before any upload.
    profile = jupyter_profile()
    instances.check_settings(settings.effective(), profile)
    if profile is None:
        say(OLD_STACK_NOTE)
    iid, token, started = start_or_reuse(ec2, ssm, region_name, who, instance_type, idle_seconds, max_hours)
    try:
        instance = wait_running(ec2, iid)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM or SIGHUP: the instance goes on starting, so say what then
        from trainer.errors import Interrupted, interrupt_signal, signal_name

        raise Interrupted(f"stopped waiting for {iid} on {signal_name(interrupt_signal(e))}; it goes on starting and "
                          f"stops itself after {_idle_limit(ec2, iid, idle, idle_seconds)} unused: `launcher jupyter` "
                          "connects to it, `launcher jupyter stop` stops it now", interrupt_signal(e)) from None
    except Exception as e:  # AWS out of reach, or the credentials expired, while the instance starts (and bills)
        if isinstance(e, GankitError) or aws_error(e) is None:
            raise
        after = (f"{iid} goes on starting and stops itself after {_idle_limit(ec2, iid, idle, idle_seconds)} unused: "
                 "`launcher jupyter` connects to it, `launcher jupyter stop` stops it now")
        setup = aws_setup_error(e)
        raise (UsageError(f"{setup}; {after}") if setup else
               GankitError(f"lost sight of {iid} while waiting for it to run ({one_line(e)}); {after}")) from None
    connect(ec2, region_name, who, instance, token, local_port, use_ssh, my_ip, open_browser, started)


@jupyter.command()
@click.option("--terminate", is_flag=True, help="Delete the instance and its disk too (a stopped one still bills its disk).")
def stop(terminate):
    """Stop your Jupyter instance now."""
    region_name = region()
    ec2 = instances.client("ec2", region_name)
    who = owner(region_name)
    instance = find_instance(ec2, who)
    if instance is None:
        found = found_elsewhere(region_name, who)
        if found:
            raise UsageError(f"no Jupyter instance in {region_name} to stop; {elsewhere_line(region_name, found)}")
        say("no Jupyter instance to stop")
        say_legacy_instance(ec2, region_name)
        return
    iid = instance["InstanceId"]
    if terminate:
        instances.terminate(iid, region_name)
        ssm = instances.client("ssm", region_name)
        try:
            ssm.delete_parameter(Name=token_parameter(who))
        except ssm.exceptions.ParameterNotFound:
            pass
        except Exception as e:  # the instance is gone all the same: the line says so, not AWS's alone
            if aws_error(e) is None:
                raise
            setup = aws_setup_error(e)
            after = f"terminated {iid}, but could not delete its token {token_parameter(who)}"
            raise (UsageError(f"{after}: {setup}") if setup else GankitError(f"{after}: {one_line(e)}")) from None
        say(f"terminating {iid} and deleting its token")
    elif instance["State"]["Name"] in ("stopping", "stopped"):
        say(f"{iid} is already {instance['State']['Name']}")
    else:
        instances.stop_instance(iid, region_name)
        say(f"stopping {iid}; `launcher jupyter` starts it again")


@jupyter.command()
def status():
    """Show the state, uptime and cost so far of your Jupyter instance."""
    from launcher.pricing import price_per_hour

    region_name = region()
    ec2 = instances.client("ec2", region_name)
    who = owner(region_name)
    instance = find_instance(ec2, who)
    if instance is None:
        found = found_elsewhere(region_name, who)
        echo(f"no Jupyter instance in {region_name}; {elsewhere_line(region_name, found)}" if found else
                   "no Jupyter instance; `launcher jupyter` starts one")
        say_legacy_instance(ec2, region_name)
        return
    state, kind = instance["State"]["Name"], instance["InstanceType"]
    tags = tags_of(instance)
    echo(f"instance   {instance['InstanceId']} ({kind})")
    echo(f"state      {state}")
    if state in ("pending", "running"):
        # LaunchTime is the time of the latest start, so this is this session's uptime.
        up = (datetime.now(timezone.utc) - instance["LaunchTime"]).total_seconds()
        rate = price_per_hour(kind, False)
        echo(f"uptime     {format_duration(up)}")
        echo(f"cost       ${rate * up / 3600:.2f} so far this start (${rate:.2f}/h on demand)")
    idle = tags.get(TAG_IDLE, "")  # a tag removed or edited by hand: "?", not "0s" or a traceback
    idle = format_duration(float(idle)) if re.fullmatch(r"\d+", idle) else "?"
    echo(f"limits     stops after {idle} idle or {printable(tags.get(TAG_MAX_HOURS, '?'))} h up")
    if state == "stopped":
        echo("           stopped: only its disk bills; `launcher jupyter` starts it, "
                   "`launcher jupyter stop --terminate` deletes it")
