"""The instance's IAM profile: Jupyter's own, which reads runs/, not the training instances', which writes them."""

from launcher import instances
from launcher.jupyter import say
from trainer.errors import aws_error, one_line

# Said when the config has no jupyter_instance_profile: a stack from before Jupyter's role, or a config set
# by hand (or GANKIT_* variables) that names only the training profile.
OLD_STACK_NOTE = ("note: no jupyter_instance_profile is configured, so your Jupyter instance runs with the training "
                  "instances' profile, which may also write runs/; `launcher infra up` updates a base stack from "
                  "before Jupyter's own role and records both profiles (or `launcher config set "
                  "jupyter_instance_profile NAME`), and the next `launcher jupyter` gives the instance its own")


def jupyter_profile() -> str | None:
    """The instance profile of Jupyter instances, as `launcher infra up` records it; None for a stack from before
    Jupyter had a role of its own, whose only profile (the training instances') serves Jupyter too."""
    from launcher import settings

    return settings.get("jupyter_instance_profile")


def give_jupyter_profile(ec2, instance):
    """An instance launched before Jupyter had a role of its own has the training instances' profile, which may
    write runs/: swap it for the Jupyter one. Failing that (your identity may not pass the role), it keeps the
    one it has and serves as before; the note says so."""
    profile = jupyter_profile()
    have = instance.get("IamInstanceProfile", {}).get("Arn", "")
    if profile is None or instances.is_profile(have, profile):
        return
    iid, had = instance["InstanceId"], have.rsplit("/", 1)[-1] or "none"
    try:
        associations = ec2.describe_iam_instance_profile_associations(Filters=[
            {"Name": "instance-id", "Values": [iid]}, {"Name": "state", "Values": ["associated"]}
        ])["IamInstanceProfileAssociations"]
        if associations:
            ec2.replace_iam_instance_profile_association(AssociationId=associations[0]["AssociationId"],
                                                         IamInstanceProfile=instances.profile_spec(profile))
        else:
            ec2.associate_iam_instance_profile(InstanceId=iid, IamInstanceProfile=instances.profile_spec(profile))
    except Exception as e:
        if aws_error(e) is None:
            raise
        say(f"note: could not give {iid} the Jupyter instance profile {profile} ({one_line(aws_error(e))}); it keeps "
            f"{had}, which may also write runs/ (replacing it needs ec2:ReplaceIamInstanceProfileAssociation and "
            "iam:PassRole on the Jupyter role)")
        return
    say(f"gave {iid} the Jupyter instance profile {profile} in place of {had}")
