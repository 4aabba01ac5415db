"""Several GPUs or several hosts: which tf.distribute strategy to use, and who writes.

TensorFlow's strategies do the work; this module only picks one from what it finds:

    one device                  the default strategy (the single-device code path, no overhead)
    several GPUs on one host    MirroredStrategy
    several hosts               MultiWorkerMirroredStrategy, with TF_CONFIG built from SageMaker's
                                <GANKIT_SM_ROOT>/input/config/resourceconfig.json (hosts, current_host)
                                or SM_HOSTS / SM_CURRENT_HOST; workers talk on WORKER_PORT

`--strategy default|mirrored|multiworker` overrides the choice.

On JAX (`--framework jax`) several devices on one host train under
keras.distribution.DataParallel (variables replicated, each batch split across
the devices); several hosts are refused with one line: use TensorFlow there.

Batch and learning rate: `--batch-size` is per replica, so the global batch is batch size x replicas
and an epoch takes proportionally fewer steps. The learning rate is left as set: Adam's step size
does not grow with the batch the way SGD's does, and a GAN's balance between D and G is easily
upset by a larger one (pass `--lr` to change it).

Only the chief (worker 0) writes checkpoints, samples, metrics and the generator. The others save
their checkpoints to a temporary folder, as TensorFlow's multi-worker guide asks, and delete it.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import UsageError

STRATEGIES = ("auto", "default", "mirrored", "multiworker")
WORKER_PORT = 7777  # fixed, so every host can name every other one
MULTIWORKER_NEEDS_A_CLUSTER = ("--strategy multiworker needs TF_CONFIG or SageMaker's resourceconfig.json; "
                               "use --strategy auto on a single host")
JOIN_SECONDS = 600  # how long a worker waits for the others to start (GANKIT_JOIN_SECONDS: tests)


def sagemaker_hosts(root) -> tuple[list[str], str] | None:
    """(hosts, current host) from resourceconfig.json or SM_HOSTS/SM_CURRENT_HOST; None off SageMaker."""
    path = root / "input" / "config" / "resourceconfig.json"
    if path.exists():
        config = json.loads(path.read_text())
        return list(config["hosts"]), config["current_host"]
    if os.environ.get("SM_HOSTS") and os.environ.get("SM_CURRENT_HOST"):
        return list(json.loads(os.environ["SM_HOSTS"])), os.environ["SM_CURRENT_HOST"]
    return None


def tf_config(hosts: list[str], current: str, port: int = WORKER_PORT, addresses: dict | None = None) -> dict:
    """TF_CONFIG for MultiWorkerMirroredStrategy: every host a worker, the first one the chief.

    `addresses` maps a host to "address:port" where hosts share a machine (tests); SageMaker gives
    every host the same list in the same order, so all workers agree on who is who.
    """
    if current not in hosts:
        raise UsageError(f"current host {current!r} is not among the hosts {hosts}; check resourceconfig.json")
    addresses = addresses or {}
    workers = [addresses.get(h, f"{h}:{port}") for h in hosts]
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": hosts.index(current)}}


def export_tf_config(root) -> int:
    """Set TF_CONFIG from SageMaker's host list unless already set; returns the number of workers."""
    if not os.environ.get("TF_CONFIG"):
        found = sagemaker_hosts(root)
        if found and len(found[0]) > 1:
            addresses = json.loads(os.environ.get("GANKIT_WORKER_ADDRESSES", "{}"))  # tests: hosts on one machine
            os.environ["TF_CONFIG"] = json.dumps(tf_config(*found, addresses=addresses))
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


@dataclass(frozen=True)
class Placement:
    """Where a run trains, for either backend."""

    replicas: int
    kind: str  # the strategy's or distribution's class name, for logs and run.json
    strategy: object = None  # the tf.distribute strategy (TensorFlow only)
    chief: bool = True
    worker: int = 0
    workers: int = 1  # processes training together (MultiWorkerMirroredStrategy: hosts); they must stop at one step


def choose_placement(framework: str, name: str, root) -> Placement:
    if framework == "jax":
        return choose_jax_placement(name, root)
    strategy = choose_strategy(name, root)
    return Placement(strategy.num_replicas_in_sync, type(strategy).__name__, strategy, is_chief(strategy),
                     worker_id(strategy), worker_count(strategy))


def check_placement(framework: str, name: str, root):
    """The placements refused with one line whatever the devices: JAX on several hosts, which it cannot train
    on here, and --strategy multiworker with no cluster to join. Cheap (no backend import), so a run checks
    them before it loads or downloads any data (trainer/run_setup.py)."""
    workers = 0 if framework == "jax" and name == "multiworker" else export_tf_config(root)
    if framework == "jax" and (name == "multiworker" or workers > 1):
        raise UsageError("--framework jax trains on one host only (its GPUs via keras.distribution.DataParallel); "
                         "for several hosts use --framework tensorflow (MultiWorkerMirroredStrategy)")
    if name == "multiworker" and workers < 1:
        raise UsageError(MULTIWORKER_NEEDS_A_CLUSTER)


def choose_jax_placement(name: str, root) -> Placement:
    """One device, or keras.distribution.DataParallel over this host's GPUs; several hosts are refused."""
    check_placement("jax", name, root)
    import jax
    import keras

    devices = jax.devices()
    if len(devices) > 1 and (name == "mirrored" or (name == "auto" and devices[0].platform == "gpu")):
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=keras.distribution.list_devices()))
        return Placement(len(devices), "DataParallel")
    return Placement(1, "single device")


def choose_strategy(name: str, root):
    """The strategy `name` asks for ("auto": from the hosts and GPUs found)."""
    import tensorflow as tf

    workers = export_tf_config(root)
    if name == "multiworker" or (name == "auto" and workers > 1):
        if workers < 1:
            raise UsageError(MULTIWORKER_NEEDS_A_CLUSTER)
        return keeping_signal_handlers(lambda: joined_within(join_seconds(), tf.distribute.MultiWorkerMirroredStrategy,
                                                             failure=contract_failure(root)))
    devices = local_devices()
    if name == "mirrored" or (name == "auto" and len(devices) > 1 and devices[0].startswith("/gpu")):
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def local_devices() -> list[str]:
    """This host's GPUs, else its (logical) CPUs; GANKIT_CPU_DEVICES=N splits the CPU in N for tests and benchmarks."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [f"/gpu:{i}" for i in range(len(gpus))]
    return [f"/cpu:{i}" for i in range(len(tf.config.list_logical_devices("CPU")))]


def split_cpu():
    """Honour GANKIT_CPU_DEVICES before TensorFlow initialises its devices."""
    count = int(os.environ.get("GANKIT_CPU_DEVICES") or 0)
    if count > 1:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def is_chief(strategy) -> bool:
    resolver = getattr(strategy.extended, "_cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def keeping_signal_handlers(make):
    """make(), with Python's SIGTERM/SIGINT/SIGHUP handlers put back afterwards: MultiWorkerMirroredStrategy's
    coordination service installs its own SIGTERM handler (a preemption notifier gankit does not use), which
    silently took SIGTERM from trainer/stopping.py, so a stopped multi-host job wrote no checkpoint."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return make()
    names = [s for s in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, s)]
    kept = {getattr(signal, s): signal.getsignal(getattr(signal, s)) for s in names}
    try:
        return make()
    finally:
        for signum, handler in kept.items():
            if handler is not None:
                signal.signal(signum, handler)


def join_seconds() -> float:
    return float(os.environ.get("GANKIT_JOIN_SECONDS") or JOIN_SECONDS)


def contract_failure(root) -> Path | None:
    """The container contract's output/failure (trainer/contract.py), where a job says why it failed; None off
    the contract (no input/config/ under `root`: a `train` run by hand), which has no such file to write."""
    root = Path(root)
    return root / "output" / "failure" if (root / "input" / "config").is_dir() else None


def joined_within(seconds: float, make, failure: Path | None = None):
    """make(), or the process ends (exit 1) when it has not returned after `seconds`. MultiWorkerMirroredStrategy
    waits inside TensorFlow, holding the GIL and ignoring SIGTERM, until every worker has joined: a worker that
    died at start left the others (billed hosts) waiting forever. A Python timer or signal handler never runs
    there; faulthandler's watchdog is a C thread, so it ends the process, silently (its output is a traceback),
    which is why the line below says beforehand what an exit here means. For the same reason the reason goes to
    `failure` (the contract's output/failure, which SageMaker shows as the job's FailureReason) beforehand
    too, and is taken back once make() returns or raises."""
    import faulthandler

    print(f"waiting for the other workers to join; if one has not within {seconds:g} s (it failed to start: "
          "see its log), this worker exits", flush=True)
    written = _write_failure(failure, f"the other workers did not all join within {seconds:g} s (one failed to "
                                      "start: see its log), so this worker exited; resubmit the job once it is fixed")
    sink = open(os.devnull, "w")
    faulthandler.dump_traceback_later(seconds, exit=True, file=sink)
    try:
        return make()
    finally:  # returned or raised: either way not the exit the failure file foretold
        faulthandler.cancel_dump_traceback_later()
        sink.close()
        if written:
            failure.unlink(missing_ok=True)


def _write_failure(path: Path | None, message: str) -> bool:
    """Whether `message` is now in `path`, whole (a full disk writes nothing: the log still says it)."""
    if path is None:
        return False
    from trainer.fsutil import atomic_write_text

    try:
        atomic_write_text(path, message + "\n")
    except OSError:
        return False
    return True


def worker_count(strategy) -> int:
    resolver = getattr(strategy.extended, "_cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(1, sum(len(cluster.get(kind, [])) for kind in ("chief", "worker")))


def worker_id(strategy) -> int:
    resolver = getattr(strategy.extended, "_cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None and resolver.task_type else 0
