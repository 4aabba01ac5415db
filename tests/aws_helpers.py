"""AWS for tests: moto in this process (no subprocess), or no AWS set up at all."""

import contextlib
import os

import boto3
from moto import mock_aws

from trainer import s3


@contextlib.contextmanager
def mocked_bucket(monkeypatch, bucket: str, region: str = "us-east-1"):
    """moto in process, fake credentials, no endpoint override, and one empty bucket; yields its s3:// URI."""
    for var, value in (("AWS_DEFAULT_REGION", region), ("AWS_ACCESS_KEY_ID", "testing"),
                       ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    s3.client.cache_clear()  # a client made before the mock would talk to the real AWS
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=bucket)
        yield f"s3://{bucket}"
    s3.client.cache_clear()


def no_credentials_anywhere(monkeypatch, tmp_path):
    """No AWS_* variables, empty AWS files, no instance metadata: what a machine without AWS set up has."""
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)
    (tmp_path / "empty").write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find here
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # nothing cached from an earlier test


def refuse_call(monkeypatch, operation: str, code: str, message: str = "not allowed"):
    """Every `operation` call fails with AWS's error `code`; moto answers the others."""
    import botocore.client
    from botocore.exceptions import ClientError

    real = botocore.client.BaseClient._make_api_call

    def make_api_call(self, name, params):
        if name == operation:
            raise ClientError({"Error": {"Code": code, "Message": message}}, name)
        return real(self, name, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", make_api_call)
