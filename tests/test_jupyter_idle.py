"""The idle check against a fake Jupyter API and a fake GPU reading: it stops only when both sit idle."""

import time
from datetime import datetime, timedelta, timezone

import pytest

from launcher.remote import idle_check
from launcher.remote.idle_check import Reading, State, decide
from tests.jupyter_helpers import PARAMETER, token, FakeJupyter  # noqa: F401 (token is a fixture)

IDLE = 3600  # seconds


def ago(seconds):
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def kernel(last_activity, state="idle", kid="k1"):
    return {"id": kid, "name": "python3", "last_activity": last_activity, "execution_state": state, "connections": 1}


@pytest.fixture
def jupyter(token):
    with FakeJupyter(token) as fake:
        yield fake


@pytest.fixture
def run(jupyter, tmp_path, monkeypatch):
    """Run one real check (`--once`); returns whether the stop command ran."""
    monkeypatch.setattr(idle_check, "uptime", lambda: 3 * 3600.0)  # booted three hours ago
    marker = tmp_path / "stopped"
    state = tmp_path / "run" / "idle.json"

    def once(gpu="0", max_hours=8, api=None, idle=IDLE, root=None):
        marker.unlink(missing_ok=True)
        argv = ["--token-parameter", PARAMETER, "--region", "us-east-1", "--api", api or jupyter.url,
                *(["--root-dir", str(root)] if root else []),
                "--idle", str(idle), "--max-hours", str(max_hours), "--once", "--state", str(state),
                "--gpu-command", f"printf '{gpu}\\n'", "--stop-command", f"echo stop >> {marker}"]
        try:
            idle_check.main(argv)
        except SystemExit as e:
            assert e.code == 0
        return marker.exists()

    return once


def test_recent_kernel_activity_keeps_it_running(run, jupyter):
    jupyter.kernels = [kernel(ago(120))]
    assert run(gpu="0") is False


def test_idle_kernels_and_idle_gpu_stop_it(run, jupyter, capsys):
    jupyter.kernels = [kernel(ago(2 * 3600)), kernel(ago(3 * 3600), kid="k2")]
    assert run(gpu="0\n1") is True
    assert "no kernel or terminal activity, file saved or GPU use for 2:00:00" in capsys.readouterr().out


def test_an_open_browser_tab_does_not_count(run, jupyter):
    # The tab polls the API, so the server-wide clock is fresh; the kernel did nothing for 2 h.
    jupyter.status = {"last_activity": ago(1), "kernels": 1, "connections": 1}
    jupyter.sessions = [{"id": "s1", "path": "examples/pull_and_generate.ipynb", "kernel": kernel(ago(2 * 3600))}]
    jupyter.kernels = [kernel(ago(2 * 3600))]
    assert run(gpu="0") is True  # its server-wide last_activity is not read, only when it started


def test_a_busy_gpu_keeps_it_running(run, jupyter):
    jupyter.kernels = [kernel(ago(2 * 3600))]
    assert run(gpu="0\n87") is False


def test_a_busy_kernel_keeps_it_running(run, jupyter):
    jupyter.kernels = [kernel(ago(2 * 3600), state="busy")]
    assert run(gpu="0") is False


def test_a_recent_terminal_keeps_it_running(run, jupyter):
    jupyter.kernels = [kernel(ago(2 * 3600))]
    jupyter.terminals = [{"name": "1", "last_activity": ago(60)}]
    assert run(gpu="0") is False


def test_a_recent_kernel_known_only_from_its_session_keeps_it_running(run, jupyter):
    # A check of its own: one after the terminal's would pass on the activity it remembered from that one.
    jupyter.kernels = [kernel(ago(2 * 3600))]
    jupyter.sessions = [{"id": "s1", "kernel": kernel(ago(30), kid="k9")}]
    assert run(gpu="0") is False


def test_gpu_use_seen_earlier_is_remembered(run, jupyter):
    jupyter.kernels = [kernel(ago(2 * 3600))]
    assert run(gpu="95") is False  # a training loop on the GPU, outside any kernel
    assert run(gpu="0") is False  # it just finished: idle for seconds, not hours
    assert run(gpu="not a number") is False  # an unreadable GPU counts as idle, the memory still holds


def test_no_jupyter_counts_as_idle_kernels_but_the_gpu_still_counts(run):
    assert run(gpu="50", api="http://127.0.0.1:9") is False
    assert run(gpu="0", api="http://127.0.0.1:9") is False  # the GPU was busy a moment ago


def test_a_dead_jupyter_does_not_keep_it_alive(run):
    assert run(gpu="0", api="http://127.0.0.1:9") is True


def test_max_hours_stops_it_whatever_happens(run, jupyter, capsys):
    jupyter.kernels = [kernel(ago(1), state="busy")]
    assert run(gpu="100", max_hours=2) is True
    assert "up for 3:00:00, the --max-hours limit" in capsys.readouterr().out


def test_a_rotated_token_is_read_again(run, jupyter, token):
    jupyter.kernels = [kernel(ago(60))]
    checker = idle_check.Checker(idle_check.parse_args(["--token-parameter", PARAMETER, "--api", jupyter.url]),
                                 read_token=iter(["stale", token]).__next__)
    assert checker.activity()[0] is not None
    assert checker.token == token


def test_decide_counts_from_boot_and_never_before_it():
    now = 1_000_000.0
    fresh = Reading(now=now, uptime=600, last_activity=None, busy=False, gpu_percent=0.0)
    state, reason = decide(None, fresh, IDLE, 8 * 3600)
    assert reason is None and state.last_active == now - 600
    # Activity stamps from before this boot (a stale state file) do not count.
    state, reason = decide(State(last_active=now - 10 * 3600), Reading(now, 2 * 3600, None, False, 0.0), IDLE, 8 * 3600)
    assert state.last_active == now - 2 * 3600 and reason.startswith("no kernel or terminal activity")
    # A GPU below the threshold is idle; at it, busy.
    assert decide(None, Reading(now, 2 * 3600, None, False, 4.9), IDLE, 8 * 3600)[1] is not None
    assert decide(None, Reading(now, 2 * 3600, None, False, 5.0), IDLE, 8 * 3600)[1] is None


def test_the_idle_clock_starts_when_jupyter_started_not_at_boot(run, jupyter, monkeypatch):
    # The first boot installs TensorFlow, the project and JupyterLab before Jupyter and this check start:
    # counted from boot, an --idle shorter than that setup stopped the instance at this check's first look,
    # the moment Jupyter came up and before its user could have connected (the launcher, still waiting for
    # Jupyter, then said the instance had stopped). Nobody could use it before Jupyter answered.
    import types

    monkeypatch.setattr(idle_check, "uptime", lambda: 20 * 60.0)  # a setup of 20 minutes
    jupyter.status = {"started": ago(5), "last_activity": ago(5), "kernels": 0, "connections": 0}
    assert run(gpu="0", idle=10 * 60) is False
    later = time.time() + 11 * 60  # 11 minutes on, still nobody used it: now it stops
    monkeypatch.setattr(idle_check, "uptime", lambda: 31 * 60.0)
    monkeypatch.setattr(idle_check, "time", types.SimpleNamespace(time=lambda: later, sleep=time.sleep))
    assert run(gpu="0", idle=10 * 60) is True


def test_a_jupyter_that_never_answers_is_idle_from_boot(run, monkeypatch):
    monkeypatch.setattr(idle_check, "uptime", lambda: 20 * 60.0)
    assert run(gpu="0", idle=10 * 60, api="http://127.0.0.1:9") is True


def test_a_reply_cut_short_counts_as_no_answer_not_a_crash(run, capsys):
    # A Jupyter that dies mid-reply (Content-Length promised, connection closed) raised http.client.IncompleteRead,
    # which is no OSError: the check crashed with a traceback, and systemd started it again 30 s later, each time.
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def cut_short():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[{")

    threading.Thread(target=cut_short, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        assert run(gpu="50", api=url) is False  # the GPU still counts
        assert run(gpu="0", api=url) is False  # ...and is remembered, as with no Jupyter at all
    finally:
        listener.close()
    assert "Jupyter is not answering" in capsys.readouterr().out


def test_a_notebook_saved_lately_keeps_it_running(run, jupyter, tmp_path):
    # Editing a notebook runs no cell, so no kernel activity: a user writing for longer than --idle had the
    # instance stopped under them. JupyterLab autosaves what is edited every two minutes; a save counts.
    import os

    root = tmp_path / "served"
    (root / "notes" / ".ipynb_checkpoints").mkdir(parents=True)
    notebook = root / "notes" / "draft.ipynb"
    notebook.write_text("{}")
    hidden = root / "notes" / ".ipynb_checkpoints" / "draft-checkpoint.ipynb"
    hidden.write_text("{}")
    (root / "notes" / ".~draft.ipynb").write_text("{}")  # an editor's lock file: hidden, not the user's work either
    long_ago = time.time() - 2 * IDLE
    os.utime(notebook, (long_ago, long_ago))
    # Nothing saved for two hours (Jupyter's own checkpoint copy, just written, is not the user's work): stopped.
    assert run(root=root) is True
    os.utime(notebook)  # autosaved just now
    assert run(root=root) is False
