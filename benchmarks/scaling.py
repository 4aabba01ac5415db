"""Images/s as replicas are added: where scaling out starts to pay.

    python benchmarks/scaling.py [--preset projection] [--batch-size 64] [--images 4096] [--epochs 2]

Runs the real trainer (`python -m trainer train`) on a synthetic 28x28 dataset
and reads images/s of the last epoch from its metrics.jsonl:

- 1 replica (the default strategy);
- 2 replicas in one process (MirroredStrategy over 2 logical CPUs, or the GPUs);
- 2 worker processes on loopback (MultiWorkerMirroredStrategy, as on 2 instances);
- with a GPU: one GPU at growing batch sizes.

On a CPU the replicas share the same cores, so this measures the overhead of
the strategies rather than a speed-up; on GPUs it measures the speed-up.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def images_per_sec(output_dir: Path) -> float:
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["images_per_sec"]  # the last epoch: compiled, warm


def train(args, output_dir, batch_size, extra=(), env=None):
    cmd = [sys.executable, "-m", "trainer", "train", "--dataset", "mnist", "--data-dir", str(args.data),
           "--output-dir", str(output_dir), "--epochs", str(args.epochs), "--batch-size", str(batch_size),
           "--preset", args.preset, *extra]
    subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return images_per_sec(output_dir)


def two_workers(args, work: Path, batch_size) -> float:
    hosts = ["algo-1", "algo-2"]
    ports = []
    for _ in hosts:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    addresses = json.dumps({h: f"127.0.0.1:{p}" for h, p in zip(hosts, ports)})
    procs = []
    for host in hosts:
        config = work / host / "input" / "config"
        config.mkdir(parents=True)
        config.joinpath("hyperparameters.json").write_text(json.dumps({
            "dataset": "mnist", "data_dir": str(args.data), "epochs": str(args.epochs),
            "batch_size": str(batch_size), "preset": args.preset}))
        config.joinpath("resourceconfig.json").write_text(json.dumps({"hosts": hosts, "current_host": host}))
        env = dict(os.environ, PYTHONPATH=str(ROOT), GANKIT_SM_ROOT=str(work / host), GANKIT_WORKER_ADDRESSES=addresses)
        procs.append(subprocess.Popen([sys.executable, "-m", "trainer.contract"], cwd=ROOT, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    if any(p.wait() for p in procs):
        raise SystemExit("a worker failed")
    return images_per_sec(work / "algo-1" / "output" / "data")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="projection")
    parser.add_argument("--batch-size", type=int, default=64, help="per replica")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    from tests.data_helpers import make_idx_dataset

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        args.data = make_idx_dataset(work / "data", n_train=args.images, n_test=64)
        gpus = _gpu_count()
        b = args.batch_size
        print(f"preset {args.preset}, {args.images} images 28x28x1, {args.epochs} epochs, batch {b} per replica, "
              f"{os.cpu_count()} CPU cores, {gpus} GPU(s)")
        one = train(args, work / "one", b)
        print(f"  1 replica                        global batch {b:5d}  {one:8.1f} img/s  1.00x")
        env = None if gpus > 1 else {"GANKIT_CPU_DEVICES": "2"}
        if gpus != 1:
            mirrored = train(args, work / "mirrored", b, ["--strategy", "mirrored"], env)
            print(f"  2 replicas, 1 process (mirrored) global batch {2 * b:5d}  {mirrored:8.1f} img/s  {mirrored / one:.2f}x")
        workers = two_workers(args, work / "workers", b)
        print(f"  2 workers (multiworker)          global batch {2 * b:5d}  {workers:8.1f} img/s  {workers / one:.2f}x")
        if gpus:
            for batch in (64, 128, 256, 512, 1024):
                ips = train(args, work / f"gpu-{batch}", batch)
                print(f"  1 GPU                            batch {batch:5d}  {ips:8.1f} img/s")


def _gpu_count() -> int:
    out = subprocess.run([sys.executable, "-c", "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"],
                         capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0


if __name__ == "__main__":
    main()
