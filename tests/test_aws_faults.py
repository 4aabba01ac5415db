"""AWS answering badly: a call refused, throttled, timed out or cut off, made to fail at botocore's door
(`fail_call`), under moto. Each command still ends in one line, with the fix where there is one, and leaves
nothing billing that no record or message names."""

import botocore.client
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from launcher import instances
from trainer.errors import GankitError


@pytest.fixture
def fail_call(monkeypatch):
    """fail_call(operation, error): the next call of that operation (any client) raises `error` instead of
    reaching AWS; returns the list of operations called so far."""
    real, calls, faults = botocore.client.BaseClient._make_api_call, [], {}

    def make_api_call(self, operation, params):
        calls.append(operation)
        if operation in faults:
            raise faults.pop(operation)
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", make_api_call)

    def fail(operation, error):
        faults[operation] = error
        return calls

    return fail


def client_error(code, message, operation):
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def test_a_timed_out_launch_is_said_as_a_timeout(fail_call, monkeypatch):
    # A ReadTimeoutError has a response attribute, None: the hint lookup broke on it, and the line said
    # "'NoneType' object has no attribute 'get'" instead of what happened.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    fail_call("RunInstances", ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com/"))
    with pytest.raises(GankitError) as e:
        instances.launch({"InstanceType": "g5.xlarge", "ImageId": "ami-0123456789abcdef0", "MinCount": 1,
                          "MaxCount": 1}, "us-east-1")
    assert str(e.value) == ('EC2 did not start the g5.xlarge instance: Read timeout on endpoint URL: '
                            '"https://ec2.us-east-1.amazonaws.com/"')
