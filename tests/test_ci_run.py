""".ci/run, run here on a copy (it deletes and rebuilds venvs beside itself) with stand-ins on PATH: a step
that fails stops CI there, rather than leaving the tests that need what it installs to skip."""

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _executable(path: Path, text: str):
    path.write_text(text)
    path.chmod(0o755)


def test_a_failed_apt_get_stops_ci_before_any_venv_or_test(tmp_path):
    """Without chromium test_report skips (and without Debian's Fashion-MNIST the tests that read it): CI
    that went on after a failed install would pass without them. `apt-get update && apt-get install` inside
    `|| { }` or an `if` does not trip set -e (bash ignores a failure inside an && list)."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    bin_dir = tmp_path / "bin"  # all of PATH: no chromium here, whatever this machine has
    bin_dir.mkdir()
    for tool in ("dirname", "rm"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    _executable(bin_dir / "apt-get", "#!/bin/sh\necho 'E: Could not open lock file (13: Permission denied)' >&2\n"
                                     "exit 100\n")
    _executable(bin_dir / "python3", f'#!/bin/sh\necho "$*" >> {tmp_path}/python3.calls\n')
    done = subprocess.run([shutil.which("bash"), str(tmp_path / ".ci" / "run")], cwd=tmp_path / "bin",
                          env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert ".ci/run: apt-get could not install" in done.stderr, done.stderr
    assert not (tmp_path / "python3.calls").exists()  # no venv made, no test run
