"""The AWS calls a code path really makes, and whether infra/base.yaml's roles allow them.

moto does not enforce IAM, so a call a role lacks would only show on real AWS, as a job that fails hours in.
`recording()` records every botocore call made in this process (and, through `RECORDER_PATH` on PYTHONPATH,
in subprocesses); `requests()` turns each into the IAM requests AWS authorizes (action, resource ARN,
condition keys), including what boto3's transfer manager does implicitly (HeadObject is s3:GetObject, a
multipart upload's parts are s3:PutObject, a copy reads its source); `role_statements()` resolves a role's
policies (managed and inline) as CloudFormation would; `denied()` evaluates them as IAM does (an explicit
Deny wins, else some Allow must match action, resource and every condition).
"""

import contextlib
import json
import os
import re
from pathlib import Path

ACCOUNT = "123456789012"  # moto's account
RECORD_ENV = "GANKIT_IAM_RECORD"  # a JSONL file that subprocesses append their calls to
RECORDER_PATH = Path(__file__).resolve().parent / "iam_recorder"  # its sitecustomize.py records in subprocesses

# Only the parameters that decide the IAM request (never a body or a token).
KEPT = ("Bucket", "Key", "Prefix", "Delimiter", "VersionId", "CopySource", "Delete", "Name", "TrainingJobName",
        "WithDecryption")


def _kept(params: dict) -> dict:
    kept = {k: v for k, v in params.items() if k in KEPT}
    if "Delete" in kept:
        kept["Delete"] = {"Objects": [{"Key": o["Key"], **({"VersionId": o["VersionId"]} if "VersionId" in o else {})}
                                      for o in kept["Delete"].get("Objects", [])]}
    return kept


def install(sink):
    """Record every botocore API call (service, operation, region, kept parameters) into `sink(record)`;
    returns a function that undoes it."""
    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def _make_api_call(self, operation_name, api_params):
        sink({"service": self.meta.service_model.service_name, "operation": operation_name,
              "region": self.meta.region_name, "params": _kept(api_params)})
        return original(self, operation_name, api_params)

    BaseClient._make_api_call = _make_api_call
    return lambda: setattr(BaseClient, "_make_api_call", original)


@contextlib.contextmanager
def recording(tmp_path, monkeypatch=None):
    """Yields a list that fills with the calls made here and in subprocesses started with this environment."""
    calls = []
    record_file = Path(tmp_path) / "iam-calls.jsonl"
    record_file.write_text("")
    undo = install(calls.append)
    if monkeypatch is not None:
        monkeypatch.setenv(RECORD_ENV, str(record_file))
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(RECORDER_PATH),
                                                                        os.environ.get("PYTHONPATH")])))
    try:
        yield calls
    finally:
        undo()
        calls += [json.loads(line) for line in record_file.read_text().splitlines() if line.strip()]


# --- calls -> IAM requests -----------------------------------------------------------------------

def _s3_object(bucket, key):
    return f"arn:aws:s3:::{bucket}/{key}"


def _copy_source(source) -> tuple[str, str, str | None]:
    if isinstance(source, dict):
        return source["Bucket"], source["Key"], source.get("VersionId")
    bucket, _, key = source.lstrip("/").partition("/")
    key, _, version = key.partition("?versionId=")
    return bucket, key, version or None


def requests(call: dict, context: dict | None = None) -> list[tuple[str, str, dict]]:
    """The IAM requests (action, resource ARN, condition keys) AWS authorizes for one recorded call.

    A call this does not know is an AssertionError: a new kind of call must be added here, and so be
    checked against the roles, before its code can pass the tests.
    """
    service, op, p = call["service"], call["operation"], call["params"]
    region = call.get("region") or "us-east-1"
    context = {"aws:SecureTransport": "true", **(context or {})}
    if service == "s3":
        bucket = p.get("Bucket")
        version = "Version" if p.get("VersionId") else ""
        if op in ("ListObjectsV2", "ListObjects"):
            return [("s3:ListBucket", f"arn:aws:s3:::{bucket}",
                     {**context, "s3:prefix": p.get("Prefix", ""), "s3:delimiter": p.get("Delimiter", "")})]
        if op in ("ListObjectVersions",):
            return [("s3:ListBucketVersions", f"arn:aws:s3:::{bucket}", {**context, "s3:prefix": p.get("Prefix", "")})]
        if op == "GetBucketLocation":
            return [("s3:GetBucketLocation", f"arn:aws:s3:::{bucket}", context)]
        if op in ("GetObject", "HeadObject"):
            return [(f"s3:GetObject{version}", _s3_object(bucket, p["Key"]), context)]
        if op in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"):
            return [("s3:PutObject", _s3_object(bucket, p["Key"]), context)]
        if op == "AbortMultipartUpload":
            return [("s3:AbortMultipartUpload", _s3_object(bucket, p["Key"]), context)]
        if op == "ListParts":
            return [("s3:ListMultipartUploadParts", _s3_object(bucket, p["Key"]), context)]
        if op == "DeleteObject":
            return [(f"s3:DeleteObject{version}", _s3_object(bucket, p["Key"]), context)]
        if op == "DeleteObjects":
            return [("s3:DeleteObjectVersion" if o.get("VersionId") else "s3:DeleteObject", _s3_object(bucket, o["Key"]),
                     context) for o in p["Delete"]["Objects"]]
        if op in ("CopyObject", "UploadPartCopy"):
            source_bucket, source_key, source_version = _copy_source(p["CopySource"])
            read = ("s3:GetObjectVersion" if source_version else "s3:GetObject", _s3_object(source_bucket, source_key),
                    context)
            return [read, ("s3:PutObject", _s3_object(bucket, p["Key"]), context)]
    if service == "ssm" and op == "GetParameter":
        name = p["Name"]
        return [("ssm:GetParameter", f"arn:aws:ssm:{region}:{ACCOUNT}:parameter{name if name.startswith('/') else '/' + name}",
                 context)]
    if service == "sagemaker" and op == "DescribeTrainingJob":
        # SageMaker's ARNs hold the job's name in lower case.
        return [("sagemaker:DescribeTrainingJob",
                 f"arn:aws:sagemaker:{region}:{ACCOUNT}:training-job/{p['TrainingJobName'].lower()}", context)]
    if service == "ecr" and op == "GetAuthorizationToken":
        return [("ecr:GetAuthorizationToken", "*", context)]
    if service == "sts" and op == "GetCallerIdentity":
        return []  # needs no permission
    raise AssertionError(f"{service}:{op} is a call iam_helpers.requests() does not know yet: add what IAM "
                         "authorizes for it, so the roles are checked against it")


# --- the roles -----------------------------------------------------------------------------------

def _resolve(value, names: dict):
    """CloudFormation's Ref, Fn::GetAtt and Fn::Sub, for what the base template's policies use."""
    if isinstance(value, list):
        return [_resolve(v, names) for v in value]
    if isinstance(value, dict):
        if set(value) == {"Fn::Sub"}:
            text = value["Fn::Sub"]
            return re.sub(r"\$\{([^}!]+)\}", lambda m: names[m.group(1)], text)
        if set(value) == {"Fn::GetAtt"}:
            attr = value["Fn::GetAtt"]
            return names[".".join(attr) if isinstance(attr, list) else attr]
        if set(value) == {"Ref"}:
            return names[value["Ref"]]
        return {k: _resolve(v, names) for k, v in value.items()}
    return value


def load_base():
    from cfnlint.decode import decode_str

    from launcher import infra

    template, errors = decode_str(infra.template_body("base"))
    assert not errors
    return template


def role_statements(role: str, bucket: str, region: str = "us-east-1", prebuilt_account: str = "763104351884",
                    template=None) -> list[dict]:
    """Every statement of `role` (SageMakerRole, InstanceRole or JupyterRole): its managed policies' and its own."""
    template = template or load_base()
    names = {"AWS::Partition": "aws", "AWS::Region": region, "AWS::AccountId": ACCOUNT, "Bucket.Arn": f"arn:aws:s3:::{bucket}",
             "PrebuiltImageAccount": prebuilt_account, "Bucket": bucket}
    resources = template["Resources"]
    properties = resources[role]["Properties"]
    statements = []
    for ref in properties.get("ManagedPolicyArns", []):
        statements += resources[ref["Ref"]]["Properties"]["PolicyDocument"]["Statement"]
    for policy in properties.get("Policies", []):
        statements += policy["PolicyDocument"]["Statement"]
    return [_resolve(s, names) for s in statements]


def bucket_policy(bucket: str, template=None) -> list[dict]:
    template = template or load_base()
    statements = template["Resources"]["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    return [_resolve(s, {"Bucket.Arn": f"arn:aws:s3:::{bucket}"}) for s in statements]


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def _like(pattern: str, value: str, case=True) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _with_variables(text: str, context: dict):
    """A policy variable such as ${ec2:SourceInstanceARN}, from the request's context (None if absent)."""
    missing = []

    def value(m):
        if m.group(1) not in context:
            missing.append(m.group(1))
            return ""
        return context[m.group(1)]

    done = re.sub(r"\$\{([^}]+)\}", value, text)
    return None if missing else done


def _condition_holds(condition: dict, context: dict) -> bool:
    for operator, tests in condition.items():
        for key, wanted in tests.items():
            have = context.get(key)
            if have is None:
                if operator.endswith("IfExists"):
                    continue
                return False
            wanted = [_with_variables(str(w), context) for w in _listed(wanted)]
            base = operator.removesuffix("IfExists")
            if base == "StringEquals" or base == "Bool":
                ok = any(w is not None and str(have) == w for w in wanted)
            elif base == "StringLike":
                ok = any(w is not None and _like(w, str(have)) for w in wanted)
            elif base == "StringNotEquals":
                ok = all(w is not None and str(have) != w for w in wanted)
            else:
                raise AssertionError(f"condition operator {operator} is not evaluated by iam_helpers yet")
            if not ok:
                return False
    return True


def _matches(statement: dict, action: str, resource: str, context: dict) -> bool:
    if not any(_like(a, action, case=False) for a in _listed(statement["Action"])):
        return False
    if not any(_like(r, resource) for r in _listed(statement["Resource"])):
        return False
    return _condition_holds(statement.get("Condition", {}), context)


def allowed(statements: list[dict], action: str, resource: str, context: dict, deny: list[dict] = ()) -> bool:
    if any(s["Effect"] == "Deny" and _matches(s, action, resource, context) for s in [*statements, *deny]):
        return False
    return any(s["Effect"] == "Allow" and _matches(s, action, resource, context) for s in statements)


def denied(statements: list[dict], calls, context: dict | None = None, deny: list[dict] = ()) -> list[str]:
    """The IAM requests of `calls` that `statements` do not allow, one line each."""
    refused = []
    for call in calls:
        for action, resource, keys in requests(call, context):
            if not allowed(statements, action, resource, keys, deny):
                refused.append(f"{action} on {resource} ({call['service']}:{call['operation']})")
    return sorted(set(refused))


def refused(statements: list[dict], wanted, deny: list[dict] = ()) -> list[str]:
    """The (action, resource, context) requests in `wanted` that `statements` do not allow, one line each."""
    return sorted({f"{action} on {resource}" for action, resource, keys in wanted
                   if not allowed(statements, action, resource, {"aws:SecureTransport": "true", **keys}, deny)})


def granted_actions(statements: list[dict]) -> set[str]:
    return {a for s in statements if s["Effect"] == "Allow" for a in _listed(s["Action"])}


def unused(statements: list[dict], wanted) -> list[str]:
    """The actions `statements` allow that no request in `wanted` (action, resource, context) needs."""
    needed = {action for action, _, _ in wanted}
    return sorted(a for a in granted_actions(statements) if not any(_like(a, n, case=False) for n in needed))


def image_pull(image: str) -> list[tuple[str, str, dict]]:
    """What pulling an ECR image (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG) asks IAM for."""
    registry, _, rest = image.partition("/")
    account, region = registry.split(".")[0], registry.split(".")[3]
    repository = rest.split("@")[0].split(":")[0]
    arn = f"arn:aws:ecr:{region}:{account}:repository/{repository}"
    return [("ecr:GetAuthorizationToken", "*", {})] + [
        (action, arn, {}) for action in ("ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage")]


def aws_cli_calls(script: str) -> list[tuple[str, str, dict]]:
    """The requests of each `aws` command in a user-data script: only `aws s3 cp` is known (a download is
    HeadObject and GetObject, an upload PutObject); any other `aws` command fails until it is added here."""
    import shlex

    wanted = []
    for line in script.splitlines():
        words = shlex.split(line, comments=True) if "aws " in line else []
        for i, word in enumerate(words):
            if word != "aws":
                continue
            args = [w for w in words[i + 1:] if not w.startswith("--")]
            assert args[:2] == ["s3", "cp"], f"an `aws` command iam_helpers does not know: {line.strip()}"
            source, dest = args[2:4]
            for uri, action in ((source, "s3:GetObject"), (dest, "s3:PutObject")):
                if uri.startswith("s3://"):
                    wanted.append((action, "arn:aws:s3:::" + uri[len("s3://"):], {}))
    return wanted
