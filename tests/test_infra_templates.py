"""The CloudFormation templates: cfn-lint, checkov, and the security properties the issue asks for."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cfnlint.api import lint
from cfnlint.config import ManualArgs
from cfnlint.decode import decode_str
from cfnlint.helpers import REGIONS

from launcher import infra, instances

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((REPO / "infra").glob("*.yaml"))


def load(name):
    template, errors = decode_str(infra.template_body(name))
    assert not errors
    return template


def resources(template, kind):
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def test_both_templates_are_found():
    assert [p.name for p in TEMPLATES] == ["base.yaml", "gpu-instance.yaml"]
    assert infra.template_body("base").startswith("AWSTemplateFormatVersion")


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_cfn_lint_is_clean(path):
    # Errors and warnings, every region, experimental rules too; informational rules (I...) are
    # advice that new cfn-lint releases add (I4010 asks for a Metadata "Context" block), not faults.
    assert [str(m) for m in cfn_lint(path.read_text())] == []


def cfn_lint(text):
    return lint(text, config=ManualArgs(include_experimental=True, regions=REGIONS))


def test_cfn_lint_still_reports_errors():
    broken = "Resources:\n  Thing:\n    Type: AWS::S3::NoSuchThing\n"
    assert any(m.rule.id.startswith("E") for m in cfn_lint(broken))


def _checkov():
    for candidate in (REPO / ".venv-checkov" / "bin" / "checkov", shutil.which("checkov")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.skip("checkov is not installed; .ci/run installs it into .venv-checkov")


def test_checkov_has_no_failed_check_and_every_skip_is_justified():
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}  # offline: no guideline download
    done = subprocess.run([_checkov(), "-d", str(REPO / "infra"), "--framework", "cloudformation",
                           "--skip-download", "-o", "json"], capture_output=True, text=True, env=env, timeout=300)
    report = json.loads(done.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["parsing_errors"] == 0
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 30
    for check in report["results"]["skipped_checks"]:
        name = check["resource"].split(".")[-1]
        template = load(Path(check["file_path"]).stem)
        skips = template["Resources"][name]["Metadata"]["checkov"]["skip"]
        (reason,) = [s["comment"] for s in skips if s["id"] == check["check_id"]]
        assert len(reason.split()) >= 8, f"{check['check_id']} on {name} needs a real justification"


def test_bucket_is_private_encrypted_versioned_tls_only_with_lifecycle():
    base = load("base")
    bucket = base["Resources"]["Bucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(bucket["PublicAccessBlockConfiguration"].values()) and len(bucket["PublicAccessBlockConfiguration"]) == 4
    sse = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert sse["SSEAlgorithm"] in ("AES256", "aws:kms")
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["old-checkpoints"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": {"Ref": "OldCheckpointDays"}}
    # An upload cut off (Ctrl-C, a dropped connection) leaves parts that bill, unlisted, until they are aborted.
    assert rules["abandoned-uploads"]["Status"] == "Enabled"
    assert 1 <= rules["abandoned-uploads"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] <= 7
    (deny,) = base["Resources"]["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_security_group_has_no_inbound_rule_unless_a_narrow_ssh_cidr_is_given():
    base = load("base")
    group = base["Resources"]["SecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group
    # Out: HTTPS (AWS APIs, PyPI) and HTTP (apt) only, never every port.
    assert sorted((e["IpProtocol"], e["FromPort"], e["ToPort"]) for e in group["SecurityGroupEgress"]) == [
        ("tcp", 80, 80), ("tcp", 443, 443)]
    (ingress,) = resources(base, "AWS::EC2::SecurityGroupIngress").values()
    assert ingress["Condition"] == "HasSsh" and ingress["Properties"]["FromPort"] == 22
    import re

    pattern = re.compile(base["Parameters"]["SshCidr"]["AllowedPattern"])
    assert pattern.match("") and pattern.match("203.0.113.7/32") and pattern.match("198.51.100.0/24")
    for bad in ("0.0.0.0/0", "::/0", "10.0.0.0/0", "0.0.0.0/00", "0.0.0.0/1", "10.0.0.0/8", "198.51.0.0/23",
                "203.0.113.7/33"):
        assert not pattern.match(bad), bad  # /24 at the widest, as the launcher's --ssh-cidr
    refused = json.dumps(base["Rules"]["NoSshFromTheInternet"])
    assert "0.0.0.0/0" in refused and "::/0" in refused


def _statements(role):
    for policy in role["Properties"].get("Policies", []):
        yield from policy["PolicyDocument"]["Statement"]


def test_roles_are_least_privilege():
    base = load("base")
    statements = [s for r in resources(base, "AWS::IAM::Role").values() for s in _statements(r)]
    statements += [s for p in resources(base, "AWS::IAM::ManagedPolicy").values()
                   for s in p["Properties"]["PolicyDocument"]["Statement"]]
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any(a == "*" or a.endswith(":*") for a in actions), statement
        if statement["Resource"] == "*":  # only actions AWS offers no resource scoping for
            assert set(actions) <= {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData",
                                    "ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
                                    "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"}, statement
    s3_resources = json.dumps([s["Resource"] for s in statements if any("s3:" in a for a in
                               (s["Action"] if isinstance(s["Action"], list) else [s["Action"]]))])
    assert "Bucket.Arn" in s3_resources and '"arn:aws:s3:::*"' not in s3_resources


def _actions(statement) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def test_training_instances_have_no_ssm_and_jupyter_has_no_job_rights():
    """The training instance role is a job's bucket access and image pull alone; Jupyter's shares neither."""
    resources_ = load("base")["Resources"]
    training = resources_["InstanceRole"]["Properties"]
    assert training["ManagedPolicyArns"] == [{"Ref": "BucketAccess"}, {"Ref": "ImagePull"}]
    assert not training.get("Policies") and "ssm" not in json.dumps(training)
    assert "ManagedPolicyArns" not in resources_["JupyterRole"]["Properties"]
    assert resources_["InstanceProfile"]["Properties"]["Roles"] == [{"Ref": "InstanceRole"}]
    assert resources_["JupyterInstanceProfile"]["Properties"]["Roles"] == [{"Ref": "JupyterRole"}]


def test_jupyter_role_has_session_manager_actions_alone_and_no_managed_ssm_policy():
    """AmazonSSMManagedInstanceCore grants ssm:GetParameter(s) on *: every user's token and any SecureString."""
    role = load("base")["Resources"]["JupyterRole"]["Properties"]
    assert "AmazonSSM" not in json.dumps(role)
    instance = {s["Sid"]: s for s in _statements(load("base")["Resources"]["JupyterRole"])}
    # What AWS lists for a Session Manager instance profile, nothing more.
    session = {a for s in instance.values() for a in _actions(s)
               if a.startswith(("ssmmessages:", "ec2messages:")) or a == "ssm:UpdateInstanceInformation"}
    assert session == {"ssm:UpdateInstanceInformation", "ssmmessages:CreateControlChannel",
                       "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel",
                       "ssmmessages:OpenDataChannel"}
    ssm_reads = [s for s in instance.values() for a in _actions(s)
                 if a.startswith("ssm:") and a != "ssm:UpdateInstanceInformation"]
    assert [_actions(s) for s in ssm_reads] == [["ssm:GetParameter"]]


def test_instance_reads_only_the_token_bound_to_itself():
    """The one thing an instance can prove is its own ARN (ec2:SourceInstanceARN, set by EC2 on the role's
    credentials); the launcher tags each token parameter with the ARN of the instance it is for."""
    from launcher.jupyter import tokens

    instance = {s["Sid"]: s for s in _statements(load("base")["Resources"]["JupyterRole"])}
    read = instance["ReadOwnJupyterToken"]
    assert read["Effect"] == "Allow" and _actions(read) == ["ssm:GetParameter"]
    assert read["Resource"]["Fn::Sub"].endswith(":parameter" + tokens.token_parameter("*"))
    assert read["Condition"] == {
        "StringEquals": {f"aws:ResourceTag/{tokens.TAG_INSTANCE}": "${ec2:SourceInstanceARN}"}}
    # No kms statement at all: the AWS managed key aws/ssm (the launcher's put_parameter uses it) lets
    # every principal of the account decrypt through SSM only, so the GetParameter scope is the control.
    assert not [s for s in instance.values() if any(a.startswith("kms:") for a in _actions(s))]


def test_instances_cannot_stop_or_terminate_other_instances():
    base = load("base")
    statements = [s for r in resources(base, "AWS::IAM::Role").values() for s in _statements(r)]
    statements += [s for p in resources(base, "AWS::IAM::ManagedPolicy").values()
                   for s in p["Properties"]["PolicyDocument"]["Statement"]]
    assert not [s for s in statements if any(a.startswith("ec2:") for a in _actions(s))]


def test_gpu_instance_is_safe_and_follows_the_family():
    gpu = load("gpu-instance")
    params = gpu["Parameters"]
    for name, default in (("OpenDriverImageId", instances.OPEN_DRIVER_PARAMETER),
                          ("ProprietaryDriverImageId", instances.PROPRIETARY_DRIVER_PARAMETER)):
        assert params[name]["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
        assert params[name]["Default"] == default  # the same choice as the launcher's
    p3_types = [t for t in params["InstanceType"]["AllowedValues"] if instances.family(t) in instances.PROPRIETARY_DRIVER_FAMILIES]
    assert sorted(p3_types) == sorted(c["Fn::Equals"][1] for c in gpu["Conditions"]["IsP3"]["Fn::Or"])
    template = gpu["Resources"]["Imdsv2Only"]["Properties"]["LaunchTemplateData"]
    assert template["MetadataOptions"]["HttpTokens"] == "required"
    # The only container runs with host networking: no second hop for a stolen-credential request.
    assert template["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    instance = gpu["Resources"]["Instance"]["Properties"]
    assert instance["LaunchTemplate"]["LaunchTemplateId"] == {"Ref": "Imdsv2Only"}
    (root,) = instance["BlockDeviceMappings"]
    assert root["Ebs"]["Encrypted"] is True and root["Ebs"]["VolumeType"] == "gp3"
    assert root["Ebs"]["DeleteOnTermination"] is True  # a terminated job leaves no volume behind to bill
    # Jobs only (Jupyter's instance needs the idle check and boot guard only `launcher jupyter` installs):
    # the module's end, a failure and MaxHours all terminate it, so nothing is left to restart or bill.
    assert instance["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert "Purpose" not in gpu["Parameters"]
    script = instance["UserData"]["Fn::Base64"]["Fn::Sub"]
    assert script.index("trap 'shutdown -h now' EXIT") < script.index("shutdown -h +") < script.index("pip install")
    assert instance["IamInstanceProfile"] == {"Ref": "InstanceProfile"}
    assert instance["SecurityGroupIds"] == [{"Ref": "SecurityGroupId"}]
    user_data = json.dumps(instance["UserData"])
    assert "shutdown -h +" in user_data and "pip install" in user_data and "-m ${Module}" in user_data


def test_gpu_instance_wheel_uri_is_strict_and_the_wheel_is_verified_before_root_installs_it():
    import re

    params = load("gpu-instance")["Parameters"]
    uri = re.compile(params["WheelUri"]["AllowedPattern"])
    for good in ("s3://my-gankit/runs/gan-zalando-cgan-20261122-180005/gankit-0.1.0-py3-none-any.whl",
                 "s3://gankit-bucket.eu/jupyter/alice_b/gankit-0.1.0+g1a2b-py3-none-any.whl"):
        assert uri.fullmatch(good), good
    assert uri.fullmatch("s3://bkt/x.whl")  # the bad ones below differ from it in one way each
    for bad in ("s3://bkt/$(reboot).whl", "s3://bkt/`id`.whl", "s3://bkt/a b.whl", "s3://bkt/x;reboot;.whl",
                "s3://bkt/x'.whl", 's3://bkt/x".whl', "s3://bkt/${HOME}.whl", "s3://bkt/a|b.whl", "s3://bkt/a&b.whl",
                "s3://bkt/x.whl\nreboot", "s3://bkt/x.whl\n", "s3://BKT/x.whl", "s3:///x.whl", "s3://bkt/.whl",
                "https://bkt/x.whl", "s3://bkt/a\\b.whl", "s3://bkt/a>b.whl", "s3://bkt/x.whl.sh"):
        assert not uri.fullmatch(bad), bad  # CloudFormation matches the entire value
    sha = re.compile(params["WheelSha256"]["AllowedPattern"])
    assert sha.fullmatch("ab" * 32) and not sha.fullmatch("ab" * 31) and not sha.fullmatch("zz" * 32)
    user_data = load("gpu-instance")["Resources"]["Instance"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    assert user_data.index("sha256sum") < user_data.index("pip install")
    assert "${WheelSha256}" in user_data


def run_gpu_instance_user_data(tmp_path, shutdown_plus_fails=False):
    """The template's user data as an instance would run it, with its parameters filled in, its root paths moved
    under tmp_path and stub shutdown/systemctl/aws/python3 recording their calls."""
    script = load("gpu-instance")["Resources"]["Instance"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    for name, value in (("MaxHours", "2"), ("Module", "launcher.remote.train_job"), ("ModuleArgs", "--job j"),
                        ("WheelUri", "s3://bkt/x.whl"), ("WheelSha256", "ab" * 32)):
        script = script.replace("${%s}" % name, value)
    for root in ("/var/log/", "/etc/systemd/system/", "/opt/"):
        (tmp_path / root.strip("/")).mkdir(parents=True, exist_ok=True)
        script = script.replace(root, f"{tmp_path}{root}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fail = 'case "$2" in +*) exit 1;; esac\n' if shutdown_plus_fails else ""
    for name, extra in (("shutdown", fail), ("systemctl", ""), ("aws", "exit 1\n"), ("python3", "exit 1\n")):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/{name}.calls\n{extra}')
        (bin_dir / name).chmod(0o755)
    subprocess.run(["bash", "-c", script], env={**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}, check=False)
    return {name: (tmp_path / f"{name}.calls").read_text().splitlines() if (tmp_path / f"{name}.calls").exists()
            else [] for name in ("shutdown", "systemctl", "aws", "python3")}


def test_gpu_instance_shuts_down_after_a_failure_and_at_any_later_boot(tmp_path):
    calls = run_gpu_instance_user_data(tmp_path)  # the wheel's download fails
    assert calls["shutdown"][0].startswith("-h +120") and calls["shutdown"][-1] == "-h now"
    assert calls["aws"] and calls["systemctl"] == ["enable gankit-reboot.service"]
    unit = (tmp_path / "etc/systemd/system/gankit-reboot.service").read_text()
    assert 'ExecStart=/sbin/shutdown -h now "' in unit and "WantedBy=multi-user.target" in unit


def test_gpu_instance_runs_nothing_when_its_hard_stop_cannot_be_scheduled(tmp_path):
    calls = run_gpu_instance_user_data(tmp_path, shutdown_plus_fails=True)
    assert calls["aws"] == [] and calls["python3"] == [] and calls["shutdown"][-1] == "-h now"
    assert "could not schedule the hard stop" in (tmp_path / "var/log/gankit-bootstrap.log").read_text()


def test_sagemaker_role_can_pull_the_prebuilt_image_that_script_mode_runs():
    """A job without --image runs AWS's prebuilt TensorFlow image, and SageMaker pulls the training image with
    the execution role: AWS's CreateTrainingJob role policy scopes the ECR pull actions "to the registry path
    (AlgorithmSpecification.TrainingImage) that you specify" (docs: sagemaker-roles, CreateTrainingJob API:
    Execution Role Permissions). repository/gankit* in this account alone leaves that image unpullable."""
    from launcher.backends import sagemaker

    base = load("base")
    role = {s["Sid"]: s for s in _statements(base["Resources"]["SageMakerRole"])}
    pull = role["PullPrebuiltTensorFlowImage"]
    assert sorted(_actions(pull)) == ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
                                      "ecr:GetDownloadUrlForLayer"]
    for region in ("us-east-1", "eu-west-1", "me-central-1"):
        image = sagemaker.prebuilt_image(region, sagemaker.DEFAULT_INSTANCE_TYPE)
        account, repository = image.split(".", 1)[0], image.split("/", 1)[1].split(":")[0]
        arn = pull["Resource"]["Fn::Sub"].replace("${AWS::Partition}", "aws").replace(
            "${AWS::Region}", region).replace("${PrebuiltImageAccount}", account)
        assert arn == f"arn:aws:ecr:{region}:{account}:repository/{repository}"
        assert sagemaker.prebuilt_image_account(region) == account
    assert base["Parameters"]["PrebuiltImageAccount"]["Default"] == sagemaker.prebuilt_image_account("us-east-1")
    # Only the SageMaker role: EC2 instances run the project's own image.
    assert "tensorflow-training" not in json.dumps(base["Resources"]["InstanceRole"])
    assert "tensorflow-training" not in json.dumps(base["Resources"]["ImagePull"])


def test_sagemaker_role_may_describe_gankits_own_training_jobs_only():
    """The trainer's stop watcher (trainer/sagemaker_stop.py) asks DescribeTrainingJob about its own job;
    every job name the launcher makes starts with gan-."""
    from launcher.spec import job_name

    base = load("base")
    describe = {s["Sid"]: s for s in _statements(base["Resources"]["SageMakerRole"])}["DescribeOwnTrainingJobs"]
    assert _actions(describe) == ["sagemaker:DescribeTrainingJob"]
    assert describe["Resource"]["Fn::Sub"].endswith(":training-job/gan-*")
    assert job_name("zalando", "cgan").startswith("gan-") and job_name("folder:/x/y", "dcgan").startswith("gan-")
    assert "sagemaker:" not in json.dumps(base["Resources"]["InstanceRole"])
