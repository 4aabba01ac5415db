"""The user data of an EC2 training instance: a small bootstrap, run once by cloud-init.

It installs the project's wheel (from the run's S3 prefix) into the DLAMI's TensorFlow
environment, or a venv with TensorFlow when the image has none (with framework=jax: JAX
with CUDA instead of TensorFlow), and runs
`launcher.remote.train_job`, which does the rest. With an image the wheel only brings the
runner, and the image trains. The machine goes away whatever happens: a shutdown is
scheduled at max-run plus setup time before anything else (if it cannot be, nothing runs),
a unit shuts down at once any later boot (user data runs once per instance, so a restarted
instance would run neither the job nor that schedule), and the script's exit (success,
failure or a broken install alike) shuts it down; the instance's shutdown behaviour is
terminate. No secrets: everything else is read from S3 with the instance's role.
"""

import math
import re
import shlex
from dataclasses import dataclass

from trainer import TENSORFLOW_RANGE

SETUP_MINUTES = 30  # first boot: pip installs TensorFlow when the image lacks it
LOG = "/var/log/gankit-job.log"
WORK = "/opt/gankit-job"  # the wheel and the runner's scratch space
UNITS = "/etc/systemd/system"
REBOOT_UNIT = "gankit-job-reboot.service"
TENSORFLOW = f"tensorflow[and-cuda]{TENSORFLOW_RANGE}"  # the trainer extra's range, with NVIDIA's CUDA wheels
JAX = "jax[cuda12]>=0.4.30"  # framework=jax: JAX with NVIDIA's CUDA wheels (the wheel's jax extra)

# Older framework DLAMIs have a Python with TensorFlow; newer ones (and plain images) get a venv of our own.
PYTHONS = ("/opt/tensorflow/bin/python3", "/opt/conda/envs/tensorflow2_p310/bin/python3", "/opt/conda/bin/python3")
VENV = "/opt/gankit"


def find_python(candidates=PYTHONS, venv: str = VENV, module: str = "tensorflow") -> str:
    """Shell that sets $PY: the first candidate that imports `module` (the job's framework), else a venv
    (the framework is then pip-installed into it). A candidate without it is passed over: installing it
    there could clash with what the image's own environment pins. GANKIT_PYTHON (unset on instances) lets
    the tests run the scripts with a Python of their own."""
    q = shlex.quote
    return f"""\
PY="${{GANKIT_PYTHON:-}}"
if [ -z "$PY" ]; then
  for candidate in {' '.join(map(q, candidates))}; do
    if [ -x "$candidate" ] && "$candidate" -c "import {module}" >/dev/null 2>&1; then PY="$candidate"; break; fi
  done
fi
if [ -z "$PY" ]; then
  # Its own exit: bash's set -e ignores a failed apt-get inside the && list, and would go on without a venv.
  python3 -m venv {q(venv)} || {{ apt-get update -q && apt-get install -y -q python3-venv && python3 -m venv {q(venv)}; }} \
    || {{ echo "gankit: cannot make a venv at "{q(venv)}" (no Python here imports {module})"; exit 1; }}
  PY={q(venv)}/bin/python3
fi"""


FIND_PYTHON = find_python()


def fetch_verified(wheel_uri: str, sha256: str, dest: str) -> str:
    """Shell lines: download the wheel and stop unless it is the one the launcher built (its sha256)."""
    q = shlex.quote
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a sha256 digest: {sha256!r}")  # a bug: the launcher computes it
    return (f"aws s3 cp --only-show-errors {q(wheel_uri)} {q(dest)}\n"
            f'[ "$(sha256sum {q(dest)} | cut -d" " -f1)" = {sha256} ] || '
            f'{{ echo "gankit: {dest} does not have the sha256 the launcher recorded ({sha256}): '
            f'refusing to install it"; exit 1; }}')


@dataclass
class TrainBoot:
    job_uri: str  # s3://.../runs/JOB/job.json, read by the runner
    wheel_uri: str  # s3://.../runs/JOB/gankit-*.whl
    wheel_sha256: str  # of the wheel the launcher built: root installs nothing else
    setup_log_uri: str  # s3://.../runs/JOB/setup.log: this script's own log, shipped when it ends
    region: str
    max_run: int  # seconds of training; the runner stops the trainer then
    image: str | None = None  # a container image trains instead of the wheel
    framework: str = "tensorflow"  # the Keras backend the job trains with: only it is installed


def shutdown_minutes(max_run: int) -> int:
    return math.ceil(max_run / 60) + SETUP_MINUTES


def shutdown_unit(path: str, description: str, when: str, message: str, unless_exists: str = "") -> str:
    """Shell that writes a systemd unit shutting the instance down at boot (`when`: "now" or "+MINUTES"),
    unless the file `unless_exists` is there; the script enables it (it does not run at this boot)."""
    condition = f"ConditionPathExists=!{unless_exists}\n" if unless_exists else ""
    return f"""cat >{shlex.quote(path)} <<'UNIT'
[Unit]
Description={description}
{condition}After=systemd-logind.service
[Service]
Type=oneshot
ExecStart=/sbin/shutdown -h {when} "{message}"
[Install]
WantedBy=multi-user.target
UNIT"""


def render(boot: TrainBoot, log: str = LOG, work: str = WORK, units: str = UNITS) -> str:
    """The script; `log`, `work` and `units` move its files (tests run it in a temporary folder)."""
    q = shlex.quote
    wheel = f"{work}/{boot.wheel_uri.rsplit('/', 1)[-1]}"
    if boot.image:
        install = f'"$PY" -m pip install --quiet {q(wheel)}  # the runner only: the image trains'
    elif boot.framework == "jax":
        install = (f'"$PY" -c "import jax" 2>/dev/null || "$PY" -m pip install --quiet {q(JAX)}\n'
                   f'"$PY" -m pip install --quiet {q(wheel + "[jax]")}')
    else:
        install = (f'"$PY" -c "import tensorflow" 2>/dev/null || "$PY" -m pip install --quiet {q(TENSORFLOW)}\n'
                   f'"$PY" -m pip install --quiet {q(wheel + "[trainer]")}')
    return f"""#!/bin/bash
# gankit EC2 training job: install the project, run the job, shut down (the instance then terminates).
set -uo pipefail
exec >>{q(log)} 2>&1
export AWS_DEFAULT_REGION={q(boot.region)}
# Whatever happens below, the instance goes away: as soon as this script ends, with its log next to the job's,
finish() {{ aws s3 cp --only-show-errors {q(log)} {q(boot.setup_log_uri)} || true; shutdown -h now; }}
trap finish EXIT
set -e
# at max run plus setup time at the latest, even if the runner hangs (no job runs unless this is armed),
shutdown -h +{shutdown_minutes(boot.max_run)} "gankit: max run reached" || {{
  echo "gankit: could not schedule the hard stop at max run: not running a job that nothing would stop"; exit 1; }}
# and at once at any later boot: user data runs once per instance, so after a restart (a maintenance
# reboot, a stop and start) neither the job nor the schedule above would run again.
{shutdown_unit(units + "/" + REBOOT_UNIT, "gankit: a training instance that boots again has lost its job; shut it "
              "down (terminates it)", "now", "gankit: this training instance restarted; its job does not run again")}
systemctl enable {REBOOT_UNIT}
{find_python(module="jax" if boot.framework == "jax" and not boot.image else "tensorflow")}
mkdir -p {q(work)}
echo "gankit: installing the project from "{q(boot.wheel_uri)}" into $PY"
{fetch_verified(boot.wheel_uri, boot.wheel_sha256, wheel)}
{install}
# IMDSv2: a session token first (the instance requires it).
TOKEN=$(curl -sf -X PUT http://169.254.169.254/latest/api/token -H "X-aws-ec2-metadata-token-ttl-seconds: 60" || true)
GANKIT_INSTANCE_ID=$(curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" http://169.254.169.254/latest/meta-data/instance-id || true)
export GANKIT_INSTANCE_ID
echo "gankit: running the job"
"$PY" -m launcher.remote.train_job --job-uri {q(boot.job_uri)} --work-dir {q(work + "/run")}
"""
