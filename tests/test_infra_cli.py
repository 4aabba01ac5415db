"""`launcher infra up | status | down` against moto's CloudFormation, and the gpu-instance template."""

import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from moto import mock_aws

from launcher import infra, settings
from tests.ec2_helpers import seed_dlami_parameters
from trainer.errors import run_cli

REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch):
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", REGION)):
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setattr(infra, "POLL_SECONDS", 0.05)
    with mock_aws():
        yield


class Result:
    def __init__(self, exit_code, output):
        self.exit_code, self.output = exit_code, output


@pytest.fixture
def run(capsys):
    """`launcher infra ARGS` as the launcher runs it (run_cli: one-line errors, exit codes)."""
    def invoke(*args):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            run_cli(infra.infra, list(args), prog_name="launcher infra")
        captured = capsys.readouterr()
        return Result(exited.value.code, captured.out + captured.err)
    return invoke


def test_up_deploys_records_and_is_idempotent(aws, run):
    result = run("up", "--bucket-name", "gankit-test-bucket")
    assert result.exit_code == 0, result.output
    # The streamed events (moto records the stack's own; resource events are tested below).
    assert "CREATE_COMPLETE              gankit (AWS::CloudFormation::Stack)" in result.output
    config = settings.load()
    assert config["backend"] == "sagemaker" and config["region"] == REGION
    assert config["bucket"] == "gankit-test-bucket"
    assert config["role"].startswith("arn:aws:iam::") and "SageMakerRole" in config["role"]
    assert config["security_group"].startswith("sg-")

    # What CloudFormation made: a closed security group, an encrypted bucket. moto's CloudFormation
    # applies neither versioning, public access blocks, bucket policies nor lifecycle rules:
    # test_infra_templates checks those in the template.
    ec2 = boto3.client("ec2", region_name=REGION)
    group = ec2.describe_security_groups(GroupIds=[config["security_group"]])["SecurityGroups"][0]
    assert group["IpPermissions"] == []
    s3 = boto3.client("s3", region_name=REGION)
    rules = s3.get_bucket_encryption(Bucket="gankit-test-bucket")["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    profiles = boto3.client("iam").list_instance_profiles()["InstanceProfiles"]
    assert config["instance_profile"] in [p["InstanceProfileName"] for p in profiles]
    # Jupyter instances get a profile of their own, whose role is not the training instances'.
    assert config["jupyter_instance_profile"] in [p["InstanceProfileName"] for p in profiles]
    roles = {p["InstanceProfileName"]: p["Roles"][0]["RoleName"] for p in profiles}
    assert roles[config["jupyter_instance_profile"]] != roles[config["instance_profile"]]
    # The registry of the prebuilt image in this region, as sagemaker-core names it, goes to the role's policy.
    (stack,) = boto3.client("cloudformation", region_name=REGION).describe_stacks(StackName="gankit")["Stacks"]
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert parameters["PrebuiltImageAccount"] == "763104351884"

    again = run("up", "--bucket-name", "gankit-test-bucket")
    assert again.exit_code == 0, again.output

    status = run("status")
    assert status.exit_code == 0 and "_COMPLETE" in status.output
    assert "gankit-test-bucket" in status.output


def test_up_reads_the_stack_once_before_deploying(aws, run, monkeypatch):
    # `up` read it for the default VPC, then `deploy` read it again to choose create or update.
    reads = []
    real_client = infra._client

    def client(service, region):
        made = real_client(service, region)
        made.meta.events.register("before-call.cloudformation.DescribeStacks", lambda **_: reads.append(1))
        return made

    monkeypatch.setattr(infra, "_client", client)
    assert run("up").exit_code == 0
    reads.clear()
    again = run("up")
    assert again.exit_code == 0 and "stack gankit is up to date" in again.output
    assert len(reads) == 1


def test_a_later_up_keeps_every_setting_it_is_not_given(aws, run, monkeypatch):
    """`infra up --ssh-cidr ...` after `infra up --bucket-name B --old-checkpoint-days 30` must not send the
    template's defaults for what it leaves out: an empty BucketName would make CloudFormation replace the
    bucket with a new, empty one (and the launcher switch to it)."""
    sent = []
    real = infra.deploy
    monkeypatch.setattr(infra, "deploy", lambda cf, name, body, parameters, existing: sent.append(parameters) or
                        real(cf, name, body, parameters, existing))
    updates = []
    real_client = infra._client

    def client(service, region):
        made = real_client(service, region)
        if service == "cloudformation":
            made.meta.events.register("before-parameter-build.cloudformation.UpdateStack",
                                      lambda params, **_: updates.append(params["Parameters"]))
        return made

    monkeypatch.setattr(infra, "_client", client)
    assert run("up", "--bucket-name", "gankit-kept", "--old-checkpoint-days", "30").exit_code == 0
    assert run("up", "--ssh-cidr", "203.0.113.7/32").exit_code == 0
    assert set(sent[1]) == {"SshCidr", "PrebuiltImageAccount"}  # only what this command was given ...
    kept = {p["ParameterKey"] for p in updates[0] if p.get("UsePreviousValue")}
    assert kept == {"BucketName", "OldCheckpointDays", "VpcId"}  # ... the rest as the stack has it
    assert settings.load()["bucket"] == "gankit-kept"
    (stack,) = boto3.client("cloudformation", region_name=REGION).describe_stacks(StackName="gankit")["Stacks"]
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert parameters["BucketName"] == "gankit-kept" and parameters["OldCheckpointDays"] == "30"
    assert parameters["SshCidr"] == "203.0.113.7/32"
    assert run("up", "--ssh-cidr", "").exit_code == 0  # '' removes the rule again, and only that
    (stack,) = boto3.client("cloudformation", region_name=REGION).describe_stacks(StackName="gankit")["Stacks"]
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert parameters["SshCidr"] == "" and parameters["BucketName"] == "gankit-kept"


def test_a_bad_bucket_name_is_refused_before_anything_is_deployed(aws, run):
    for bad in ("bad bucket", "Gankit", "s3://gankit-data", "ab"):
        result = run("up", "--bucket-name", bad)
        assert result.exit_code == 2 and "--bucket-name" in result.output, (bad, result.output)
        assert len(result.output.strip().splitlines()) == 1
    assert boto3.client("cloudformation", region_name=REGION).describe_stacks()["Stacks"] == []


def test_ssh_rule_only_from_a_narrow_cidr(aws, run):
    for bad in ("0.0.0.0/0", "::/0", "10.1.2.3/0", "not-a-cidr", "0.0.0.0/1", "10.0.0.0/8", "198.51.0.0/23"):
        result = run("up", "--ssh-cidr", bad)
        assert result.exit_code == 2, (bad, result.output)
        assert "--ssh-cidr" in result.output and len(result.output.strip().splitlines()) == 1
    assert settings.load() == {}  # nothing recorded, nothing deployed
    assert boto3.client("cloudformation", region_name=REGION).describe_stacks()["Stacks"] == []

    result = run("up", "--ssh-cidr", "203.0.113.7/32")
    assert result.exit_code == 0, result.output
    ec2 = boto3.client("ec2", region_name=REGION)
    group = ec2.describe_security_groups(GroupIds=[settings.load()["security_group"]])["SecurityGroups"][0]
    assert [(p["FromPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in group["IpPermissions"]] == \
        [(22, ["203.0.113.7/32"])]


def test_down_refuses_a_bucket_with_data_unless_told(aws, run):
    assert run("up", "--bucket-name", "gankit-down-test").exit_code == 0
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_object(Bucket="gankit-down-test", Key="runs/z1/output/metrics.jsonl", Body=b"{}\n")

    refused = run("down")
    assert refused.exit_code == 2
    assert "gankit-down-test is not empty" in refused.output and "--delete-bucket" in refused.output
    assert "Traceback" not in refused.output
    assert infra.find_stack(boto3.client("cloudformation", region_name=REGION), "gankit") is not None

    done = run("down", "--delete-bucket")
    assert done.exit_code == 0, done.output
    assert infra.find_stack(boto3.client("cloudformation", region_name=REGION), "gankit") is None
    assert "gankit-down-test" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert settings.load()["backend"] == "local"


def test_down_help_says_what_becomes_of_a_bucket_with_data(aws, run):
    # It said "A bucket with data in it stays unless --delete-bucket", but `down` alone deletes nothing then: it
    # refuses, and an empty bucket it deletes with the stack.
    assert run("up", "--bucket-name", "gankit-help-test").exit_code == 0
    boto3.client("s3", region_name=REGION).put_object(Bucket="gankit-help-test", Key="runs/z1/output/x", Body=b"x")
    assert run("down").exit_code == 2
    assert infra.find_stack(boto3.client("cloudformation", region_name=REGION), "gankit") is not None
    shown = " ".join(infra.down.help.split())  # as `down --help` shows it, before Click wraps it
    assert "Delete the base stack and its bucket; a bucket with data in it needs --keep-bucket or --delete-bucket" \
        in shown
    assert "stays unless" not in shown


def test_down_keep_bucket_keeps_data(aws, run):
    assert run("up", "--bucket-name", "gankit-keep-test").exit_code == 0
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_object(Bucket="gankit-keep-test", Key="datasets/zalando/MANIFEST.json", Body=b"{}")
    done = run("down", "--keep-bucket")
    assert done.exit_code == 0, done.output
    assert s3.get_object(Bucket="gankit-keep-test", Key="datasets/zalando/MANIFEST.json")["Body"].read() == b"{}"
    assert run("status").output.startswith("no stack gankit")


def test_down_whose_bucket_cannot_be_deleted_forgets_the_stack_and_names_the_bucket(aws, run, monkeypatch):
    # The stack was deleted, then DeleteBucket refused: the config kept backend sagemaker and the deleted
    # stack's role, profile and group, the line did not say the stack was gone, and `infra down` again only
    # answered "no stack".
    from tests.aws_helpers import refuse_call

    assert run("up", "--bucket-name", "gankit-stuck-test").exit_code == 0
    refuse_call(monkeypatch, "DeleteBucket", "AccessDenied")
    done = run("down", "--delete-bucket")
    assert done.exit_code == 1 and "Traceback" not in done.output, done.output
    [line] = [x for x in done.output.splitlines() if x.startswith("error:")]
    assert line.startswith("error: stack gankit is deleted and the launcher's backend is local again, but bucket "
                           "gankit-stuck-test is not (AWS DeleteBucket failed: AccessDenied: not allowed)"), line
    assert "s3://gankit-stuck-test" in line
    assert infra.find_stack(boto3.client("cloudformation", region_name=REGION), "gankit") is None
    left = {k: settings.get(k) for k in ("backend", "role", "instance_profile", "jupyter_instance_profile",
                                         "security_group", "bucket")}
    assert left == {"backend": "local", "role": None, "instance_profile": None, "jupyter_instance_profile": None,
                    "security_group": None, "bucket": "gankit-stuck-test"}  # the bucket is still there, and still named


def test_rollback_message_names_the_first_failing_resource():
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    events = [  # newest first, as CloudFormation lists them
        {"Timestamp": t0 + timedelta(seconds=9), "LogicalResourceId": "gankit", "ResourceType": "AWS::CloudFormation::Stack",
         "ResourceStatus": "ROLLBACK_COMPLETE"},
        {"Timestamp": t0 + timedelta(seconds=5), "LogicalResourceId": "InstanceRole", "ResourceType": "AWS::IAM::Role",
         "ResourceStatus": "CREATE_FAILED", "ResourceStatusReason": "Resource creation cancelled"},
        {"Timestamp": t0 + timedelta(seconds=4), "LogicalResourceId": "Bucket", "ResourceType": "AWS::S3::Bucket",
         "ResourceStatus": "CREATE_FAILED", "ResourceStatusReason": "gankit-x already exists"},
    ]
    message = infra.failure_message("gankit", events)
    assert message == "stack gankit rolled back: Bucket (AWS::S3::Bucket) CREATE_FAILED: gankit-x already exists"
    assert "\n" not in message


class FakeEvents:
    """A CloudFormation client whose stack gains events between polls (newest first, as AWS lists them)."""

    def __init__(self, batches):
        self.batches, self.shown = batches, []

    def get_paginator(self, name):
        assert name == "describe_stack_events"
        return self

    def paginate(self, StackName):
        if self.batches:
            self.shown = self.batches.pop(0) + self.shown
        return [{"StackEvents": list(self.shown)}]


def _event(n, resource, status, reason=None):
    event = {"EventId": f"e{n}", "Timestamp": datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=n),
             "LogicalResourceId": resource, "ResourceType": "AWS::S3::Bucket", "ResourceStatus": status}
    return {**event, "ResourceStatusReason": reason} if reason else event


def test_events_stream_once_each_in_order(capsys):
    batches = [[_event(2, "Bucket", "CREATE_IN_PROGRESS"), _event(1, "gankit", "CREATE_IN_PROGRESS")],
               [],
               [_event(4, "Bucket", "CREATE_FAILED", "access denied"), _event(3, "Role", "CREATE_IN_PROGRESS")]]
    stream = infra.EventStream(FakeEvents(batches), "gankit", since=datetime(2026, 1, 1, tzinfo=timezone.utc))
    for _ in range(4):
        stream.poll()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[2] for line in lines] == ["gankit", "Bucket", "Role", "Bucket"]
    assert lines[-1].endswith("CREATE_FAILED                Bucket (AWS::S3::Bucket): access denied")
    assert infra.failure_message("gankit", stream.events).startswith("stack gankit rolled back: Bucket")


def test_gpu_instance_template_deploys_with_the_family_image(aws, run):
    assert run("up").exit_code == 0
    config = settings.load()
    cf = boto3.client("cloudformation", region_name=REGION)
    ec2_client = boto3.client("ec2", region_name=REGION)
    open_image, p3_image = [i["ImageId"] for i in ec2_client.describe_images()["Images"][:2]]
    seed_dlami_parameters(REGION, image_id=open_image, proprietary_image_id=p3_image)
    params = {"InstanceProfile": config["instance_profile"], "SecurityGroupId": config["security_group"],
              "WheelUri": "s3://bkt/runs/z1/gankit-0.1.0-py3-none-any.whl", "WheelSha256": "ab" * 32,
              "InstanceType": "p3.2xlarge", "ModuleArgs": "--job-uri s3://bkt/runs/z1/job.json"}
    stack = infra.deploy(cf, "gankit-gpu", infra.template_body("gpu-instance"), params, None)
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    out = infra.outputs(stack)
    assert out["ImageId"] == p3_image  # a V100 gets the proprietary-driver DLAMI
    instance = ec2_client.describe_instances(InstanceIds=[out["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert instance["InstanceType"] == "p3.2xlarge"
    assert instance["ImageId"] == p3_image
    assert instance["IamInstanceProfile"]["Arn"].endswith(config["instance_profile"])
    g5 = infra.deploy(cf, "gankit-gpu-g5", infra.template_body("gpu-instance"), {**params, "InstanceType": "g5.xlarge"},
                       None)
    assert infra.outputs(g5)["ImageId"] == open_image  # Turing and newer: the open-driver DLAMI


@pytest.fixture
def interrupt_on(monkeypatch):
    """interrupt_on(operation): Ctrl-C, once, as the launcher's CloudFormation or S3 client calls it."""
    real_client, raised = infra._client, []

    def ctrl_c(**_):
        if not raised:
            raised.append(True)
            raise KeyboardInterrupt

    def arm(operation):
        def client(service, region):
            made = real_client(service, region)
            made.meta.events.register(f"before-call.*.{operation}", ctrl_c)
            return made

        monkeypatch.setattr(infra, "_client", client)
    return arm


@pytest.mark.parametrize("operation", ["DescribeStackEvents", "DeleteObjects"])
def test_ctrl_c_during_down_forgets_the_stack_and_names_the_bucket_left(aws, run, interrupt_on, operation):
    # Ctrl-C while the stack was deleted (or the bucket emptied): a bare exit 130, the config still naming the
    # stack's deleted role, profile and group with backend sagemaker, and a second `down` answering "no stack"
    # while the bucket, which it was to delete, stayed.
    assert run("up", "--bucket-name", "gankit-ctrl-c").exit_code == 0
    boto3.client("s3", region_name=REGION).put_object(Bucket="gankit-ctrl-c", Key="runs/z/metrics.jsonl", Body=b"{}")
    interrupt_on(operation)
    done = run("down", "--delete-bucket")
    assert done.exit_code == 130 and "Traceback" not in done.output, done.output
    [line] = [x for x in done.output.splitlines() if x.startswith("error:")]
    assert line.startswith("error: Ctrl-C (SIGINT) stopped `infra down`") and "backend is local again" in line, line
    assert line.endswith("`aws s3 rb s3://gankit-ctrl-c --force` deletes it with everything in it"), line
    left = {k: settings.get(k) for k in ("backend", "role", "instance_profile", "security_group", "bucket")}
    assert left == {"backend": "local", "role": None, "instance_profile": None, "security_group": None,
                    "bucket": "gankit-ctrl-c"}


def test_ctrl_c_while_up_waits_says_the_stack_goes_on_and_how_to_record_it(aws, run, interrupt_on):
    # Ctrl-C while the stack was created: a bare exit 130, nothing recorded and nothing said of the stack that
    # CloudFormation goes on creating (a rerun while it does is refused by CloudFormation).
    interrupt_on("DescribeStackEvents")
    done = run("up", "--bucket-name", "gankit-ctrl-c-up")
    assert done.exit_code == 130 and "Traceback" not in done.output, done.output
    [line] = [x for x in done.output.splitlines() if x.startswith("error:")]
    assert line.startswith("error: Ctrl-C (SIGINT) stopped the wait: CloudFormation goes on to create stack "), line
    assert "`launcher infra up` again once it has settled records it" in line, line
    assert settings.get("backend") != "sagemaker"  # not recorded: the stack is not known to be up
    again = run("up", "--bucket-name", "gankit-ctrl-c-up")  # moto's stack has settled: the rerun records it
    assert again.exit_code == 0, again.output
    assert settings.get("bucket") == "gankit-ctrl-c-up" and settings.get("backend") == "sagemaker"


def test_ctrl_c_during_down_keep_bucket_does_not_offer_to_delete_the_bucket_kept(aws, run, interrupt_on):
    # An empty bucket with --keep-bucket was named with `aws s3 rb ... --force`, as if `down` had meant to delete it.
    assert run("up", "--bucket-name", "gankit-kept").exit_code == 0
    interrupt_on("DescribeStackEvents")
    done = run("down", "--keep-bucket")
    assert done.exit_code == 130 and "Traceback" not in done.output, done.output
    [line] = [x for x in done.output.splitlines() if x.startswith("error:")]
    assert line.endswith("the launcher's backend is local again"), line
    assert settings.get("bucket") == "gankit-kept"


def test_status_shows_the_stacks_outputs_with_their_terminal_controls_escaped(aws, run):
    """A stack's outputs and reasons are whatever its template (anyone who can update the stack) says: they were
    printed raw, so a value could start a terminal sequence (C1's CSI), add a line of its own or reorder the line.
    (CloudFormation answers in XML, which cannot carry ESC or BEL.)"""
    control = "\x9b2J\u202e"
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {"BucketName": {"Value": f"gankit-bucket{control}\nRoleArn  arn:aws:iam::1:role/x"}}}
    boto3.client("cloudformation", region_name=REGION).create_stack(StackName="gankit",
                                                                     TemplateBody=json.dumps(template))
    result = run("status")
    assert result.exit_code == 0, result.output
    assert not any(ch in result.output for ch in "\x9b\u202e"), repr(result.output)
    assert ("  BucketName           gankit-bucket\\x9b2J\\u202e\\nRoleArn  arn:aws:iam::1:role/x\n"
            in result.output), result.output  # escaped, and on its own line
