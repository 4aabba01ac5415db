"""Private tunnels to a port on an instance's loopback: SSM port forwarding (default) or SSH.

Neither opens a port to the internet: SSM needs no inbound rule at all, and the SSH
tunnel uses a temporary rule for the caller's own /32 that is removed when it closes.
"""

import contextlib
import errno
import ipaddress
import os
import shutil
import signal
import socket
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
# Every temporary SSH rule carries this description (then " for OWNER"), so a later run can find and
# remove the ones an earlier run left behind (killed with SIGKILL, a crash, a lost network).
RULE_DESCRIPTION = "gankit jupyter --ssh (temporary)"


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


def _port_taken(host: str, family, port: int) -> bool:
    """Does something listen on host:port? Bound as the tunnel binds (SO_REUSEADDR, as ssh and the plugin set),
    so only a listener counts, not the lingering TIME_WAIT of an earlier tunnel's connections."""
    try:
        probe = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return False  # no IPv6 on this machine: nothing can listen on ::1
    with probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def port_in_use(port: int) -> bool:
    """Is the local port taken on the loopback, IPv4 or IPv6 (a browser may take `localhost` for either)?"""
    return any(_port_taken(host, family, port) for host, family in (("127.0.0.1", socket.AF_INET),
                                                                     ("::1", socket.AF_INET6)))


def free_port_hint(port: int) -> str:
    """'e.g. --local-port N' for a free port just above `port`, else a plain '--local-port'."""
    free = next((p for p in range(port + 1, min(port + 100, 65536)) if not port_in_use(p)), None)
    return f"e.g. --local-port {free}" if free else "with --local-port"


def check_local_port(port: int):
    """The tunnel's local port must be free: a tunnel that cannot listen leaves whatever does listen there (a
    local Jupyter, another tunnel) to answer, and the readiness check would send it the token."""
    if not port_in_use(port):
        return
    raise UsageError(f"--local-port {port} is in use on this machine (a local Jupyter, or another `launcher "
                     f"jupyter` tunnel?); give a free one, {free_port_hint(port)}")


class PortTaken(UsageError):
    """Another program listens on the tunnel's local port: nothing may be sent there (it would get the token)."""


def _listening_sockets(port: int) -> set[str] | None:
    """The inodes of every TCP socket (IPv4 and IPv6, any address) listening on `port`; None without /proc."""
    found, tables = set(), 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        tables += 1
        for fields in map(str.split, lines):
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                found.add(fields[9])
    return found if tables else None


def _group_sockets(group: int) -> set[str]:
    """The inodes of the sockets the processes of process group `group` hold open, from /proc."""
    inodes = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != group:
                continue
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:["):-1])
        except OSError:  # ended meanwhile, or not ours to look into
            continue
    return inodes


def _listening_pids(port: int) -> list[int] | None:
    """Without /proc (macOS): the processes lsof sees listening on `port`; None without lsof."""
    try:
        done = subprocess.run(["lsof", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fp"], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [int(line[1:]) for line in done.stdout.splitlines() if line[1:].isdigit() and line.startswith("p")]


def port_holder(port: int, group: int) -> str | None:
    """Who listens on the local `port`: "ours" (only process group `group`, the tunnel), "other" (anyone else,
    on any address: a browser may take `localhost` for ::1), or None (no one yet)."""
    listening = _listening_sockets(port)
    if listening is not None:
        if not listening:
            return None
        return "other" if listening - _group_sockets(group) else "ours"
    pids = _listening_pids(port)
    if pids is None:  # no way to see who listens: the port was free when the tunnel started, which is all we know
        return "ours" if port_in_use(port) else None
    groups = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    if groups - {group} or (not groups and port_in_use(port)):  # lsof shows only our own user's processes
        return "other"
    return "ours" if groups else None


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


def rule_description(owner: str) -> str:
    return f"{RULE_DESCRIPTION} for {owner}"


def _port_rule(port: int, cidr: str, description: str) -> dict:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
            "IpRanges": [{"CidrIp": cidr, "Description": description}]}


def sweep_stale_rules(ec2, group_id: str, owner: str, ownerless_too: bool = False) -> list[str]:
    """Remove the temporary SSH rules of `owner` left in the group, and those of launchers that named no owner
    when `ownerless_too` (the caller has shown no one else's tunnel can use them); the CIDRs removed. Other
    users' temporary rules are theirs to sweep: their tunnels may be open."""
    stale = temporary_rules(ec2, group_id, (rule_description(owner),) + ((RULE_DESCRIPTION,) if ownerless_too else ()))
    if stale:
        ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=stale)
    return [r["IpRanges"][0]["CidrIp"] for r in stale]


def temporary_rules(ec2, group_id: str, descriptions) -> list[dict]:
    """The single-port TCP rules of the group described as one of `descriptions`, one CIDR each."""
    [group] = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    return [_port_rule(p["FromPort"], r["CidrIp"], r["Description"])
            for p in group.get("IpPermissions", []) if p.get("IpProtocol") == "tcp" and p.get("FromPort") == p.get("ToPort")
            for r in p.get("IpRanges", []) if r.get("Description") in descriptions]


@contextlib.contextmanager
def ssh_rule(ec2, group_id: str, ip: str, owner: str, port: int = 22):
    """Allow SSH from `ip`/32 only, for as long as the block runs."""
    cidr = f"{ipaddress.IPv4Address(ip)}/32"  # one address; never a range, never 0.0.0.0/0
    permission = _port_rule(port, cidr, rule_description(owner))
    try:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[permission])
    except ec2.exceptions.ClientError as e:
        if "Duplicate" not in str(e):
            raise
    try:
        yield cidr
    finally:
        ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=[permission])


@contextlib.contextmanager
def signals_as_interrupt(signals=(signal.SIGTERM, signal.SIGHUP)):
    """SIGTERM and SIGHUP (a closed terminal) end the block as Ctrl-C does, so its clean-up runs. Once one
    has arrived, further ones (and Ctrl-C) are ignored until the block has cleaned up."""
    every = (*signals, signal.SIGINT)
    previous = {s: signal.getsignal(s) for s in every}

    def interrupt(signum, frame):
        for s in every:
            signal.signal(s, signal.SIG_IGN)
        raise KeyboardInterrupt

    for s in signals:
        signal.signal(s, interrupt)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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

    def __init__(self, command_factory, local_port: int):
        self.command_factory = command_factory  # called per attempt: SSH needs a fresh key push each time
        self.local_port = local_port
        self.log = tempfile.NamedTemporaryFile(prefix="gankit-tunnel-", suffix=".log", delete=False)
        self.proc = None

    def ensure_running(self):
        if self.proc is None or self.proc.poll() is not None:
            # Checked at start, but the instance took minutes to come up, and the port is free again between
            # attempts: a tunnel that cannot listen would leave another program to answer in its place.
            if port_in_use(self.local_port):
                raise self.port_taken()
            # Its own process group: the terminal's Ctrl-C or hang-up reaches the launcher only, which
            # closes the tunnel after its clean-up, and close() ends the whole group (the AWS CLI's
            # session-manager-plugin child too).
            self.proc = subprocess.Popen(self.command_factory(), stdin=subprocess.DEVNULL,
                                         stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def port_taken(self) -> PortTaken:
        return PortTaken(f"--local-port {self.local_port} was taken by another program on this machine while the "
                         f"tunnel was being set up; nothing was sent to it")

    def holds_port(self) -> bool:
        """Does the tunnel, and no other program, listen on the local port? PortTaken when another does."""
        holder = port_holder(self.local_port, self.proc.pid)  # its group id is its pid (start_new_session)
        if holder == "other":
            raise self.port_taken()
        return holder == "ours"

    def last_line(self) -> str:
        lines = Path(self.log.name).read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def wait(self):
        return self.proc.wait() if self.proc else 0

    def close(self):
        if self.proc:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def _signal_group(self, signum):
        try:
            os.killpg(self.proc.pid, signum)  # its group id is its pid (start_new_session)
        except ProcessLookupError:
            pass  # the whole group has ended


class NotReady(GankitError):
    """Jupyter never answered through the tunnel in the time allowed."""


def wait_until_ready(tunnel: Tunnel, local_port: int, token: str, timeout: float, progress, interval=None,
                     check=lambda: None):
    """Keep the tunnel up until Jupyter answers through it, or fail after `timeout` seconds (NotReady);
    `check()` runs at every look and may raise to give up sooner (the instance stopped, say). The token goes
    only to a port the tunnel itself listens on; PortTaken when another program took it."""
    interval = interval or RETRY_SECONDS
    deadline = time.monotonic() + timeout
    while True:
        tunnel.ensure_running()
        if tunnel.holds_port() and jupyter_answers(local_port, token):
            return
        check()
        if time.monotonic() > deadline:
            detail = tunnel.last_line()
            raise NotReady(f"Jupyter did not answer through the tunnel within {max(1, round(timeout / 60))} min"
                           + (f" (tunnel: {detail})" if detail else "")
                           + "; the setup log is /var/log/gankit-jupyter-setup.log on the instance")
        time.sleep(interval)
        progress.update(interval)
