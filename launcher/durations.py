"""`2h`, `90m`, `1h30m`, `45s`, `3600` -> seconds."""

import re

from trainer.errors import UsageError

_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text, flag="--max-run") -> int:
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+", value):
        seconds = int(value)
    elif value and _PART.sub("", value) == "":
        seconds = round(sum(float(n) * _UNIT[u] for n, u in _PART.findall(value)))
    else:
        raise UsageError(f"{flag} {text!r} is not a duration; write e.g. 2h, 90m, 1h30m or 3600 (seconds)")
    if seconds <= 0:
        raise UsageError(f"{flag} {text!r} must be longer than zero")
    return seconds


def format_hms(seconds) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
