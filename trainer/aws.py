"""Which AWS region gankit talks to: one lookup for the launcher and the trainer alike."""

from trainer.errors import no_region


def region(*preferred: str | None) -> str:
    """The first of `preferred` that is set (say --region, then the launcher's config), else boto3's own
    (AWS_REGION, AWS_DEFAULT_REGION, the profile), else the one-line no-region usage error."""
    for found in preferred:
        if found:
            return found
    import boto3

    found = boto3.session.Session().region_name
    if not found:
        raise no_region()
    return found
