"""AWS answering badly: a call refused, throttled, timed out or cut off, made to fail at botocore's door
(`fail_call`), under moto. Each command still ends in one line, with the fix where there is one, and leaves
nothing billing that no record or message names."""

import time

import botocore.client
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from botocore.stub import Stubber

from launcher import instances
from trainer.errors import GankitError


@pytest.fixture
def fail_call(monkeypatch):
    """fail_call(operation, *errors): the next calls of that operation (any client) raise `errors`, one each,
    instead of reaching AWS (None: that call goes through); returns the list of operations called so far."""
    real, calls, faults = botocore.client.BaseClient._make_api_call, [], {}

    def make_api_call(self, operation, params):
        calls.append(operation)
        if faults.get(operation) and (error := faults[operation].pop(0)) is not None:
            raise error
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", make_api_call)

    def fail(operation, *errors):
        faults[operation] = list(errors)
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
    # No answer is not a refusal: EC2 may have started it, so the line never says it did not.
    with pytest.raises(instances.LaunchUnanswered) as e:
        instances.launch({"InstanceType": "g5.xlarge", "ImageId": "ami-0123456789abcdef0", "MinCount": 1,
                          "MaxCount": 1}, "us-east-1")
    assert str(e.value) == ('no answer from EC2 to the launch of the g5.xlarge instance: Read timeout on endpoint URL: '
                            '"https://ec2.us-east-1.amazonaws.com/"')


# --- credentials that expire or vanish, whichever call meets them ----------------------------------

@pytest.fixture
def aws(monkeypatch):
    from tests.aws_helpers import mocked_bucket

    with mocked_bucket(monkeypatch, "gankit-faults") as root:
        yield root


def _record(aws, backend, **fields):
    from launcher import jobs

    job = f"gan-{backend}-1"
    run = f"{aws}/runs/{job}"
    return jobs.save({"job": job, "backend": backend, "region": "us-east-1", "output_uri": f"{run}/output",
                      "status_uri": f"{run}/status.json", "log_uri": f"{run}/train.log",
                      "setup_log_uri": f"{run}/setup.log", **fields})


CALLS = {  # a command, and the AWS call in it that meets the expired token
    "status sagemaker": (lambda aws: ["status", _record(aws, "sagemaker")["job"]], "DescribeTrainingJob"),
    "status ec2": (lambda aws: ["status", _record(aws, "ec2", instance_id="i-0123456789abcdef0")["job"]],
                   "DescribeInstances"),
    "infra status": (lambda aws: ["infra", "status"], "DescribeStacks"),
}


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("code", ["ExpiredToken", "ExpiredTokenException"])
def test_an_expired_token_is_the_same_line_and_fix_from_every_call(name, code, aws, fail_call, capsys):
    # The backends' and infra's own wrappers made it "cannot describe JOB: An error occurred (ExpiredToken) ...",
    # exit 1, where S3 and every unwrapped call say how to renew the credentials, exit 2.
    from launcher.cli import main

    argv, operation = CALLS[name]
    argv = argv(aws)
    calls = fail_call(operation, client_error(code, "The security token included in the request is expired",
                                              operation))
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert operation in calls
    assert exit_.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: AWS refused your credentials ({code}: The security token included in the "
                          "request is expired); renew them with `aws configure`"), err


def test_a_launch_with_no_credentials_is_the_usage_error_with_its_fix(fail_call, monkeypatch):
    from botocore.exceptions import NoCredentialsError

    from trainer.errors import NO_CREDENTIALS, UsageError

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    fail_call("RunInstances", NoCredentialsError())
    with pytest.raises(UsageError, match=f"^{NO_CREDENTIALS}$".replace("(", r"\(").replace(")", r"\)")):
        instances.launch({"InstanceType": "g5.xlarge", "ImageId": "ami-0123456789abcdef0", "MinCount": 1,
                          "MaxCount": 1}, "us-east-1")


def _expired(operation):
    return client_error("ExpiredTokenException", "The security token included in the request is expired", operation)


@pytest.mark.parametrize("follow", [False, True])
def test_logs_read_again_with_fresh_credentials_and_say_when_they_stay_expired(follow, aws, fail_call, capsys,
                                                                                monkeypatch):
    # An expired token made `launcher logs JOB` renew its client and then return: nothing printed, exit 0
    # (and `logs -f` of an ended job the same), as if the job had logged nothing.
    import boto3

    from launcher.backends import sagemaker
    from launcher.cli import main

    monkeypatch.setattr(sagemaker, "POLL_SECONDS", 0)  # the pause for late lines after the job ended
    record = _record(aws, "sagemaker")
    if follow:  # the job, ended (moto's jobs complete at once), for --follow to describe
        boto3.client("sagemaker").create_training_job(
            TrainingJobName=record["job"], RoleArn="arn:aws:iam::123456789012:role/r",
            AlgorithmSpecification={"TrainingImage": "1.dkr.ecr.us-east-1.amazonaws.com/g:1",
                                    "TrainingInputMode": "File"},
            OutputDataConfig={"S3OutputPath": f"{aws}/out"}, StoppingCondition={"MaxRuntimeInSeconds": 60},
            ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30})
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName=sagemaker.LOG_GROUP)
    stream = f"{record['job']}/algo-1-1700000000"
    logs.create_log_stream(logGroupName=sagemaker.LOG_GROUP, logStreamName=stream)
    logs.put_log_events(logGroupName=sagemaker.LOG_GROUP, logStreamName=stream,
                        logEvents=[{"timestamp": int(time.time() * 1000), "message": "epoch 1/1 d_loss 0.5 g_loss 0.7"}])
    argv = ["logs", record["job"], *(["--follow"] if follow else [])]

    fail_call("DescribeLogStreams", _expired("DescribeLogStreams"))  # renewed, then read
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_.value.code == 0 and out == "epoch 1/1 d_loss 0.5 g_loss 0.7\n", err

    fail_call("DescribeLogStreams", _expired("DescribeLogStreams"), _expired("DescribeLogStreams"))  # still expired
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == "", out
    assert err.startswith("error: AWS refused your credentials (ExpiredTokenException") and err.count("\n") == 1


def test_logs_renewed_between_pages_of_a_stream_print_each_line_once(aws, fail_call, monkeypatch, capsys):
    # The stream's place was kept only once all its pages were read: credentials that expired on its second
    # page had the read start the stream again after the renewal, and its first page came out twice.
    import boto3

    from launcher.backends import sagemaker
    from launcher.cli import main

    monkeypatch.setattr(sagemaker, "PAGE", 3)
    record = _record(aws, "sagemaker")
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName=sagemaker.LOG_GROUP)
    stream = f"{record['job']}/algo-1-1700000000"
    logs.create_log_stream(logGroupName=sagemaker.LOG_GROUP, logStreamName=stream)
    now_ms = int(time.time() * 1000)
    logs.put_log_events(logGroupName=sagemaker.LOG_GROUP, logStreamName=stream,
                        logEvents=[{"timestamp": now_ms + i, "message": f"line {i}"} for i in range(7)])
    fail_call("GetLogEvents", None, _expired("GetLogEvents"))  # the first page is read, the second meets it
    with pytest.raises(SystemExit) as exit_:
        main(["logs", record["job"]])
    out, err = capsys.readouterr()
    assert exit_.value.code == 0 and out.splitlines() == [f"line {i}" for i in range(7)], err


def test_infra_up_that_loses_aws_while_waiting_says_so_in_one_line(aws, fail_call, monkeypatch, capsys):
    # The waiter's thread caught only WaiterError: a connection lost while waiting printed the thread's
    # traceback, and the command went on (to record a stack still being created, or exit 0 without a word).
    from botocore.exceptions import EndpointConnectionError

    from launcher import infra, settings
    from launcher.cli import main

    monkeypatch.setattr(infra, "POLL_SECONDS", 0.05)
    lost = EndpointConnectionError(endpoint_url="https://cloudformation.us-east-1.amazonaws.com/")
    # up's one look for the stack, then the waiter's: that one finds AWS out of reach
    calls = fail_call("DescribeStacks", None, lost)
    with pytest.raises(SystemExit) as exit_:
        main(["infra", "up"])
    err = capsys.readouterr().err
    assert "CreateStack" in calls
    assert exit_.value.code == 1 and "Traceback" not in err and "Exception in thread" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: lost sight of stack gankit while waiting for its create (`launcher infra status` "
                      f"shows where it got to; run the same command again once it has settled): {lost}"], err
    assert err.rstrip().endswith(errors[0]) and settings.get("backend") != "sagemaker"  # nothing recorded


def _sagemaker_spec(aws, tmp_path):
    from launcher.spec import build_spec
    from tests.data_helpers import make_idx_dataset

    data = make_idx_dataset(tmp_path / "mnist", n_train=64, n_test=16)
    return build_spec(dataset="mnist", epochs=1, hp=[f"data_dir={data}"], backend="sagemaker",
                      bucket=aws.removeprefix("s3://"), role="arn:aws:iam::123456789012:role/gankit-sagemaker",
                      region="us-east-1")


def test_a_sagemaker_job_whose_create_reply_was_lost_still_gets_its_record(aws, monkeypatch, tmp_path):
    # CreateTrainingJob reached SageMaker, its reply did not (a read timeout); botocore sent it again, and
    # SageMaker refused the name as taken, by the job the first try started. The launcher said "SageMaker
    # refused the job" and kept no record: the job trained and billed where `status` and `stop` never looked.
    import boto3
    from botocore.awsrequest import AWSResponse
    from moto.core.models import botocore_stubber

    from launcher import jobs
    from launcher.backends import sagemaker
    from tests.test_launcher_sagemaker import sagemaker_client

    tries = []

    def reply_lost(request, event_name, **_):
        tries.append(event_name)
        if len(tries) == 1:
            botocore_stubber(event_name=event_name, request=request)  # moto creates the job...
            raise ReadTimeoutError(endpoint_url=request.url)  # ...and its reply never arrives
        body = (b'{"__type": "ResourceInUse", "Message": "Training job names must be unique within an AWS account '
                b'and region, and a training job with this name already exists"}')
        raw = type("Raw", (), {"stream": lambda self, **_: iter([body]), "read": lambda self, *_: body})()
        return AWSResponse(request.url, 400, {"x-amzn-requestid": "retry"}, raw)

    sagemaker_client(monkeypatch).meta.events.register("before-send.sagemaker.CreateTrainingJob", reply_lost)
    spec = _sagemaker_spec(aws, tmp_path)
    record = sagemaker.submit(spec)
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName=spec.job)
    assert len(tries) == 2 and jobs.load(spec.job)["arn"] == record["arn"] == job["TrainingJobArn"]


def test_a_sagemaker_job_refused_for_a_name_taken_by_another_is_still_refused(aws, monkeypatch, tmp_path):
    # The same refusal for a job this submit did not start (other hyperparameters): no record is made for it.
    import boto3

    from launcher import jobs
    from launcher.backends import sagemaker
    from tests.test_launcher_sagemaker import sagemaker_client

    spec = _sagemaker_spec(aws, tmp_path)
    boto3.client("sagemaker").create_training_job(
        TrainingJobName=spec.job, RoleArn="arn:aws:iam::123456789012:role/gankit-sagemaker",
        AlgorithmSpecification={"TrainingImage": "1.dkr.ecr.us-east-1.amazonaws.com/g:1", "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": f"{aws}/out"}, StoppingCondition={"MaxRuntimeInSeconds": 60},
        ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30})
    stubber = Stubber(sagemaker_client(monkeypatch))
    stubber.add_client_error("create_training_job", "ResourceInUse", "a training job with this name already exists")
    with stubber, pytest.raises(GankitError, match="^SageMaker refused the job: .*ResourceInUse"):
        sagemaker.submit(spec)
    assert not jobs.exists(spec.job)


def test_list_says_once_why_the_cloud_jobs_status_is_unknown(aws, fail_call, capsys):
    # With the token expired every cloud job was listed as "unknown", exit 0, and nothing said why.
    from launcher.cli import main

    for backend in ("sagemaker", "ec2"):
        _record(aws, backend, **({"instance_id": "i-0123456789abcdef0"} if backend == "ec2" else {}))
    for operation in ("DescribeTrainingJob", "GetObject"):
        fail_call(operation, _expired(operation))
    with pytest.raises(SystemExit) as exit_:
        main(["list"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 0 and out.count("unknown") == 2, out
    assert err.splitlines() == ["warning: status unknown: AWS refused your credentials (ExpiredTokenException: The "
                                "security token included in the request is expired); renew them with `aws configure` "
                                "(or `aws sso login`), or set AWS_PROFILE"], err


def test_infra_up_whose_create_reply_was_lost_waits_for_the_stack_it_created(aws, monkeypatch, capsys):
    # CreateStack reached CloudFormation, its reply did not (a read timeout); botocore sent it again, and
    # CloudFormation refused it (AlreadyExistsException), the stack being the one the first try created. The
    # launcher said "CloudFormation refused stack gankit" and recorded nothing while the stack was created.
    from moto.core.models import botocore_stubber

    from launcher import infra, settings
    from launcher.cli import main

    monkeypatch.setattr(infra, "POLL_SECONDS", 0.05)
    tries, real_client = [], infra._client

    def reply_lost(request, event_name, **_):
        tries.append(event_name)
        if len(tries) == 1:
            botocore_stubber(event_name=event_name, request=request)  # moto creates the stack...
            raise ReadTimeoutError(endpoint_url=request.url)  # ...and its reply never arrives

    def client(service, region):
        made = real_client(service, region)
        made.meta.events.register("before-send.cloudformation.CreateStack", reply_lost)
        return made

    monkeypatch.setattr(infra, "_client", client)
    with pytest.raises(SystemExit) as exit_:
        main(["infra", "up"])
    err = capsys.readouterr().err
    assert len(tries) == 2 and exit_.value.code == 0 and "refused" not in err, err
    assert settings.get("backend") == "sagemaker" and settings.get("bucket")


def test_infra_up_refused_for_a_stack_another_template_made_is_still_refused(aws):
    # The same refusal for a stack this create did not start (another template): no waiting for it.
    import boto3

    from launcher import infra

    cf = boto3.client("cloudformation")
    cf.create_stack(StackName="gankit", TemplateBody='{"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}')
    with pytest.raises(GankitError, match="^CloudFormation refused stack gankit: Stack gankit already exists$"):
        infra.deploy(cf, "gankit", infra.template_body("base"), {}, None)
