"""The training user data, run here for real: the bootstrap installs the project's wheel from
(moto) S3 into a Python, runs the job's runner, which trains a few steps into the run prefix,
and shuts the machine down (stubbed `shutdown`, recorded) whatever happens."""

import hashlib
import json
import os
import shutil
import site
import stat
import subprocess
import sys
import textwrap
import uuid
import zipfile
from pathlib import Path

import boto3
import pytest

from launcher import instances, train_userdata
from launcher.remote import train_job
from tests.data_helpers import make_idx_dataset
from trainer import layout, s3
from trainer.dataset_staging import stage_dataset

pytestmark = pytest.mark.slow

# The DLAMI has the AWS CLI; where this machine lacks it, `aws s3 cp SRC DST` through boto3 stands in.
AWS_STUB = textwrap.dedent(f"""\
    #!{sys.executable}
    import sys
    import boto3
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    assert args[:2] == ["s3", "cp"], args
    src, dst = args[2:4]
    split = lambda uri: uri[len("s3://"):].split("/", 1)
    if src.startswith("s3://"):
        boto3.client("s3").download_file(*split(src), dst)
    else:
        boto3.client("s3").upload_file(src, *split(dst))
    """)



def _stub(folder: Path, name: str, text: str):
    path = folder / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def machine(tmp_path):
    """A stand-in for the instance: the real AWS CLI (which honours AWS_ENDPOINT_URL, so it talks to
    moto), stub shutdown/curl/systemctl on PATH, a Python that has the dependencies."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if not shutil.which("aws"):
        _stub(bin_dir, "aws", AWS_STUB)
    _stub(bin_dir, "shutdown", f'#!/bin/sh\necho "$*" >> {tmp_path}/shutdown.calls\n')
    _stub(bin_dir, "curl", "#!/bin/sh\nexit 7\n")  # no instance metadata here
    _stub(bin_dir, "systemctl", f'#!/bin/sh\necho "$*" >> {tmp_path}/systemctl.calls\n')
    return tmp_path, bin_dir, venv_seeing_these_packages(tmp_path / "venv")


def units_dir(tmp_path: Path) -> Path:
    """Where the script writes its systemd units here (/etc/systemd/system on the instance)."""
    folder = tmp_path / "units"
    folder.mkdir(exist_ok=True)
    return folder


def venv_seeing_these_packages(folder: Path) -> Path:
    """A venv that sees the packages this Python has (TensorFlow etc.) but not this checkout: the
    project must come from the wheel the script installs. `--system-site-packages` would not do:
    run from a venv (CI's, a newcomer's), it shows the base interpreter's packages, not the venv's.
    A .pth file adds this interpreter's site-packages as plain path entries (their own .pth files,
    such as the editable install's, are not run). pip comes from there too: it installs into the
    venv it runs in, and skipping ensurepip saves seconds."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python3"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "_gankit_test_parent.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def new_bucket() -> str:
    root = f"s3://gankit-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=s3.split_s3(root)[0])
    return root


def boot_with_wheel(root: str, job: str, **fields) -> train_userdata.TrainBoot:
    """The boot of job `job`, its wheel uploaded as `launcher submit` does."""
    run = layout.run_prefix(root, job)
    wheel_uri, wheel_sha256 = instances.upload_wheel(run)
    return train_userdata.TrainBoot(job_uri=train_job.job_uri(root, job), wheel_uri=wheel_uri, wheel_sha256=wheel_sha256,
                                    setup_log_uri=f"{run}/setup.log", region="us-east-1", max_run=600, **fields)


def boot_without_wheel(root: str) -> train_userdata.TrainBoot:
    """A boot whose wheel is missing: the first boot fails at the download."""
    return train_userdata.TrainBoot(job_uri=f"{root}/runs/x/job.json", wheel_uri=f"{root}/runs/x/missing.whl",
                                    wheel_sha256="0" * 64, setup_log_uri=f"{root}/runs/x/setup.log",
                                    region="us-east-1", max_run=60)


def run_user_data(machine, boot, python=None, timeout=300, cwd=None) -> subprocess.CompletedProcess:
    """`boot`'s user data, its files moved under tmp_path, run as the instance would with `python` (the machine's
    by default) as the one it finds."""
    tmp_path, bin_dir, machine_python = machine
    script = tmp_path / "user-data.sh"
    script.write_text(train_userdata.render(boot, log=str(tmp_path / "gankit-job.log"), work=str(tmp_path / "work"),
                                            units=str(units_dir(tmp_path))))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "KERAS_BACKEND")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", GANKIT_PYTHON=str(python or machine_python), PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(["bash", str(script)], env=env, cwd=cwd, timeout=timeout, capture_output=True, text=True)


def spy_python(tmp_path: Path, python: Path, calls: Path, only: str = "*") -> Path:
    """A Python for the script that records its calls matching `only` (a shell pattern), then runs `python`."""
    spy = tmp_path / "spy-python"
    spy.write_text(f'#!/bin/sh\ncase "$*" in {only}) echo "$*" >> {calls};; esac\nexec {python} "$@"\n')
    spy.chmod(0o755)
    return spy


@pytest.mark.parametrize("framework", ["tensorflow", "jax"])
def test_user_data_installs_the_wheel_trains_and_shuts_down(aws_env, machine, framework):
    tmp_path, bin_dir, python = machine
    root = new_bucket()
    hyperparameters = {"dataset": "mnist", "epochs": "1", "batch_size": "16", "max_steps": "4", "preset": "seed"}
    if framework == "jax":  # XLA on CPU is slow at Conv2DTranspose gradients: a smaller run
        hyperparameters = {"dataset": "mnist", "epochs": "1", "batch_size": "8", "max_steps": "2",
                           "image_size": "16", "framework": "jax"}
    stage_dataset("mnist", layout.dataset_prefix(root, "mnist"),
                  data_dir=make_idx_dataset(tmp_path / "mnist", n_train=64, n_test=32), log=lambda m: None)
    run = layout.run_prefix(root, "ud1")
    boot = boot_with_wheel(root, "ud1", framework=framework)
    job = {"job": "ud1", "root": root, "data_uri": layout.dataset_prefix(root, "mnist"), "max_run": 600,
           "checkpoint_uri": f"{run}/checkpoints", "output_uri": f"{run}/output", "region": "us-east-1",
           "hyperparameters": hyperparameters}
    s3.write_bytes(train_job.job_uri(root, "ud1"), json.dumps(job).encode())
    done = run_user_data(machine, boot, timeout=600, cwd=tmp_path / "bin")
    other = "tensorflow" if framework == "jax" else "jax"
    script = (tmp_path / "user-data.sh").read_text()
    assert f'import {framework}"' in script and f'import {other}"' not in script
    setup_log = (tmp_path / "gankit-job.log").read_text()
    assert done.returncode == 0, setup_log[-3000:]

    # Installed from the wheel, not this checkout.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(python), "-c", "import launcher.remote.train_job as m; print(m.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env).stdout
    assert "site-packages" in where
    outputs = s3.list_objects(f"{run}/output")
    assert {"metrics.jsonl", "generator/generator.json"} <= set(outputs)
    assert json.loads(s3.read_bytes(f"{run}/output/run.json"))["framework"] == framework
    assert json.loads(s3.read_bytes(train_job.status_uri(root, "ud1")))["status"] == "Completed"
    assert "completed (exit code 0)" in s3.read_bytes(train_job.log_uri(root, "ud1")).decode()
    assert s3.read_bytes(f"{run}/setup.log")  # shipped at the end
    calls = (tmp_path / "shutdown.calls").read_text().splitlines()
    assert calls[0].startswith(f"-h +{train_userdata.shutdown_minutes(600)}") and calls[-1] == "-h now"


def test_a_broken_install_still_shuts_down(aws_env, machine):
    tmp_path, _, _ = machine
    root = new_bucket()
    done = run_user_data(machine, boot_without_wheel(root), timeout=120)
    assert done.returncode != 0
    assert (tmp_path / "shutdown.calls").read_text().splitlines()[-1] == "-h now"
    assert b"missing.whl" in s3.read_bytes(f"{root}/runs/x/setup.log")


def test_a_wheel_changed_in_the_bucket_is_never_installed_by_root(aws_env, machine):
    """The bucket is writable by every instance role (and whoever else holds write access); the user data
    carries the sha256 of the wheel the launcher built, and root installs only that wheel."""
    tmp_path, bin_dir, python = machine
    root = new_bucket()
    boot = boot_with_wheel(root, "ud3")
    wheel_uri = boot.wheel_uri
    original = s3.read_bytes(wheel_uri)
    assert hashlib.sha256(original).hexdigest() == boot.wheel_sha256
    # Someone replaces it before the instance boots: a wheel that still installs, with a payload added.
    tampered = tmp_path / "tampered.whl"
    tampered.write_bytes(original)
    with zipfile.ZipFile(tampered, "a") as z:
        z.writestr("launcher/remote/payload.py", "import os; os.system('id > /tmp/pwned')\n")
    s3.upload_file(tampered, wheel_uri)

    pip_log = tmp_path / "pip.calls"  # the Python the script uses records any pip call, then runs the real one
    done = run_user_data(machine, boot, python=spy_python(tmp_path, python, pip_log, only='*"-m pip"*'))
    log = (tmp_path / "gankit-job.log").read_text()
    assert done.returncode != 0
    assert "sha256" in log and "refusing to install" in log, log[-2000:]
    assert not [line for line in (pip_log.read_text().splitlines() if pip_log.exists() else [])
                if "install" in line and ".whl" in line]
    assert s3.read_bytes(train_job.status_uri(root, "ud3")) is None  # the runner never ran
    assert (tmp_path / "shutdown.calls").read_text().splitlines()[-1] == "-h now"


def test_the_hard_stop_comes_after_max_run_plus_setup_never_before():
    """The tests above check that the script schedules shutdown_minutes(); this checks its value: the
    instance may not go away before the job's whole --max-run of training after a slow first boot."""
    setup = train_userdata.SETUP_MINUTES
    assert setup >= 10  # a first boot that pip-installs TensorFlow takes minutes
    assert train_userdata.shutdown_minutes(90 * 60) == 90 + setup
    assert train_userdata.shutdown_minutes(90 * 60 + 1) == 91 + setup  # a part minute rounds up, not down


def test_no_job_runs_when_the_hard_stop_cannot_be_scheduled(aws_env, machine):
    """The scheduled shutdown is what ends a runner that hangs; if the OS refuses it (logind not answering
    at boot), the job must not start on a machine nothing would stop: the instance shuts down at once."""
    tmp_path, bin_dir, python = machine
    _stub(bin_dir, "shutdown", f'#!/bin/sh\necho "$*" >> {tmp_path}/shutdown.calls\n'
                               'case "$2" in +*) echo "Failed to schedule shutdown" >&2; exit 1;; esac\n')
    root = new_bucket()
    run = layout.run_prefix(root, "ud4")
    python_calls = tmp_path / "python.calls"  # the Python the script uses records every call
    done = run_user_data(machine, boot_with_wheel(root, "ud4"), python=spy_python(tmp_path, python, python_calls))
    assert done.returncode != 0
    assert not python_calls.exists()  # nothing installed, no runner started
    assert s3.read_bytes(train_job.status_uri(root, "ud4")) is None
    assert (tmp_path / "shutdown.calls").read_text().splitlines()[-1] == "-h now"
    assert b"could not schedule the hard stop" in s3.read_bytes(f"{run}/setup.log")


def test_a_restarted_training_instance_shuts_down_at_once(aws_env, machine):
    """User data runs once per instance: after a reboot (AWS maintenance, a stop and start) neither the runner
    nor the scheduled hard stop would come back, and the instance would bill until someone noticed. A unit,
    enabled before anything that can fail, shuts it down at every later boot."""
    import shlex

    tmp_path, bin_dir, _ = machine
    done = run_user_data(machine, boot_without_wheel(new_bucket()), timeout=120)
    units = units_dir(tmp_path)
    assert done.returncode != 0  # the wheel is missing: the first boot fails, after the guard is in place
    assert (tmp_path / "systemctl.calls").read_text().split() == ["enable", train_userdata.REBOOT_UNIT]
    unit = (units / train_userdata.REBOOT_UNIT).read_text()
    assert "WantedBy=multi-user.target" in unit and "Condition" not in unit  # every later boot, unconditionally

    # The next boot: systemd runs the unit's command.
    (tmp_path / "shutdown.calls").unlink()
    command = shlex.split(next(line for line in unit.splitlines() if line.startswith("ExecStart="))[len("ExecStart="):])
    assert command[0] == "/sbin/shutdown"
    subprocess.run([str(bin_dir / "shutdown"), *command[1:]], check=True)
    assert (tmp_path / "shutdown.calls").read_text().splitlines()[0].startswith("-h now")
