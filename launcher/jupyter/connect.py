"""The tunnel to Jupyter (SSM, or SSH with --ssh): wait until Jupyter answers through it, then print its URL."""

import contextlib
import tempfile
import time
from pathlib import Path

from launcher import instances
from launcher.jupyter import say, ssh_rules
from trainer.errors import GankitError, echo
from trainer.progress import Progress, format_duration

PORT = 8888  # Jupyter's port on the instance's loopback
READY_TIMEOUT = 25 * 60  # first boot installs TensorFlow, the project and JupyterLab
STATE_CHECK_SECONDS = 30  # how often the wait for Jupyter asks EC2 whether the instance still runs


def connect(ec2, region_name, who, instance, token, local_port, use_ssh, my_ip, open_browser, started=True):
    """Tunnel to Jupyter on `instance` and print its URL; `started`: this run launched or started it."""
    from launcher import tunnel
    iid = instance["InstanceId"]
    progress = Progress(None, label="waiting for Jupyter through the tunnel (first boot installs it: ~5 min)",
                        fmt=format_duration, log_every=30)
    access = ssh_rules.ssh_access(ec2, instance, my_ip, who) if use_ssh else contextlib.nullcontext()
    # SIGTERM and SIGHUP close it as Ctrl-C does: the SSH rule, the key, the tunnel and its log all go.
    with tunnel.signals_as_interrupt(), tempfile.TemporaryDirectory(prefix="gankit-ssh-") as tmp, access as host:
        if use_ssh:
            key, public = tunnel.ssh_key(tmp)
            connect_ = instances.client("ec2-instance-connect", region_name)

            def command():  # EC2 Instance Connect accepts the key for 60 s: push it before every attempt
                connect_.send_ssh_public_key(InstanceId=iid, InstanceOSUser=tunnel.SSH_USER, SSHPublicKey=public)
                return tunnel.ssh_command(host, key, Path(tmp) / "known_hosts", PORT, local_port)
        else:
            def command():
                return tunnel.ssm_command(iid, region_name, PORT, local_port)

        session = tunnel.Tunnel(command, local_port)
        try:
            try:
                tunnel.wait_until_ready(session, local_port, token, READY_TIMEOUT, progress,
                                        check=_still_running(ec2, iid))
            except tunnel.PortTaken as e:  # nothing wrong with the instance: connect again on a free port
                raise tunnel.PortTaken(f"{e}; {iid} runs on and stops itself when idle: connect to it on a free "
                                       f"port, {tunnel.free_port_hint(local_port)}") from None
            except tunnel.NotReady as e:
                raise _not_ready(ec2, iid, e, started) from None
            progress.close()
            url = f"http://localhost:{local_port}/lab?token={token}"
            say(f"Jupyter on {iid} is ready; the tunnel stays open until you press Ctrl-C")
            echo(url)
            if open_browser:
                open_in_browser(url, tmp)
            session.wait()
            say("the tunnel closed; the instance stops itself when idle (`launcher jupyter stop` stops it now)")
        except KeyboardInterrupt:
            say("\nclosing the tunnel; the instance stops itself when idle (`launcher jupyter stop` stops it now)")
        finally:
            session.close()


def _not_ready(ec2, iid, e, started: bool) -> GankitError:
    """Jupyter never answered through the tunnel. One this run started is set up wrong or unreachable and
    would bill until max-hours: stop it. One that ran before is left running: a notebook may be open on it
    (another tab, another machine), the fault may be this machine's network, and it stops itself when idle."""
    if not started:
        return GankitError(f"{e}. It ran before this run (a notebook may be open on it), so left {iid} running; "
                           "it stops itself when idle. Check this machine's network and the tunnel, then run "
                           "`launcher jupyter` again; `launcher jupyter stop` stops it now")
    ec2.stop_instances(InstanceIds=[iid])
    return GankitError(f"{e}. Stopped {iid} so it does not bill on; `launcher jupyter` starts it "
                       "again, `launcher jupyter stop --terminate` discards it")


def open_in_browser(url: str, folder):
    """Open `url` through a redirect page only its owner can read, in `folder` (private, and deleted with the
    tunnel): a browser's command line, token and all, is in `ps` for every user of this machine for as long
    as that browser runs. Jupyter opens its own URL the same way."""
    import html
    import os
    import webbrowser

    page = Path(folder) / "open-jupyter.html"
    with os.fdopen(os.open(page, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(f'<!DOCTYPE html><meta http-equiv="refresh" content="0;url={html.escape(url)}">'
                f'<a href="{html.escape(url)}">Jupyter</a>\n')
    webbrowser.open(page.as_uri())


def _still_running(ec2, iid):
    """A check for the wait on Jupyter: one line as soon as the instance stops (its setup failed, its
    max-hours came, someone stopped it) rather than minutes of waiting on a machine that is not there.
    It asks EC2 at most every STATE_CHECK_SECONDS."""
    last = time.monotonic()

    def check():
        nonlocal last
        if time.monotonic() - last < STATE_CHECK_SECONDS:
            return
        last = time.monotonic()
        state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
        if state not in ("pending", "running"):
            # Two causes, two remedies: --terminate would throw away the disk of one that was merely stopped.
            raise GankitError(f"{iid} is {state} while waiting for Jupyter: it was stopped (its idle check, "
                              "--max-hours, or by hand), and `launcher jupyter` starts it again with its disk; or its "
                              "setup failed (the log is /var/log/gankit-jupyter-setup.log on it), and `launcher "
                              "jupyter stop --terminate`, then `launcher jupyter`, launches a fresh one")
    return check
