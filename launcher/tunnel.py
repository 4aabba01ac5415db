"""Private tunnels to a port on an instance's loopback: SSM port forwarding (default) or SSH.

Neither opens a port to the internet: SSM needs no inbound rule at all, and the SSH
tunnel uses a temporary rule for the caller's own /32 that is removed when it closes.
"""

import contextlib
import ipaddress
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from trainer.errors import GankitError, UsageError

PLUGIN_HELP = "https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html"
CLI_HELP = "https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
CHECKIP_URL = "https://checkip.amazonaws.com"
SSH_USER = "ubuntu"  # the DLAMI's login
RETRY_SECONDS = 3.0  # between looks while the instance boots


def check_ssm_tools():
    """The SSM tunnel runs the AWS CLI with its session-manager-plugin; say how to get what is missing."""
    if not shutil.which("aws"):
        raise UsageError(f"the SSM tunnel needs the AWS CLI v2: install it ({CLI_HELP}), or use --ssh")
    if not shutil.which("session-manager-plugin"):
        raise UsageError("the SSM tunnel needs the AWS CLI's session-manager-plugin: install it "
                         f"({PLUGIN_HELP}), or use --ssh")


def check_ssh_tools():
    for tool in ("ssh", "ssh-keygen"):
        if not shutil.which(tool):
            raise UsageError(f"--ssh needs OpenSSH's {tool} on your PATH: install OpenSSH, or drop --ssh to use SSM")


def ssm_command(instance_id: str, region: str, remote_port: int, local_port: int) -> list[str]:
    return ["aws", "ssm", "start-session", "--target", instance_id, "--region", region,
            "--document-name", "AWS-StartPortForwardingSession",
            "--parameters", f"portNumber={remote_port},localPortNumber={local_port}"]


def my_ip(given: str | None = None) -> str:
    """The caller's public IPv4 address (`--my-ip`, else asked of checkip.amazonaws.com)."""
    if given is None:
        try:
            with urllib.request.urlopen(CHECKIP_URL, timeout=10) as r:
                given = r.read().decode().strip()
        except OSError as e:
            raise GankitError(f"cannot find your public IP from {CHECKIP_URL} ({e}); give it with --my-ip") from None
    try:
        ip = ipaddress.IPv4Address(given)
    except ValueError:
        raise UsageError(f"--my-ip {given!r} is not an IPv4 address; give yours, e.g. --my-ip 203.0.113.7") from None
    if ip.is_unspecified or ip.is_private or ip.is_loopback or ip.is_multicast:
        raise UsageError(f"--my-ip {ip} is not a public address; give the address the internet sees you as")
    return str(ip)


@contextlib.contextmanager
def ssh_rule(ec2, group_id: str, ip: str, port: int = 22):
    """Allow SSH from `ip`/32 only, for as long as the block runs."""
    cidr = f"{ipaddress.IPv4Address(ip)}/32"  # one address; never a range, never 0.0.0.0/0
    permission = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                  "IpRanges": [{"CidrIp": cidr, "Description": "gankit jupyter --ssh (temporary)"}]}
    try:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[permission])
    except ec2.exceptions.ClientError as e:
        if "Duplicate" not in str(e):
            raise
    try:
        yield cidr
    finally:
        ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=[permission])


def ssh_key(folder) -> tuple[Path, str]:
    """A throwaway key pair for this one connection: (private key path, public key text)."""
    key = Path(folder) / "gankit_jupyter"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gankit-jupyter", "-f", str(key)],
                   check=True, stdin=subprocess.DEVNULL)
    return key, key.with_suffix(".pub").read_text()


def ssh_command(host: str, key: Path, known_hosts: Path, remote_port: int, local_port: int) -> list[str]:
    return ["ssh", "-N", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "ExitOnForwardFailure=yes",
            "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "ServerAliveInterval=30",
            "-L", f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}", f"{SSH_USER}@{host}"]


def jupyter_answers(local_port: int, token: str) -> bool:
    """Does Jupyter answer through the tunnel, and accept the token?"""
    request = urllib.request.Request(f"http://127.0.0.1:{local_port}/api/status",
                                     headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


class Tunnel:
    """A tunnel process, restarted while the far end is not ready yet (an agent still booting)."""

    def __init__(self, command_factory):
        self.command_factory = command_factory  # called per attempt: SSH needs a fresh key push each time
        self.log = tempfile.NamedTemporaryFile(prefix="gankit-tunnel-", suffix=".log", delete=False)
        self.proc = None

    def ensure_running(self):
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(self.command_factory(), stdin=subprocess.DEVNULL,
                                         stdout=self.log, stderr=subprocess.STDOUT)

    def last_line(self) -> str:
        lines = Path(self.log.name).read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def wait(self):
        return self.proc.wait() if self.proc else 0

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def wait_until_ready(tunnel: Tunnel, local_port: int, token: str, timeout: float, progress, interval=None):
    """Keep the tunnel up until Jupyter answers through it, or fail after `timeout` seconds."""
    interval = interval or RETRY_SECONDS
    deadline = time.monotonic() + timeout
    while True:
        tunnel.ensure_running()
        if jupyter_answers(local_port, token):
            return
        if time.monotonic() > deadline:
            detail = tunnel.last_line()
            raise GankitError(f"Jupyter did not answer through the tunnel within {timeout / 60:.0f} min"
                              + (f" (tunnel: {detail})" if detail else "")
                              + "; the setup log is /var/log/gankit-jupyter-setup.log on the instance")
        time.sleep(interval)
        progress.update(interval)
