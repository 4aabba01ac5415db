"""S3 failures as one line each: "after N attempts" only when botocore retried, the fix for missing credentials."""


import pytest

from tests.aws_helpers import no_credentials_anywhere
from tests.test_s3_storage import answer_503_first, bucket  # noqa: F401 (bucket: the moto fixture)
from trainer import s3
from trainer.errors import NO_CREDENTIALS, GankitError, UsageError


def _message(call) -> GankitError:
    with pytest.raises(GankitError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return caught.value


def test_a_missing_bucket_is_named_once_not_retried(bucket, tmp_path):
    for call in (lambda: s3.read_bytes("s3://no-such-gankit-bucket/x.json"),
                 lambda: s3.list_objects("s3://no-such-gankit-bucket/runs"),
                 lambda: s3.write_bytes("s3://no-such-gankit-bucket/x.json", b"{}")):
        error = _message(call)
        assert "attempts" not in str(error) and "no such bucket" in str(error)
        assert "s3://no-such-gankit-bucket/" in str(error)


def test_a_missing_object_is_not_retried(bucket, tmp_path):
    error = _message(lambda: s3.download_file(bucket + "/nothing/here.bin", tmp_path / "here.bin"))
    assert str(error) == f"S3 download of {bucket}/nothing/here.bin failed: no such object"
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_a_bad_bucket_name_is_a_usage_error_on_one_line(bucket):
    error = _message(lambda: s3.read_bytes("s3://bad bucket/x.json"))
    assert isinstance(error, UsageError) and "attempts" not in str(error)
    assert 'Invalid bucket name "bad bucket"' in str(error)


def test_missing_credentials_are_a_usage_error_with_the_fix(monkeypatch, tmp_path):
    no_credentials_anywhere(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3.client.cache_clear()
    try:
        for call in (lambda: s3.read_bytes("s3://b/x.json"), lambda: s3.list_objects("s3://b/runs"),
                     lambda: s3.upload_file(__file__, "s3://b/x.py"),
                     lambda: s3.download_file("s3://b/x.bin", tmp_path / "x.bin")):
            error = _message(call)
            assert isinstance(error, UsageError) and error.exit_code == 2 and str(error) == NO_CREDENTIALS
    finally:
        s3.client.cache_clear()


def test_retried_errors_say_how_many_attempts(bucket, monkeypatch):
    monkeypatch.setattr(s3, "MAX_ATTEMPTS", 3)
    s3.client.cache_clear()
    answer_503_first(s3.client(), times=100, operation="GetObject")
    error = _message(lambda: s3.read_bytes(bucket + "/x.json"))
    assert str(error).startswith(f"S3 read of {bucket}/x.json failed after 3 attempts: SlowDown")


def test_a_download_whose_reads_keep_timing_out_is_one_line_and_leaves_nothing(bucket, tmp_path):
    # The object's body timing out midway, every time: s3transfer tried again to its limit and raised its own
    # RetriesExceededError, which no handler knew: a traceback, where every other S3 failure is one line.
    from botocore.exceptions import ReadTimeoutError

    s3.write_bytes(bucket + "/runs/j/output/generator/generator.keras", b"x" * 4096)

    class CutOff:
        def read(self, *_):
            raise ReadTimeoutError(endpoint_url="https://s3.us-east-1.amazonaws.com/")

        def close(self):
            pass

    def cut_off(parsed, **_):
        parsed["Body"] = CutOff()

    s3.client().meta.events.register("after-call.s3.GetObject", cut_off)
    try:
        error = _message(lambda: s3.download_file(bucket + "/runs/j/output/generator/generator.keras",
                                                  tmp_path / "generator.keras"))
    finally:
        s3.client().meta.events.unregister("after-call.s3.GetObject", cut_off)
    assert str(error) == (f"S3 download of {bucket}/runs/j/output/generator/generator.keras failed after 5 attempts: "
                          'Read timeout on endpoint URL: "https://s3.us-east-1.amazonaws.com/"')
    assert list(tmp_path.iterdir()) == []  # no partial file: the next pull fetches it whole
