"""A SageMaker stop the trainer is never told of, turned into the SIGTERM it handles.

In script mode AWS's training toolkit runs the trainer as a child process and does not pass on
the SIGTERM SageMaker sends when a job is stopped (aws/sagemaker-training-toolkit#125), so
`launcher stop` would keep only the last periodic checkpoint. While a SageMaker job trains, a
thread asks DescribeTrainingJob every POLL_SECONDS; once the job is Stopping it sends this
process SIGTERM, which writes a checkpoint and exits 143 as a delivered signal would (SageMaker
waits 120 s before it kills the container). SageMaker names the job in TRAINING_JOB_NAME (the
launcher's request also sets GANKIT_JOB and AWS_DEFAULT_REGION); off SageMaker nothing runs.
"""

import contextlib
import os
import signal
import sys
import threading

POLL_SECONDS = 15.0


def _sigterm_this_process():
    os.kill(os.getpid(), signal.SIGTERM)


def _say(message: str):
    print(f"gankit: {message}", file=sys.stderr, flush=True)


def watch(job: str, region: str | None, done: threading.Event, every: float = POLL_SECONDS,
          on_stop=_sigterm_this_process, log=_say):
    """Until `done`: ask SageMaker for `job`'s status every `every` s and call `on_stop()` once it is
    Stopping. A question SageMaker refuses (a role without sagemaker:DescribeTrainingJob) ends the
    watch with one line; the job trains on either way."""
    import boto3

    from trainer.errors import aws_error

    client = boto3.client("sagemaker", region_name=region)
    while not done.wait(every):
        try:
            status = client.describe_training_job(TrainingJobName=job)["TrainingJobStatus"]
        except Exception as e:  # noqa: BLE001 (any failure: say it once, and let training go on)
            known = aws_error(e)
            log(f"cannot ask SageMaker whether {job} is stopping ({known or ' '.join(str(e).split())}); "
                "a stop keeps only the last periodic checkpoint")
            return
        if status == "Stopping":
            log(f"SageMaker is stopping {job}: writing a checkpoint")
            on_stop()
            return


@contextlib.contextmanager
def stop_watcher(environ=os.environ, **kwargs):
    """Watch for a stop while the block runs, on SageMaker only."""
    job = environ.get("TRAINING_JOB_NAME") or environ.get("GANKIT_JOB")
    if not job:
        yield
        return
    done = threading.Event()
    thread = threading.Thread(target=watch, args=(job, environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION"),
                                                  done), kwargs=kwargs, name="sagemaker-stop", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
