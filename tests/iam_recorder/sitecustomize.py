"""Put on PYTHONPATH by tests/iam_helpers.recording(): every botocore call of this process is appended to
$GANKIT_IAM_RECORD, so a subprocess's calls are checked against the roles like the test's own."""

import os

if os.environ.get("GANKIT_IAM_RECORD"):
    import importlib.util
    import json

    _spec = importlib.util.spec_from_file_location(
        "_gankit_iam_helpers", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "iam_helpers.py"))
    _helpers = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_helpers)

    def _append(record, path=os.environ["GANKIT_IAM_RECORD"]):
        with open(path, "a") as f:
            f.write(json.dumps(record, default=str) + "\n")

    _helpers.install(_append)
