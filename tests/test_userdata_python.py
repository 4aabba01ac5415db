"""Which Python the instances' user data installs into: one that has TensorFlow, else a venv of its own."""

import os
import stat
import subprocess
from pathlib import Path

from launcher import train_userdata


def _executable(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _chosen(snippet: str, path: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GANKIT_PYTHON"}
    env["PATH"] = path
    done = subprocess.run(["bash", "-c", f"set -euo pipefail\n{snippet}\necho \"$PY\""], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_first_python_with_tensorflow_is_used_and_one_without_is_passed_over(tmp_path):
    without = _executable(tmp_path / "without", '#!/bin/sh\ncase "$*" in *tensorflow*) exit 1;; esac\n')
    with_tf = _executable(tmp_path / "with", "#!/bin/sh\nexit 0\n")
    snippet = train_userdata.find_python([str(tmp_path / "missing"), without, with_tf], venv=str(tmp_path / "venv"))
    assert _chosen(snippet, os.environ["PATH"]) == with_tf
    assert not (tmp_path / "venv").exists()


def test_without_tensorflow_anywhere_a_venv_of_its_own_is_made(tmp_path):
    without = _executable(tmp_path / "without", '#!/bin/sh\ncase "$*" in *tensorflow*) exit 1;; esac\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A stand-in for the image's python3: records the call and makes the venv's interpreter.
    _executable(bin_dir / "python3", f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\n'
                                     'mkdir -p "$3/bin" && touch "$3/bin/python3"\n')
    venv = tmp_path / "venv"
    snippet = train_userdata.find_python([without], venv=str(venv))
    assert _chosen(snippet, f"{bin_dir}:{os.environ['PATH']}") == str(venv / "bin" / "python3")
    assert (tmp_path / "calls").read_text().split() == ["-m", "venv", str(venv)]


def test_gankit_python_overrides_the_search():
    env = {**os.environ, "GANKIT_PYTHON": "/some/python"}
    done = subprocess.run(["bash", "-c", f"{train_userdata.FIND_PYTHON}\necho \"$PY\""], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "/some/python"


def test_a_venv_that_cannot_be_made_stops_the_script_there_with_a_line_saying_so(tmp_path):
    """A failed apt-get inside `venv || { apt-get ... && venv; }` does not trip `set -e` (bash ignores a
    failure inside an && list): without its own exit the script went on with a $PY that does not exist."""
    without = _executable(tmp_path / "without", '#!/bin/sh\ncase "$*" in *tensorflow*) exit 1;; esac\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "python3", "#!/bin/sh\necho 'ensurepip is not available' >&2\nexit 1\n")
    _executable(bin_dir / "apt-get", "#!/bin/sh\necho 'E: Could not get lock /var/lib/dpkg/lock' >&2\nexit 100\n")
    snippet = train_userdata.find_python([without], venv=str(tmp_path / "venv"))
    env = {k: v for k, v in os.environ.items() if k != "GANKIT_PYTHON"}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    done = subprocess.run(["bash", "-c", f"set -euo pipefail\n{snippet}\necho \"went on with $PY\""], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "went on" not in done.stdout
    assert f"gankit: cannot make a venv at {tmp_path / 'venv'}" in done.stdout
