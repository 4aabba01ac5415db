"""Train until done or stopped: SIGTERM and Ctrl-C become a checkpoint and a clean exit.

Shared by `python -m trainer train` (trainer/cli.py) and the container's `train`
(trainer/contract.py), below both so neither imports the other.
"""

from trainer.config import TrainConfig
from trainer.errors import Stopped


def train_until_stopped(cfg: TrainConfig) -> dict:
    """Train, turning SIGTERM (spot interruptions, `launcher stop`) and Ctrl-C into a checkpoint and a clean stop.

    The loop polls the flag after every step. After the last step it is not
    polled: the export and the final report are short and complete-or-invisible,
    so they finish, and we say so. A second Ctrl-C interrupts at once.
    """
    import signal
    import sys
    import threading

    from trainer.train import train as run

    stop = threading.Event()
    received = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        summary = run(cfg, stop_requested=stop.is_set)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    name = "Ctrl-C (SIGINT)" if received and received[0] == signal.SIGINT else "SIGTERM"
    if summary["stopped"]:
        stopped = Stopped(f"stopped by {name} at step {summary['steps']}; a checkpoint is written and the same "
                          "command resumes")
        if name != "SIGTERM":
            stopped.exit_code = 130  # 128 + SIGINT, as a shell reports it
        raise stopped
    if received:
        print(f"note: {name} arrived during the export after the last step; the export finished first, "
              "so the run is complete", file=sys.stderr)
    return summary
