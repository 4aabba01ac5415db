"""A newcomer without AWS set up: every cloud command says what is missing and how to fix it, in one
line with exit 2, and touches nothing. No credentials anywhere (no AWS_* variables, empty AWS files,
no instance metadata), with and without a region."""


import pytest

from launcher.cli import main
from tests.aws_helpers import no_credentials_anywhere
from trainer import s3
from trainer.errors import NO_CREDENTIALS, NO_REGION

COMMANDS = {
    "infra up": ["infra", "up"],
    "infra status": ["infra", "status"],
    "infra down": ["infra", "down"],
    "jupyter status": ["jupyter", "status"],
    "jupyter stop": ["jupyter", "stop"],
    "jupyter --ssh": ["jupyter", "--ssh", "--my-ip", "8.8.8.8"],
    "submit ec2": ["submit", "--dataset", "mnist", "--backend", "ec2", "--bucket", "gankit-nobody"],
    "submit sagemaker": ["submit", "--dataset", "mnist", "--backend", "sagemaker", "--bucket", "gankit-nobody",
                         "--role", "arn:aws:iam::123456789012:role/r", "--image", "1.dkr.ecr.us-east-1.amazonaws.com/g:1"],
    "generate s3://": ["generate", "s3://gankit-nobody/runs/j/output/generator", "--out", "x.png"],
}


@pytest.fixture
def no_aws(monkeypatch, tmp_path):
    no_credentials_anywhere(monkeypatch, tmp_path)
    # What `launcher infra up` would have recorded, so the EC2 commands get as far as AWS.
    monkeypatch.setenv("GANKIT_INSTANCE_PROFILE", "gankit-profile")
    monkeypatch.setenv("GANKIT_SECURITY_GROUP", "sg-0123456789abcdef0")
    from launcher import tunnel

    monkeypatch.setattr(tunnel, "check_ssh_tools", lambda: None)  # the local ssh client is not the subject
    monkeypatch.setattr(tunnel, "check_local_port", lambda port: None)  # nor whether 8888 is free here
    monkeypatch.chdir(tmp_path)
    s3.client.cache_clear()
    yield tmp_path
    s3.client.cache_clear()


def run(argv, capsys, printed=None) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    if printed is not None:
        printed.append(out)
    return exit_.value.code, err.strip()


@pytest.mark.parametrize("name", COMMANDS)
def test_no_credentials_is_one_line_exit_2_with_the_fix(name, no_aws, monkeypatch, capsys):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    printed = []
    code, err = run(COMMANDS[name], capsys, printed)
    assert (code, err) == (2, f"error: {NO_CREDENTIALS}")
    if name.startswith("submit"):  # no plan and cost first: they would read as if the job had started
        assert printed == [""]
    assert sorted(p.name for p in no_aws.iterdir()) == ["empty"]  # nothing written here


@pytest.mark.parametrize("name", ["infra up", "infra status", "infra down", "jupyter status", "jupyter stop",
                                  "jupyter --ssh", "submit ec2", "submit sagemaker"])
def test_no_region_is_the_same_line_everywhere(name, no_aws, capsys):
    assert run(COMMANDS[name], capsys) == (2, f"error: {NO_REGION}")


def test_ec2_hints_name_what_ec2_needs(no_aws, monkeypatch, capsys):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    code, err = run(["submit", "--dataset", "mnist", "--backend", "ec2"], capsys)
    assert code == 2 and "--role" not in err
    assert "launcher infra up" in err and "instance_profile" in err and "security_group" in err
    # A bucket but no instance profile: said before any S3 call (none would succeed without credentials).
    monkeypatch.delenv("GANKIT_INSTANCE_PROFILE")
    code, err = run(COMMANDS["submit ec2"], capsys)
    assert code == 2 and "no instance_profile configured:" in err and "launcher infra up" in err


def test_the_region_is_the_first_one_given_else_boto3s_else_one_usage_error(monkeypatch, tmp_path):
    from trainer import aws
    from trainer.errors import UsageError

    no_credentials_anywhere(monkeypatch, tmp_path)
    assert aws.region("eu-west-1", "us-east-1") == "eu-west-1"
    assert aws.region(None, "", "us-east-2") == "us-east-2"
    with pytest.raises(UsageError) as refused:
        aws.region(None, None)
    assert str(refused.value) == NO_REGION
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert aws.region(None) == "ap-south-1"


@pytest.mark.parametrize("variable, value, named", [("GANKIT_INSTANCE_PROFILE", "a b", "instance_profile"),
                                                    ("GANKIT_SECURITY_GROUP", "my group", "security_group"),
                                                    ("GANKIT_SUBNET", "subnet-x;y", "subnet")])
def test_settings_from_the_environment_are_checked_before_an_ec2_launch(variable, value, named, no_aws, monkeypatch,
                                                                        capsys):
    # `config set` refuses these; the environment (and a hand-edited file) reached RunInstances after the uploads.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv(variable, value)
    code, err = run(COMMANDS["submit ec2"], capsys)
    assert code == 2 and err.startswith(f"error: {named} {value!r} is not") and len(err.splitlines()) == 1
