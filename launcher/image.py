"""`launcher image push`: build docker/Dockerfile and push it to ECR."""

import base64
import shutil
import subprocess

import trainer
from trainer.errors import GankitError, UsageError



def _docker(*args, secret: str | None = None):
    done = subprocess.run(["docker", *args], input=secret, text=True, capture_output=True)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise GankitError(f"docker {args[0]} failed: {last[0]}")
    return done.stdout


def check_docker():
    if shutil.which("docker") is None:
        raise UsageError("docker is not installed: install Docker Engine (https://docs.docker.com/engine/install/)")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        raise UsageError("no Docker engine is running here: start it (e.g. `sudo systemctl start docker`), "
                         "or build on a machine that has one")


def push(repository: str, tag: str | None, region: str | None) -> str:
    from launcher import settings
    from launcher.resources import checkout
    from trainer import aws

    repo = checkout()
    if repo is None:  # the build context is the whole source tree (pyproject.toml, trainer/, ...)
        raise UsageError("`launcher image push` builds from gankit's source: run it in a clone "
                         "(git clone ... && pip install -e .)")
    check_docker()
    import boto3

    region = aws.region(region, settings.get("region"))
    ecr = boto3.client("ecr", region_name=region)
    try:
        ecr.create_repository(repositoryName=repository, imageScanningConfiguration={"scanOnPush": True},
                              encryptionConfiguration={"encryptionType": "AES256"})
    except ecr.exceptions.RepositoryAlreadyExistsException:
        pass
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
