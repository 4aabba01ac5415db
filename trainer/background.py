"""One job at a time on a thread beside training, its error raised in the training thread.

CheckpointWriter (checkpoints) and OutputPublisher (run_storage) use it: the thread is not a
daemon, so a process that ends for another reason still finishes the job in flight, and a
job's exception is kept and raised by the next `wait` rather than printed as a thread's traceback.
"""

import threading


class Background:
    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, job, *args, name: str):
        """Run job(*args) on a new thread; the caller has waited for the previous one."""
        self._thread = threading.Thread(target=self._run, args=(job, args), name=name)
        self._thread.start()

    def _run(self, job, args):
        try:
            job(*args)
        except BaseException as e:  # raised again in the training thread
            self._error = e

    def wait(self):
        """Until the job in flight is done; then its error, once, if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
