"""How many steps the next compiled call runs.

Steps per compiled call are chosen so that one call takes about TARGET_CALL_SECONDS:
long enough that Python is off the hot path, short enough that SIGTERM and
--checkpoint-minutes are answered within seconds.
"""

import time

TARGET_CALL_SECONDS = 1.0
MAX_STEPS_PER_CALL = 4096  # also the size of JAX's per-call loss buffer (trainer/step_jax.py)


class Pacer:
    """How many steps the next compiled call runs: about TARGET_CALL_SECONDS of work, in powers of two."""

    def __init__(self, target=TARGET_CALL_SECONDS, cap=MAX_STEPS_PER_CALL):
        self.target, self.cap = target, cap
        self.seconds_per_step = None
        self.calls = 0

    def steps(self, left: int, seconds_left: float | None = None) -> int:
        """Steps for the next call: never past `left` steps, nor (roughly) past `seconds_left`."""
        if self.seconds_per_step is None:
            n = 1  # the first call compiles: measure before growing
        else:
            budget = self.target if seconds_left is None else max(0.0, min(self.target, seconds_left))
            n = _power_of_two(max(1, int(budget / max(self.seconds_per_step, 1e-9))))
        return max(1, min(n, left, self.cap))

    def record(self, n: int, seconds: float):
        self.calls += 1
        if self.calls >= 2 or n > 1:  # the first call's time is mostly compilation
            rate = seconds / n
            self.seconds_per_step = rate if self.seconds_per_step is None else 0.5 * (self.seconds_per_step + rate)

    def timed(self, fn, n):
        t0 = time.monotonic()
        out = fn()
        self.record(n, time.monotonic() - t0)
        return out


def _power_of_two(n: int) -> int:
    return 1 << (n.bit_length() - 1)
