"""Helpers for the EC2 and infra tests: seed what moto cannot know (the public DLAMI parameters)."""

from launcher import instances

FAKE_AMI = "ami-0123456789abcdef0"


def seed_dlami_parameters(region="us-east-1", image_id=None, proprietary_image_id=None):
    """Put the public DLAMI SSM parameters into moto's SSM backend (real AWS has them already).

    moto refuses to create names under /aws/ through its API, so they go straight into its backend.
    Returns the AMI id they point at: a real moto image unless `image_id` is given. The
    proprietary-driver (P3) parameter points at `proprietary_image_id` when given, else the same image.
    """
    import boto3
    from moto.ssm.models import ssm_backends

    if image_id is None:
        image_id = boto3.client("ec2", region_name=region).describe_images()["Images"][0]["ImageId"]
    backend = ssm_backends["123456789012"][region]
    for name, value in ((instances.OPEN_DRIVER_PARAMETER, image_id),
                        (instances.PROPRIETARY_DRIVER_PARAMETER, proprietary_image_id or image_id)):
        backend._parameters[name] = [_parameter(backend, name, value, region)]
    return image_id


def _parameter(backend, name, value, region):
    from moto.ssm.models import Parameter

    import datetime

    return Parameter(account_id="123456789012", name=name, value=value, parameter_type="String",
                     description="public DLAMI (seeded for tests)", allowed_pattern=None, keyid=None,
                     last_modified_date=datetime.datetime.now(), version=1, data_type="aws:ec2:image")
