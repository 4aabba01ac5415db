"""--ssh's access: a temporary SSH rule for the caller's /32, and what becomes of rules older launchers left."""

import contextlib

from launcher.jupyter import lookup, owners, say
from trainer.errors import GankitError, UsageError, aws_error


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
        legacy, _ = owners.former_owner_name(region_name) or (None, None)
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
            {"Name": f"tag:{lookup.TAG_PURPOSE}", "Values": [lookup.PURPOSE]},
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
