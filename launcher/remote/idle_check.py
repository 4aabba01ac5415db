"""Stop the Jupyter instance when nobody is using it, and after its hard limit regardless.

    python -m launcher.remote.idle_check --token-parameter /gankit/jupyter/alice/token \
        --idle 3600 --max-hours 8 [--interval 60] [--once]

"Used" means a kernel or terminal did something (Jupyter's per-kernel `last_activity`,
a kernel that is busy right now), a file was saved in the folder Jupyter serves (JupyterLab
autosaves a notebook being edited every two minutes, cells run or not), or a GPU is working. Jupyter's server-wide activity
clock is deliberately ignored: an open browser tab polls the REST API all day and
would keep an idle instance billing forever. The idle clock starts when Jupyter started
(its /api/status `started`), not at boot: nobody could use it before, and the first boot
spends minutes installing it.

Stopping is `shutdown -h now`: the launcher starts the instance with shutdown behaviour
`stop`, so this stops (not terminates) it and needs no EC2 permission on the instance.
"""

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from launcher.remote.jupyter_start import TokenUnavailable, read_token
from trainer.fsutil import atomic_write_text

GPU_COMMAND = "nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits"
STOP_COMMAND = "shutdown -h now"
# /run is emptied at every boot, so a restarted instance starts with a fresh idle clock.
STATE_FILE = "/run/gankit/idle.json"


@dataclass
class Reading:
    """What one look at the instance saw."""

    now: float  # epoch seconds
    uptime: float  # seconds since boot
    last_activity: float | None  # newest kernel/terminal activity (epoch seconds), None if none
    busy: bool  # a kernel is executing right now
    gpu_percent: float | None  # busiest GPU's utilisation; None if unreadable
    jupyter_started: float | None = None  # when Jupyter started (epoch seconds); None if it did not answer


@dataclass
class State:
    last_active: float  # epoch seconds of the last sign of use


def log(message):
    print(f"idle-check: {message}", flush=True)


def _fmt(seconds):
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def decide(state: State | None, reading: Reading, idle_seconds: float, max_seconds: float,
           gpu_busy_percent: float = 5.0) -> tuple[State, str | None]:
    """The new state, and why to stop now (None: keep running)."""
    # Nobody could use Jupyter before it started: counted from boot, an --idle shorter than the first boot's
    # setup stopped the instance the moment Jupyter came up. One that never answers is idle from boot.
    since = max(reading.now - reading.uptime, reading.jupyter_started or 0)
    last = max(state.last_active if state else since, since)
    if reading.last_activity is not None:
        last = max(last, reading.last_activity)
    gpu_busy = reading.gpu_percent is not None and reading.gpu_percent >= gpu_busy_percent
    if reading.busy or gpu_busy:
        last = reading.now
    new = State(last_active=last)
    if reading.uptime >= max_seconds:
        return new, f"up for {_fmt(reading.uptime)}, the --max-hours limit"
    if reading.now - last >= idle_seconds:
        return new, f"no kernel or terminal activity, file saved or GPU use for {_fmt(reading.now - last)}"
    return new, None


def newest_save(root, most_files: int = 20_000) -> float | None:
    """When a file below `root` (hidden ones aside: checkpoints, caches) was last written; None if none.
    Looks at `most_files` at the most, so a folder of datasets costs one bounded walk a minute."""
    newest, seen = None, 0
    for where, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            try:
                stamp = os.stat(os.path.join(where, name), follow_symlinks=False).st_mtime
            except OSError:
                continue  # removed as we looked
            newest = stamp if newest is None else max(newest, stamp)
            seen += 1
            if seen >= most_files:
                return newest
    return newest


def parse_time(text: str | None) -> float | None:
    """Jupyter's ISO timestamps ('...Z'), as epoch seconds."""
    if not text:
        return None
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


class Unauthorized(Exception):
    pass


def _get(api: str, path: str, token: str):
    request = urllib.request.Request(api.rstrip("/") + path, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise Unauthorized(path) from None
        raise


def jupyter_activity(api: str, token: str) -> tuple[float | None, bool]:
    """(newest kernel/terminal activity, any kernel busy) from Jupyter's REST API.

    Raises OSError (or http.client.HTTPException, a reply cut short) when Jupyter is not answering,
    Unauthorized on a wrong token.
    """
    kernels = {k["id"]: k for k in _get(api, "/api/kernels", token)}
    for session in _get(api, "/api/sessions", token):
        kernel = session.get("kernel") or {}
        kernels.setdefault(kernel.get("id"), kernel)
    terminals = _get(api, "/api/terminals", token)
    stamps = [parse_time(x.get("last_activity")) for x in [*kernels.values(), *terminals]]
    stamps = [s for s in stamps if s is not None]
    busy = any(k.get("execution_state") in ("busy", "starting") for k in kernels.values())
    return (max(stamps) if stamps else None), busy


def jupyter_started(api: str, token: str) -> float | None:
    """When the Jupyter server started (its /api/status `started`), None if it does not say.
    Raises as `jupyter_activity` does."""
    status = _get(api, "/api/status", token)
    return parse_time(status.get("started")) if isinstance(status, dict) else None


def gpu_percent(command: str = GPU_COMMAND) -> float | None:
    """The busiest GPU's utilisation, or None when it cannot be read."""
    try:
        out = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30, check=True).stdout
        values = [float(line) for line in out.split() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        log(f"cannot read GPU utilisation ({e}); counting the GPU as idle")
        return None
    return max(values) if values else None


def uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def load_state(path) -> State | None:
    try:
        return State(**json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def save_state(path, state: State):
    atomic_write_text(path, json.dumps(asdict(state)))


class Checker:
    """One look at Jupyter and the GPU per `check()`; remembers the token between looks."""

    def __init__(self, args, read_token):
        self.args = args
        self.read_token = read_token
        self.token = None

    def activity(self):
        """(newest kernel/terminal activity, any kernel busy, when Jupyter started); Nones and False when
        Jupyter does not answer."""
        for attempt in (1, 2):
            try:
                if self.token is None:
                    self.token = self.read_token()
                return *jupyter_activity(self.args.api, self.token), jupyter_started(self.args.api, self.token)
            except Unauthorized:
                self.token = None  # the launcher rotated it before this boot's Jupyter read it: read again
            except (OSError, ValueError, http.client.HTTPException) as e:  # HTTPException: a reply cut short
                log(f"Jupyter is not answering ({e}); counting its kernels as idle")
                return None, False, None
            except TokenUnavailable as e:
                log(f"{e}; counting Jupyter's kernels as idle")
                return None, False, None
        log("Jupyter refuses the token from SSM; counting its kernels as idle")
        return None, False, None

    def check(self) -> str | None:
        last, busy, started = self.activity()
        saved = newest_save(self.args.root_dir) if self.args.root_dir else None
        last = max((x for x in (last, saved) if x is not None), default=None)
        reading = Reading(now=time.time(), uptime=uptime(), last_activity=last, busy=busy,
                          gpu_percent=gpu_percent(self.args.gpu_command), jupyter_started=started)
        state, reason = decide(load_state(self.args.state), reading, self.args.idle,
                               self.args.max_hours * 3600, self.args.gpu_busy_percent)
        save_state(self.args.state, state)
        return reason


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="idle_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--token-parameter", required=True, help="SSM SecureString holding Jupyter's token")
    p.add_argument("--region", default=None)
    p.add_argument("--api", default="http://127.0.0.1:8888", help="Jupyter's URL on this machine")
    p.add_argument("--root-dir", default=None, help="the folder Jupyter serves: a file saved there counts as use")
    p.add_argument("--idle", type=float, default=3600, help="seconds without use before stopping")
    p.add_argument("--max-hours", type=float, default=8.0, help="stop after this long regardless")
    p.add_argument("--interval", type=float, default=60, help="seconds between looks")
    p.add_argument("--gpu-busy-percent", type=float, default=5.0, help="GPU utilisation that counts as use")
    p.add_argument("--gpu-command", default=GPU_COMMAND)
    p.add_argument("--stop-command", default=STOP_COMMAND)
    p.add_argument("--state", default=STATE_FILE)
    p.add_argument("--once", action="store_true", help="look once, stop if due, and exit")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    checker = Checker(args, lambda: read_token(args.token_parameter, args.region))
    log(f"stopping after {_fmt(args.idle)} idle or {args.max_hours:g} h up")
    while True:
        reason = checker.check()
        if reason:
            log(f"stopping the instance: {reason}")
            sys.exit(subprocess.run(args.stop_command, shell=True).returncode)
        if args.once:
            return
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
