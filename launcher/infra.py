"""`launcher infra up | status | down`: the base CloudFormation stack, deployed with boto3.

`up` creates or updates the stack from infra/base.yaml, streams its events as they arrive,
and records the bucket, the SageMaker role, the instance profiles (training's, Jupyter's) and the security group in
the launcher's config (so `submit` defaults to SageMaker). `down` deletes the stack and the bucket
when it is empty; one with data in it needs `--keep-bucket` (kept) or `--delete-bucket` (emptied and deleted).

The templates are infra/*.yaml, read through `launcher.resources` (a checkout's, or the wheel's).
"""

import ipaddress
import threading

import click

from trainer import aws
from trainer.errors import (GankitError, UsageError, aws_error, aws_failure, aws_setup_error, echo, printable,
                            printable_cell)

DEFAULT_STACK = "gankit"
POLL_SECONDS = 5.0
MIN_SSH_PREFIX = 24  # the widest SSH rule: 256 addresses (infra/base.yaml's SshCidr pattern agrees)


def template_body(name: str) -> str:
    from launcher.resources import resource_path

    return resource_path(f"infra/{name}.yaml").read_text()


def say(message):
    echo(message, err=True)


def _client(service, region):
    import boto3

    return boto3.client(service, region_name=region)


def _region(region):
    from launcher import settings

    return aws.region(region, settings.get("region"))


# --- checks before anything is sent -------------------------------------------------------------

def check_ssh_cidr(cidr: str | None) -> str:
    """'' for none; else a narrow IPv4 CIDR. The whole internet is refused, whatever the spelling."""
    if not cidr:
        return ""
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise UsageError(f"--ssh-cidr {cidr} is not a CIDR; give your own address as a /32, "
                         "e.g. --ssh-cidr 203.0.113.7/32") from None
    if network.prefixlen == 0:
        raise UsageError(f"--ssh-cidr {cidr} would open SSH to the whole internet; give your own "
                         "address as a /32, e.g. --ssh-cidr 203.0.113.7/32 (or none: SSM needs no port)")
    if network.version != 4:
        raise UsageError(f"--ssh-cidr {cidr} is IPv6; the SSH rule takes an IPv4 CIDR such as 203.0.113.7/32")
    if network.prefixlen < MIN_SSH_PREFIX:
        raise UsageError(f"--ssh-cidr {cidr} opens SSH to {network.num_addresses:,} addresses; give at most a "
                         f"/{MIN_SSH_PREFIX}, best your own address as a /32, e.g. --ssh-cidr 203.0.113.7/32")
    return str(network)


def default_vpc(ec2) -> str:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise UsageError("this region has no default VPC; pass --vpc-id vpc-...")
    return vpcs[0]["VpcId"]


# --- the stack ----------------------------------------------------------------------------------

def find_stack(cf, name) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        stacks = cf.describe_stacks(StackName=name)["Stacks"]
    except ClientError as e:
        if "does not exist" in str(e):
            return None
        raise aws_failure(f"could not read stack {name}", e) from None
    live = [s for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"]
    return live[0] if live else None


def outputs(stack) -> dict:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def format_event(event) -> str:
    reason = event.get("ResourceStatusReason")
    when = event["Timestamp"].strftime("%H:%M:%S")
    line = f"{when}  {event['ResourceStatus']:<28} {event['LogicalResourceId']} ({event['ResourceType']})"
    return f"{line}: {reason}" if reason else line


def failure_message(stack_name, events) -> str:
    """One line naming the first resource that failed (later ones fail because it did)."""
    failed = [e for e in sorted(events, key=lambda e: e["Timestamp"])
              if e["ResourceStatus"].endswith("_FAILED") and e["LogicalResourceId"] != stack_name
              and "cancelled" not in (e.get("ResourceStatusReason") or "").lower()]
    if not failed:
        return f"stack {stack_name} failed; `launcher infra status` shows its events"
    first = failed[0]
    return (f"stack {stack_name} rolled back: {first['LogicalResourceId']} ({first['ResourceType']}) "
            f"{first['ResourceStatus']}: {first.get('ResourceStatusReason') or 'no reason given'}")


class EventStream:
    """Prints a stack's events once each, oldest first, from `since` on."""

    def __init__(self, cf, stack_name, since):
        self.cf, self.stack_name, self.since = cf, stack_name, since
        self.seen = set()
        self.events = []

    def poll(self):
        from botocore.exceptions import ClientError

        try:
            self._poll()
        except ClientError as e:
            if "does not exist" not in str(e):  # a deleted stack has no events left to read
                raise aws_failure(f"could not read the events of stack {self.stack_name}", e) from None

    def _poll(self):
        new = []
        for page in self.cf.get_paginator("describe_stack_events").paginate(StackName=self.stack_name):
            fresh = [e for e in page["StackEvents"] if e["EventId"] not in self.seen and e["Timestamp"] >= self.since]
            new += fresh
            if len(fresh) < len(page["StackEvents"]):
                break  # events come newest first: the rest were seen already
        for event in sorted(new, key=lambda e: e["Timestamp"]):
            self.seen.add(event["EventId"])
            self.events.append(event)
            say(format_event(event))


def wait_for(cf, stack_name, action, since):
    """Wait with CloudFormation's waiter while streaming the events; GankitError on a rollback."""
    from botocore.exceptions import WaiterError

    waiter = cf.get_waiter(f"stack_{action}_complete")
    outcome = {}

    def wait():
        try:
            waiter.wait(StackName=stack_name, WaiterConfig={"Delay": POLL_SECONDS, "MaxAttempts": 720})
        except Exception as e:  # a failed stack (WaiterError), or AWS out of reach: said below, not by the thread
            outcome["error"] = e

    stream = EventStream(cf, stack_name, since)
    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    while thread.is_alive():
        stream.poll()
        thread.join(POLL_SECONDS)
    stream.poll()
    error = outcome.get("error")
    if isinstance(error, WaiterError):
        raise GankitError(failure_message(stack_name, stream.events))
    if error is not None:  # the stack goes on without us: the config is not recorded yet
        raise aws_failure(f"lost sight of stack {stack_name} while waiting for its {action} (`launcher infra "
                          "status` shows where it got to; run the same command again once it has settled)", error)


def deploy(cf, stack_name, template, parameters, existing) -> dict:
    """Create the stack, or update `existing` (`find_stack`'s answer, read once by the caller), keeping the value
    of every parameter the stack has and `parameters` leaves out (CloudFormation would otherwise reset it to the
    template's default); the stack once settled."""
    from botocore.exceptions import ClientError

    params = [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()]
    params += [{"ParameterKey": p["ParameterKey"], "UsePreviousValue": True}
               for p in (existing or {}).get("Parameters", []) if p["ParameterKey"] not in parameters]
    args = dict(StackName=stack_name, TemplateBody=template, Parameters=params, Capabilities=["CAPABILITY_IAM"],
                Tags=[{"Key": "gankit:stack", "Value": stack_name}])
    if existing and existing["StackStatus"] == "ROLLBACK_COMPLETE":
        raise GankitError(f"stack {stack_name} failed to create earlier and cannot be updated; "
                          "`launcher infra down`, then `launcher infra up` again")
    since = _since()
    action = "update" if existing else "create"
    try:
        if existing:
            say(f"updating stack {stack_name}")
            cf.update_stack(**args)
        else:
            say(f"creating stack {stack_name}")
            cf.create_stack(OnFailure="ROLLBACK", **args)
    except ClientError as e:
        if "No updates are to be performed" in str(e):
            say(f"stack {stack_name} is up to date")
            return existing
        if not (not existing and e.response["Error"]["Code"] == "AlreadyExistsException"
                and _created_anyway(cf, stack_name, template, params)):
            raise aws_setup_error(e) or GankitError(f"CloudFormation refused stack {stack_name}: "
                                                    f"{e.response['Error']['Message']}") from None
    try:
        wait_for(cf, stack_name, action, since)
    except KeyboardInterrupt as e:  # CloudFormation goes on without us: say how to record the stack once it settles
        from trainer.errors import Interrupted, interrupt_name

        raise Interrupted(f"{interrupt_name(e)} stopped the wait: CloudFormation goes on to {action} "
                          f"stack {stack_name} (`launcher infra status` shows how it ends); `launcher infra up` "
                          "again once it has settled records it in the launcher's config", e) from None
    return find_stack(cf, stack_name)


def _created_anyway(cf, stack_name, template, params) -> bool:
    """Whether the stack a refused create names is the one this create started. A create whose reply was lost
    (a read timeout) is retried by botocore, and the retry is refused (AlreadyExists: by the stack the first try
    created, where `up` had found none): that stack is being created all the same. It is this create's if it is
    being created from this create's template and parameters."""
    try:
        stack = find_stack(cf, stack_name)
        body = stack and cf.get_template(StackName=stack_name)["TemplateBody"]
    except Exception:  # AWS out of reach: the create's own error stands
        return False
    if not stack or body != template or not stack["StackStatus"].startswith(("CREATE_", "ROLLBACK_")):
        return False
    values = {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])}
    return all(values.get(p["ParameterKey"]) == p["ParameterValue"] for p in params)


def _since():
    # Events carry the server's clock; a little slack covers clock skew between here and AWS.
    from datetime import datetime, timedelta, timezone

    return datetime.now(timezone.utc) - timedelta(seconds=60)


def record(region, stack) -> dict:
    """What the rest of the launcher needs from the stack, kept in its config."""
    from launcher import settings

    out = outputs(stack)
    values = dict(backend="sagemaker", region=region, bucket=out["Bucket"], role=out["SageMakerRoleArn"],
                  instance_profile=out["InstanceProfile"], jupyter_instance_profile=out["JupyterInstanceProfile"],
                  security_group=out["SecurityGroup"])
    settings.update(**values)
    return values


# --- bucket contents ----------------------------------------------------------------------------

def bucket_object_count(s3, bucket, limit=1000) -> int:
    """Objects in the bucket, counting old versions and delete markers (they bill, and block deletion)."""
    from botocore.exceptions import ClientError

    try:
        page = s3.list_object_versions(Bucket=bucket, MaxKeys=limit)
    except ClientError as e:
        if "NoSuchBucket" in str(e):
            return 0
        raise aws_failure(f"could not list bucket {bucket}", e) from None
    return len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))


def empty_bucket(s3, bucket):
    """Delete every object version and delete marker, with progress."""
    from trainer.progress import Progress

    progress = Progress(None, label=f"emptying {bucket}", fmt=lambda n: f"{n} objects")
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        batch = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                 for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for i in range(0, len(batch), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": batch[i:i + 1000], "Quiet": True})
            progress.update(len(batch[i:i + 1000]))
    progress.close()


def _forget_stack():
    """The stack's role, profile and group are gone (or going): forgotten now, whatever becomes of the bucket (a
    second `infra down` finds no stack to start from)."""
    from launcher import settings

    settings.update(backend="local", role=None, instance_profile=None, jupyter_instance_profile=None, security_group=None)


def _down_interrupted(stack_name: str, bucket: str | None, interrupt: KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, SIGHUP) while the stack was deleted: it goes on without the launcher, which has
    forgotten it already; `bucket`, which `down` was to delete after it, is the user's to delete."""
    from trainer.errors import Interrupted, interrupt_name

    left = (f"; bucket {bucket} outlives it: `aws s3 rb s3://{bucket} --force` deletes it with everything in it"
            if bucket else "")
    return Interrupted(f"{interrupt_name(interrupt)} stopped `infra down` while stack {stack_name} was being deleted: "
                       f"CloudFormation goes on deleting it (`launcher infra status` shows how it ends) and the "
                       f"launcher's backend is local again{left}", interrupt)


# --- the commands -------------------------------------------------------------------------------

stack_option = click.option("--stack-name", default=DEFAULT_STACK, show_default=True, help="Name of the base stack.")
region_option = click.option("--region", default=None, help=aws.REGION_HELP)


@click.group()
def infra():
    """Provision the AWS resources gankit needs (bucket, roles, security group), once per region."""


@infra.command(short_help="Create or update the base stack; SageMaker becomes the default.")
@stack_option
@region_option
@click.option("--bucket-name", default=None, help="Name the bucket (default: CloudFormation picks a unique one; "
                                                     "on an update, the stack's bucket).")
@click.option("--ssh-cidr", default=None, help="Allow SSH from this IPv4 CIDR only, e.g. your 203.0.113.7/32 "
                                               "(default: no inbound rule at all, SSM needs none; on an update, the "
                                               "stack's rule; '' removes it).")
@click.option("--vpc-id", default=None, help="VPC for the security group (default: the region's default VPC; on an "
                                             "update, the stack's).")
@click.option("--old-checkpoint-days", type=click.IntRange(1, 3650), default=None,
              help="Days superseded checkpoint versions are kept before the bucket deletes them [14; on an update, "
                   "the stack's].")
def up(stack_name, region, bucket_name, ssh_cidr, vpc_id, old_checkpoint_days):
    """Create or update the base stack, and make SageMaker the default backend.

    On an update, an option left out keeps the stack's value: running `infra up --ssh-cidr ...` later never
    swaps the bucket for a new, empty one or moves the security group to another VPC."""
    ssh_cidr = None if ssh_cidr is None else check_ssh_cidr(ssh_cidr)
    if bucket_name:
        from launcher.settings import check_bucket

        if "/" in bucket_name:
            raise UsageError(f"--bucket-name {bucket_name!r}: give the bucket's name alone, e.g. my-gankit-data")
        check_bucket(bucket_name, "--bucket-name")
    region = _region(region)
    cf = _client("cloudformation", region)
    existing = find_stack(cf, stack_name)
    if vpc_id is None and existing is None:
        vpc_id = default_vpc(_client("ec2", region))
    from launcher.backends.sagemaker import prebuilt_image_account

    given = {"BucketName": bucket_name, "SshCidr": ssh_cidr, "VpcId": vpc_id, "OldCheckpointDays": old_checkpoint_days,
             "PrebuiltImageAccount": prebuilt_image_account(region)}  # the execution role pulls that image
    stack = deploy(cf, stack_name, template_body("base"), {k: v for k, v in given.items() if v is not None}, existing)
    values = record(region, stack)
    say(f"stack {stack_name}: {stack['StackStatus']}")
    for key in ("bucket", "role", "instance_profile", "jupyter_instance_profile", "security_group"):
        echo(f"{key:<24} {printable(values[key])}")
    say("recorded in the launcher's config; `launcher submit` now runs on SageMaker (--backend ec2 for EC2)")


@infra.command()
@stack_option
@region_option
def status(stack_name, region):
    """Show the base stack's state and outputs."""
    region = _region(region)
    cf = _client("cloudformation", region)
    stack = find_stack(cf, stack_name)
    if stack is None:
        echo(f"no stack {stack_name} in {region}; `launcher infra up` creates it")
        return
    echo(f"stack   {stack_name} ({region}): {printable(stack['StackStatus'])}")
    if stack.get("StackStatusReason"):
        echo(f"reason  {printable(stack['StackStatusReason'])}")
    for key, value in outputs(stack).items():
        echo(f"  {printable_cell(key):<20} {printable(value)}")  # one line each, whatever the stack holds
    if "ROLLBACK" in stack["StackStatus"] or stack["StackStatus"].endswith("_FAILED"):
        events = cf.describe_stack_events(StackName=stack_name)["StackEvents"]
        echo(failure_message(stack_name, events))


@infra.command(short_help="Delete the base stack, and its bucket if empty.")
@stack_option
@region_option
@click.option("--delete-bucket", is_flag=True, help="Also empty and delete the bucket: every dataset, run and model in it.")
@click.option("--keep-bucket", is_flag=True, help="Delete the stack but keep the bucket and its contents.")
def down(stack_name, region, delete_bucket, keep_bucket):
    """Delete the base stack and its bucket; a bucket with data in it needs --keep-bucket or --delete-bucket."""
    if delete_bucket and keep_bucket:
        raise UsageError("--delete-bucket and --keep-bucket contradict each other; give one")
    region = _region(region)
    cf, s3 = _client("cloudformation", region), _client("s3", region)
    stack = find_stack(cf, stack_name)
    if stack is None:
        raise UsageError(f"no stack {stack_name} in {region}; `launcher infra status` shows what there is")
    bucket = outputs(stack).get("Bucket")
    count = bucket_object_count(s3, bucket) if bucket else 0
    if count and not (delete_bucket or keep_bucket):
        more = "+" if count >= 1000 else ""
        raise UsageError(f"bucket {bucket} is not empty ({count}{more} objects: datasets, runs, models); "
                         "`launcher infra down --keep-bucket` keeps it, `--delete-bucket` deletes it with everything in it")
    since = _since()
    say(f"deleting stack {stack_name}")
    cf.delete_stack(StackName=stack_name)
    try:
        wait_for(cf, stack_name, "delete", since)
    except KeyboardInterrupt as e:  # CloudFormation goes on deleting: a second `down` would find no stack
        _forget_stack()
        # The bucket `down` was to delete after the stack: not one --keep-bucket keeps, empty or not.
        raise _down_interrupted(stack_name, bucket if not keep_bucket else None, e) from None
    _forget_stack()
    from launcher import settings

    # The bucket is retained by the template (DeletionPolicy: Retain) so a stack deletion never loses data.
    if bucket and not keep_bucket:
        try:
            if count:
                empty_bucket(s3, bucket)
            s3.delete_bucket(Bucket=bucket)
        except KeyboardInterrupt as e:  # a second `down` finds no stack, so never this bucket
            from trainer.errors import Interrupted, interrupt_name

            raise Interrupted(f"{interrupt_name(e)} stopped `infra down`: stack {stack_name} is "
                              f"deleted and the launcher's backend is local again, but bucket {bucket} is not; "
                              f"`aws s3 rb s3://{bucket} --force` deletes it with everything in it", e) from None
        except Exception as e:
            known = aws_error(e)
            if known is None:
                raise
            raise type(known)(f"stack {stack_name} is deleted and the launcher's backend is local again, but bucket "
                              f"{bucket} is not ({known}); delete it in the S3 console, or with `aws s3 rb "
                              f"s3://{bucket} --force` once that is fixed") from None
        settings.update(bucket=None)
        say(f"deleted bucket {bucket}")
    elif bucket:
        say(f"kept bucket {bucket}")
    say(f"stack {stack_name} deleted; the launcher's backend is local again")
