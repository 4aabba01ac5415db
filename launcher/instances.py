"""EC2 GPU instances for gankit: the image, the RunInstances request, and the instance's life.

Shared by the EC2 training backend (`launcher.backends.ec2`) and `launcher jupyter`.
Every instance gets the same safe defaults: IMDSv2 only, an encrypted gp3 root volume,
the instance profile and security group `launcher infra up` recorded, tags on the
instance and its volume, and a shutdown behaviour so `shutdown -h now` on the
instance ends the billing (terminate for jobs, stop for Jupyter).
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from launcher.settings import check_instance_profile, check_resource_id
from trainer import aws
from trainer.errors import GankitError, UsageError, aws_failure, aws_setup_error

# The AWS Deep Learning AMIs, found through their public SSM parameters (no AMI ids to keep
# up to date). Current DLAMIs ship NVIDIA's open-source kernel driver, which supports Turing
# and newer GPUs only (g4dn T4, g5 A10G, g6 L4, g6e L40S, p4 A100, p5 H100): the V100 of a
# P3 needs the proprietary driver, so P3 gets the proprietary-driver base DLAMI. Both are
# "base" images (driver, CUDA, Docker): the user data installs TensorFlow from the project's
# wheel into a DLAMI TensorFlow environment when the image has one, else into its own venv.
DLAMI_PREFIX = "/aws/service/deeplearning/ami/x86_64"
OPEN_DRIVER_PARAMETER = f"{DLAMI_PREFIX}/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
PROPRIETARY_DRIVER_PARAMETER = f"{DLAMI_PREFIX}/base-proprietary-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
PROPRIETARY_DRIVER_FAMILIES = ("p3", "p3dn")  # V100: not supported by the open driver

SHUTDOWN_BEHAVIOURS = ("terminate", "stop")
ROOT_DEVICE = "/dev/sda1"  # the DLAMI's (Ubuntu) root device name
ROOT_VOLUME_GB = 100  # the DLAMI needs ~75 GB; the rest is room for data and checkpoints
TAG_PURPOSE = "gankit:purpose"
TAG_LAUNCH = "gankit:launch"  # the request's ClientToken, so a launch can be found before its reply is


def family(instance_type: str) -> str:
    """'p3' for 'p3.2xlarge' (and for 'ml.p3.2xlarge')."""
    name = instance_type.removeprefix("ml.")
    if "." not in name:
        raise UsageError(f"{instance_type!r} is not an EC2 instance type; write e.g. g5.xlarge or p3.2xlarge")
    return name.split(".", 1)[0]


def ami_parameter_for(instance_type: str) -> str:
    """The public DLAMI SSM parameter whose driver supports this instance type's GPU."""
    if family(instance_type) in PROPRIETARY_DRIVER_FAMILIES:
        return PROPRIETARY_DRIVER_PARAMETER
    return OPEN_DRIVER_PARAMETER


def image_reference(instance_type: str, override: str | None = None) -> str:
    """The image a launch uses, named without asking AWS (what a dry run prints): `override` (GANKIT_AMI) as
    `resolve_ami` takes it, an `ami-...` id as is and a parameter name as `resolve:ssm:NAME` (which EC2 also
    accepts), else the family's public DLAMI parameter."""
    if override and override.startswith("ami-"):
        return override
    return f"resolve:ssm:{override or ami_parameter_for(instance_type)}"


def client(service: str, region: str | None = None):
    import boto3

    from launcher import settings

    return boto3.client(service, region_name=aws.region(region, settings.get("region")))


def resolve_ami(instance_type: str, region: str | None = None, override: str | None = None) -> str:
    """The AMI id for this instance type: `override` as given (an `ami-...` id or an SSM parameter
    name), else the latest DLAMI of the family's public parameter."""
    if override and override.startswith("ami-"):
        return override
    name = override or ami_parameter_for(instance_type)
    ssm = client("ssm", region)
    try:
        return ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        raise GankitError(f"the AMI parameter {name} does not exist in this region; "
                          "set GANKIT_AMI to an ami-... id or another SSM parameter name") from None
    except Exception as e:  # botocore's ClientError and connection errors, one line
        raise aws_failure(f"could not read the AMI parameter {name}", e) from None


def _tag_list(tags: dict) -> list[dict]:
    return [{"Key": k, "Value": str(v)} for k, v in tags.items()]


def check_settings(settings: dict, profile: str | None = None):
    """An instance needs gankit's instance profile (its S3 and SSM access) and security group. `profile`, when
    given, is the one it launches with (Jupyter's own), so the training instances' need not be configured."""
    given = {"instance_profile": profile or settings.get("instance_profile"),
             "security_group": settings.get("security_group")}
    missing = [k for k, value in given.items() if not value]
    if missing:
        raise UsageError(f"no {' or '.join(missing)} configured: EC2 instances need gankit's instance profile and "
                         "security group; `launcher infra up` makes both (or `launcher config set instance_profile "
                         "NAME` and `launcher config set security_group sg-...`)")
    # `config set` checks these too, but GANKIT_* variables and a hand-edited file skip it: a bad one is refused
    # here, before anything is uploaded, rather than by RunInstances after.
    check_instance_profile(given["instance_profile"], "instance_profile")
    check_resource_id(given["security_group"], "security_group", "sg")
    if settings.get("subnet"):
        check_resource_id(settings["subnet"], "subnet", "subnet")


def run_instances_request(purpose: str, instance_type: str, user_data: str, *, spot: bool = False,
                          tags: dict | None = None, settings: dict | None = None, shutdown: str = "terminate",
                          image_id: str | None = None, volume_gb: int = ROOT_VOLUME_GB,
                          max_spot_price: str | None = None, client_token: str | None = None,
                          profile: str | None = None) -> dict:
    """The keyword arguments of `ec2.run_instances` for one GPU instance.

    `settings` is the launcher's config (`launcher.settings.effective()`): instance_profile,
    security_group, subnet (optional), region; GANKIT_AMI overrides the image. `profile` (a name or an ARN)
    replaces the training instances' instance_profile: a Jupyter instance has a role of its own. `image_id`, when
    given, is used as is (a dry run passes `resolve:ssm:<parameter>`, which EC2 also accepts).
    `client_token` makes the launch idempotent (botocore's retries never start a second instance)
    and tags the instance with it (`find_launched`).
    """
    settings = settings or {}
    if shutdown not in SHUTDOWN_BEHAVIOURS:
        raise ValueError(f"shutdown must be one of {SHUTDOWN_BEHAVIOURS}, not {shutdown!r}")
    if spot and shutdown == "stop":
        # A stopped one-time spot request cannot restart; stop needs a persistent request.
        raise UsageError("a stoppable instance cannot be a one-time spot instance; drop --spot")
    check_settings(settings, profile)
    if len(user_data.encode()) > 16 * 1024:
        raise GankitError("the user data is over EC2's 16 KiB limit")  # a bug, not user input
    tags = {TAG_PURPOSE: purpose, **(tags or {}), **({TAG_LAUNCH: client_token} if client_token else {})}
    request = {
        "ImageId": image_id or resolve_ami(instance_type, settings.get("region"), os.environ.get("GANKIT_AMI")),
        "InstanceType": instance_type.removeprefix("ml."),
        "MinCount": 1,
        "MaxCount": 1,
        "UserData": user_data,
        "IamInstanceProfile": profile_spec(profile or settings["instance_profile"]),
        "MetadataOptions": {  # IMDSv2 only: no credential theft through a plain GET (SSRF)
            "HttpTokens": "required",
            "HttpEndpoint": "enabled",
            # 1: no request forwarded through another hop gets a token; the one container a job may
            # run (--image) uses host networking, so it is on the instance's own hop.
            "HttpPutResponseHopLimit": 1,
        },
        "BlockDeviceMappings": [{
            "DeviceName": ROOT_DEVICE,
            "Ebs": {"VolumeSize": int(volume_gb), "VolumeType": "gp3", "Encrypted": True,
                    "DeleteOnTermination": True},
        }],
        "InstanceInitiatedShutdownBehavior": shutdown,
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": _tag_list(tags)},
            {"ResourceType": "volume", "Tags": _tag_list(tags)},
        ],
    }
    if client_token:
        request["ClientToken"] = client_token
    network = {"DeviceIndex": 0, "Groups": [settings["security_group"]], "AssociatePublicIpAddress": True}
    if settings.get("subnet"):
        network["SubnetId"] = settings["subnet"]
        request["NetworkInterfaces"] = [network]
    else:  # the default VPC's subnet
        request["SecurityGroupIds"] = [settings["security_group"]]
    if spot:
        options = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
        if max_spot_price:
            options["MaxPrice"] = str(max_spot_price)
        request["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": options}
    return request


def profile_spec(profile: str) -> dict:
    """EC2's IamInstanceProfile for a profile setting, a name or an ARN."""
    return {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}


def is_profile(arn: str, profile: str) -> bool:
    """Whether the instance profile `arn` is the one a setting names (a name or an ARN)."""
    return arn == profile if profile.startswith("arn:") else arn.rsplit("/", 1)[-1] == profile


class LaunchUnanswered(GankitError):
    """RunInstances got no answer (a timeout, a dropped connection): EC2 may have started the instance."""


def launch(request: dict, region: str | None = None) -> str:
    """Send the request; the new instance's id. A refusal (EC2's error reply, or credentials that never let
    the request out) is a GankitError: nothing started. No answer at all is LaunchUnanswered."""
    from botocore.exceptions import ClientError

    ec2 = client("ec2", region)
    try:
        reply = ec2.run_instances(**request)
    except Exception as e:
        setup = aws_setup_error(e)
        if setup or isinstance(e, ClientError):
            raise setup or GankitError(f"EC2 did not start the {request.get('InstanceType')} instance: "
                                       f"{refusal_reason(e)}") from None
        raise LaunchUnanswered(f"no answer from EC2 to the launch of the {request.get('InstanceType')} "
                               f"instance: {e}") from None
    return reply["Instances"][0]["InstanceId"]


def refusal_reason(e) -> str:
    """A ClientError's code and message with advice for the usual ones."""
    code = (getattr(e, "response", None) or {}).get("Error", {}).get("Code", "")  # a timeout's response is None
    hints = {
        "InsufficientInstanceCapacity": "try another instance type or region, or later",
        "VcpuLimitExceeded": "ask AWS for a higher vCPU quota for this instance family (Service Quotas)",
        "MaxSpotInstanceCountExceeded": "ask for a higher spot quota, or submit without --spot",
        "SpotMaxPriceTooLow": "raise the spot price limit or submit without --spot",
        "UnauthorizedOperation": "your AWS identity may not launch instances or pass the instance role",
    }
    hint = hints.get(code)
    return f"{e}" + (f"; {hint}" if hint else "")


def describe_instance(instance_id: str, region: str | None = None) -> dict | None:
    """The instance as DescribeInstances has it, or None once AWS has forgotten it."""
    ec2 = client("ec2", region)
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except Exception as e:
        if "InvalidInstanceID" in str(e):
            return None
        raise aws_failure(f"could not describe {instance_id}", e) from None
    instances = [i for r in reservations for i in r["Instances"]]
    return instances[0] if instances else None


def find_launched(client_token: str, region: str | None = None) -> list[str]:
    """The not yet terminated instances a request with this client token started."""
    ec2 = client("ec2", region)
    try:
        pages = ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": f"tag:{TAG_LAUNCH}", "Values": [client_token]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])
        return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]
    except Exception as e:
        raise aws_failure(f"could not look for the instance of launch {client_token}", e) from None


def stop_instance(instance_id: str, region: str | None = None):
    client("ec2", region).stop_instances(InstanceIds=[instance_id])


def terminate(instance_id: str, region: str | None = None):
    client("ec2", region).terminate_instances(InstanceIds=[instance_id])


# --- the project's wheel, which the instance installs --------------------------------------------

def build_wheel(dest) -> Path:
    """The project's wheel in `dest`: `pip wheel --no-deps` of the checkout, or the installed wheel repacked."""
    from launcher.resources import checkout

    repo = checkout()
    if repo is None:
        return _repack_installed(Path(dest))
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="gankit-build-") as scratch:
        # setuptools builds in the checkout's build/ and reuses build/lib, so a module deleted or renamed since an
        # earlier build went to the instance too: a fresh build folder each time (DIST_EXTRA_CONFIG, read by setuptools).
        config = Path(scratch) / "build.cfg"
        config.write_text(f"[build]\nbuild_base = {Path(scratch) / 'build'}\n")
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                               "--quiet", "--wheel-dir", str(dest), str(repo)],
                              capture_output=True, text=True, env=dict(os.environ, DIST_EXTRA_CONFIG=str(config)))
    wheels = sorted(dest.glob("gankit-*.whl"))
    if done.returncode or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise GankitError(f"building the project's wheel failed: {last}")
    return wheels[-1]


def _repack_installed(dest: Path) -> Path:
    """Installed from a wheel there is no source to build: zip the installed packages and metadata again."""
    import base64
    import hashlib
    import zipfile
    from importlib import metadata

    dist = metadata.distribution("gankit")
    info = f"gankit-{dist.version}.dist-info"
    keep = {*dist.read_text("top_level.txt").split(), info}
    left_out = {f"{info}/{name}" for name in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    wheel, record = dest / f"gankit-{dist.version}-py3-none-any.whl", []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in dist.files:
            name = file.as_posix()  # pip's installed console script (bin/launcher) is not in `keep`
            if name.split("/", 1)[0] not in keep or "__pycache__" in name or name in left_out:
                continue
            data = file.locate().read_bytes()
            zf.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        zf.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return wheel


def upload_wheel(prefix: str) -> tuple[str, str]:
    """Build the project's wheel and upload it under `prefix` (s3://...); (its URI, its sha256).

    The digest goes into the user data, which installs the wheel as root only if it still matches:
    the bucket is writable by every instance role, so its copy alone proves nothing."""
    import hashlib

    from trainer import layout, s3
    from trainer.progress import Progress, format_bytes

    with tempfile.TemporaryDirectory(prefix="gankit-wheel-") as tmp:
        wheel = build_wheel(tmp)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        uri = layout.join(prefix, wheel.name)
        progress = Progress(wheel.stat().st_size, label=f"uploading {wheel.name}", fmt=format_bytes)
        s3.upload_file(wheel, uri, callback=progress.update)
        progress.close()
    return uri, digest
