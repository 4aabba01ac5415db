"""The Jupyter token: a random string in an SSM SecureString, rotated at every start, readable by one instance."""

import secrets

from launcher.jupyter import owners

# On the token parameter: the ARN of the one instance whose role may read it (infra/base.yaml's
# ReadOwnJupyterToken matches it against the caller's ec2:SourceInstanceARN).
TAG_INSTANCE = "gankit:instance"


def token_parameter(who: str) -> str:
    return f"/gankit/jupyter/{who}/token"


def rotate_token(ssm, who: str) -> str:
    """A fresh random token, stored only as an SSM SecureString (the instance reads it at boot)."""
    token = secrets.token_urlsafe(32)
    ssm.put_parameter(Name=token_parameter(who), Value=token, Type="SecureString", Overwrite=True,
                      Description="gankit Jupyter token (rotated at every start)")
    return token


def instance_arn(region_name, iid: str) -> str:
    arn = owners.caller_arn(region_name)  # the instance is in the caller's account and partition
    partition, account = arn.split(":")[1], arn.split(":")[4]
    return f"arn:{partition}:ec2:{region_name}:{account}:instance/{iid}"


def bind_token(ssm, region_name, who: str, iid: str):
    """Let only instance `iid` read the token: tag the parameter with its ARN (the role's condition)."""
    ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=token_parameter(who),
                             Tags=[{"Key": TAG_INSTANCE, "Value": instance_arn(region_name, iid)}])


def read_token(ssm, who: str) -> str | None:
    try:
        return ssm.get_parameter(Name=token_parameter(who), WithDecryption=True)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        return None
