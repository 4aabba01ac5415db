"""Whose Jupyter instance is whose: the owner name `launcher jupyter` derives from the caller's AWS identity.

The identities are real ones in moto (an IAM user with its own access key, a role assumed with a session name),
switched by their credentials in the environment, as the AWS CLI and boto3 pick them up.
"""

import json
import re

import pytest

from launcher.jupyter import owners, tokens
from launcher.jupyter.start import start_or_reuse
from tests.test_jupyter_command import (ACCOUNT, REGION, add_ssh_rule, aws, free_port, note_of_kept_rule,  # noqa: F401
                                        run, tools, wheel)  # (fixtures)

# What the names land in: EC2 tag values, SSM parameter names, S3 keys, a lock folder and an SSH rule's
# description all take these characters; the longest use, the rule description, allows 255 in all.
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def be(monkeypatch, credentials):
    """Make `credentials` (an IAM access key or an STS session) the caller's identity."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["SecretAccessKey"])
    if "SessionToken" in credentials:
        monkeypatch.setenv("AWS_SESSION_TOKEN", credentials["SessionToken"])
    else:
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # boto3's default session keeps the credentials it found first


def iam_user(name, path="/"):
    import boto3

    iam = boto3.client("iam")
    iam.create_user(UserName=name, Path=path)
    return iam.create_access_key(UserName=name)["AccessKey"]


def assumed_role(role, session):
    import boto3

    iam = boto3.client("iam")
    try:
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    return boto3.client("sts").assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}",
                                           RoleSessionName=session)["Credentials"]


def start(who=None):
    """(instance id, token) of `launcher jupyter` for the caller, as the command starts or reuses it."""
    import boto3

    who = who or owners.owner(REGION)
    iid, token, _ = start_or_reuse(boto3.client("ec2"), boto3.client("ssm"), REGION, who, None, 3600, 8.0)
    return iid, token


def test_identities_that_read_alike_get_their_own_instance_and_token(aws, monkeypatch):
    be(monkeypatch, iam_user("Dev-alice"))
    user = owners.owner(REGION)
    user_instance, user_token = start()

    be(monkeypatch, assumed_role("Dev", "alice"))
    role = owners.owner(REGION)
    role_instance, role_token = start()

    # Both once read 'Dev-alice': the second person got the first one's instance and token.
    assert user != role
    assert role_instance != user_instance and role_token != user_token
    assert aws["ssm"].get_parameter(Name=tokens.token_parameter(user), WithDecryption=True)["Parameter"]["Value"] == user_token


def test_an_assumed_role_session_is_one_owner(aws, monkeypatch):
    be(monkeypatch, assumed_role("Dev", "alice"))
    alice = owners.owner(REGION)
    be(monkeypatch, assumed_role("Dev", "bob"))  # the same SSO role, another person
    bob = owners.owner(REGION)
    be(monkeypatch, assumed_role("Dev", "alice"))  # alice again, with fresh credentials
    again = owners.owner(REGION)

    assert alice != bob and alice == again
    assert alice.startswith("Dev-alice-") and bob.startswith("Dev-bob-")  # still readable
    assert all(SAFE_NAME.fullmatch(name) for name in (alice, bob))


@pytest.mark.parametrize("arns", [
    ["arn:aws:iam::1:user/Dev-alice", "arn:aws:sts::1:assumed-role/Dev/alice", "arn:aws:iam::1:user/Dev/alice",
     "arn:aws:sts::1:federated-user/Dev-alice"],
    ["arn:aws:iam::1:user/root", "arn:aws:iam::1:root"],
    ["arn:aws:iam::1:user/-bob-", "arn:aws:iam::1:user/bob", "arn:aws:iam::1:user/bob+x", "arn:aws:iam::1:user/bob=x",
     "arn:aws:iam::1:user/bob-x"],
    ["arn:aws:sts::1:assumed-role/Dev/alice@example.com", "arn:aws:sts::1:assumed-role/Dev/alice+example.com"],
    ["arn:aws:sts::1:assumed-role/Dev/Alice", "arn:aws:sts::1:assumed-role/Dev/alice"],
], ids=["user-role-path-federated", "root", "replaced-characters", "emails", "case"])
def test_distinct_identities_get_distinct_safe_names(arns):
    names = [owners.owner_name(arn) for arn in arns]
    assert len(set(names)) == len(names), names
    assert all(SAFE_NAME.fullmatch(name) for name in names), names


def test_a_hashed_name_is_never_a_user_name():
    """A user may be named like another identity's name, hash and all: that user's name gets a hash too."""
    role = owners.owner_name("arn:aws:sts::1:assumed-role/Dev/alice")
    assert owners.owner_name(f"arn:aws:iam::1:user/{role}") != role


def test_long_identities_stay_within_every_limit():
    longest = f"arn:aws:sts::1:assumed-role/{'r' * 64}/{'s' * 64}"
    pathed = f"arn:aws:iam::1:user/{'p/' * 250}{'u' * 64}"
    for arn in (longest, pathed):
        assert SAFE_NAME.fullmatch(owners.owner_name(arn))


def older_launcher_start(arn):
    """`launcher jupyter` as launchers before owner_name ran it: the instance and token of the old, shared name."""
    return start(owners.legacy_owner_name(arn))


def test_a_plain_users_instance_from_an_older_launcher_is_still_reused(aws, monkeypatch):
    be(monkeypatch, iam_user("alice"))
    old = older_launcher_start(owners.caller_arn(REGION))

    assert start() == old  # same instance, same token: the name of a path-less user did not change


def test_an_older_launchers_instance_of_a_shared_name_is_named_not_reused(aws, monkeypatch, capsys):
    be(monkeypatch, assumed_role("Dev", "alice"))
    arn = owners.caller_arn(REGION)
    old_instance, old_token = older_launcher_start(arn)  # maybe hers, maybe user/Dev-alice's: nothing says which
    capsys.readouterr()

    result = run("status")
    assert result.exit_code == 0, result.output
    assert f"note: {old_instance} (running) is tagged for 'Dev-alice'" in result.output
    assert f"--instance-ids {old_instance}" in result.output
    # Another's, as likely: the line says so before it says how to delete it.
    assert "It may be the instance of an IAM user named 'Dev-alice', so leave it be unless you launched it" in \
        " ".join(result.output.split())

    instance, token = start()
    assert instance != old_instance and token != old_token
    assert f"note: {old_instance} (running) is tagged for 'Dev-alice'" in capsys.readouterr().err
    # The old instance's token is left as it was: whoever's it is still reads it.
    legacy = tokens.token_parameter("Dev-alice")
    assert aws["ssm"].get_parameter(Name=legacy, WithDecryption=True)["Parameter"]["Value"] == old_token


def test_an_older_launchers_ssh_rule_of_a_shared_name_is_named_not_removed(aws, tools, monkeypatch):
    """A rule "for Dev-alice" may be an open tunnel of user/Dev-alice (whose name it still is), or of anyone
    an older launcher named so: removing it could cut their tunnel, so it stays and the line names it."""
    from launcher import tunnel

    be(monkeypatch, assumed_role("Dev", "alice"))
    monkeypatch.setenv("FAKE_TOKEN_PARAMETER", tokens.token_parameter(owners.owner(REGION)))
    add_ssh_rule(aws, "198.51.100.7/32", tunnel.rule_description("Dev-alice"))
    result = run("--ssh", "--my-ip", "93.184.216.34", "--local-port", str(free_port()))
    note = note_of_kept_rule(aws, result, "198.51.100.7/32")
    assert note.startswith(f"note: {aws['group']} allows SSH from 198.51.100.7/32 for 'Dev-alice'"), note
