"""The local backend end to end: the launcher CLI in subprocesses, the trainer under the container contract."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from launcher.quiet import is_noise
from tests.data_helpers import make_idx_dataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_idx_dataset(tmp_path_factory.mktemp("mnist"), n_train=64, n_test=16)


@pytest.fixture
def env(tmp_path):
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, GANKIT_HOME=str(tmp_path / "home"), WORK=str(tmp_path))


def launcher(*args, env, check=True, timeout=300):
    done = subprocess.run([sys.executable, "-m", "launcher", *args], capture_output=True, text=True, env=env,
                          cwd=env["WORK"], timeout=timeout)
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def test_submit_trains_here_then_status_logs_pull_generate(env, data, tmp_path):
    done = launcher("submit", "--dataset", "mnist", "--epochs", "1", "--batch-size", "8", "--hp", f"data_dir={data}",
                    "--hp", "max_steps=4", env=env)
    job = done.stdout.split("submitted ")[1].split()[0]
    assert job.startswith("gan-mnist-cgan-") and "backend  local" in done.stdout
    assert "done: 4 steps" in done.stdout and f"pulled {job}" in done.stdout  # followed, then pulled
    bucket = tmp_path / "home" / "bucket"
    assert [p.parent.name.startswith("mnist-") for p in bucket.glob("datasets/*/MANIFEST.json")] == [True]  # as in
    # the cloud: your own copy (--hp data_dir) is named by its content
    assert (bucket / "runs" / job / "output" / "generator" / "generator.keras").exists()
    assert (bucket / "runs" / job / "checkpoints").is_dir()
    assert (tmp_path / job / "generator" / "generator.json").exists() and not (tmp_path / job / "checkpoints").exists()

    status = json.loads(launcher("status", job, "--json", env=env).stdout)
    assert status["status"] == "Completed" and status["backend"] == "local"
    assert status["cut_short"].startswith("by --max-steps 4: it ended at step 4 of the 8 its 1 epoch takes")
    plain, verbose = (launcher("logs", job, *flag, env=env).stdout.splitlines() for flag in ([], ["--verbose"]))
    assert "epoch 1/1  step 4" in "\n".join(plain)
    assert "all 4 steps done; now the last sample grid, a checkpoint, the exported generator and report.html" in plain
    chatter = [line for line in verbose if is_noise(line)]  # TensorFlow's start-up lines stay in the job's log
    assert chatter and [line for line in verbose if not is_noise(line)] == plain
    assert not any(is_noise(line) for line in done.stdout.splitlines() + done.stderr.splitlines())
    pulled = tmp_path / job
    assert list((pulled / "tensorboard").glob("events.out.tfevents.*")) and (pulled / "losses.jsonl").is_file()
    assert f"<title>{job}: cgan/sn-hinge on mnist</title>" in (pulled / "report.html").read_text()
    listed = launcher("list", env=env).stdout
    assert job in listed and "Completed" in listed

    launcher("generate", job, "--class", "7", "--count", "6", "--seed", "0", "--out", "sevens.npy", env=env)
    launcher("generate", str(tmp_path / job), "--class", "7", "--count", "6", "--seed", "0", "--out", "again.npy", env=env)
    sevens = np.load(tmp_path / "sevens.npy")
    assert sevens.shape == (6, 28, 28, 1) and sevens.dtype == np.uint8
    assert np.array_equal(sevens, np.load(tmp_path / "again.npy"))  # the job's and the pulled generator agree


def test_two_jobs_with_their_own_copies_each_train_on_their_own(env, data, tmp_path):
    """Every local job's --hp data_dir copy went to datasets/<name>/: a second job's replaced the first's under it,
    and the first trainer, still starting, trained on the second job's images."""
    other = make_idx_dataset(tmp_path / "other", n_train=32, n_test=16)
    barrier = tmp_path / "second-submitted"
    hold = tmp_path / "hold"  # the first job's trainer starts only once the second job is submitted
    hold.mkdir()
    (hold / "sitecustomize.py").write_text(
        "import os, pathlib, time\n"
        "if os.environ.get('GANKIT_SM_ROOT'):\n"
        f"    while not pathlib.Path({str(barrier)!r}).exists():\n"
        "        time.sleep(0.05)\n")
    held = dict(env, PYTHONPATH=os.pathsep.join([str(hold), env["PYTHONPATH"]]))
    args = ("submit", "--dataset", "mnist", "--epochs", "1", "--batch-size", "8", "--hp", "max_steps=1", "--detach")
    first = launcher(*args, "--hp", f"data_dir={data}", env=held).stdout.split("submitted ")[1].split()[0]
    second = launcher(*args, "--hp", f"data_dir={other}", env=env).stdout.split("submitted ")[1].split()[0]
    barrier.touch()
    for job in (first, second):
        deadline = time.monotonic() + 120
        while json.loads(launcher("status", job, "--json", env=env).stdout)["status"] == "InProgress":
            assert time.monotonic() < deadline
            time.sleep(0.5)
    logs = {job: launcher("logs", job, env=env).stdout for job in (first, second)}
    assert "on mnist (64 images, 28x28x1)" in logs[first] and "on mnist (32 images, 28x28x1)" in logs[second]


def test_stop_checkpoints_and_resume_continues(env, data, tmp_path, request):
    done = launcher("submit", "--dataset", "mnist", "--epochs", "300", "--batch-size", "8", "--hp", f"data_dir={data}",
                    "--detach", env=env)
    job = done.stdout.split("submitted ")[1].split()[0]
    record = json.loads((Path(env["GANKIT_CONFIG"]).parent / "jobs" / f"{job}.json").read_text())
    request.addfinalizer(lambda: _kill(record["pid"]))  # a failed check must not leave 300 epochs running
    log = Path(env["GANKIT_CONFIG"]).parent / "jobs" / job / "train.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "epoch 2/300" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.2)
    assert json.loads(launcher("status", job, "--json", env=env).stdout)["status"] == "InProgress"
    launcher("stop", job, env=env)
    deadline = time.monotonic() + 60
    while json.loads(launcher("status", job, "--json", env=env).stdout)["status"] == "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert json.loads(launcher("status", job, "--json", env=env).stdout)["status"] == "Stopped"
    stopped_at = int(log.read_text().split("stopped by SIGTERM at step ")[1].split(";")[0])
    # The trainer's advice, as `launcher logs` shows it: the launcher resumes a job, not the same command.
    assert f"checkpoint is written and `launcher submit --resume {job}` continues it\n" in log.read_text()
    assert "same command" not in log.read_text()

    again = launcher("submit", "--dataset", "mnist", "--epochs", "300", "--batch-size", "8", "--hp", f"data_dir={data}",
                     "--hp", f"max_steps={stopped_at + 2}", "--resume", job, env=env)
    assert f"at step {stopped_at}" in again.stdout and f"done: {stopped_at + 2} steps" in again.stdout


def test_a_failed_local_job_says_why(env, tmp_path):
    done = launcher("submit", "--dataset", "mnist", "--hp", f"data_dir={tmp_path / 'missing'}", env=env, check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "missing" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def _kill(pid):
    try:
        os.killpg(pid, signal.SIGKILL)  # the job runs in its own session: wrapper and trainer
    except ProcessLookupError:
        pass


def test_a_damaged_exit_status_file_is_a_failed_job_not_a_traceback(tmp_path):
    from launcher.backends import local

    (tmp_path / "exit_code").write_text("14\x003garbage\n")
    record = {"sm_root": str(tmp_path), "pid": 2**22 + 1, "log": str(tmp_path / "train.log"), "submitted_at": "t"}
    info = local.describe(record)
    assert info["status"] == "Failed"
    assert "not an exit status" in info["failure_reason"] and str(tmp_path / "output") in info["failure_reason"]
    (tmp_path / "exit_code").write_bytes(b"\xff\xfe\n")  # not even UTF-8
    info = local.describe(record)
    assert info["status"] == "Failed" and "not an exit status" in info["failure_reason"]
    for stopped in ("143", "130", "129"):  # checkpointed and stopped by SIGTERM, Ctrl-C, SIGHUP
        (tmp_path / "exit_code").write_text(f"{stopped}\n")
        assert local.describe(record)["status"] == "Stopped"
    (tmp_path / "exit_code").write_text("1\n")
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "failure").write_text("")  # what a trainer on a full disk left: "failed: no reason given"
    assert local.describe(record)["failure_reason"] == "the trainer exited with 1"
    (tmp_path / "exit_code").write_text("-9\n")  # kill -9, or the OOM killer: it said "exited with -9"
    assert local.describe(record)["failure_reason"].startswith("the trainer was killed by SIGKILL; `launcher submit")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from /proc")
def test_a_pid_taken_by_another_process_is_not_the_job(tmp_path):
    """After a reboot the recorded pid may name a stranger: the job is not running, and stop leaves it be."""
    from launcher.backends import local

    stranger = subprocess.Popen(["sleep", "60"])
    try:
        record = {"sm_root": str(tmp_path), "pid": stranger.pid, "log": str(tmp_path / "train.log"),
                  "submitted_at": "t", "pid_started": local._start_time(stranger.pid)}
        assert local.describe(record)["status"] == "InProgress"  # the job's own process, by pid and start time
        record["pid_started"] = str(int(record["pid_started"]) - 1)  # the same pid, started at another moment
        info = local.describe(record)
        assert info["status"] == "Failed" and "vanished" in info["failure_reason"]
        local.stop(record)
        assert stranger.poll() is None  # not signalled
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from /proc")
def test_stop_of_a_job_that_ends_before_the_signal_says_it_ended(tmp_path, monkeypatch, capsys):
    # The job exits between stop's look at its status and its SIGTERM: os.kill raised ProcessLookupError,
    # a traceback, where the job had simply ended.
    from launcher import jobs
    from launcher.backends import local
    from launcher.cli import main

    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))
    sm_root = jobs.jobs_dir() / "gan-local-1"  # where the local backend keeps its job's files
    sm_root.mkdir(parents=True)
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    record = jobs.save({"job": "gan-local-1", "backend": "local", "output_uri": str(tmp_path / "runs" / "gan-local-1" / "output"),
                        "sm_root": str(sm_root), "pid": job.pid, "pid_started": local._start_time(job.pid),
                        "log": str(sm_root / "train.log"), "submitted_at": "t"})
    real, looks = local.describe, []

    def describe(record):
        info = real(record)
        looks.append(info["status"])
        if len(looks) == 2:  # stop's own look: the job ends right after it
            job.kill()
            job.wait()
            (sm_root / "exit_code").write_text("0\n")
        return info

    monkeypatch.setattr(local, "describe", describe)
    with pytest.raises(SystemExit) as exit_:
        main(["stop", record["job"]])
    out, err = capsys.readouterr()
    assert looks[:2] == ["InProgress", "InProgress"] and "Traceback" not in err, err
    assert exit_.value.code == 0 and out == "gan-local-1 has ended already (Completed); nothing to stop\n", out + err


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the job's session is read from /proc")
def test_a_trainer_whose_wrapper_was_killed_is_still_the_job_and_stop_stops_it(tmp_path):
    """kill -9 of the wrapper (or the OOM killer): its trainer trains on. `status` said Failed ("vanished"),
    `stop` said "ended already" and left it running, and `logs -f` ended while it trained on."""
    from launcher.backends import local

    trainer = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)); "
               "print('ready', flush=True); time.sleep(60)")
    wrapper = ("import sys; from launcher.backends.local import run_and_record; "
               f"run_and_record(sys.argv[1], command=[sys.executable, '-c', {trainer!r}, 'trainer.contract'])")
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    job = subprocess.Popen([sys.executable, "-c", wrapper, str(tmp_path / "exit_code")], start_new_session=True,
                           stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert job.stdout.readline() == b"ready\n"
        record = {"job": "j", "sm_root": str(tmp_path), "pid": job.pid, "log": str(tmp_path / "log"),
                  "submitted_at": "t", "pid_started": local._start_time(job.pid)}
        job.kill()
        job.wait()
        assert local.describe(record)["status"] == "InProgress"  # its trainer trains on
        stranger_record = {**record, "pid": stranger.pid, "pid_started": "0"}  # its pid, reused after a reboot
        assert local.describe(stranger_record)["status"] == "Failed"  # not the job: a session without its trainer
        local.stop(record)
        deadline = time.monotonic() + 30
        while local.describe(record)["status"] == "InProgress":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert local.describe(record)["status"] == "Stopped"
        assert stranger.poll() is None
    finally:
        _kill(job.pid)
        stranger.kill()
        stranger.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="sees the zombie in /proc")
def test_a_wrapper_killed_while_submit_waits_on_it_has_ended_where_there_is_no_proc(tmp_path, monkeypatch):
    # macOS has no /proc. A wrapper killed while `submit` (its parent) follows the job stays a zombie until reaped,
    # and kill(pid, 0) still finds a zombie: the job was InProgress for ever, and `submit --wait` never returned.
    from launcher.backends import local

    monkeypatch.setattr(local, "_proc_stat", lambda pid: None)  # what macOS gives
    wrapper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    record = {"job": "j", "sm_root": str(tmp_path), "pid": wrapper.pid, "log": "x", "submitted_at": "t"}
    assert local.describe(record)["status"] == "InProgress"
    os.kill(wrapper.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{wrapper.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    info = local.describe(record)
    assert info["status"] == "Failed" and "vanished" in info["failure_reason"]


def test_a_job_whose_wrapper_died_unrecorded_says_what_its_trainer_left(tmp_path):
    from launcher.backends import local

    record = {"job": "j", "sm_root": str(tmp_path), "pid": 2**22 + 1, "log": "x", "submitted_at": "t"}
    info = local.describe(record)
    assert info["status"] == "Failed" and "vanished" in info["failure_reason"]
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "failure").write_text("out of memory at step 9\n")
    info = local.describe(record)
    assert info["status"] == "Failed" and info["failure_reason"].startswith("out of memory at step 9 (")
    (tmp_path / "output" / "failure").unlink()
    (tmp_path / "model").mkdir()  # the contract's last step, killed as it copied the generator: not completed
    (tmp_path / "model" / "generator.keras").write_bytes(b"PK\x03\x04 cut short")
    info = local.describe(record)
    assert info["status"] == "Failed" and "while it copied the generator into" in info["failure_reason"]
    (tmp_path / "model" / "generator.json").write_text("{}")  # copied last: the copy is whole
    assert local.describe(record)["status"] == "Completed"


@pytest.fixture
def sigterm_kept():
    """run_and_record (the job's wrapper process) relays SIGTERM to its trainer; called in pytest's process,
    pytest's own handler is put back afterwards, so later tests in this worker do not inherit the relay."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_local_job_past_its_max_run_is_stopped_with_sigterm_and_says_why(tmp_path, sigterm_kept):
    # The trainer stand-in checkpoints on SIGTERM as the real one does: exit 143 (Stopped), then resume.
    from launcher.backends import local

    trainer = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)); "
               "print('ready', flush=True); time.sleep(60)")
    started = time.monotonic()
    code = local.run_and_record(str(tmp_path / "exit_code"), max_run=1, command=[sys.executable, "-c", trainer])
    assert code == 143 and time.monotonic() - started < 30
    record = {"job": "j", "sm_root": str(tmp_path), "pid": 2**22 + 1, "log": str(tmp_path / "log"),
              "submitted_at": "t"}
    info = local.describe(record)
    assert info["status"] == "Stopped" and "max run reached" in info["failure_reason"]
    assert "--resume j" in info["failure_reason"]
    (tmp_path / "exit_code").write_text("-9\n")  # a trainer that outlived the stop's grace, then killed
    info = local.describe(record)
    assert info["status"] == "Stopped" and "max run reached" in info["failure_reason"]  # as EC2 says it

    (tmp_path / "again").mkdir()  # no --max-run: it runs until it ends by itself
    code = local.run_and_record(str(tmp_path / "again" / "exit_code"), command=[sys.executable, "-c", "pass"])
    assert code == 0 and not (tmp_path / "again" / local.MAX_RUN_REACHED).exists()


def test_a_local_job_stopped_before_its_trainer_can_checkpoint_is_stopped_not_failed(tmp_path, sigterm_kept):
    # `launcher stop` right after `submit --detach`: the trainer, still importing TensorFlow, had no SIGTERM handler
    # yet and died of the signal, and `status` said "Failed: the trainer exited with -15".
    from launcher.backends import local

    trainer = "import time; print('importing', flush=True); time.sleep(60)"  # no handler, as during start-up
    threading.Timer(0.8, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()  # what `launcher stop` sends
    code = local.run_and_record(str(tmp_path / "exit_code"), command=[sys.executable, "-c", trainer])
    assert code == 143
    info = local.describe({"job": "j", "sm_root": str(tmp_path), "pid": 2**22 + 1, "log": "x", "submitted_at": "t"})
    assert info["status"] == "Stopped" and not info["failure_reason"], info


def test_a_stop_as_the_trainer_starts_reaches_it(tmp_path):
    # The wrapper started the trainer, then set up its SIGTERM relay: a `launcher stop` in between killed the
    # wrapper alone, and the trainer trained on with no one to stop it at its max run or record its exit.
    script = ("import os, signal, subprocess, sys\n"
              "from launcher.backends import local\n"
              "real = subprocess.Popen\n"
              "def popen(*args, **kwargs):\n"
              "    child = real(*args, **kwargs)\n"
              "    os.kill(os.getpid(), signal.SIGTERM)  # what `launcher stop` sends, as the trainer starts\n"
              "    return child\n"
              "subprocess.Popen = popen\n"
              "sys.exit(local.run_and_record(sys.argv[1], command=[sys.executable, '-c', 'import time; time.sleep(10)']))")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "exit_code")], cwd=ROOT, timeout=60)
    assert done.returncode == 143 and time.monotonic() - started < 8
    assert (tmp_path / "exit_code").read_text() == "143\n"


def test_a_local_job_stopped_just_before_its_max_run_says_stopped_not_max_run(tmp_path, sigterm_kept):
    # `launcher stop` at 0.8 s; the trainer's checkpoint takes 2 s, past the 1.5 s max run: the status said
    # "max run reached" of a job its owner stopped, and the trainer got a second SIGTERM.
    from launcher.backends import local

    trainer = ("import signal, sys, time\n"
               "def stop(*_):\n    time.sleep(2); sys.exit(143)\n"
               "signal.signal(signal.SIGTERM, stop)\nprint('ready', flush=True)\ntime.sleep(60)")
    threading.Timer(0.8, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()  # what `launcher stop` sends
    code = local.run_and_record(str(tmp_path / "exit_code"), max_run=1.5, command=[sys.executable, "-c", trainer])
    assert code == 143 and not (tmp_path / local.MAX_RUN_REACHED).exists()
    info = local.describe({"job": "j", "sm_root": str(tmp_path), "pid": 2**22 + 1, "log": "x", "submitted_at": "t"})
    assert info["status"] == "Stopped" and not info["failure_reason"], info


def test_a_stop_right_after_submit_stops_the_job(data, tmp_path, monkeypatch):
    # `launcher submit --detach ... && launcher stop JOB`: the stop reached the wrapper while Python was still
    # importing it, before its SIGTERM relay was set up; the signal killed it, and `status` said Failed ("the
    # trainer process vanished ... --resume continues from its last checkpoint", of a job that never had one).
    from launcher.backends import local
    from launcher.spec import build_spec

    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))
    spec = build_spec(dataset="mnist", epochs=1, batch_size=8, hp=[f"data_dir={data}", "max_steps=4"], backend="local")
    record = local.submit(spec)
    assert local.stop(record) is None  # at once: the wrapper has only just been forked
    deadline = time.monotonic() + 120
    while (info := local.describe(record))["status"] == "InProgress" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert info["status"] == "Stopped" and not info["failure_reason"], info


def test_a_job_whose_trainer_failed_after_exporting_is_not_completed(tmp_path):
    # Its wrapper gone unrecorded, a trainer that exported its generator and then failed (publishing its outputs,
    # say) left both model/ whole and output/failure: the failure wins, as its exit status would have said.
    from launcher.backends import local

    record = {"job": "j", "sm_root": str(tmp_path), "pid": 2**22 + 1, "log": "x", "submitted_at": "t"}
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "generator.keras").write_bytes(b"PK\x03\x04")
    (tmp_path / "model" / "generator.json").write_text("{}")
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "failure").write_text("could not publish the run's outputs\n")
    info = local.describe(record)
    assert info["status"] == "Failed" and info["failure_reason"].startswith("could not publish the run's outputs (")


def test_an_ended_local_job_says_when_it_ended_and_its_duration_stops_there(tmp_path):
    # When the wrapper recorded the exit status: `status` and `list` show the run's duration up to then, not a
    # dash (nobody knows when) or a clock still running.
    from datetime import datetime, timezone

    from launcher.backends import local
    from launcher.cli import _duration

    record = {"job": "j", "sm_root": str(tmp_path), "pid": 2**22 + 1, "log": "x",
              "submitted_at": "2026-12-06T10:00:00+00:00"}
    for code in ("0", "143", "1"):
        (tmp_path / "exit_code").write_text(f"{code}\n")
        ended = datetime(2026, 12, 6, 11, 30, tzinfo=timezone.utc).timestamp()
        os.utime(tmp_path / "exit_code", (ended, ended))
        info = local.describe(record)
        assert info["ended"] == "2026-12-06T11:30:00+00:00" and _duration(info) == "1h30m", info
