"""The EC2 RunInstances request: what we build, and what EC2 (moto) records from it."""

import base64

import boto3
import pytest
from moto import mock_aws

from launcher import instances
from tests.ec2_helpers import seed_dlami_parameters
from trainer.errors import GankitError, UsageError

REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("GANKIT_AMI", raising=False)
    with mock_aws():
        yield


@pytest.fixture
def settings(aws):
    """What `launcher infra up` records: a real profile and security group in moto."""
    iam, ec2_client = boto3.client("iam"), boto3.client("ec2", region_name=REGION)
    iam.create_role(RoleName="gankit-ec2", AssumeRolePolicyDocument="{}")
    iam.create_instance_profile(InstanceProfileName="gankit-ec2")
    iam.add_role_to_instance_profile(InstanceProfileName="gankit-ec2", RoleName="gankit-ec2")
    vpc = ec2_client.describe_vpcs()["Vpcs"][0]["VpcId"]
    group = ec2_client.create_security_group(GroupName="gankit", Description="gankit", VpcId=vpc)["GroupId"]
    return {"instance_profile": "gankit-ec2", "security_group": group, "region": REGION}


def test_ami_parameter_follows_the_gpu_family():
    assert instances.ami_parameter_for("p3.2xlarge") == instances.PROPRIETARY_DRIVER_PARAMETER
    assert instances.ami_parameter_for("ml.p3.8xlarge") == instances.PROPRIETARY_DRIVER_PARAMETER
    for kind in ("g4dn.xlarge", "g5.xlarge", "g6.2xlarge", "p4d.24xlarge", "p5.48xlarge"):
        assert instances.ami_parameter_for(kind) == instances.OPEN_DRIVER_PARAMETER
    assert "proprietary" in instances.PROPRIETARY_DRIVER_PARAMETER and "oss" in instances.OPEN_DRIVER_PARAMETER
    with pytest.raises(UsageError, match="not an EC2 instance type"):
        instances.ami_parameter_for("p3")


def test_resolve_ami_reads_the_family_parameter_and_honours_overrides(aws):
    image = seed_dlami_parameters(REGION)
    assert instances.resolve_ami("g5.xlarge", REGION) == image
    assert instances.resolve_ami("g5.xlarge", REGION, override="ami-0feedbeef") == "ami-0feedbeef"
    with pytest.raises(GankitError, match="/gankit/nope does not exist.*GANKIT_AMI"):
        instances.resolve_ami("g5.xlarge", REGION, override="/gankit/nope")


def test_request_is_safe_by_default(settings):
    image = seed_dlami_parameters(REGION)
    request = instances.run_instances_request("job", "g5.xlarge", "#!/bin/bash\necho hi\n", settings=settings,
                                        tags={"gankit:job": "z1"})
    assert request["ImageId"] == image
    assert request["MetadataOptions"] == {"HttpTokens": "required", "HttpEndpoint": "enabled",
                                          "HttpPutResponseHopLimit": 1}
    (root,) = request["BlockDeviceMappings"]
    assert root["Ebs"]["Encrypted"] is True and root["Ebs"]["VolumeType"] == "gp3"
    assert request["IamInstanceProfile"] == {"Name": "gankit-ec2"}
    assert request["SecurityGroupIds"] == [settings["security_group"]]
    assert request["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert "InstanceMarketOptions" not in request
    specs = {s["ResourceType"]: {t["Key"]: t["Value"] for t in s["Tags"]} for s in request["TagSpecifications"]}
    assert specs["instance"] == specs["volume"] == {"gankit:purpose": "job", "gankit:job": "z1"}


def test_spot_stop_subnet_and_bad_input(settings):
    spot = instances.run_instances_request("job", "p3.2xlarge", "x", spot=True, settings=settings, image_id="ami-1",
                                     max_spot_price="1.5")
    assert spot["InstanceMarketOptions"] == {"MarketType": "spot", "SpotOptions": {
        "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate", "MaxPrice": "1.5"}}
    jupyter = instances.run_instances_request("jupyter", "g5.xlarge", "x", settings={**settings, "subnet": "subnet-1"},
                                        shutdown="stop", image_id="ami-1")
    assert jupyter["InstanceInitiatedShutdownBehavior"] == "stop"
    assert jupyter["NetworkInterfaces"][0]["SubnetId"] == "subnet-1"
    assert jupyter["NetworkInterfaces"][0]["Groups"] == [settings["security_group"]]
    with pytest.raises(UsageError, match="cannot be a one-time spot"):
        instances.run_instances_request("jupyter", "g5.xlarge", "x", spot=True, shutdown="stop", settings=settings,
                                  image_id="ami-1")
    with pytest.raises(UsageError, match="instance_profile or security_group.*launcher infra up"):
        instances.run_instances_request("job", "g5.xlarge", "x", settings={}, image_id="ami-1")


def test_launched_instance_carries_the_request(settings):
    seed_dlami_parameters(REGION)
    request = instances.run_instances_request("job", "g5.xlarge", "#!/bin/bash\necho hi\n", settings=settings,
                                        tags={"Name": "gankit-z1"})
    iid = instances.launch(request, REGION)
    client = boto3.client("ec2", region_name=REGION)
    instance = instances.describe_instance(iid, REGION)
    assert instance["InstanceType"] == "g5.xlarge"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["IamInstanceProfile"]["Arn"].endswith("instance-profile/gankit-ec2")
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [settings["security_group"]]
    assert {"Key": "gankit:purpose", "Value": "job"} in instance["Tags"]
    behaviour = client.describe_instance_attribute(InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    data = client.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
    assert base64.b64decode(data).decode() == "#!/bin/bash\necho hi\n"
    volume_id = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    volume = client.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert volume["Encrypted"] is True and volume["VolumeType"] == "gp3"
    assert volume["Size"] == instances.ROOT_VOLUME_GB  # the DLAMI alone takes ~75 GB
    assert {"Key": "gankit:purpose", "Value": "job"} in volume.get("Tags", [])

    instances.terminate(iid, REGION)
    assert instances.describe_instance(iid, REGION)["State"]["Name"] in ("shutting-down", "terminated")
    # Its root volume goes with it: none is left behind to bill by the month after every job.
    assert volume_id not in [v["VolumeId"] for v in client.describe_volumes()["Volumes"]]
    assert instances.describe_instance("i-0000000000000dead", REGION) is None


def test_spot_request_launches_a_spot_instance(settings):
    seed_dlami_parameters(REGION)
    request = instances.run_instances_request("job", "p3.2xlarge", "x", spot=True, settings=settings)
    instance = instances.describe_instance(instances.launch(request, REGION), REGION)
    assert instance["InstanceLifecycle"] == "spot"  # what EC2 (moto) made of InstanceMarketOptions
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
