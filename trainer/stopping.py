"""Train until done or stopped: SIGTERM and Ctrl-C become a checkpoint and a clean exit.

Shared by `python -m trainer train` (trainer/cli.py) and the container's `train`
(trainer/contract.py), below both so neither imports the other.
"""

import contextlib

from trainer.config import TrainConfig
from trainer.errors import Stopped, signal_name


def train_until_stopped(cfg: TrainConfig, resume: str | None = None) -> dict:
    """Train, turning SIGTERM (spot interruptions, `launcher stop`), Ctrl-C and SIGHUP (the terminal closed)
    into a checkpoint and a clean stop; a SIGHUP someone chose to ignore (`nohup`) stays ignored.
    `resume` says how a stop is resumed where the same command would not (a launcher job: "`launcher
    submit --resume JOB` continues it").

    The loop polls the flag after every step. After the last step it is not
    polled: the export and the final report are short and complete-or-invisible,
    so they finish, and we say so. A second Ctrl-C interrupts at once.
    """
    import signal
    import sys
    import threading

    from trainer.errors import RESUME_BY_HAND
    from trainer.train import train as run

    stop = threading.Event()
    with _stop_on_signals(stop) as received:
        summary = run(cfg, stop_requested=stop.is_set, resume_hint=resume or RESUME_BY_HAND)
    first = received[0] if received else signal.SIGTERM
    name = signal_name(first)
    if summary["stopped"]:
        stopped = Stopped(f"stopped by {name} at step {summary['steps']}; a checkpoint is written and "
                          f"{resume or 'the same command resumes'}")
        stopped.exit_code = 128 + first  # as a shell reports it: 143 SIGTERM, 130 Ctrl-C, 129 SIGHUP
        raise stopped
    if received:
        print(f"note: {name} arrived during the export after the last step; the export finished first, "
              "so the run is complete", file=sys.stderr)
    return summary


@contextlib.contextmanager
def _stop_on_signals(stop):
    """In the block SIGTERM, SIGINT and SIGHUP (unless ignored) set `stop`; yields the list of those received."""
    import signal

    terminals = _terminals()  # now: once the terminal hangs up, isatty says no
    received = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if signum == signal.SIGHUP:
            _leave_the_terminal(terminals)  # it is gone: the checkpoint's lines must not fail on it

    handled = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGHUP] if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN else [])
    previous = {s: signal.signal(s, on_signal) for s in handled}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _terminals() -> list[int]:
    """Which of stdout and stderr are a terminal."""
    import os

    found = []
    for fd in (1, 2):
        try:
            if os.isatty(fd):
                found.append(fd)
        except OSError:
            pass
    return found


def _leave_the_terminal(fds):
    """Point `fds` (stdout and stderr where they were a terminal) at /dev/null: after SIGHUP a write there
    fails with EIO. A log file or pipe keeps its lines."""
    import os

    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(null, fd)
    finally:
        os.close(null)
