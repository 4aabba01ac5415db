"""Which AWS region gankit talks to: one lookup for the launcher and the trainer alike."""

import re

from trainer.errors import UsageError, no_region

# us-east-1, eu-central-2, ap-southeast-4, us-gov-west-1, cn-north-1, us-iso-east-1 ...
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
# Every --region option's help: the order `region` looks in, in the same words in every command.
REGION_HELP = "AWS region [config, then AWS_DEFAULT_REGION or the AWS profile's]."


def region(*preferred: str | None) -> str:
    """The first of `preferred` that is set (say --region, then the launcher's config), else boto3's own
    (AWS_REGION, AWS_DEFAULT_REGION, the profile), else the one-line no-region usage error. It must look
    like a region's name: it goes into endpoints, ARNs and an instance's setup."""
    found = next((p for p in preferred if p), None)
    if not found:
        import boto3

        found = boto3.session.Session().region_name
        if not found:
            raise no_region()
    if not _REGION.fullmatch(found):
        raise UsageError(f"region {found[:40]!r} is not an AWS region name (e.g. us-east-1); check --region, "
                         "`launcher config show` and AWS_DEFAULT_REGION")
    return found
