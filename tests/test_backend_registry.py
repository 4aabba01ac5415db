"""The Backend protocol and registry: every registered backend implements the protocol (its functions'
signatures and its attributes' types, read from launcher.backends.base.Backend itself), and a new backend
is one module plus one registry entry: a toy one (tests/toy_backend.py) is submitted, listed, watched and
stopped through the CLI with no edit to cli.py or spec.py, which name no backend."""

import importlib
import inspect
import json
import re
import types
import typing
from pathlib import Path

import pytest

from launcher import backends, settings
from launcher.backends.base import Backend
from launcher.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _has_type(value, hint) -> bool:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_has_type(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is tuple:
        return isinstance(value, tuple) and all(isinstance(v, typing.get_args(hint)[0]) for v in value)
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


def protocol_problems(module) -> list[str]:
    """How `module` falls short of the Backend protocol: missing or mistyped attributes, missing functions,
    or functions whose parameters (names, kinds, defaults) differ from the protocol's."""
    problems = []
    for name, hint in typing.get_type_hints(Backend).items():
        if not hasattr(module, name):
            problems.append(f"no {name}")
        elif not _has_type(getattr(module, name), hint):
            problems.append(f"{name} is {getattr(module, name)!r}, not {hint}")
    for name, member in vars(Backend).items():
        if not inspect.isfunction(member) or name.startswith("_"):
            continue
        function = getattr(module, name, None)
        if not callable(function):
            problems.append(f"no {name}()")
            continue
        wanted = [(p.name, p.kind, p.default) for p in list(inspect.signature(member).parameters.values())[1:]]
        found = [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]
        if found != wanted:
            problems.append(f"{name}{inspect.signature(function)} is not {name}{inspect.signature(member)}")
    return problems


def test_the_protocol_declares_the_backend_interface():
    functions = {n for n, v in vars(Backend).items() if inspect.isfunction(v) and not n.startswith("_")}
    assert functions == {"submit", "describe", "logs", "stop", "output_uri", "plan_rows", "check_spec"}
    assert set(typing.get_type_hints(Backend)) == {"DEFAULT_INSTANCE_TYPE", "ML_INSTANCE_TYPES", "CLOUD",
                                                   "SETUP_HINT", "NO_ROLE", "RECORD_FIELDS", "SETUP_SECONDS"}


@pytest.mark.parametrize("name", list(backends.REGISTRY))
def test_every_registered_backend_implements_the_protocol(name):
    assert protocol_problems(backends.get(name)) == []


def test_the_check_finds_a_backend_that_falls_short():
    broken = types.ModuleType("broken")
    real = backends.get("local")
    for attr in ("DEFAULT_INSTANCE_TYPE", "ML_INSTANCE_TYPES", "SETUP_HINT", "NO_ROLE", "RECORD_FIELDS",
                 "SETUP_SECONDS", "submit", "describe", "logs", "output_uri", "plan_rows", "check_spec"):
        setattr(broken, attr, getattr(real, attr))
    broken.CLOUD = "yes"
    broken.RECORD_FIELDS = ["pid"]
    broken.submit = lambda spec: {}  # no dry_run
    broken.logs = lambda record, print_line, follow: None  # parameters swapped
    assert protocol_problems(broken) == [
        "CLOUD is 'yes', not <class 'bool'>", "RECORD_FIELDS is ['pid'], not tuple[str, ...]",
        "submit(spec) is not submit(self, spec, dry_run: bool = False) -> dict",
        "logs(record, print_line, follow) is not logs(self, record: dict, follow: bool, print_line) -> None",
        "no stop()"]


def test_backend_modules_import_base_not_the_package():
    for name, module in backends.REGISTRY.items():
        source = Path(importlib.import_module(module).__file__).read_text()
        assert not re.search(r"from launcher\.backends import|from launcher import .*\bbackends\b", source), name


def test_cli_and_spec_name_no_backend():
    for path in ("launcher/cli.py", "launcher/spec.py", "launcher/jobs.py", "launcher/pull.py"):
        source = (ROOT / path).read_text()
        assert not re.search(r"""backend\S*\s*(==|!=|\bin\b)\s*\(?["'](local|sagemaker|ec2)""", source), path
        assert not re.search(r"""[\[{(,]\s*["'](local|sagemaker|ec2)["']""", source), path  # no lists or tables of them


def test_settings_backends_is_the_registry(monkeypatch):
    assert list(settings.BACKENDS) == ["local", "sagemaker", "ec2"]
    assert ["local"] not in settings.BACKENDS and {} not in settings.BACKENDS  # a record's junk is just not one
    monkeypatch.setitem(backends.REGISTRY, "toy", "tests.toy_backend")
    assert "toy" in settings.BACKENDS


def run(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    out, err = capsys.readouterr()
    return stopped.value.code or 0, out, err


def test_a_toy_backend_is_one_module_and_one_registry_entry(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))
    code, _, err = run(["submit", "--backend", "toy", "--dataset", "mnist", "--dry-run"], capsys)
    assert code == 2 and "'toy' is not one of 'local', 'sagemaker', 'ec2'" in err  # not registered yet

    monkeypatch.setitem(backends.REGISTRY, "toy", "tests.toy_backend")
    code, out, err = run(["submit", "--backend", "toy", "--dataset", "mnist", "--epochs", "1", "--dry-run"], capsys)
    assert code == 0, err
    plan = json.loads(out)
    bucket = tmp_path / "home" / "bucket"
    assert plan == {"backend": "toy", "job": plan["job"], "instance_type": "toy.machine", "hyperparameters": {
        "dataset": "mnist", "model": "cgan", "epochs": "1",
        "output_dir": f"{bucket}/runs/{plan['job']}/output", "checkpoint_dir": f"{bucket}/runs/{plan['job']}/checkpoints"}}

    code, out, err = run(["submit", "--backend", "toy", "--dataset", "mnist", "--epochs", "1", "--detach",
                          "--spot"], capsys)
    assert code == 0, err
    job = re.search(r"submitted (\S+)", out).group(1)
    assert re.search(rf"^toy +a toy run of {job}$", out, re.M)  # the backend's own plan row
    assert "cost" not in out and "instance" not in out  # not a cloud backend: no bill

    code, out, err = run(["status", job, "--json"], capsys)
    assert code == 0, err
    status = json.loads(out)
    assert (status["backend"], status["status"], status["instance"]) == ("toy", "InProgress", "toy.machine")
    assert status["output_uri"] == f"{bucket}/runs/{job}/output"
    code, out, _ = run(["list"], capsys)
    assert re.search(rf"^{job} +toy +InProgress +mnist +1 ", out, re.M)
    code, out, _ = run(["logs", job], capsys)
    assert code == 0 and out.splitlines() == [f"toy: training {job}", "toy: epoch 1"]
    code, out, _ = run(["stop", job], capsys)
    assert code == 0 and out == f"stopping {job}\n"
    assert json.loads(run(["status", job, "--json"], capsys)[1])["status"] == "Stopped"
    # Its records are checked for its own fields: one without `state` is named, not used.
    record = json.loads((settings.config_dir() / "jobs" / f"{job}.json").read_text())
    del record["state"]
    (settings.config_dir() / "jobs" / f"{job}.json").write_text(json.dumps(record))
    code, _, err = run(["status", job], capsys)
    assert code == 2 and "is not a valid job record (no state)" in err

    # And it can be the configured default.
    assert run(["config", "set", "backend", "toy"], capsys)[0] == 0
    code, out, _ = run(["submit", "--dataset", "mnist", "--dry-run"], capsys)
    assert code == 0 and json.loads(out)["backend"] == "toy"


def test_logs_follow_exits_1_when_the_job_failed_as_status_does(monkeypatch, capsys, tmp_path):
    # `launcher logs JOB --follow` of a job that failed exited 0, so `logs -f JOB && launcher pull JOB` went on.
    monkeypatch.setenv("GANKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(backends.REGISTRY, "toy", "tests.toy_backend")
    code, out, err = run(["submit", "--backend", "toy", "--dataset", "mnist", "--detach"], capsys)
    job = re.search(r"submitted (\S+)", out).group(1)
    record = json.loads((settings.config_dir() / "jobs" / f"{job}.json").read_text())
    state = json.loads(Path(record["state"]).read_text())
    Path(record["state"]).write_text(json.dumps({**state, "status": "Failed"}))
    code, out, err = run(["logs", job, "--follow"], capsys)
    assert code == 1 and out.splitlines() == [f"toy: training {job}", "toy: epoch 1"], err
    assert err.splitlines() == [f"error: job {job} failed: no reason given"]
    assert run(["logs", job], capsys)[0] == 0  # without --follow it only prints the log
    Path(record["state"]).write_text(json.dumps({**state, "status": "Stopped"}))
    assert run(["logs", job, "--follow"], capsys)[0] == 0  # stopped, as asked: status says 0 too
