"""The user data of a Jupyter instance: a small bootstrap, run once by cloud-init at first boot.

It installs the project's wheel (from S3) with TensorFlow into the DLAMI's Python (as a
training instance does), JupyterLab and its kernel if the image lacks them, copies the
example notebook, and enables systemd units that come back at every start of the
instance: Jupyter itself (as the ubuntu user, loopback only), the idle check (as root,
so it may shut the machine down) and, before anything else, the OS backstop that schedules
`shutdown -h` at max-hours after each boot and a check that stops, at once, an instance whose
setup never finished (a later start would have neither Jupyter nor an idle check). No secret
is in here: the token's SSM parameter name is, and the instance reads the value with its own role.

The unit files are written literally (quoted heredocs): they run a fixed path, PYTHON, that
execs the Python found at setup, and every value put in them is checked to be a plain word,
so neither the shell nor systemd expands anything in them.
"""

import math
import re
import shlex
from dataclasses import dataclass

# The same Python and TensorFlow as a training instance (the notebook loads generators with it).
from launcher.train_userdata import FIND_PYTHON, TENSORFLOW, fetch_verified, shutdown_unit

HOME = "/home/ubuntu"
PYTHON = "/usr/local/bin/gankit-python"  # what the units run: a literal path, as systemd requires
SETUP_DONE = "/var/lib/gankit/jupyter-setup-done"
ROOT_DIR = f"{HOME}/gankit"  # what Jupyter serves
NOTEBOOK = "pull_and_generate.ipynb"


@dataclass
class JupyterBoot:
    token_parameter: str  # SSM SecureString name, never its value
    region: str
    wheel_uri: str  # s3://... the project's wheel
    wheel_sha256: str  # of the wheel the launcher built: root installs nothing else
    notebook_uri: str  # s3://... examples/pull_and_generate.ipynb
    notebook_sha256: str  # of the notebook the launcher staged: Jupyter serves nothing else
    bucket: str  # the user's bucket, for the notebook (GANKIT_BUCKET)
    idle_seconds: int = 3600
    max_hours: float = 8.0
    port: int = 8888


def start_args(boot: JupyterBoot, root_dir: str = ROOT_DIR) -> list[str]:
    """The arguments of `python -m launcher.remote.jupyter_start` in the Jupyter unit."""
    return ["--token-parameter", boot.token_parameter, "--region", boot.region,
            "--root-dir", root_dir, "--port", str(boot.port)]


def idle_args(boot: JupyterBoot) -> list[str]:
    return ["--token-parameter", boot.token_parameter, "--region", boot.region,
            "--api", f"http://127.0.0.1:{boot.port}", "--root-dir", ROOT_DIR, "--idle", str(int(boot.idle_seconds)),
            "--max-hours", f"{boot.max_hours:g}"]


def max_minutes(boot: JupyterBoot) -> int:
    return max(1, math.ceil(boot.max_hours * 60))


_PLAIN = re.compile(r"[A-Za-z0-9._:/@+=,-]+")  # nothing a shell or systemd would expand, split or quote


def plain(value) -> str:
    """`value` as text, if it is safe to write into a unit file as is; else a ValueError (the launcher
    checks bucket and region before it gets here, so this is a bug, not a user's mistake)."""
    text = str(value)
    if not _PLAIN.fullmatch(text):
        raise ValueError(f"not a plain word for a unit file: {text!r}")
    return text


def _command(module, args):
    return " ".join([PYTHON, "-m", module, *map(plain, args)])


def render(boot: JupyterBoot) -> str:
    q = shlex.quote
    wheel = boot.wheel_uri.rsplit("/", 1)[-1]
    return f"""#!/bin/bash
# gankit Jupyter instance bootstrap (first boot only; the units below survive stop/start).
set -euo pipefail
exec >>/var/log/gankit-jupyter-setup.log 2>&1
# A half-set-up instance has no idle check to stop it: stop now rather than bill for nothing. EXIT, not
# ERR: ERR misses a failure inside `a || b` and an explicit `exit 1` (the wheel's checksum refusal).
trap 'code=$?; if [ "$code" -ne 0 ]; then echo "gankit: setup failed (exit $code), stopping the instance"; shutdown -h now; fi' EXIT
# The backstop behind the idle check (which may never start, or keep crashing): the OS stops the
# instance after max-hours from this boot, and from every later boot through the unit below.
shutdown -h +{max_minutes(boot)} "gankit: max hours reached"
{shutdown_unit("/etc/systemd/system/gankit-max-hours.service", "gankit backstop: stop this instance "
              f"{max_minutes(boot)} minutes after boot, whatever runs on it", f"+{max_minutes(boot)}",
              "gankit: max hours reached")}
# At a later start (enabled now, it does not run at this boot): no mark that this setup finished means
# no Jupyter and no idle check, so stop again at once.
{shutdown_unit("/etc/systemd/system/gankit-setup-check.service", "gankit: stop this instance if its first-boot "
              "setup never finished", "now", "gankit: setup never finished on this instance", unless_exists=SETUP_DONE)}
systemctl enable gankit-max-hours.service gankit-setup-check.service
{FIND_PYTHON}
printf '#!/bin/sh\\nexec "%s" "$@"\\n' "$PY" >{PYTHON}
chmod 755 {PYTHON}
export AWS_DEFAULT_REGION={q(boot.region)}
mkdir -p -m 700 /opt/gankit-wheel
{fetch_verified(boot.wheel_uri, boot.wheel_sha256, '/opt/gankit-wheel/' + wheel)}
"$PY" -c "import tensorflow" 2>/dev/null || "$PY" -m pip install --quiet {q(TENSORFLOW)}
"$PY" -m pip install --quiet {q("/opt/gankit-wheel/" + wheel + "[trainer]")}
"$PY" -c "import jupyterlab, ipykernel" 2>/dev/null || "$PY" -m pip install --quiet "jupyterlab>=4" ipykernel
# Both named: install -d gives -o/-g only to the folders it is given, and Jupyter (as ubuntu) saves new
# notebooks in the one it serves.
install -d -o ubuntu -g ubuntu {q(ROOT_DIR)} {q(ROOT_DIR)}/examples
# Checked in root's private folder first: a notebook changed in the bucket never reaches the folder Jupyter serves.
{fetch_verified(boot.notebook_uri, boot.notebook_sha256, '/opt/gankit-wheel/' + NOTEBOOK)}
install -o ubuntu -g ubuntu -m 644 {q('/opt/gankit-wheel/' + NOTEBOOK)} {q(ROOT_DIR + "/examples/" + NOTEBOOK)}

cat >/etc/systemd/system/gankit-jupyter.service <<'UNIT'
[Unit]
Description=gankit Jupyter (loopback only; reach it through the launcher's tunnel)
After=network-online.target
Wants=network-online.target
[Service]
User=ubuntu
WorkingDirectory={ROOT_DIR}
Environment=AWS_DEFAULT_REGION={plain(boot.region)} GANKIT_BUCKET={plain(boot.bucket)}
ExecStart={_command("launcher.remote.jupyter_start", start_args(boot))}
Restart=on-failure
RestartSec=5
[Install]
WantedBy=multi-user.target
UNIT

cat >/etc/systemd/system/gankit-idle.service <<'UNIT'
[Unit]
Description=gankit idle check: stop this instance when Jupyter and the GPU sit idle
After=gankit-jupyter.service
[Service]
Environment=AWS_DEFAULT_REGION={plain(boot.region)}
ExecStart={_command("launcher.remote.idle_check", idle_args(boot))}
Restart=always
RestartSec=30
[Install]
WantedBy=multi-user.target
UNIT

systemctl daemon-reload
systemctl enable --now gankit-jupyter.service gankit-idle.service
install -d -m 755 {q(SETUP_DONE.rsplit("/", 1)[0])}
touch {q(SETUP_DONE)}
"""
