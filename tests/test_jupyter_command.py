"""`launcher jupyter` against moto: the launch request, the token's life, reuse, stop, status, tunnels.

SSM's start_session is not in moto and the session-manager-plugin is not installed here, so the
tunnel's subprocess (`aws ssm start-session`, or `ssh`) is a stand-in on PATH that answers like
Jupyter through a tunnel would (tests/jupyter_helpers.py); everything else is the real command.
"""

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import namedtuple
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.jupyter import cli as jupyter_cli, connect, lookup, start as jupyter_start, tokens as jupyter_tokens
from tests.jupyter_helpers import fake_tools, free_port
from trainer.errors import run_cli

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's
WHO = "moto"  # moto's caller identity is user/moto
PARAMETER = f"/gankit/jupyter/{WHO}/token"
BUCKET = "gankit-jupyter-test"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The project's wheel, built once for this module (a build takes seconds of scarce CPU)."""
    from launcher import instances as ec2_instances

    return ec2_instances.build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def aws(aws_env, monkeypatch, wheel):
    """moto with what `launcher infra up` leaves behind: bucket, security group, profile, DLAMI parameter."""
    import boto3
    from launcher import instances as ec2_instances
    from launcher import settings
    from moto.ssm.models import Parameter, ssm_backends

    # The moto server lives for the whole session: start each test from an empty account.
    urllib.request.urlopen(urllib.request.Request(f"{aws_env}/moto-api/reset", method="POST")).close()
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    ec2 = boto3.client("ec2")
    group = ec2.create_security_group(GroupName="gankit-jupyter-test", Description="no inbound")["GroupId"]
    iam = boto3.client("iam")
    iam.create_role(RoleName="gankit-ec2", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    for name in ("gankit-ec2", "gankit-jupyter"):  # the training instances' profile, and Jupyter's own
        if name != "gankit-ec2":
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
        iam.create_instance_profile(InstanceProfileName=name)
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    name = ec2_instances.ami_parameter_for("p3.2xlarge")
    # Public /aws/ parameters cannot be written through the API, even in moto: seed its backend.
    ssm_backends[ACCOUNT][REGION]._parameters[name] = [Parameter(
        ACCOUNT, name, image, "String", "DLAMI", None, None, datetime.now(), 1, "aws:ec2:image")]
    settings.update(region=REGION, bucket=BUCKET, security_group=group, instance_profile="gankit-ec2",
                    jupyter_instance_profile="gankit-jupyter")
    monkeypatch.setattr(ec2_instances, "build_wheel", lambda dest: Path(shutil.copy(wheel, dest)))
    return {"ec2": ec2, "ssm": boto3.client("ssm"), "s3": boto3.client("s3"), "group": group, "image": image}


@pytest.fixture
def tools(tmp_path, monkeypatch):
    """Stand-ins for `aws` + session-manager-plugin (and `ssh`) first on PATH; returns their call log."""
    bin_dir = fake_tools(tmp_path / "bin", ("aws", "session-manager-plugin", "ssh"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "tunnel.jsonl"
    monkeypatch.setenv("FAKE_TUNNEL_LOG", str(log))
    monkeypatch.setenv("FAKE_TOKEN_PARAMETER", PARAMETER)
    monkeypatch.setattr("launcher.tunnel.RETRY_SECONDS", 0.3)  # the stand-ins are ready at once
    return log


def calls(log):
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


Result = namedtuple("Result", "exit_code stdout output")


def run(*args):
    """`launcher jupyter ARGS` as the CLI runs it (one-line errors, exit codes); stdout and stdout+stderr."""
    code = 0
    with CliRunner().isolation() as (out, _, both):
        try:
            run_cli(jupyter_cli.jupyter, list(args), prog_name="launcher jupyter")
        except SystemExit as e:
            code = e.code
    return Result(code, out.getvalue().decode(), both.getvalue().decode())


def token_binding(ssm):
    """The instance ARN the token parameter is tagged for (None when untagged)."""
    tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=PARAMETER)["TagList"]
    return {t["Key"]: t["Value"] for t in tags}.get(jupyter_tokens.TAG_INSTANCE)


def instances(ec2):
    return [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] != "terminated"]


def test_launches_a_private_instance_and_prints_only_the_url(aws, tools, monkeypatch, wheel):
    from launcher import instances as ec2_instances

    built = []
    real = ec2_instances.run_instances_request
    monkeypatch.setattr(ec2_instances, "run_instances_request", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    opened = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    port = free_port()

    result = run("--local-port", str(port), "--open", "--idle", "45m", "--max-hours", "4")
    assert result.exit_code == 0, result.output

    # The token: a fresh SecureString in SSM, shown once, in the URL line only.
    parameter = aws["ssm"].get_parameter(Name=PARAMETER, WithDecryption=True)["Parameter"]
    token = parameter["Value"]
    assert parameter["Type"] == "SecureString" and len(token) >= 32
    url = f"http://localhost:{port}/lab?token={token}"
    assert result.stdout.strip() == url
    assert result.output.count(token) == 1
    assert len(opened) == 1 and token not in opened[0]  # a redirect page (test_open_never_puts_the_token_...)

    # The instance: IMDSv2, encrypted disk, the profile, no public ingress, tagged, stops on shutdown.
    [instance] = instances(aws["ec2"])
    iid = instance["InstanceId"]
    [request] = built
    assert request["MetadataOptions"]["HttpTokens"] == "required"
    assert all(m["Ebs"]["Encrypted"] for m in request["BlockDeviceMappings"])
    assert request["InstanceInitiatedShutdownBehavior"] == "stop"
    assert request["InstanceType"] == "p3.2xlarge"
    tags = lookup.tags_of(instance)
    assert tags["gankit:purpose"] == "jupyter" and tags["gankit:owner"] == WHO
    assert tags["gankit:idle"] == "2700" and tags["gankit:max-hours"] == "4"
    attribute = aws["ec2"].describe_instance_attribute(InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")
    assert attribute["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["IamInstanceProfile"]["Arn"].endswith(":instance-profile/gankit-jupyter")  # not training's
    assert "no jupyter_instance_profile" not in result.output
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [aws["group"]]
    for group in aws["ec2"].describe_security_groups(GroupIds=[aws["group"]])["SecurityGroups"]:
        assert group["IpPermissions"] == []

    # The user data names the parameter, never the token, and runs the loopback server and idle check.
    user_data = base64.b64decode(aws["ec2"].describe_instance_attribute(
        InstanceId=iid, Attribute="userData")["UserData"]["Value"]).decode()
    assert token not in user_data and PARAMETER in user_data
    import hashlib

    assert hashlib.sha256(wheel.read_bytes()).hexdigest() in user_data  # root installs only this wheel
    assert "launcher.remote.jupyter_start" in user_data and "--idle 2700 --max-hours 4" in user_data

    # Only this instance may read the token: the instance role's GetParameter needs the parameter's
    # gankit:instance tag to equal the caller's own instance ARN (infra/base.yaml).
    assert token_binding(aws["ssm"]) == f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{iid}"

    # The project and the notebook were staged for the instance.
    keys = [o["Key"] for o in aws["s3"].list_objects_v2(Bucket=BUCKET, Prefix=f"jupyter/{WHO}/")["Contents"]]
    assert f"jupyter/{WHO}/pull_and_generate.ipynb" in keys and any(k.endswith(".whl") for k in keys)

    # The tunnel: SSM port forwarding to 8888 on the instance, retried while its agent boots; no token in it.
    tunnel = calls(tools)
    assert len(tunnel) == 2  # the first try met an agent not yet connected
    assert tunnel[-1]["args"] == ["ssm", "start-session", "--target", iid, "--region", REGION,
                                  "--document-name", "AWS-StartPortForwardingSession",
                                  "--parameters", f"portNumber=8888,localPortNumber={port}"]
    assert token not in json.dumps(tunnel)


def test_open_never_puts_the_token_on_the_browsers_command_line(aws, tools, tmp_path, monkeypatch):
    # `--open` ran the browser (xdg-open, firefox ...) with the URL, token and all, as its argument: every user
    # of the machine sees it in `ps` while that browser runs. Jupyter opens its own URL through a redirect
    # file for this reason; so does the launcher now. The browser here is a real process ($BROWSER), which
    # records its command line and the file it was given, as a browser reads it.
    import webbrowser

    browser, seen = tmp_path / "browser", tmp_path / "browser.json"
    browser.write_text(f"""#!{sys.executable}
import json, os, stat, sys
from urllib.parse import urlparse
from urllib.request import url2pathname
page = url2pathname(urlparse(sys.argv[1]).path) if sys.argv[1].startswith("file:") else None
json.dump({{"argv": sys.argv, "page": page and open(page).read(), "mode": page and stat.S_IMODE(os.stat(page).st_mode),
           "folder_mode": page and stat.S_IMODE(os.stat(os.path.dirname(page)).st_mode)}}, open({str(seen)!r}, "w"))
""")
    browser.chmod(0o755)
    monkeypatch.setenv("BROWSER", f"{browser} %s")
    monkeypatch.setattr(webbrowser, "_tryorder", None)  # read $BROWSER afresh
    monkeypatch.setattr(webbrowser, "_browsers", {})

    result = run("--local-port", str(free_port()), "--open")
    assert result.exit_code == 0, result.output
    token = aws["ssm"].get_parameter(Name=PARAMETER, WithDecryption=True)["Parameter"]["Value"]
    opened = json.loads(seen.read_text())
    assert token not in " ".join(opened["argv"])
    assert opened["page"] and result.stdout.strip() in opened["page"]  # the page leads to the URL
    assert opened["mode"] == 0o600 and opened["folder_mode"] == 0o700
    assert not Path(opened["argv"][1].removeprefix("file://")).exists()  # gone with the tunnel


def test_reuses_the_running_instance_and_its_token(aws, tools):
    assert run("--local-port", str(free_port())).exit_code == 0
    token = aws["ssm"].get_parameter(Name=PARAMETER, WithDecryption=True)["Parameter"]["Value"]
    [first] = instances(aws["ec2"])

    result = run("--local-port", str(free_port()))
    assert result.exit_code == 0, result.output
    assert f"reusing {first['InstanceId']}" in result.output
    assert [i["InstanceId"] for i in instances(aws["ec2"])] == [first["InstanceId"]]
    assert aws["ssm"].get_parameter(Name=PARAMETER, WithDecryption=True)["Parameter"]["Value"] == token
    assert result.stdout.strip().endswith(f"token={token}")
    # A token an older launcher left untagged is bound to its instance on reuse.
    aws["ssm"].remove_tags_from_resource(ResourceType="Parameter", ResourceId=PARAMETER,
                                         TagKeys=[jupyter_tokens.TAG_INSTANCE])
    assert token_binding(aws["ssm"]) is None
    assert run("--local-port", str(free_port())).exit_code == 0
    assert token_binding(aws["ssm"]).endswith(f":instance/{first['InstanceId']}")


def profile_of(ec2):
    """The instance's profile, as its association has it (moto's replace leaves DescribeInstances' old one)."""
    [association] = ec2.describe_iam_instance_profile_associations()["IamInstanceProfileAssociations"]
    return association["IamInstanceProfile"]["Arn"].rsplit("/", 1)[-1]


@pytest.mark.parametrize("stopped", [False, True], ids=["running", "stopped"])
def test_an_instance_from_before_jupyters_own_role_gets_it_when_the_stack_has_it(aws, tools, stopped):
    """Before the split, a Jupyter instance had the training instances' profile (which may write runs/). With a
    stack not yet updated it serves as before, and the launcher says once how to update; once `launcher infra up`
    has recorded the Jupyter profile, the next `launcher jupyter` swaps it, running or before it starts."""
    from launcher import settings

    settings.update(jupyter_instance_profile=None)  # the config of a stack from before the split
    old = run("--local-port", str(free_port()))
    assert old.exit_code == 0, old.output
    assert profile_of(aws["ec2"]) == "gankit-ec2"
    assert " ".join(old.output.split()).count("no jupyter_instance_profile is configured") == 1
    if stopped:
        assert run("stop").exit_code == 0

    settings.update(jupyter_instance_profile="gankit-jupyter")  # what `launcher infra up` now records
    result = run("--local-port", str(free_port()))
    assert result.exit_code == 0, result.output
    assert profile_of(aws["ec2"]) == "gankit-jupyter"
    assert "gave " in result.output and "in place of gankit-ec2" in result.output and "no jupyter_instance_profile" not in result.output
    assert token_binding(aws["ssm"]).endswith(f":instance/{instances(aws['ec2'])[0]['InstanceId']}")


def test_a_profile_swap_aws_refuses_leaves_jupyter_serving_with_a_note(aws, tools, monkeypatch):
    from launcher import settings
    from tests.aws_helpers import refuse_call

    settings.update(jupyter_instance_profile=None)
    assert run("--local-port", str(free_port())).exit_code == 0
    settings.update(jupyter_instance_profile="gankit-jupyter")
    refuse_call(monkeypatch, "ReplaceIamInstanceProfileAssociation", "UnauthorizedOperation")
    result = run("--local-port", str(free_port()))
    assert result.exit_code == 0, result.output
    assert profile_of(aws["ec2"]) == "gankit-ec2"
    assert "could not give" in result.output and "iam:PassRole" in result.output and "Traceback" not in result.output


def test_stop_then_start_again_rotates_the_token(aws, tools):
    assert run("--local-port", str(free_port())).exit_code == 0
    old = aws["ssm"].get_parameter(Name=PARAMETER, WithDecryption=True)["Parameter"]["Value"]
    [instance] = instances(aws["ec2"])

    result = run("stop")
    assert result.exit_code == 0 and f"stopping {instance['InstanceId']}" in result.output
    assert instances(aws["ec2"])[0]["State"]["Name"] in ("stopping", "stopped")
    status = run("status")
    assert "stopped" in status.output and "cost" not in status.output

    result = run("--local-port", str(free_port()))
    assert result.exit_code == 0, result.output
    assert f"starting {instance['InstanceId']}" in result.output
    new = aws["ssm"].get_parameter(Name=PARAMETER, WithDecryption=True)["Parameter"]["Value"]
    assert new != old and result.stdout.strip().endswith(f"token={new}")
    assert token_binding(aws["ssm"]).endswith(f":instance/{instance['InstanceId']}")
    assert len(instances(aws["ec2"])) == 1

    result = run("stop", "--terminate")
    assert result.exit_code == 0
    assert instances(aws["ec2"]) == []
    assert run("status").output.startswith("no Jupyter instance")


def test_stop_terminate_whose_token_cannot_be_deleted_says_the_instance_is_terminated(aws, tools, monkeypatch):
    # The line was only SSM's refusal: it did not say the instance was terminated, so the user could not tell
    # whether it still billed.
    from tests.aws_helpers import refuse_call

    assert run("--local-port", str(free_port())).exit_code == 0
    [instance] = instances(aws["ec2"])
    refuse_call(monkeypatch, "DeleteParameter", "AccessDeniedException")
    result = run("stop", "--terminate")
    assert result.exit_code != 0 and instances(aws["ec2"]) == [] and "Traceback" not in result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert f"terminated {instance['InstanceId']}" in line and PARAMETER in line and "not allowed" in line, line


def test_status_shows_state_uptime_and_cost(aws, tools):
    from launcher.pricing import price_per_hour

    assert run("status").output.startswith("no Jupyter instance")
    assert run("--local-port", str(free_port())).exit_code == 0
    result = run("status")
    assert result.exit_code == 0
    assert "running" in result.output and "p3.2xlarge" in result.output and "uptime" in result.output
    assert f"${price_per_hour('p3.2xlarge', False):.2f}/h" in result.output
    [instance] = instances(aws["ec2"])
    for value in (None, "soon"):  # the idle tag removed or edited by hand: said "0s idle", or traced back
        if value is None:
            aws["ec2"].delete_tags(Resources=[instance["InstanceId"]], Tags=[{"Key": "gankit:idle"}])
        else:
            aws["ec2"].create_tags(Resources=[instance["InstanceId"]], Tags=[{"Key": "gankit:idle", "Value": value}])
        result = run("status")
        assert result.exit_code == 0 and "stops after ? idle" in result.output, result.output


def test_status_shows_a_tag_with_terminal_controls_escaped(aws, tools):
    """The instance's tags are anyone's to edit who may tag it: a limit tag was printed raw, so it could start a
    terminal sequence (C1's CSI), add a line of its own or reorder the line. (EC2 answers in XML: no ESC or BEL.)"""
    assert run("--local-port", str(free_port())).exit_code == 0
    [instance] = instances(aws["ec2"])
    aws["ec2"].create_tags(Resources=[instance["InstanceId"]],
                           Tags=[{"Key": lookup.TAG_MAX_HOURS, "Value": "8\x9b2J\u202e\nstate      stopped"}])
    result = run("status")
    assert result.exit_code == 0, result.output
    assert not any(ch in result.output for ch in "\x9b\u202e"), repr(result.output)
    assert "or 8\\x9b2J\\u202e\\nstate      stopped h up\n" in result.output, result.output


def test_missing_plugin_is_one_clear_error_before_anything_bills(aws, tmp_path, monkeypatch):
    bin_dir = fake_tools(tmp_path / "bin", ("aws",))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin:/bin")
    result = run()
    assert result.exit_code == 2
    assert "session-manager-plugin" in result.output and "install" in result.output
    assert "session-manager-working-with-install-plugin" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert instances(aws["ec2"]) == []
    with pytest.raises(aws["ssm"].exceptions.ParameterNotFound):
        aws["ssm"].get_parameter(Name=PARAMETER)


@pytest.mark.parametrize("use_ssh", [False, True], ids=["ssm", "ssh"])
def test_a_local_port_in_use_is_refused_before_anything_bills_and_gets_no_token(aws, tools, use_ssh):
    # Something else on the port (a local Jupyter on 8888, a second `launcher jupyter`'s tunnel): the tunnel
    # could not listen there, so the launcher sent the new token to that other server every 3 s for 25
    # minutes, then stopped the instance it had launched for nothing.
    from tests.jupyter_helpers import FakeJupyter

    with FakeJupyter("someone-elses-token") as other:
        port = other.server.server_address[1]
        result = run("--local-port", str(port), *(["--ssh", "--my-ip", "93.184.216.34"] if use_ssh else []))
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: --local-port {port} is in use on this machine")
    assert len(result.output.strip().splitlines()) == 1 and "--local-port" in result.output.split(";")[-1]
    assert other.requests == []
    assert instances(aws["ec2"]) == []
    assert not [x for x in aws["ssm"].describe_parameters()["Parameters"] if x["Name"] == PARAMETER]  # nor a token


def test_ssh_tunnel_opens_only_the_callers_32_and_closes_it(aws, tools):
    port = free_port()
    result = run("--ssh", "--my-ip", "93.184.216.34", "--local-port", str(port))
    assert result.exit_code == 0, result.output
    [instance] = instances(aws["ec2"])
    ssh = [c for c in calls(tools) if c["tool"] == "ssh"]
    assert ssh and ssh[-1]["args"][-1] == f"ubuntu@{instance['PublicIpAddress']}"
    assert f"127.0.0.1:{port}:127.0.0.1:8888" in ssh[-1]["args"]
    # While the tunnel was up: exactly one rule, port 22, from 93.184.216.34/32.
    [rule] = ssh[-1]["ingress"]
    assert (rule["FromPort"], rule["ToPort"]) == (22, 22)
    assert [r["CidrIp"] for r in rule["IpRanges"]] == ["93.184.216.34/32"]
    # Afterwards: none.
    [group] = aws["ec2"].describe_security_groups(GroupIds=[aws["group"]])["SecurityGroups"]
    assert group["IpPermissions"] == []


@pytest.mark.parametrize("ip", ["0.0.0.0", "10.0.0.5", "not-an-ip"])
def test_ssh_refuses_a_non_public_address(aws, tools, ip):
    result = run("--ssh", "--my-ip", ip, "--local-port", str(free_port()))
    assert result.exit_code == 2 and "--my-ip" in result.output
    assert instances(aws["ec2"]) == []


def test_bad_options_are_usage_errors(aws, tools):
    assert run("--idle", "10s").exit_code == 2
    assert run("--max-hours", "0").exit_code == 2
    # The OS backstop behind the idle check: a week at most, so a broken idle check cannot bill on for months.
    too_long = run("--max-hours", "169")
    assert too_long.exit_code == 2 and "--max-hours 169 is out of range" in too_long.output
    assert instances(aws["ec2"]) == []


@pytest.mark.parametrize("argv, named", [(["--ssh", "stop"], "--ssh is an option"),
                                          (["--idle", "5m", "--open", "status"], "--idle, --open are options")])
def test_starting_options_given_to_stop_or_status_are_refused_not_ignored(monkeypatch, argv, named):
    # `launcher jupyter --ssh stop` stopped the instance and ignored --ssh without a word.
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: any call would fail otherwise
    result = run(*argv)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"error: {named} of `launcher jupyter` itself"), result.output
    assert f"not of `launcher jupyter {argv[-1]}`" in result.output


def _gone(pid, timeout=10.0) -> bool:
    """Has process `pid` ended (a zombie counts: it runs nothing)?"""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _ingress(aws):
    [group] = aws["ec2"].describe_security_groups(GroupIds=[aws["group"]])["SecurityGroups"]
    return group["IpPermissions"]


def add_ssh_rule(aws, cidr, description):
    aws["ec2"].authorize_security_group_ingress(GroupId=aws["group"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": cidr, "Description": description}]}])


def note_of_kept_rule(aws, result, cidr) -> str:
    """The line of `result` that names the SSH rule for `cidr`, which `--ssh` left as the group's only one; it
    must say how to remove it."""
    assert result.exit_code == 0, result.output
    assert [r["CidrIp"] for p in _ingress(aws) for r in p["IpRanges"]] == [cidr]
    [note] = [line for line in result.output.splitlines() if cidr in line]
    assert (f"aws ec2 revoke-security-group-ingress --region {REGION} --group-id {aws['group']} --protocol tcp "
            f"--port 22 --cidr {cidr}") in note, note
    return note


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_ssh_tunnel_cleans_up_on_sigterm_and_sighup_like_ctrl_c(aws, tools, tmp_path, signum):
    """The launcher as its own process: killed while the tunnel is open, it removes the port-22 rule from
    the shared group and leaves no tunnel process, key or log behind."""
    assert run("--local-port", str(free_port())).exit_code == 0  # the instance (wheel stubbed here)
    scratch = tmp_path / "scratch"  # the launcher's TMPDIR: the key folder and the tunnel's log
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "FAKE_TUNNEL_STAY": "1"}
    launcher = subprocess.Popen([sys.executable, "-m", "launcher.cli", "jupyter", "--ssh", "--my-ip", "93.184.216.34",
                                 "--local-port", str(free_port())], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tunnel = {}
    try:
        assert "token=" in launcher.stdout.readline()  # Jupyter answered through the tunnel
        tunnel = [c for c in calls(tools) if c["tool"] == "ssh"][-1]
        assert [r["CidrIp"] for p in _ingress(aws) for r in p["IpRanges"]] == ["93.184.216.34/32"]
        assert any(scratch.iterdir())
        launcher.send_signal(signum)
        _, err = launcher.communicate(timeout=60)
        ended = {k: _gone(tunnel[k]) for k in ("pid", "child")}
    finally:
        launcher.kill()
        for pid in (tunnel.get("pid"), tunnel.get("child")):
            if pid and not _gone(pid, 0):
                os.kill(pid, signal.SIGKILL)
    assert launcher.returncode == 0, err
    assert "closing the tunnel" in err and "Traceback" not in err
    assert _ingress(aws) == []
    assert ended["pid"] and ended["child"]  # the tunnel's whole process group
    assert list(scratch.iterdir()) == []


def test_ssh_sweeps_stale_temporary_rules_of_its_owner(aws, tools):
    """Rules an earlier run could not remove (killed with SIGKILL, a crash) go at the next --ssh run, and so do
    those of launchers that named no owner while no Jupyter instance but the caller's runs in the group;
    other users' temporary rules and rules that are not gankit's stay."""
    from launcher import tunnel

    def rule(cidr, description):
        return {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                "IpRanges": [{"CidrIp": cidr, "Description": description}]}

    aws["ec2"].authorize_security_group_ingress(GroupId=aws["group"], IpPermissions=[
        rule("198.51.100.7/32", tunnel.rule_description(WHO)),
        rule("198.51.100.8/32", tunnel.RULE_DESCRIPTION),  # an older launcher's: no owner in it
        rule("198.51.100.9/32", tunnel.rule_description("someone-else")),
        rule("198.51.100.10/32", "the admin's bastion")])
    result = run("--ssh", "--my-ip", "93.184.216.34", "--local-port", str(free_port()))
    assert result.exit_code == 0, result.output
    assert "removed 2 stale temporary SSH rules" in result.output
    left = sorted(r["CidrIp"] for p in _ingress(aws) for r in p["IpRanges"])
    assert left == ["198.51.100.10/32", "198.51.100.9/32"]


def test_ssh_names_an_ownerless_rule_while_another_jupyter_instance_runs_in_the_group(aws, tools):
    """A rule from a launcher that named no owner may hold open the tunnel of anyone whose Jupyter instance runs
    in the group: while one other than the caller's runs, it stays, and the line says how to remove it."""
    from launcher import tunnel

    aws["ec2"].run_instances(ImageId=aws["image"], MinCount=1, MaxCount=1, SecurityGroupIds=[aws["group"]],
                             TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                 {"Key": lookup.TAG_PURPOSE, "Value": lookup.PURPOSE},
                                 {"Key": lookup.TAG_OWNER, "Value": "someone-else"}]}])
    add_ssh_rule(aws, "198.51.100.8/32", tunnel.RULE_DESCRIPTION)
    result = run("--ssh", "--my-ip", "93.184.216.34", "--local-port", str(free_port()))
    note = note_of_kept_rule(aws, result, "198.51.100.8/32")
    assert note.startswith(f"note: {aws['group']} allows SSH from 198.51.100.8/32 for no owner named"), note


def test_an_instance_that_never_serves_jupyter_is_stopped_not_left_billing(aws, tools, monkeypatch):
    monkeypatch.setenv("FAKE_TUNNEL_NEVER", "1")
    monkeypatch.setattr(connect, "READY_TIMEOUT", 1)
    result = run("--local-port", str(free_port()))
    [instance] = instances(aws["ec2"])
    assert result.exit_code == 1, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert "did not answer" in line and f"Stopped {instance['InstanceId']}" in line and "Traceback" not in result.output
    assert instance["State"]["Name"] in ("stopping", "stopped")


def test_an_instance_that_stops_while_waiting_is_named_at_once(aws, tools, monkeypatch):
    monkeypatch.setenv("FAKE_TUNNEL_NEVER", "stop-it")  # a failed setup halts the machine
    monkeypatch.setattr(connect, "STATE_CHECK_SECONDS", 0)
    started = time.monotonic()
    result = run("--local-port", str(free_port()))
    assert result.exit_code == 1, result.output
    [instance] = instances(aws["ec2"])
    [line] = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert f"{instance['InstanceId']} is stopp" in line and "setup failed" in line
    assert "`launcher jupyter` starts it again with its disk" in line  # not only --terminate, which loses it
    assert time.monotonic() - started < 60  # not READY_TIMEOUT's 25 minutes


def test_a_bucket_prefix_that_is_not_plain_is_refused_before_anything_starts(aws, tools, monkeypatch):
    monkeypatch.setenv("GANKIT_BUCKET", f"{BUCKET}/$(touch /tmp/pwned)")
    result = run("--local-port", str(free_port()))
    assert result.exit_code == 2, result.output
    assert "GANKIT_BUCKET" in result.output and "prefix may hold" in result.output
    assert instances(aws["ec2"]) == []
    assert not [x for x in aws["ssm"].describe_parameters()["Parameters"] if x["Name"] == PARAMETER]  # nor a token


@pytest.mark.parametrize("missing", ["instance_profile", "security_group"])
def test_no_instance_profile_or_security_group_is_refused_before_anything_is_uploaded(aws, tools, missing):
    from launcher import settings

    settings.update(**{missing: None})
    if missing == "instance_profile":  # neither Jupyter's own nor the training one it falls back on
        settings.update(jupyter_instance_profile=None)
    result = run("--local-port", str(free_port()))
    assert result.exit_code == 2, result.output
    assert f"no {missing} configured" in result.output and "launcher infra up" in result.output
    assert instances(aws["ec2"]) == []
    assert aws["s3"].list_objects_v2(Bucket=BUCKET).get("Contents", []) == []  # no wheel, no notebook
    assert not [x for x in aws["ssm"].describe_parameters()["Parameters"] if x["Name"] == PARAMETER]  # nor a token


def test_a_config_with_only_the_jupyter_profile_launches_with_it(aws, tools):
    # Jupyter never uses the training instances' profile once it has its own, yet a config without it (a
    # notebook user given only the Jupyter profile and the group) was refused: "no instance_profile configured".
    from launcher import settings

    settings.update(instance_profile=None)
    result = run("--local-port", str(free_port()))
    assert result.exit_code == 0, result.output
    assert profile_of(aws["ec2"]) == "gankit-jupyter" and "no jupyter_instance_profile" not in result.output


def test_a_launch_whose_reply_is_lost_terminates_what_it_started_and_says_so(aws, tools, monkeypatch):
    # EC2 started the instance but its reply never came (a timeout, a dropped connection): the line was only
    # "no answer from EC2 ..." and the instance, which could not read its token, billed on unnamed. The launch
    # had no client token either, so a retry of the lost request could start a second one.
    from launcher import instances as ec2_instances

    sent, real_client = [], ec2_instances.client

    def client(service, region=None):
        made = real_client(service, region)
        if service == "ec2":
            def dropped(**_):
                raise ConnectionError("the connection dropped after the request was sent")

            made.meta.events.register("before-parameter-build.ec2.RunInstances", lambda params, **_: sent.append(params))
            made.meta.events.register("after-call.ec2.RunInstances", dropped)
        return made

    monkeypatch.setattr(ec2_instances, "client", client)
    result = run("--local-port", str(free_port()))
    assert result.exit_code == 1, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("error:")]
    [launched] = [i["InstanceId"] for r in aws["ec2"].describe_instances()["Reservations"] for i in r["Instances"]]
    assert "connection dropped" in line and f"terminated {launched}" in line and "Traceback" not in result.output
    assert instances(aws["ec2"]) == [] or instances(aws["ec2"])[0]["State"]["Name"] == "shutting-down"
    [request] = sent
    assert request.get("ClientToken")  # EC2 starts one instance however often the request is retried


def test_ctrl_c_while_the_instance_starts_says_it_goes_on_and_how_to_stop_it(aws, tools, monkeypatch):
    def interrupted(ec2, iid):
        raise KeyboardInterrupt  # Ctrl-C during the wait (moto's instances run at once)

    monkeypatch.setattr(jupyter_start, "wait_running", interrupted)
    result = run("--local-port", str(free_port()), "--idle", "45m")
    [instance] = instances(aws["ec2"])
    assert result.exit_code == 130, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert f"stopped waiting for {instance['InstanceId']} on Ctrl-C (SIGINT)" in line
    assert "stops itself after 45m unused" in line and "`launcher jupyter stop`" in line
    assert "Traceback" not in result.output


@pytest.mark.parametrize("lost", ["network", "credentials"])
def test_aws_lost_while_the_instance_starts_says_it_goes_on_and_how_to_stop_it(aws, tools, monkeypatch, lost):
    # The line was only AWS's ("Could not connect to the endpoint URL ..."), with an instance just launched
    # and billing that it never named.
    from botocore.exceptions import ClientError, EndpointConnectionError

    def cut_off(ec2, iid):
        if lost == "network":
            raise EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")
        raise ClientError({"Error": {"Code": "ExpiredToken", "Message": "expired"}}, "DescribeInstances")

    monkeypatch.setattr(jupyter_start, "wait_running", cut_off)
    result = run("--local-port", str(free_port()), "--idle", "45m")
    [instance] = instances(aws["ec2"])
    assert result.exit_code == (1 if lost == "network" else 2), result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert instance["InstanceId"] in line and "stops itself after 45m unused" in line and "`launcher jupyter stop`" in line
    assert ("Could not connect" if lost == "network" else "renew them with `aws configure`") in line
    assert "Traceback" not in result.output


def test_ctrl_c_while_a_restarted_instance_starts_names_the_idle_limit_it_keeps(aws, tools, monkeypatch):
    # A stopped instance keeps the --idle it was launched with (the note says so): the line named the new one.
    assert run("--local-port", str(free_port()), "--idle", "2h").exit_code == 0
    [instance] = instances(aws["ec2"])
    aws["ec2"].stop_instances(InstanceIds=[instance["InstanceId"]])

    def interrupted(ec2, iid):
        raise KeyboardInterrupt

    monkeypatch.setattr(jupyter_start, "wait_running", interrupted)
    result = run("--local-port", str(free_port()), "--idle", "45m")
    assert result.exit_code == 130, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert "stops itself after 2:00:00 unused" in line and "45m" not in line, line


@pytest.mark.parametrize("use_ssh", [False, True], ids=["ssm", "ssh"])
def test_a_local_port_taken_while_the_instance_starts_gets_no_token(aws, tools, monkeypatch, use_ssh):
    # The port is checked before the launch, but the tunnel binds it minutes later: a program that took it in
    # between (a local Jupyter started meanwhile, a second `launcher jupyter` on the same port) was sent the
    # token every 3 s while the tunnel failed to listen, and if it answered, its URL was printed as ours.
    from tests.jupyter_helpers import FakeJupyter

    port, taken = free_port(), []
    real_wait = jupyter_start.wait_running

    def port_taken_meanwhile(ec2, iid):
        state = real_wait(ec2, iid)
        taken.append(FakeJupyter("someone-elses-token", port=port).__enter__())
        return state

    monkeypatch.setattr(jupyter_start, "wait_running", port_taken_meanwhile)
    monkeypatch.setattr(connect, "READY_TIMEOUT", 3)
    try:
        result = run("--local-port", str(port), *(["--ssh", "--my-ip", "93.184.216.34"] if use_ssh else []))
    finally:
        for other in taken:
            other.__exit__(None, None, None)
    [other] = taken
    [instance] = instances(aws["ec2"])
    assert other.requests == [], "the token went to a listener that is not the tunnel"
    assert result.exit_code == 2 and result.stdout == "" and "Traceback" not in result.output, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert f"--local-port {port} was taken" in line and instance["InstanceId"] in line and "--local-port" in line
    assert instance["State"]["Name"] == "running"  # nothing wrong with it: connect again on a free port


def test_two_starts_at_once_share_one_token(aws, tools, monkeypatch):
    # Two `launcher jupyter` run at once (two terminals) for the stopped instance: each rotated the token and
    # started it, so one printed a token the instance never read; its tunnel waited 25 minutes for Jupyter
    # to accept it, then stopped the instance under the other user's open notebook.
    import threading

    assert run("--local-port", str(free_port())).exit_code == 0
    [instance] = instances(aws["ec2"])
    aws["ec2"].stop_instances(InstanceIds=[instance["InstanceId"]])
    real_find, looked, both_looked = lookup.find_instance, [], threading.Event()

    def find_instance(ec2, who):  # each waits (up to 3 s) until the other has looked too, as two at once do
        found = real_find(ec2, who)
        looked.append(found["State"]["Name"])
        if len(looked) == 2:
            both_looked.set()
        both_looked.wait(3)
        return found

    monkeypatch.setattr(lookup, "find_instance", find_instance)
    tokens = {}

    def start(name):
        import boto3

        ec2, ssm = boto3.client("ec2"), boto3.client("ssm")
        tokens[name] = jupyter_start.start_or_reuse(ec2, ssm, REGION, WHO, None, 3600, 8.0)

    threads = [threading.Thread(target=start, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    current = aws["ssm"].get_parameter(Name=PARAMETER, WithDecryption=True)["Parameter"]["Value"]
    assert tokens["first"][:2] == tokens["second"][:2] == (instance["InstanceId"], current)
    assert sorted(started for _, _, started in tokens.values()) == [False, True]  # one started it, one reused it
    assert looked[0] == "stopped" and looked[1] != "stopped"  # the second found it started: reused, not rotated


def test_a_new_type_that_cannot_start_puts_the_old_one_back(aws, tools, monkeypatch):
    # The instance was resized before the start; a start EC2 refused (no capacity for the new type) left it
    # stopped as the new type, so the next plain `launcher jupyter` failed again on a type the user had not
    # asked for this time, and the line did not say what the instance now was.
    from tests.aws_helpers import refuse_call

    assert run("--local-port", str(free_port())).exit_code == 0
    [instance] = instances(aws["ec2"])
    iid = instance["InstanceId"]
    aws["ec2"].stop_instances(InstanceIds=[iid])
    refuse_call(monkeypatch, "StartInstances", "InsufficientInstanceCapacity", "no p3.8xlarge capacity here")
    result = run("--local-port", str(free_port()), "--instance-type", "p3.8xlarge")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert "no p3.8xlarge capacity" in line and iid in line and "p3.2xlarge" in line, line
    [after] = instances(aws["ec2"])
    assert after["InstanceType"] == "p3.2xlarge" and after["State"]["Name"] == "stopped"


def test_another_region_finds_the_instance_in_the_first_instead_of_launching_a_second(aws, tools, monkeypatch):
    # The instance was looked for in the current region only: with another region set (AWS_DEFAULT_REGION in
    # another shell, a changed config) `launcher jupyter` launched a second instance beside the first, which
    # billed on unseen, and `status` and `stop` said there was no instance at all.
    assert run("--local-port", str(free_port())).exit_code == 0
    [instance] = instances(aws["ec2"])
    iid = instance["InstanceId"]
    monkeypatch.setenv("GANKIT_REGION", "eu-west-1")

    result = run("--local-port", str(free_port()))
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"error: your Jupyter instance {iid} (running) is in {REGION}, not eu-west-1"), line
    assert f"GANKIT_REGION={REGION}" in line and "stop --terminate" in line
    import boto3

    assert boto3.client("ec2", region_name="eu-west-1").describe_instances()["Reservations"] == []

    status = run("status")
    assert status.exit_code == 0 and iid in status.output and REGION in status.output, status.output
    stop = run("stop")
    assert stop.exit_code == 2 and iid in stop.output and REGION in stop.output, stop.output
    assert instances(aws["ec2"])[0]["State"]["Name"] == "running"  # stop there did not stop it


def _instances_ever(ec2):
    return [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]


@pytest.mark.parametrize("when", ["during", "after"], ids=["during-RunInstances", "binding-the-token"])
def test_ctrl_c_while_launching_terminates_what_started_and_says_so(aws, tools, monkeypatch, when):
    # Only a lost reply was handled: Ctrl-C (or SIGTERM, SIGHUP) while RunInstances ran, or just after it while
    # the token was bound to the new instance, exited 130 without a word, and the instance billed on unnamed
    # (it could not read its token, so it never served Jupyter) until its idle check stopped it.
    from launcher import instances as ec2_instances

    real_client = ec2_instances.client

    def client(service, region=None):
        made = real_client(service, region)
        if service == "ec2" and when == "during":
            def interrupted(**_):
                raise KeyboardInterrupt  # EC2 started it; the reply never reached the launcher

            made.meta.events.register("after-call.ec2.RunInstances", interrupted)
        return made

    def bind_interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(ec2_instances, "client", client)
    if when == "after":
        monkeypatch.setattr(jupyter_tokens, "bind_token", bind_interrupted)
    result = run("--local-port", str(free_port()))
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("error:")]
    [launched] = [i["InstanceId"] for i in _instances_ever(aws["ec2"])]
    assert "Ctrl-C" in line and f"terminated {launched}" in line, line
    assert instances(aws["ec2"]) == [] or instances(aws["ec2"])[0]["State"]["Name"] == "shutting-down"


def test_a_launch_that_fails_after_runinstances_terminates_what_started(aws, tools, monkeypatch):
    # Any failure between RunInstances and the token bound (here a bug's RuntimeError) terminates it too.
    def broken(*_):
        raise RuntimeError("something unexpected")

    monkeypatch.setattr(jupyter_tokens, "bind_token", broken)
    result = run("--local-port", str(free_port()))
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("error:")]
    [launched] = [i["InstanceId"] for i in _instances_ever(aws["ec2"])]
    assert "something unexpected" in line and launched in line and "terminated" in line, line
    assert instances(aws["ec2"]) == [] or instances(aws["ec2"])[0]["State"]["Name"] == "shutting-down"


def test_a_token_that_cannot_be_bound_nor_the_instance_terminated_names_both(aws, tools, monkeypatch):
    # The bind failed, then the terminate that should clean up failed too: its ClientError replaced the line
    # that said what went wrong, and nothing said the instance was still there, nor how to stop it.
    from tests.aws_helpers import refuse_call

    refuse_call(monkeypatch, "AddTagsToResource", "AccessDeniedException", "may not tag parameters")
    refuse_call(monkeypatch, "TerminateInstances", "UnauthorizedOperation", "may not terminate")
    result = run("--local-port", str(free_port()))
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("error:")]
    [instance] = instances(aws["ec2"])
    iid = instance["InstanceId"]
    assert "may not tag parameters" in line and "may not terminate" in line, line
    assert f"{iid} may still run" in line and "`launcher jupyter stop --terminate`" in line, line
    assert "terminated it" not in line


def test_a_reused_running_instance_jupyter_does_not_answer_for_is_left_running(aws, tools, monkeypatch):
    # The launcher stopped any instance whose Jupyter did not answer through its tunnel, also one it had only
    # reused: already running, perhaps with someone's notebook open in another tab or on another machine, and
    # the fault as likely this machine's network. That stop killed the open kernels; the instance has its own
    # idle stop, so it is left running and the line says what is wrong.
    assert run("--local-port", str(free_port())).exit_code == 0
    [instance] = instances(aws["ec2"])
    iid = instance["InstanceId"]
    monkeypatch.setenv("FAKE_TUNNEL_NEVER", "1")
    monkeypatch.setattr(connect, "READY_TIMEOUT", 1)
    result = run("--local-port", str(free_port()))
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert "did not answer" in line and f"left {iid} running" in line and "`launcher jupyter stop`" in line, line
    assert f"Stopped {iid}" not in line
    assert instances(aws["ec2"])[0]["State"]["Name"] == "running"

    # One this run started again is stopped as a launched one is: nobody else was using it.
    aws["ec2"].stop_instances(InstanceIds=[iid])
    result = run("--local-port", str(free_port()))
    [line] = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert result.exit_code == 1 and f"Stopped {iid}" in line, result.output
    assert instances(aws["ec2"])[0]["State"]["Name"] in ("stopping", "stopped")


@pytest.mark.parametrize("tags", [{}, {lookup.TAG_PURPOSE: lookup.PURPOSE, lookup.TAG_OWNER: "bob"}],
                         ids=["a-training-instance", "another-owners-jupyter"])
def test_a_region_note_naming_an_instance_not_yours_is_not_taken_for_yours(aws, tools, tags):
    # The note (jupyter/<you>/instance.json) is an object in the bucket, which every instance role may write: its
    # instance was taken for the caller's Jupyter once it was live, whatever it was. A note naming a training
    # instance, or another user's Jupyter, made `launcher jupyter` refuse to launch ("your Jupyter instance ... is
    # in eu-west-1: ... stop --terminate it there"), and `status` and `stop` name it as the caller's.
    import boto3

    there = boto3.client("ec2", region_name="eu-west-1")
    image = there.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
    [other] = there.run_instances(ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=spec)["Instances"]
    aws["s3"].put_object(Bucket=BUCKET, Key=f"jupyter/{WHO}/instance.json",
                         Body=json.dumps({"region": "eu-west-1", "instance": other["InstanceId"]}).encode())

    status = run("status")
    assert status.exit_code == 0 and other["InstanceId"] not in status.output, status.output
    stop = run("stop")
    assert stop.exit_code == 0 and other["InstanceId"] not in stop.output, stop.output
    result = run("--local-port", str(free_port()))
    assert result.exit_code == 0 and other["InstanceId"] not in result.output, result.output
    assert len(instances(aws["ec2"])) == 1  # its own, here


def test_ownerless_ssh_rules_stay_when_ec2_will_not_say_which_instances_run():
    """A rule naming no owner may hold open another person's tunnel: only EC2's answer that no other Jupyter
    instance runs in the group lets it go. A refused DescribeInstances proves nothing, so the rule stays."""
    import boto3
    from botocore.stub import Stubber

    from launcher.jupyter import ssh_rules

    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(ec2) as stub:
        stub.add_client_error("describe_instances", "UnauthorizedOperation", "not allowed")
        assert ssh_rules.ownerless_rules_are_stale(ec2, "sg-12345678", "i-0123456789abcdef0") is False
