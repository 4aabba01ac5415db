"""AWS in this process (moto's mock_aws) for tests that need no subprocess."""

import contextlib

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
