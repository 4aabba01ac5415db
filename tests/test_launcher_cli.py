"""`launcher config` and `launcher image push` (ECR in moto; a recording stand-in for the docker CLI)."""

import base64
import json
import os
import shutil
import stat

import boto3
import pytest
from moto import mock_aws

import trainer
from launcher import settings
from launcher.cli import main
from trainer.errors import UsageError


def run(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    out, err = capsys.readouterr()
    return stopped.value.code or 0, out, err


def test_config_set_show_and_env_override(capsys, monkeypatch):
    assert run(["config", "set", "bucket", "my-gankit"], capsys)[0] == 0
    assert run(["config", "set", "role", "arn:aws:iam::123456789012:role/sm"], capsys)[0] == 0
    assert json.loads(settings.config_path().read_text()) == {"bucket": "my-gankit", "role": "arn:aws:iam::123456789012:role/sm"}
    code, out, _ = run(["config", "show"], capsys)
    assert code == 0 and "bucket = my-gankit" in out and "# backend in force: sagemaker" in out

    monkeypatch.setenv("GANKIT_BUCKET", "from-env")  # the environment beats the file
    assert "bucket = from-env" in run(["config", "show"], capsys)[1]
    run(["config", "set", "role", "none"], capsys)
    monkeypatch.delenv("GANKIT_BUCKET")
    assert "# backend in force: local" in run(["config", "show"], capsys)[1]

    code, _, err = run(["config", "set", "backend", "azure"], capsys)
    assert code == 2 and err.strip().splitlines() == ["error: backend 'azure': choose one of local, sagemaker, ec2"]


def test_config_show_says_which_values_come_from_the_environment(capsys, monkeypatch):
    # GANKIT_BACKEND's value was printed under the file's name, as if the file held it.
    run(["config", "set", "bucket", "my-gankit"], capsys)
    run(["config", "set", "region", "eu-west-1"], capsys)
    monkeypatch.setenv("GANKIT_BACKEND", "ec2")
    monkeypatch.setenv("GANKIT_REGION", "us-east-2")
    code, out, _ = run(["config", "show"], capsys)
    assert code == 0 and out.splitlines() == [f"# {settings.config_path()}", "bucket = my-gankit",
                                              "# from the environment (GANKIT_<KEY>), over the file:",
                                              "backend = ec2", "region = us-east-2", "# backend in force: ec2"]


def test_config_show_on_a_fresh_install_does_not_name_a_file_that_is_not_there(capsys):
    # A first-time user was shown "# ~/.config/gankit/config.json" as the settings file; `cat` found none.
    assert not settings.config_path().exists()
    code, out, _ = run(["config", "show"], capsys)
    assert code == 0 and out.splitlines() == [
        f"# {settings.config_path()} (not written yet: `launcher config set KEY VALUE` writes it)",
        "# backend in force: local"]


def test_an_unknown_backend_from_the_environment_names_the_variable(capsys, monkeypatch):
    # It once passed `config show` ("backend in force: azure") and `submit` blamed a --backend never given.
    monkeypatch.setenv("GANKIT_BACKEND", "azure")
    for argv in (["config", "show"], ["submit", "--dataset", "mnist", "--dry-run"]):
        code, _, err = run(argv, capsys)
        assert code == 2 and err.strip().splitlines() == [
            "error: GANKIT_BACKEND='azure': choose one of local, sagemaker, ec2, or unset it"], (argv, err)
    monkeypatch.setenv("GANKIT_BACKEND", "local")
    assert "# backend in force: local" in run(["config", "show"], capsys)[1]


def test_config_set_says_when_the_environment_overrides_what_it_wrote(capsys, monkeypatch):
    # It printed "backend = local" and nothing else, and every submit went on running on ec2.
    monkeypatch.setenv("GANKIT_BACKEND", "ec2")
    code, out, err = run(["config", "set", "backend", "local"], capsys)
    assert code == 0 and out == "backend = local\n" and settings.load() == {"backend": "local"}
    assert err.strip().splitlines() == [
        "warning: GANKIT_BACKEND=ec2 overrides this setting; unset it for `backend = local` to apply"]
    monkeypatch.setenv("GANKIT_BACKEND", "local")  # the same value: nothing to say
    assert run(["config", "set", "backend", "local"], capsys)[2] == ""
    monkeypatch.setenv("GANKIT_REGION", "eu-west-1")
    assert "GANKIT_REGION=eu-west-1 overrides" in run(["config", "set", "region", "none"], capsys)[2]


# What docker 28's `docker info` says on stderr when no engine listens, and when its socket refuses this user.
NO_ENGINE = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
SOCKET_REFUSED = ('permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock: '
                  'Get "http://%2Fvar%2Frun%2Fdocker.sock/v1.50/info": dial unix /var/run/docker.sock: connect: '
                  'permission denied')


def fake_docker(folder, engine_running=True, info_error=NO_ENGINE):
    """A `docker` on PATH that records each call (argv and stdin) and fails `info` with `info_error` when no
    engine runs."""
    folder.mkdir()
    (folder / "info-error").write_text(info_error + "\n")
    script = folder / "docker"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {folder}/calls
if [ "$1" = login ]; then cat > {folder}/login-stdin; fi
if [ "$1" = info ] && [ {int(engine_running)} = 0 ]; then
  cat {folder}/info-error >&2; exit 1
fi
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


def docker_on_path(monkeypatch, tmp_path, **kwargs):
    """fake_docker(**kwargs) first on PATH, the system's tools behind it; its folder."""
    bin_dir = fake_docker(tmp_path / "bin", **kwargs)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    return bin_dir


@pytest.fixture
def moto_keys(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def test_image_push_without_docker_is_one_clear_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker at all
    code, _, err = run(["image", "push", "--region", "us-east-1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "docker is not installed" in err

    bin_dir = docker_on_path(monkeypatch, tmp_path, engine_running=False)
    code, _, err = run(["image", "push", "--region", "us-east-1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "no Docker engine is running" in err
    assert (bin_dir / "calls").read_text().split("\n")[0] == "info"  # stopped before any AWS call or build


def test_a_docker_socket_that_refuses_the_user_is_not_called_an_engine_that_is_not_running(capsys, monkeypatch,
                                                                                          tmp_path):
    # Every failed `docker info` was "no Docker engine is running: start it", also when it runs and its socket
    # (the docker group's) refused this user: starting it again does not help, joining the group does.
    bin_dir = docker_on_path(monkeypatch, tmp_path, engine_running=False, info_error=SOCKET_REFUSED)
    code, _, err = run(["image", "push", "--region", "us-east-1"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        "error: the Docker engine's socket refused you (permission denied): add yourself to the docker group "
        "(`sudo usermod -aG docker $USER`, then log in again)"]

    (bin_dir / "info-error").write_text("WARNING: something\nerror during connect: this error may indicate "
                                        "that the docker daemon is not running: context deadline exceeded\n")
    code, _, err = run(["image", "push", "--region", "us-east-1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "context deadline exceeded" in err, err  # docker's own words


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker client (no engine)")
def test_check_docker_tells_the_real_clients_failures_apart(monkeypatch, tmp_path):
    """The real client, no engine: a socket nobody listens on, then one this user may not open."""
    import socket

    from launcher.image import check_docker

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    with pytest.raises(UsageError, match="^no Docker engine is running here"):
        check_docker()
    refusing = socket.socket(socket.AF_UNIX)
    refusing.bind(str(tmp_path / "docker.sock"))
    os.chmod(tmp_path / "docker.sock", 0)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    if os.geteuid() == 0:  # root opens any socket: run the client as nobody, a user outside the docker group
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv to drop root")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "docker").write_text(f"#!/bin/sh\nHOME=/nonexistent exec setpriv --reuid=65534 --regid=65534 "
                                        f"--clear-groups {shutil.which('docker')} \"$@\"\n")
        (bin_dir / "docker").chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    try:
        with pytest.raises(UsageError, match="socket refused you .* docker group"):
            check_docker()
    finally:
        refusing.close()


@mock_aws
def test_image_push_creates_the_repository_logs_in_builds_and_pushes(moto_keys, capsys, monkeypatch, tmp_path):
    bin_dir = docker_on_path(monkeypatch, tmp_path)
    code, out, err = run(["image", "push", "--region", "us-east-1", "--tag", "t1"], capsys)
    assert code == 0, err

    ecr = boto3.client("ecr", region_name="us-east-1")
    repo = ecr.describe_repositories()["repositories"][0]
    assert repo["repositoryName"] == "gankit-trainer" and repo["imageScanningConfiguration"]["scanOnPush"]
    auth = ecr.get_authorization_token()["authorizationData"][0]
    registry = auth["proxyEndpoint"].removeprefix("https://")
    uri = f"{registry}/gankit-trainer:t1"
    assert f"pushed {uri}" in out

    calls = (bin_dir / "calls").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["info", "login", "build", "push"]
    assert calls[1] == f"login --username AWS --password-stdin {registry}"
    password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)[1]
    assert (bin_dir / "login-stdin").read_text() == password  # on stdin, never on the command line
    assert password not in "\n".join(calls)
    assert calls[2].endswith(f"-t {uri} {settings.__file__.rsplit('/launcher/', 1)[0]}")
    assert calls[2].startswith(f"build --build-arg TENSORFLOW={trainer.TENSORFLOW} ")  # the one pin
    assert calls[3] == f"push {uri}"

    # Pushing again reuses the repository.
    assert run(["image", "push", "--region", "us-east-1", "--tag", "t1"], capsys)[0] == 0
    assert len(ecr.describe_repositories()["repositories"]) == 1


# What a user may need to push to an existing repository: no ecr:CreateRepository.
PUSH_ONLY = ["ecr:DescribeRepositories", "ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability",
             "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage"]


def as_iam_user(monkeypatch, actions):
    """From here on moto enforces IAM, and boto3 signs as a new user allowed only `actions`."""
    from moto import settings as moto_settings

    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_user(UserName="pusher")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    iam.put_user_policy(UserName="pusher", PolicyName="push", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="pusher")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it holds the setup's credentials
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)


@mock_aws
def test_image_push_to_an_existing_repository_needs_no_create_permission(moto_keys, capsys, monkeypatch, tmp_path):
    # It called CreateRepository first, every time: a user allowed to push but not to create was refused.
    boto3.client("ecr", region_name="us-east-1").create_repository(repositoryName="gankit-trainer")
    as_iam_user(monkeypatch, PUSH_ONLY)
    bin_dir = docker_on_path(monkeypatch, tmp_path)
    code, out, err = run(["image", "push", "--region", "us-east-1", "--tag", "t1"], capsys)
    assert code == 0, err
    assert "pushed " in out and [c.split()[0] for c in (bin_dir / "calls").read_text().splitlines()] == [
        "info", "login", "build", "push"]


@mock_aws
def test_image_push_says_in_one_line_who_must_create_a_missing_repository(moto_keys, capsys, monkeypatch, tmp_path):
    from tests.aws_helpers import refuse_call

    bin_dir = docker_on_path(monkeypatch, tmp_path)
    refuse_call(monkeypatch, "CreateRepository", "AccessDeniedException", "no ecr:CreateRepository")
    code, _, err = run(["image", "push", "--region", "us-east-1"], capsys)
    assert code == 1 and err.strip().splitlines() == [
        "error: ECR repository gankit-trainer does not exist in us-east-1 and you may not create it "
        "(AccessDeniedException: no ecr:CreateRepository): have someone allowed ecr:CreateRepository create it, "
        "or push to one that exists with --repository"]
    assert (bin_dir / "calls").read_text().splitlines() == ["info"]  # nothing built


@mock_aws
def test_image_push_allowed_neither_to_look_nor_to_create_still_pushes(moto_keys, capsys, monkeypatch, tmp_path):
    """Pushing needs neither ecr:DescribeRepositories nor ecr:CreateRepository: `docker push` says if it is missing.
    (AWS's refusal as AWS words it: moto's enforced IAM answers ECR in XML, which botocore cannot read.)"""
    from tests.aws_helpers import refuse_call

    refuse_call(monkeypatch, "DescribeRepositories", "AccessDeniedException")
    refuse_call(monkeypatch, "CreateRepository", "AccessDeniedException")
    bin_dir = docker_on_path(monkeypatch, tmp_path)
    code, _, err = run(["image", "push", "--region", "us-east-1", "--tag", "t1"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("name, problem", [
    ("my-trainer", "pull only gankit* repositories, so jobs could not start from it; name it gankit-my-trainer"),
    ("Gankit", "is not an ECR repository name"), ("gankit//x", "is not an ECR repository name")])
def test_image_push_refuses_a_repository_the_jobs_could_not_pull_before_building(capsys, monkeypatch, tmp_path,
                                                                                  name, problem):
    bin_dir = docker_on_path(monkeypatch, tmp_path)
    code, _, err = run(["image", "push", "--repository", name, "--region", "us-east-1"], capsys)
    assert code == 2 and err.count("\n") == 1 and problem in err
    assert not (bin_dir / "calls").exists()  # refused before docker (or AWS) was asked anything


def test_no_short_help_stops_at_an_abbreviation(capsys):
    # Click cuts a short help at the first ". ": `config set` was listed as "Set KEY to VALUE (`none` removes it), e.g."
    import click

    from launcher.cli import cli

    def commands(group, ctx):
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            yield f"{ctx.command_path} {name}", command
            if isinstance(command, click.Group):
                yield from commands(command, click.Context(command, info_name=name, parent=ctx))

    listed = {path: command.get_short_help_str(1000) for path, command in
              commands(cli, click.Context(cli, info_name="launcher"))}
    assert "launcher config set" in listed
    cut = {path: text for path, text in listed.items() if text.endswith(("e.g.", "i.e.", "etc."))}
    assert not cut
    assert run(["config", "--help"], capsys)[1].count("Set KEY to VALUE (`none` removes it).\n") == 1


@pytest.mark.parametrize("argv", [["--help"], ["config", "--help"], ["jupyter", "--help"], ["infra", "--help"],
                                  ["image", "--help"], ["trainer"]])
def test_no_command_list_cuts_a_short_help(argv, capsys, monkeypatch):
    # Click cuts a long first sentence with "..." to fit: `generate` and `pull` were listed as "... and check the..."
    from trainer.cli import main as trainer_main

    monkeypatch.setenv("COLUMNS", "80")
    if argv == ["trainer"]:
        with pytest.raises(SystemExit):
            trainer_main(["--help"])
        out = capsys.readouterr().out
    else:
        out = run(argv, capsys)[1]
    listing = out.partition("Commands:\n")[2].splitlines()
    assert listing and not [line for line in listing if line.rstrip().endswith("...")], out
