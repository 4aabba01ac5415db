"""`launcher image push`: build docker/Dockerfile and push it to ECR."""

import base64
import re
import shutil
import subprocess

import trainer
from trainer.errors import GankitError, UsageError, client_error

# ECR's rule for a repository name, and the prefix the roles `launcher infra up` makes may pull (infra/base.yaml).
ECR_NAME = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
PULLABLE_PREFIX = "gankit"


def check_repository(repository: str):
    """A one-line UsageError, before any build, for a name ECR refuses or the job roles cannot pull."""
    if not (2 <= len(repository) <= 256 and ECR_NAME.fullmatch(repository)):
        raise UsageError(f"--repository {repository[:80]!r} is not an ECR repository name: use lowercase letters, "
                         "digits and . _ - / (e.g. gankit-trainer)")
    if not repository.startswith(PULLABLE_PREFIX):
        raise UsageError(f"--repository {repository[:80]}: the job roles `launcher infra up` makes pull only "
                         f"{PULLABLE_PREFIX}* repositories, so jobs could not start from it; name it "
                         f"{PULLABLE_PREFIX}-{repository.rsplit('/', 1)[-1][:60]}")


ECR_IMAGE = re.compile(r"(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)(?:[:@].*)?")


def check_pullable(image: str, region: str | None, source: str = "--image"):
    """A one-line UsageError for an ECR image the job roles `launcher infra up` makes cannot pull (a repository
    outside gankit*, another region's registry): AWS would refuse it only once the job started."""
    found = ECR_IMAGE.fullmatch(image)
    if not found:
        return  # not ECR: not the roles' to pull
    _, where, repository = found.groups()
    if not repository.startswith(PULLABLE_PREFIX):
        raise UsageError(f"{source} {image[:120]}: the job roles `launcher infra up` makes pull only {PULLABLE_PREFIX}* "
                         f"repositories, so the job could not start from it; push it as "
                         f"{PULLABLE_PREFIX}-{repository.rsplit('/', 1)[-1][:60]} (`launcher image push --repository ...`)")
    if region and where != region:
        raise UsageError(f"{source} {image[:120]}: that image is in {where}'s ECR and the job runs in {region}, whose "
                         f"roles pull only from {region}; push it there (`launcher image push --region {region}`)")


def _docker(*args, secret: str | None = None):
    done = subprocess.run(["docker", *args], input=secret, text=True, capture_output=True)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise GankitError(f"docker {args[0]} failed: {last[0]}")
    return done.stdout


def check_docker():
    if shutil.which("docker") is None:
        raise UsageError("docker is not installed: install Docker Engine (https://docs.docker.com/engine/install/)")
    done = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if done.returncode != 0:
        raise UsageError(engine_problem(done.stderr))


def engine_problem(stderr: str) -> str:
    """What `docker info`'s stderr says is wrong, and its fix: an engine this user may not reach (its socket is
    the docker group's) is not one that is not running, and starting it again would not help."""
    said = [line.strip() for line in stderr.splitlines() if line.strip()]
    if any("permission denied" in line.lower() for line in said):
        return ("the Docker engine's socket refused you (permission denied): add yourself to the docker group "
                "(`sudo usermod -aG docker $USER`, then log in again)")
    if not said or any("cannot connect to the docker daemon" in line.lower() for line in said):
        return ("no Docker engine is running here: start it (e.g. `sudo systemctl start docker`), "
                "or build on a machine that has one")
    return f"`docker info` failed ({said[-1][:200]}): fix that, or build on a machine where `docker info` works"


def _refused(e) -> bool:
    return e.response.get("Error", {}).get("Code") in ("AccessDeniedException", "AccessDenied")


def _repository_exists(ecr, repository: str) -> bool | None:
    """None when IAM does not let this user look (pushing needs no ecr:DescribeRepositories)."""
    from botocore.exceptions import ClientError

    try:
        ecr.describe_repositories(repositoryNames=[repository])
        return True
    except ecr.exceptions.RepositoryNotFoundException:
        return False
    except ClientError as e:
        if _refused(e):
            return None
        raise


def ensure_repository(ecr, repository: str, region: str):
    """Create the repository (scan on push, encrypted) only when it is missing: a user whose IAM allows pushing
    to an existing repository, but not ecr:CreateRepository, pushes as well."""
    from botocore.exceptions import ClientError

    exists = _repository_exists(ecr, repository)
    if exists:
        return
    try:
        ecr.create_repository(repositoryName=repository, imageScanningConfiguration={"scanOnPush": True},
                              encryptionConfiguration={"encryptionType": "AES256"})
    except ecr.exceptions.RepositoryAlreadyExistsException:
        pass  # made meanwhile
    except ClientError as e:
        if not _refused(e):
            raise
        if exists is False:
            code, message = client_error(e)
            raise GankitError(f"ECR repository {repository} does not exist in {region} and you may not create it "
                              f"({code}: {message}): have someone allowed ecr:CreateRepository create it, or push "
                              "to one that exists with --repository") from None
        # Allowed neither to look nor to create: it may well exist, and `docker push` says so if it does not.


def push(repository: str, tag: str | None, region: str | None) -> str:
    from launcher import settings
    from launcher.resources import checkout
    from trainer import aws

    check_repository(repository)
    repo = checkout()
    if repo is None:  # the build context is the whole source tree (pyproject.toml, trainer/, ...)
        raise UsageError("`launcher image push` builds from gankit's source: run it in a clone "
                         "(git clone ... && pip install -e .)")
    check_docker()
    import boto3

    region = aws.region(region, settings.get("region"))
    ecr = boto3.client("ecr", region_name=region)
    ensure_repository(ecr, repository, region)
    auth = ecr.get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)
    registry = auth["proxyEndpoint"].removeprefix("https://")
    uri = f"{registry}/{repository}:{tag or trainer.__version__}"
    _docker("login", "--username", user, "--password-stdin", registry, secret=password)  # never on the command line
    print(f"building {uri} (this takes a while the first time)", flush=True)
    _docker("build", "--build-arg", f"TENSORFLOW={trainer.TENSORFLOW}", "-f", str(repo / "docker" / "Dockerfile"),
            "-t", uri, str(repo))
    _docker("push", uri)
    return uri
