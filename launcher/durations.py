"""`2h`, `90m`, `1h30m`, `45s`, `3600` -> seconds."""

import math
import re

from trainer.errors import UsageError

_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}
MAX_SECONDS = 28 * 86400  # SageMaker's longest MaxRuntimeInSeconds; EC2 jobs and Jupyter keep to it too


def parse_duration(text, flag="--max-run") -> int:
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+", value):
        seconds = float(value)
    elif value and _PART.sub("", value) == "":
        seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(value))
    else:
        raise UsageError(f"{flag} {text!r} is not a duration; write e.g. 2h, 90m, 1h30m or 3600 (seconds)")
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise UsageError(f"{flag} {_short(text)} is longer than 28 days, the most a job may run "
                         "(SageMaker's own limit); give e.g. 12h or 7d")
    if round(seconds) <= 0:
        raise UsageError(f"{flag} {text!r} must be longer than zero")
    return round(seconds)


def _short(text) -> str:
    text = str(text)
    return repr(text if len(text) <= 24 else text[:20] + "...")


def format_hms(seconds) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
