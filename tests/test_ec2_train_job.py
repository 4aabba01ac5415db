"""The EC2 job's runner, run here for real against the moto S3 server with the trainer."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import boto3
import pytest

from launcher.remote import train_job
from tests.data_helpers import make_idx_dataset
from trainer import layout, s3
from trainer.dataset_staging import stage_dataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bucket(aws_env):
    name = f"gankit-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture
def staged(bucket, tmp_path):
    data = layout.dataset_prefix(bucket, "mnist")
    stage_dataset("mnist", data, data_dir=make_idx_dataset(tmp_path / "mnist", n_train=64, n_test=32), log=lambda m: None)
    return data


def write_job(root, name, data_uri, max_run=600, **hyperparameters):
    job = {"job": name, "root": root, "data_uri": data_uri, "max_run": max_run, "region": "us-east-1",
           "checkpoint_uri": layout.checkpoints_prefix(root, name), "output_uri": layout.output_prefix(root, name),
           "hyperparameters": {"dataset": "mnist", "epochs": "1", "batch_size": "16", "max_steps": "4",
                               "preset": "seed", **hyperparameters}}
    uri = train_job.job_uri(root, name)
    s3.write_bytes(uri, json.dumps(job).encode())
    return uri


def run_runner(uri, tmp_path, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "launcher.remote.train_job", "--job-uri", uri,
                           "--work-dir", str(tmp_path / "work")], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=tmp_path)


def status_of(root, name):
    return json.loads(s3.read_bytes(train_job.status_uri(root, name)))


def test_runner_trains_and_leaves_outputs_and_log_under_the_run_prefix(bucket, staged, tmp_path):
    uri = write_job(bucket, "ec2-j1", staged)
    done = run_runner(uri, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = s3.list_objects(layout.output_prefix(bucket, "ec2-j1"))
    assert {"metrics.jsonl", "generator/generator.json", "generator/generator.keras"} <= set(outputs)
    assert any(k.endswith("MANIFEST.json") for k in s3.list_objects(layout.checkpoints_prefix(bucket, "ec2-j1")))
    metrics = [json.loads(line) for line in s3.read_bytes(f"{layout.output_prefix(bucket, 'ec2-j1')}/metrics.jsonl")
               .decode().splitlines()]
    assert metrics[-1]["step"] == 4
    log = s3.read_bytes(train_job.log_uri(bucket, "ec2-j1")).decode()
    assert "starting the trainer" in log and "job ec2-j1 completed (exit code 0)" in log
    status = status_of(bucket, "ec2-j1")
    assert status["status"] == "Completed" and status["failure_reason"] is None and status["ended"] >= status["started"]
    # One transport: the trainer's own copies under output/ and checkpoints/; the runner adds its log and status.
    tops = {key.split("/", 1)[0] for key in s3.list_objects(layout.run_prefix(bucket, "ec2-j1"))}
    assert tops == {"job.json", "train.log", "status.json", "output", "checkpoints"}
    assert not any(k.startswith(("data/", "model/")) for k in outputs)  # the contract's local copies stay local


def test_runner_reports_a_failed_trainer(bucket, staged, tmp_path):
    uri = write_job(bucket, "ec2-bad", staged, epochs="zero")
    done = run_runner(uri, tmp_path)
    assert done.returncode == 1
    status = status_of(bucket, "ec2-bad")
    assert status["status"] == "Failed" and "epochs" in status["failure_reason"]
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in done.stderr
    assert "failed (exit code" in s3.read_bytes(train_job.log_uri(bucket, "ec2-bad")).decode()


def test_runner_stops_the_trainer_at_max_run(bucket, staged, tmp_path):
    uri = write_job(bucket, "ec2-slow", staged, max_run=2, epochs="1000", max_steps="100000")
    done = run_runner(uri, tmp_path)
    assert done.returncode == 1
    status = status_of(bucket, "ec2-slow")
    assert status["status"] == "Stopped" and "max run reached" in status["failure_reason"]
    assert "--resume ec2-slow" in status["failure_reason"]
    assert "max run of 2 s reached" in s3.read_bytes(train_job.log_uri(bucket, "ec2-slow")).decode()


def test_runner_refuses_a_missing_job(bucket, tmp_path):
    done = run_runner(f"{bucket}/runs/nope/job.json", tmp_path)
    assert done.returncode == 2 and "does not exist" in done.stderr


@pytest.mark.parametrize("body, says", [(b"{not json", "is not valid JSON"), (b"[1]", "not a job"),
                                        (None, "max_run '1h' is not a positive number of seconds")])
def test_runner_refuses_a_broken_job_document_in_one_line(bucket, staged, tmp_path, body, says):
    uri = write_job(bucket, "ec2-broken", staged, max_run="1h")
    if body is not None:
        s3.write_bytes(uri, body)
    done = run_runner(uri, tmp_path)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_a_runner_that_cannot_start_the_trainer_still_reports_why(bucket, staged, tmp_path, monkeypatch):
    """An image job whose ECR login is refused (a plain IAM gap) ends Failed with the reason, not InProgress."""
    from trainer.errors import GankitError

    uri = write_job(bucket, "ec2-ecr", staged)
    job = json.loads(s3.read_bytes(uri))
    s3.write_bytes(uri, json.dumps({**job, "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/gankit:1"}).encode())

    def refused(image, region):
        raise GankitError("AWS GetAuthorizationToken failed: AccessDeniedException: no ecr:GetAuthorizationToken")

    monkeypatch.setattr(train_job, "hand_to_container", lambda sm_root: None)
    monkeypatch.setattr(train_job, "ecr_login", refused)
    result = train_job.run_job(uri, tmp_path / "work")
    status = status_of(bucket, "ec2-ecr")
    assert status["status"] == result["status"] == "Failed"
    assert "could not start the trainer: AWS GetAuthorizationToken failed" in status["failure_reason"]


def test_a_trainer_stopped_by_ctrl_c_or_sighup_is_stopped_not_failed(bucket, staged, tmp_path, monkeypatch):
    """The trainer checkpoints on SIGINT and SIGHUP as on SIGTERM, and exits 130 or 129 (someone on the
    instance pressed Ctrl-C, or closed the terminal that ran it): a stop that --resume continues."""
    for code, name in ((130, "Ctrl-C (SIGINT)"), (129, "SIGHUP")):
        uri = write_job(bucket, f"ec2-int{code}", staged)
        monkeypatch.setattr(train_job, "run_with_deadline", lambda *a, code=code, **k: (code, None))
        result = train_job.run_job(uri, tmp_path / f"work{code}")
        status = status_of(bucket, f"ec2-int{code}")
        assert status["status"] == result["status"] == "Stopped", status
        assert status["failure_reason"].startswith(f"stopped by {name}; its checkpoints are kept")


FAKE_DOCKER = r'''#!{python}
"""A stand-in for `docker run`: records its arguments, then writes into the mounted /opt/ml tree as the
user the command names, as the container's trainer would (its failure file, model and outputs)."""
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as f:
    f.write(json.dumps(args) + "\n")
host = next(a.split(":")[0] for a in args if a.endswith(":/opt/ml"))
uid, gid = (int(x) for x in args[args.index("--user") + 1].split(":")) if "--user" in args else (0, 0)
pid = os.fork()
if pid == 0:
    os.setgroups([]); os.setgid(gid); os.setuid(uid)
    try:
        os.makedirs(os.path.join(host, "model"), exist_ok=True)
        os.makedirs(os.path.join(host, "output", "data"), exist_ok=True)
        open(os.path.join(host, "output", "data", "probe"), "w").write(str(os.getuid()))
        os._exit(0)
    except OSError as e:
        print(f"fake docker: uid {{uid}} could not write: {{e}}", file=sys.stderr, flush=True)
        os._exit(13)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
'''


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to the container's uid needs root, as on the instance")
def test_an_image_job_runs_as_the_images_unprivileged_user_and_can_write_its_tree(bucket, staged, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER.format(python=sys.executable))
    (bin_dir / "docker").chmod(0o755)
    log = tmp_path / "docker.jsonl"
    uri = write_job(bucket, "ec2-img", staged)
    job = json.loads(s3.read_bytes(uri))
    s3.write_bytes(uri, json.dumps({**job, "image": "gankit-trainer:test"}).encode())
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_DOCKER_LOG=str(log))
    # On the instance the work folder is /opt/gankit-job/run (root's, 755 up the path); pytest's own
    # temporary folders are 700, which uid 1000 could not even enter.
    work = Path(tempfile.mkdtemp(prefix="gankit-job-test-", dir="/tmp"))
    try:
        work.chmod(0o755)
        done = subprocess.run([sys.executable, "-m", "launcher.remote.train_job", "--job-uri", uri,
                               "--work-dir", str(work / "run")], capture_output=True, text=True, timeout=120,
                              env=env, cwd=tmp_path)
        assert done.returncode == 0, s3.read_bytes(train_job.log_uri(bucket, "ec2-img")).decode()[-2000:]
        probe = (work / "run" / "ml" / "output" / "data" / "probe").read_text()
    finally:
        shutil.rmtree(work)
    [args] = [json.loads(line) for line in log.read_text().splitlines()]
    assert args[:2] == ["run", "--rm"] and args[args.index("--user") + 1] == "1000:1000"  # never root
    assert args[args.index("--network") + 1] == "host"  # IMDSv2 with hop limit 1 reaches it
    assert probe == "1000"  # the container's user could write its tree
    assert status_of(bucket, "ec2-img")["status"] == "Completed"


class _FakeIMDS:
    """IMDSv2 on loopback: a session token first, then spot/instance-action (404 until a notice is posted)."""

    def __init__(self):
        import http.server
        import threading

        self.notice = None
        imds = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):
                ok = self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                self._send(200 if ok else 400, b"t0ken")

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") != "t0ken":
                    return self._send(401, b"")
                if self.path != "/latest/meta-data/spot/instance-action" or imds.notice is None:
                    return self._send(404, b"Not Found")
                self._send(200, json.dumps(imds.notice).encode())

            def _send(self, code, body):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_a_spot_notice_is_read_through_an_imdsv2_session():
    imds = _FakeIMDS()
    try:
        assert train_job.spot_notice(imds.url) is None  # no notice yet (404)
        imds.notice = {"action": "terminate", "time": "2026-12-06T23:59:00Z"}
        assert train_job.spot_notice(imds.url) == "2026-12-06T23:59:00Z"
        assert train_job.spot_notice("http://127.0.0.1:9", timeout=0.5) is None  # no metadata service at all
    finally:
        imds.server.shutdown()


def test_a_spot_interruption_notice_stops_the_trainer_at_once_so_it_checkpoints(tmp_path):
    # The stand-in checkpoints on SIGTERM as the trainer does: exit 143. Without the notice it would run 60 s.
    trainer = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)); "
               "print('training', flush=True); time.sleep(60)")
    looks = []

    def notice():
        looks.append(1)
        return "2026-12-06T23:59:00Z" if len(looks) >= 3 else None  # posted on the third look

    code, why = train_job.run_with_deadline([sys.executable, "-c", trainer], dict(os.environ), tmp_path / "log",
                                            max_run=600, notice=notice, poll=0.05)
    assert (code, why) == (143, "spot interruption") and len(looks) == 3
    log = (tmp_path / "log").read_text()
    assert "training" in log
    assert "spot interruption notice (AWS reclaims the instance at 2026-12-06T23:59:00Z): stopping the trainer" in log

    code, why = train_job.run_with_deadline([sys.executable, "-c", "print('done')"], dict(os.environ),
                                            tmp_path / "log2", max_run=600, notice=lambda: None, poll=0.05)
    assert (code, why) == (0, None)


def test_the_runner_looks_for_a_stop_request_every_request_poll_as_set_when_it_runs(tmp_path, monkeypatch):
    # REQUEST_POLL was bound as a default argument when the module loaded, so setting it (as the stop-request test
    # below does to wait 0.2 s, not 15) changed nothing: the runner looked once, then only after 15 s.
    import time

    monkeypatch.setattr(train_job, "REQUEST_POLL", 0.05)
    looks = []

    def requested():
        looks.append(1)
        return len(looks) >= 3  # asked for on the third look

    start = time.monotonic()
    code, why = train_job.run_with_deadline([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ),
                                            tmp_path / "log", max_run=600, notice=lambda: None, requested=requested)
    assert why == train_job.STOPPED_BY_LAUNCHER and len(looks) == 3 and time.monotonic() - start < 10


CONTAINED_DOCKER = r'''#!{python}
"""A stand-in for the docker CLI whose container outlives its client, as a real one does: `run` starts the
container as a process of its own (the engine's, in the real thing), echoes it and waits for it, passing SIGTERM
on (docker run's --sig-proxy); `kill NAME` and `stop NAME` end it. The container ignores SIGTERM: a trainer
still checkpointing when the grace period ends."""
import json, os, signal, subprocess, sys
state = os.environ["FAKE_DOCKER_STATE"]
args = sys.argv[1:]
with open(os.path.join(state, "calls"), "a") as f:
    f.write(json.dumps(args) + "\n")
if args[0] == "run":
    trainer = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    container = subprocess.Popen([sys.executable, "-c", trainer], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
    name = args[args.index("--name") + 1] if "--name" in args else "unnamed"
    with open(os.path.join(state, "container-" + name), "w") as f:
        f.write(str(container.pid))
    signal.signal(signal.SIGTERM, lambda *_: container.send_signal(signal.SIGTERM))
    print("training", flush=True)
    sys.exit(128 - container.wait())  # -9 (killed) exits 137, as docker does
if args[0] in ("kill", "stop"):
    with open(os.path.join(state, "container-" + args[-1])) as f:
        os.kill(int(f.read()), signal.SIGKILL)
'''


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (ended, not yet reaped) is not running
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_container_still_running_after_the_grace_period_is_killed_not_only_its_client(tmp_path, monkeypatch):
    # The runner SIGKILLed the `docker run` client, which the container outlives: it went on training (and writing
    # checkpoints and outputs) after the runner had written "Stopped", until the instance shut down.
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    (bin_dir / "docker").write_text(CONTAINED_DOCKER.format(python=sys.executable))
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(state))
    monkeypatch.setattr(train_job, "STOP_GRACE", 0.5)
    job = {"job": "ec2-box", "image": "gankit-trainer:test", "region": "us-east-1"}
    command = train_job.trainer_command(job, tmp_path / "ml")
    assert command[:6] == ["docker", "run", "--rm", "--init", "--name", "gankit-ec2-box"]  # init: the trainer isn't PID 1
    try:
        code, why = train_job.run_with_deadline(command, dict(os.environ), tmp_path / "log", max_run=0.5,
                                                notice=lambda: None, container=train_job.container_name(job))
        [pid_file] = state.glob("container-*")
        pid = int(pid_file.read_text())
        assert not alive(pid)
        assert why == "max run reached" and code == 137
    finally:
        for pid_file in state.glob("container-*"):  # the old runner's leftover: end it here
            pid = int(pid_file.read_text())
            if alive(pid):
                os.kill(pid, 9)
    calls = [json.loads(line) for line in (state / "calls").read_text().splitlines()]
    assert calls[1] == ["kill", "gankit-ec2-box"]


def test_launcher_stops_request_stops_the_trainer_with_a_checkpoint_that_resume_continues(bucket, staged, tmp_path,
                                                                                          monkeypatch):
    # The runner never looked for `launcher stop`: the EC2 backend terminated the instance, and the steps since the
    # trainer's last periodic checkpoint were lost. Now the request is seen and the trainer is stopped as at max run.
    import threading
    import time

    monkeypatch.setattr(train_job, "REQUEST_POLL", 0.2, raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the trainer runs in a subprocess of its own
    uri = write_job(bucket, "ec2-stop", staged, max_run=90, epochs="1000", max_steps="100000",
                    checkpoint_minutes="60")
    log = tmp_path / "work" / train_job.LOG_NAME

    def request_once_it_trains():
        deadline = time.monotonic() + 80
        while time.monotonic() < deadline and "epoch 2/1000" not in (log.read_text() if log.exists() else ""):
            time.sleep(0.2)
        # What `launcher stop` writes, with your credentials.
        s3.write_bytes(layout.join(layout.run_prefix(bucket, "ec2-stop"), "stop.json"), b'{"by": "launcher stop"}')

    threading.Thread(target=request_once_it_trains, daemon=True).start()
    result = train_job.run_job(uri, tmp_path / "work")
    status = status_of(bucket, "ec2-stop")
    assert status["status"] == result["status"] == "Stopped", status
    assert status["failure_reason"].startswith("stopped by `launcher stop`; its checkpoints are kept")
    assert "--resume ec2-stop" in status["failure_reason"]
    text = log.read_text()
    assert "gankit: `launcher stop` asked for a stop: stopping the trainer" in text
    stopped_at = int(text.split("\nstopped by SIGTERM at step ")[1].split(";")[0])  # the trainer's own line
    checkpoints = layout.checkpoints_prefix(bucket, "ec2-stop")
    from trainer import run_storage

    assert stopped_at > 4 and run_storage.remote_checkpoints(checkpoints)[0][0] == stopped_at

    # `submit --resume ec2-stop` runs a job on the stopped one's checkpoints: it goes on from that step.
    resumed = write_job(bucket, "ec2-stop-2", staged, epochs="1000", max_steps=str(stopped_at + 4))
    job = json.loads(s3.read_bytes(resumed))
    s3.write_bytes(resumed, json.dumps({**job, "checkpoint_uri": checkpoints}).encode())
    (tmp_path / "again").mkdir()
    done = run_runner(resumed, tmp_path / "again")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"at step {stopped_at}\n" in s3.read_bytes(train_job.log_uri(bucket, "ec2-stop-2")).decode()
