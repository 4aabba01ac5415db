"""Helpers for the Jupyter tests: a fake Jupyter REST API and socket inspection."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

PARAMETER = "/gankit/jupyter/tester/token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeJupyter:
    """Answers /api/kernels, /api/sessions, /api/terminals and /api/status like Jupyter does.

    Set `.kernels`, `.sessions`, `.terminals`, `.status` to what the API should return.
    Requests without `Authorization: token <token>` get 403, as from the real server.
    """

    def __init__(self, token: str, port: int = 0):
        self.token = token
        self.kernels, self.sessions, self.terminals = [], [], []
        self.status = {}
        self.requests = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake.requests.append(self.path)
                if self.headers.get("Authorization") != f"token {fake.token}":
                    return self._send(403, {"message": "Forbidden"})
                body = {"/api/kernels": fake.kernels, "/api/sessions": fake.sessions,
                        "/api/terminals": fake.terminals, "/api/status": fake.status}.get(self.path)
                self._send(404, {"message": "Not found"}) if body is None else self._send(200, body)

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _hex_addr(text: str) -> tuple[str, int]:
    """/proc/net/tcp's 'ADDR:PORT' (hex, host byte order) -> ('127.0.0.1', 8888); IPv6 kept in hex."""
    addr, port = text.split(":")
    if len(addr) == 8:
        ip = socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1])
    else:
        words = [bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, 32, 8)]
        ip = socket.inet_ntop(socket.AF_INET6, b"".join(words))
    return ip, int(port, 16)


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """Every TCP (v4 and v6) address the process `pid` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A = LISTEN
                found.append(_hex_addr(fields[1]))
    return found


def outward_ip() -> str | None:
    """This machine's non-loopback address (no packet is sent), or None if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


FAKE_TUNNEL = r'''#!{python}
"""A stand-in for `{name}`: logs its arguments, then plays the far end of the tunnel.

The first call fails as an SSM agent still booting does (every call, with FAKE_TUNNEL_NEVER); later calls listen on the local
port and answer /api/status like Jupyter on the instance, accepting only the token the
instance would read from SSM. It exits after one authorised request (the user closing it), or keeps serving with
FAKE_TUNNEL_STAY set (a tunnel left open until the launcher closes it).
"""
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

args = sys.argv[1:]
log = os.environ["FAKE_TUNNEL_LOG"]
calls = open(log).read().count("\n") if os.path.exists(log) else 0
record = {{"tool": "{name}", "args": args, "pid": os.getpid()}}
if os.environ.get("FAKE_TUNNEL_STAY") and calls:  # a helper process, as the AWS CLI's session-manager-plugin
    import subprocess
    record["child"] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]).pid
if "{name}" == "ssh":
    import boto3
    ec2 = boto3.client("ec2")
    record["ingress"] = [p for g in ec2.describe_security_groups()["SecurityGroups"] for p in g["IpPermissions"]]
with open(log, "a") as f:
    f.write(json.dumps(record) + "\n")
never = os.environ.get("FAKE_TUNNEL_NEVER")  # "1": Jupyter never comes up; "stop-it": the instance stops itself
if never == "stop-it" and "{name}" == "aws":
    import boto3
    boto3.client("ec2").stop_instances(InstanceIds=[args[args.index("--target") + 1]])
if calls == 0 or never:
    print("An error occurred (TargetNotConnected) when calling the StartSession operation: not connected", file=sys.stderr)
    sys.exit(254)

if "{name}" == "aws":
    params = dict(kv.split("=") for kv in args[args.index("--parameters") + 1].split(","))
    port = int(params["localPortNumber"])
else:
    port = int(args[args.index("-L") + 1].split(":")[1])

import boto3
token = boto3.client("ssm").get_parameter(Name=os.environ["FAKE_TOKEN_PARAMETER"], WithDecryption=True)["Parameter"]["Value"]

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.headers.get("Authorization") == "token " + token
        self.send_response(200 if ok else 403)
        self.end_headers()
        self.wfile.write(b"{{}}")
        if ok:
            self.server.done = True

    def log_message(self, *a):
        pass

server = HTTPServer(("127.0.0.1", port), Handler)
server.done = False
while not server.done or os.environ.get("FAKE_TUNNEL_STAY"):
    server.handle_request()
'''


def fake_tools(bin_dir, names=("aws", "session-manager-plugin")) -> Path:
    """Executables standing in for the AWS CLI, its plugin and ssh; returns the folder for PATH."""
    import sys

    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = bin_dir / name
        if name in ("aws", "ssh"):
            path.write_text(FAKE_TUNNEL.format(python=sys.executable, name=name))
        else:
            path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    return bin_dir


@pytest.fixture
def token(aws_env):
    """A fresh Jupyter token in (moto's) SSM, as the launcher stores it."""
    import secrets

    import boto3

    value = secrets.token_urlsafe(32)
    boto3.client("ssm").put_parameter(Name=PARAMETER, Value=value, Type="SecureString", Overwrite=True)
    return value
