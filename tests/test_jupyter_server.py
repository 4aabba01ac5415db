"""The Jupyter start script from the instance's user data, run here for real."""

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from launcher import jupyter_userdata
from launcher.remote.jupyter_start import server_config
from tests.jupyter_helpers import PARAMETER, token, free_port, listening_addresses, outward_ip  # noqa: F401 (token is a fixture)

pytest.importorskip("jupyter_server")

REPO = Path(__file__).resolve().parents[1]
SHA = "ab" * 32  # a wheel's sha256
NB_SHA = "cd" * 32  # a notebook's


def get(url, headers=None):
    """(status, body) without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def exec_start(user_data: str, unit: str) -> list[str]:
    """The ExecStart command of `unit` as the user data writes it."""
    body = user_data.split(f"cat >/etc/systemd/system/{unit} <<'UNIT'\n", 1)[1].split("\nUNIT\n", 1)[0]
    line = next(x for x in body.splitlines() if x.startswith("ExecStart="))
    return shlex.split(line[len("ExecStart="):])


@pytest.fixture
def server(token, tmp_path):
    """The start command exactly as the user data writes it, with a local root dir and a free port."""
    boot = jupyter_userdata.JupyterBoot(token_parameter=PARAMETER, region="us-east-1", wheel_uri="s3://b/w.whl", wheel_sha256=SHA,
                                notebook_uri="s3://b/n.ipynb", notebook_sha256=NB_SHA, bucket="b", port=free_port())
    root = tmp_path / "gankit"
    (root / "examples").mkdir(parents=True)
    shutil.copy(REPO / "examples" / jupyter_userdata.NOTEBOOK, root / "examples")
    args = exec_start(jupyter_userdata.render(boot), "gankit-jupyter.service")
    assert args[:3] == [jupyter_userdata.PYTHON, "-m", "launcher.remote.jupyter_start"]
    args = args[3:]
    args[args.index("--root-dir") + 1] = str(root)  # the instance serves /home/ubuntu/gankit
    if os.geteuid() == 0:
        args.append("--allow-root")  # Jupyter refuses root; the instance runs it as ubuntu
    env = dict(os.environ, HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    log = tmp_path / "jupyter.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "launcher.remote.jupyter_start", *args],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{boot.port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", boot.port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Jupyter did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
        yield proc, url, boot.port, log, tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_config_keeps_jupyter_private():
    config = server_config("t0ken", "/srv/nb")
    app = config["ServerApp"]
    assert app["ip"] == "127.0.0.1" and app["port"] == 8888 and app["port_retries"] == 0
    assert app["open_browser"] is False and app["allow_origin"] == "" and app["allow_root"] is False
    assert app["allow_remote_access"] is False  # its Host check: no DNS rebinding onto the tunnel
    assert config["IdentityProvider"]["token"] == "t0ken"


def test_real_server_needs_token_and_listens_on_loopback_only(server, token):
    proc, url, port, log, tmp = server

    # No token, a wrong token: refused.
    assert get(f"{url}/api/contents")[0] in (401, 403)
    assert get(f"{url}/api/contents", {"Authorization": "token wrong"})[0] in (401, 403)
    assert get(f"{url}/api/contents?token=wrong")[0] in (401, 403)

    # The token from SSM works, in the header and in the URL the launcher prints.
    status, body = get(f"{url}/api/contents/examples", {"Authorization": f"token {token}"})
    assert status == 200
    assert [item["name"] for item in json.loads(body)["content"]] == [jupyter_userdata.NOTEBOOK]
    assert get(f"{url}/api/status?token={token}")[0] == 200
    # Even with the token, not for a page whose own name resolves to loopback (DNS rebinding through the
    # tunnel's local end): Jupyter answers only requests addressed to 127.0.0.1 or localhost.
    rebound = {"Authorization": f"token {token}", "Host": f"attacker.example:{port}"}
    assert get(f"{url}/api/contents/examples", rebound)[0] == 403
    from launcher.remote.idle_check import jupyter_started

    assert time.time() - 120 < jupyter_started(url, token) <= time.time()  # the idle check's clock starts there

    # Nothing of Jupyter listens anywhere but loopback.
    addresses = listening_addresses(proc.pid)
    assert ("127.0.0.1", port) in addresses
    assert all(ip == "127.0.0.1" for ip, _ in addresses), addresses
    ip = outward_ip()
    if ip:
        with pytest.raises(OSError):
            socket.create_connection((ip, port), timeout=2).close()

    # The token went only into the owner-only config file: not into the log, not onto the command line.
    config = tmp / "home" / ".gankit-jupyter" / "jupyter_server_config.json"
    assert json.loads(config.read_text())["IdentityProvider"]["token"] == token
    assert config.stat().st_mode & 0o077 == 0
    assert token not in log.read_text()
    assert token.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()


def test_missing_token_parameter_fails_before_starting(aws_env, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "launcher.remote.jupyter_start", "--token-parameter", "/gankit/jupyter/nobody/token",
         "--region", "us-east-1", "--root-dir", str(tmp_path / "root"), "--config-dir", str(tmp_path / "cfg")],
        env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "cannot read Jupyter's token from SSM parameter /gankit/jupyter/nobody/token" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cfg" / "jupyter_server_config.json").exists()


def test_user_data_is_valid_bash_without_secrets(tmp_path, token):
    boot = jupyter_userdata.JupyterBoot(token_parameter=PARAMETER, region="us-east-1", wheel_uri="s3://b/jupyter/g.whl", wheel_sha256=SHA,
                                notebook_uri="s3://b/jupyter/pull_and_generate.ipynb", notebook_sha256=NB_SHA, bucket="b",
                                idle_seconds=2700, max_hours=4)
    script = jupyter_userdata.render(boot)
    (tmp_path / "ud.sh").write_text(script)
    subprocess.run(["bash", "-n", str(tmp_path / "ud.sh")], check=True)
    assert token not in script and PARAMETER in script
    assert len(script.encode()) < 16 * 1024  # EC2's user data limit
    assert exec_start(script, "gankit-idle.service")[3:] == [
        "--token-parameter", PARAMETER, "--region", "us-east-1", "--api", "http://127.0.0.1:8888",
        "--root-dir", "/home/ubuntu/gankit", "--idle", "2700", "--max-hours", "4"]
    assert "User=ubuntu" in script.split("gankit-jupyter.service <<'UNIT'")[1].split("\nUNIT\n")[0]
    assert "trap " in script and "shutdown -h now" in script  # a failed setup does not bill on
    # Root installs only the wheel the launcher built: its digest is checked first.
    lines = script.splitlines()
    check = next(i for i, line in enumerate(lines) if SHA in line and "sha256sum" in line)
    assert check < min(i for i, line in enumerate(lines) if "pip install" in line and ".whl" in line)


@pytest.mark.parametrize("max_hours, minutes", [(4, 240), (0.5, 30), (8, 480)])
def test_user_data_schedules_an_os_shutdown_now_and_at_every_boot(max_hours, minutes):
    """The backstop if the idle check never starts or keeps crashing: the OS halts (and so stops) the
    instance after max-hours, counted from each boot, whatever runs or fails on it."""
    boot = jupyter_userdata.JupyterBoot(token_parameter=PARAMETER, region="us-east-1", wheel_uri="s3://b/jupyter/g.whl", wheel_sha256=SHA,
                                notebook_uri="s3://b/jupyter/n.ipynb", notebook_sha256=NB_SHA, bucket="b", max_hours=max_hours)
    script = jupyter_userdata.render(boot)
    lines = script.splitlines()
    # This boot: scheduled before anything that can fail or hang (finding Python, installs, downloads).
    first = next(i for i, line in enumerate(lines) if line.startswith("shutdown -h +"))
    assert lines[first].split()[:3] == ["shutdown", "-h", f"+{minutes}"]
    assert first < min(i for i, line in enumerate(lines) if "pip install" in line or "aws s3 cp" in line
                       or line.startswith("PY="))
    # Every later boot (a stopped instance started again): a unit of its own, enabled up front too.
    unit = script.split("cat >/etc/systemd/system/gankit-max-hours.service <<'UNIT'\n", 1)[1].split("\nUNIT\n", 1)[0]
    assert "Type=oneshot" in unit and "WantedBy=multi-user.target" in unit
    assert exec_start(script, "gankit-max-hours.service")[:3] == ["/sbin/shutdown", "-h", f"+{minutes}"]
    enable = next(i for i, line in enumerate(lines) if line.startswith("systemctl enable gankit-max-hours.service"))
    assert enable < min(i for i, line in enumerate(lines) if "pip install" in line)


def boot_with(**changes):
    fields = dict(token_parameter=PARAMETER, region="us-east-1", wheel_uri="s3://b/jupyter/g.whl", wheel_sha256=SHA,
                  notebook_uri="s3://b/jupyter/n.ipynb", notebook_sha256=NB_SHA, bucket="b/team-a")
    return jupyter_userdata.JupyterBoot(**{**fields, **changes})


def test_unit_files_are_written_exactly_as_rendered(tmp_path):
    """Quoted heredocs: bash expands nothing in a unit file, so what lands on disk is what was rendered."""
    import re

    script = jupyter_userdata.render(boot_with())
    blocks = re.findall(r"cat >/etc/systemd/system/(\S+) <<'UNIT'\n(.*?)\nUNIT\n", script, re.S)
    assert [name for name, _ in blocks] == ["gankit-max-hours.service", "gankit-setup-check.service",
                                            "gankit-jupyter.service", "gankit-idle.service"]
    assert "<<UNIT" not in script
    for name, body in blocks:
        block = f"cat >{tmp_path / name} <<'UNIT'\n{body}\nUNIT\n"
        subprocess.run(["bash", "-euc", block], check=True, env={"PATH": os.environ["PATH"], "PY": "/x"})
        assert (tmp_path / name).read_text() == body + "\n"
    assert "GANKIT_BUCKET=b/team-a" in dict(blocks)["gankit-jupyter.service"]


@pytest.mark.parametrize("changes", [{"bucket": "b/$(touch /tmp/pwned)"}, {"bucket": "b/a b"},
                                     {"region": "us-east-1`id`"}, {"token_parameter": "/gankit/%h/token"}])
def test_a_value_that_is_not_a_plain_word_never_reaches_a_unit_file(changes):
    with pytest.raises(ValueError, match="not a plain word"):
        jupyter_userdata.render(boot_with(**changes))


def _run_setup_head(tmp_path, script, wheel_bytes):
    """The script up to its wheel's checksum, run here: its absolute paths moved below tmp_path, and
    stand-ins for aws (which "downloads" `wheel_bytes`), shutdown (which logs its arguments) and systemctl."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "aws").write_text(f"#!/bin/sh\nprintf %s {shlex.quote(wheel_bytes)} >\"$5\"\n")  # aws s3 cp -q SRC DEST
    (stubs / "shutdown").write_text(f"#!/bin/sh\necho \"$@\" >>{tmp_path / 'shutdown.log'}\n")
    (stubs / "systemctl").write_text("#!/bin/sh\n")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    lines = script.splitlines()
    head = "\n".join(lines[:next(i for i, line in enumerate(lines) if "sha256sum" in line) + 1])
    for path in ("/var/log/", "/etc/systemd/system/", "/usr/local/bin/", "/opt/gankit-wheel"):
        (tmp_path / path.strip("/")).parent.mkdir(parents=True, exist_ok=True)
        head = head.replace(path, str(tmp_path / path.strip("/")) + ("/" if path.endswith("/") else ""))
    for path in ("var/log", "etc/systemd/system", "usr/local/bin"):
        (tmp_path / path).mkdir(parents=True, exist_ok=True)
    (tmp_path / "head.sh").write_text(head + "\necho reached-the-install\n")
    done = subprocess.run(["bash", str(tmp_path / "head.sh")], env={"PATH": f"{stubs}:{os.environ['PATH']}",
                          "GANKIT_PYTHON": sys.executable}, capture_output=True, text=True, timeout=60)
    return done, (tmp_path / "var" / "log" / "gankit-jupyter-setup.log").read_text()


def test_a_wheel_with_the_wrong_checksum_stops_the_instance_at_once(tmp_path):
    import hashlib

    script = jupyter_userdata.render(boot_with(wheel_sha256=hashlib.sha256(b"the launcher's wheel").hexdigest()))
    done, log = _run_setup_head(tmp_path, script, "a replaced wheel")
    assert done.returncode != 0 and "reached-the-install" not in log
    assert "refusing to install it" in log and "setup failed" in log
    assert (tmp_path / "shutdown.log").read_text().splitlines()[-1] == "-h now"


def test_the_right_wheel_passes_the_checksum_and_nothing_stops(tmp_path):
    import hashlib

    script = jupyter_userdata.render(boot_with(wheel_sha256=hashlib.sha256(b"the launcher's wheel").hexdigest()))
    done, log = _run_setup_head(tmp_path, script, "the launcher's wheel")
    assert done.returncode == 0 and "reached-the-install" in log, log + done.stderr
    assert "-h now" not in (tmp_path / "shutdown.log").read_text()  # only the max-hours backstop


def test_a_later_boot_of_an_unfinished_setup_stops_at_once():
    script = jupyter_userdata.render(boot_with())
    unit = script.split("gankit-setup-check.service <<'UNIT'\n", 1)[1].split("\nUNIT\n", 1)[0]
    assert f"ConditionPathExists=!{jupyter_userdata.SETUP_DONE}" in unit
    assert exec_start(script, "gankit-setup-check.service")[:3] == ["/sbin/shutdown", "-h", "now"]
    lines = script.splitlines()
    enable = next(i for i, line in enumerate(lines) if line.startswith("systemctl enable gankit-max-hours.service"))
    assert "gankit-setup-check.service" in lines[enable]
    assert enable < min(i for i, line in enumerate(lines) if "pip install" in line)
    assert lines[-1] == f"touch {jupyter_userdata.SETUP_DONE}"  # marked done only after everything else


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root, as on the instance")
def test_jupyter_s_user_owns_the_folder_it_serves_not_only_examples(tmp_path):
    """Jupyter runs as ubuntu and serves ~/gankit: ubuntu must own it to save a new notebook there, not
    only examples/ (install -d gives -o/-g to the folders it is named, not to the parents it makes)."""
    import grp
    import pwd

    user = pwd.getpwnam("nobody")  # stands in for ubuntu: an unprivileged user
    group = grp.getgrgid(user.pw_gid).gr_name
    import hashlib

    lines = jupyter_userdata.render(boot_with(notebook_sha256=hashlib.sha256(b"{}\n").hexdigest())).splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("install -d -o ubuntu"))
    last = next(i for i, line in enumerate(lines) if line.startswith("install -o ubuntu") and ".ipynb" in line)
    served = tmp_path / "home" / "ubuntu" / "gankit"
    served.parent.mkdir(parents=True)
    (tmp_path / "root-only").mkdir()
    fragment = ("\n".join(lines[first:last + 1]).replace(jupyter_userdata.ROOT_DIR, str(served))
                .replace("/opt/gankit-wheel", str(tmp_path / "root-only"))
                .replace("-o ubuntu -g ubuntu", f"-o nobody -g {group}").replace("ubuntu:ubuntu", f"nobody:{group}"))
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "aws").write_text('#!/bin/sh\necho "{}" >"$5"\n')  # aws s3 cp -q SRC DEST: the notebook
    (stubs / "aws").chmod(0o755)
    subprocess.run(["bash", "-euc", fragment], check=True, env={"PATH": f"{stubs}:{os.environ['PATH']}"})
    for path in (served, served / "examples", served / "examples" / jupyter_userdata.NOTEBOOK):
        assert path.stat().st_uid == user.pw_uid, f"{path} is not Jupyter's user's"


def _notebook_setup(script: str, private: Path) -> str:
    """The user data's lines that fetch, check and place the notebook, with root's folder moved to `private`
    and the served copy to `private/served` (no root here to chown it to ubuntu)."""
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("aws s3 cp") and ".ipynb" in line)
    end = next(i for i, line in enumerate(lines) if line.startswith("install ") and ".ipynb" in line)
    block = "\n".join(lines[start:end + 1]).replace("/opt/gankit-wheel", str(private))
    return block.replace("install -o ubuntu -g ubuntu", "install").replace(ROOT_EXAMPLES, str(private / "served"))


ROOT_EXAMPLES = f"{jupyter_userdata.ROOT_DIR}/examples"


@pytest.mark.parametrize("changed", [False, True], ids=["as-staged", "changed-in-the-bucket"])
def test_the_instance_serves_only_the_notebook_the_launcher_staged(monkeypatch, tmp_path, changed):
    """The launcher records the notebook's sha256 in the user data; a copy changed in the bucket since (anyone
    who may write there) fails the setup, and never reaches the folder Jupyter serves."""
    from launcher import instances
    from launcher.jupyter import launch
    from tests.aws_helpers import mocked_bucket
    from trainer import s3

    monkeypatch.setattr(instances, "upload_wheel", lambda prefix: (f"{prefix}/g.whl", SHA))  # no wheel build here
    with mocked_bucket(monkeypatch, "nb-bucket") as root:
        wheel_uri, wheel_sha256, notebook_uri, notebook_sha256 = launch.stage_project(root, "alice")
        if changed:
            s3.write_bytes(notebook_uri, s3.read_bytes(notebook_uri).replace(b"import json", b"import os; import json"))
        in_bucket = s3.read_bytes(notebook_uri)
    script = jupyter_userdata.render(jupyter_userdata.JupyterBoot(
        token_parameter=PARAMETER, region="us-east-1", wheel_uri=wheel_uri, wheel_sha256=wheel_sha256,
        notebook_uri=notebook_uri, notebook_sha256=notebook_sha256, bucket="nb-bucket"))
    # `aws s3 cp SRC DEST` on the instance: here, the object's bytes as the bucket holds them.
    (tmp_path / "bin").mkdir()
    (tmp_path / "object").write_bytes(in_bucket)
    fake = tmp_path / "bin" / "aws"
    fake.write_text(f'#!/bin/sh\nfor a; do dest="$a"; done\ncp {tmp_path / "object"} "$dest"\n')
    fake.chmod(0o755)
    private = tmp_path / "root-only"
    (private / "served").mkdir(parents=True)
    done = subprocess.run(["bash", "-euc", _notebook_setup(script, private)], capture_output=True, text=True,
                          env={"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    served = private / "served" / jupyter_userdata.NOTEBOOK
    if changed:
        assert done.returncode != 0 and "refusing" in done.stdout + done.stderr
        assert not served.exists()
    else:
        assert done.returncode == 0, done.stderr
        assert served.read_bytes() == (REPO / "examples" / jupyter_userdata.NOTEBOOK).read_bytes()
