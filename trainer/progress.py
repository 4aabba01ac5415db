"""Progress for long work that reads well on a terminal and in a log file.

On a TTY one line is redrawn in place; anywhere else (a CloudWatch stream, a file)
a full line is printed every `log_every` seconds, so logs stay grep-able.
"""

import sys
import time


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Progress:
    """Counts work done out of `total` and reports rate and ETA.

    `fmt` turns a count into text (e.g. `format_bytes`); `extra` in `update`
    appends fields such as losses. With `warmup` the rate (and so the ETA) is measured from the first
    update on: compiled work's first call is mostly compiling, which the calls after it do not pay.
    """

    def __init__(self, total, label="", stream=None, log_every=10.0, fmt=str, start=0, warmup=False):
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every = log_every
        self.fmt = fmt
        self.done = start
        self.t0 = self.last = time.monotonic()
        self.rate_from = None if warmup else (self.t0, start)  # (time, count) the rate is measured from
        self.shown = None  # the count last written, so close() never repeats a line
        self.closed = False
        self.drawn = ""  # the line now drawn on a TTY (without its newline), to redraw after a message
        self.extra = ""  # the last update's extra fields: close() draws the last count with them

    def update(self, n=1, extra=""):
        """Count `n` more; `extra` may be a callable, evaluated only when a line is due (also by `close`, so it
        must say this update's figures whenever it is called)."""
        self.done += n
        self.extra = extra
        now = time.monotonic()
        if self.rate_from is None:
            self.rate_from = (now, self.done)
        interval = 0.2 if self.tty else self.log_every
        if now - self.last >= interval or self.done >= (self.total or float("inf")):
            self.last = now
            self._write(self.line(extra() if callable(extra) else extra, now))

    def line(self, extra="", now=None):
        now = time.monotonic() if now is None else now
        since, counted = self.rate_from or (now, self.done)
        rate = (self.done - counted) / (now - since) if now > since else 0.0
        parts = [self.label] if self.label else []
        if self.total:
            pct = 100.0 * self.done / self.total
            parts.append(f"{self.fmt(self.done)}/{self.fmt(self.total)} ({pct:.0f}%)")
            if rate > 0:
                parts.append(f"ETA {format_duration((self.total - self.done) / rate)}")
        else:
            parts.append(self.fmt(self.done))
        if extra:
            parts.append(extra)
        return "  ".join(parts)

    def _write(self, text):
        self.shown = self.done
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.drawn = text
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def around(self, log):
        """`log`, made to print beside a bar redrawn on a TTY: the bar steps aside for the message and
        comes back under it (else the next redraw would erase a message printed on the bar's line)."""
        def say(*args, **kwargs):
            if not (self.tty and self.drawn and not self.closed):
                return log(*args, **kwargs)
            self.stream.write("\r\033[K")
            self.stream.flush()
            log(*args, **kwargs)
            self.stream.write(self.drawn)
            self.stream.flush()
        return say

    def close(self, extra=""):
        """End the report (its last count, with `extra` or else the last update's fields, then a newline on a
        TTY); again, it does nothing."""
        if self.closed:
            return
        self.closed = True
        if self.shown != self.done or extra:
            extra = extra or self.extra
            self._write(self.line(extra() if callable(extra) else extra))
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
