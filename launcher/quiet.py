"""TensorFlow's start-up chatter: kept in every job's log, hidden from what a launcher user reads.

TensorFlow's C++ side logs through absl (`I0000 00:00:... port.cc:153] oneDNN ...`, `E0000 ...
cuda_platform.cc:52] failed call to cuInit` on a machine without a GPU, Grappler's `remapper
failed`), some of it before its log level is even read, straight to file descriptor 2. None of it
is for the user: `launcher logs` drops those lines (`--verbose` keeps them), and the launcher's own
commands that load TensorFlow catch descriptor 2 while they do and pass on only the rest.
"""

import contextlib
import os
import re
import sys
import tempfile

LEVEL = "TF_CPP_MIN_LOG_LEVEL"
_set_here = False  # whether quiet_this_process set LEVEL (so trainer subprocesses do not inherit it)


def quiet_this_process():
    """The launcher's own TensorFlow (pull, generate, evaluate): warnings and info off, unless the user chose."""
    global _set_here
    if LEVEL not in os.environ:
        os.environ[LEVEL], _set_here = "2", True


def trainer_env(env: dict) -> dict:
    """A trainer subprocess's environment: TensorFlow logs as the user would have it, so the job's log
    keeps everything (`launcher logs --verbose` shows it)."""
    if _set_here:
        env.pop(LEVEL, None)
    return env


NOISE = re.compile(
    r"^\s*(?:"
    r"[IWEF]\d{4} \d\d:\d\d:\d+(?:\.\d+)?\s+\d+ [\w./-]+:\d+\]"  # absl: I/W/E/F, date, time, thread, file:line]
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
    r"|(?:WARNING|INFO):(?:absl|tensorflow):"  # TensorFlow's Python loggers
    r")")


def is_noise(line: str) -> bool:
    return bool(NOISE.match(line))


class LineFilter:
    """An `echo(text, nl=True)` for backends' `logs`: passes whole lines on, drops the noise.

    The local backend sends raw chunks (nl=False), so a partial line waits for its end; `flush`
    sends what is left when the log is done.
    """

    def __init__(self, echo):
        self.echo, self.tail = echo, ""

    def __call__(self, text="", nl=True, **kwargs):
        self.tail += str(text) + ("\n" if nl else "")
        *lines, self.tail = self.tail.split("\n")
        for line in lines:
            if not is_noise(line):
                self.echo(line)

    def flush(self):
        if self.tail and not is_noise(self.tail):
            self.echo(self.tail)
        self.tail = ""


def log_echo(echo, verbose: bool):
    """The echo `launcher logs` hands a backend: everything with --verbose, else without the noise."""
    return echo if verbose else LineFilter(echo)


@contextlib.contextmanager
def tensorflow_quietly():
    """Run a block that loads TensorFlow with descriptor 2 caught; afterwards, replay what is not noise.

    Python's own writes to sys.stderr in the block are caught and replayed too, in order.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (an embedding host): nothing to catch
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines(keepends=True):
                if not is_noise(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def start_tensorflow():
    """Import TensorFlow and touch a device with descriptor 2 caught: the start-up lines (and the cuInit
    error of a machine without a GPU) come now and are dropped, so later progress shows live. Where Keras
    runs on JAX (KERAS_BACKEND=jax, or an install with `gankit[jax]` and no TensorFlow) there is no
    TensorFlow to start: nothing is imported."""
    import importlib.util

    from trainer.backend import default_framework

    if default_framework() != "tensorflow" or importlib.util.find_spec("tensorflow") is None:
        return
    with tensorflow_quietly():
        import tensorflow as tf

        tf.zeros(1)
