"""The built-in help of both CLIs, as a user meets it: what each command lists, and that it is true."""

import pytest

from launcher.cli import main


def launcher_help(capsys, *command) -> str:
    with pytest.raises(SystemExit) as stopped:
        main([*command, "--help"])
    assert stopped.value.code in (0, None)
    return capsys.readouterr().out


def listed_commands(text: str) -> list[str]:
    """The command names of a help's Commands section, in the order it lists them."""
    listing = text.partition("Commands:\n")[2].splitlines()
    return [line.split()[0] for line in listing if line.startswith("  ") and not line.startswith("   ")]


def test_launcher_help_lists_the_commands_in_the_order_a_run_uses_them(capsys):
    # They were sorted by name: `config` first and `submit` second to last, with no word on how to start.
    text = launcher_help(capsys)
    listed = listed_commands(text)
    assert listed[:6] == ["submit", "status", "logs", "list", "stop", "pull"], listed
    assert sorted(listed) == sorted({"submit", "status", "logs", "list", "stop", "pull", "generate", "evaluate",
                                     "report", "config", "infra", "image", "jupyter"})
    assert listed.index("generate") < listed.index("config") and listed[-1] == "jupyter"
    assert "launcher submit --dataset zalando --epochs 64\n" in text


def trainer_help(capsys, *command) -> str:
    from trainer.cli import main as trainer_main

    with pytest.raises(SystemExit) as stopped:
        trainer_main([*command, "--help"])
    assert stopped.value.code in (0, None)
    return capsys.readouterr().out


def test_trainer_help_lists_train_first_and_shows_it(capsys):
    # Sorted by name, `evaluate` came first and `train` last; the first line named only train and generate.
    text = trainer_help(capsys)
    assert listed_commands(text) == ["train", "generate", "evaluate", "report", "stage"]
    assert "python -m trainer train --dataset zalando --epochs 64 --output-dir runs/z1\n" in text



def every_command():
    """(path, command) of every command and group of both CLIs, the launcher's lazily loaded ones included."""
    import click

    from launcher.cli import cli as launcher_cli
    from trainer.cli import cli as trainer_cli

    def walk(command, ctx):
        yield ctx.command_path, command
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                yield from walk(sub, click.Context(sub, info_name=name, parent=ctx))

    for root, name in ((launcher_cli, "launcher"), (trainer_cli, "python -m trainer")):
        yield from walk(root, click.Context(root, info_name=name))


def test_every_option_says_what_it_is_for():
    # `--epochs`, `--keep-checkpoints`, `--checkpoint-dir`, `--tag` and submit's `--backend` had a default in
    # brackets and not a word of what they set.
    import re

    import click

    bare = [f"{path} {option.opts[0]}" for path, command in every_command() for option in command.params
            if isinstance(option, click.Option)
            and not re.sub(r"\[[^\]]*\]", "", option.help or "").strip(" .;")]
    assert not bare


def option_help(command, flag: str) -> str:
    return " ".join(next(p for p in command.params if flag in p.opts).help.split())


def test_duration_options_say_a_bare_number_is_seconds_and_their_real_default():
    # `--max-run 90` is 90 seconds, not minutes: the help gave only 2h and 90m; `--idle` gave no form at all.
    from launcher.cli import submit
    from launcher.durations import parse_duration
    from launcher.jupyter.cli import jupyter
    from launcher.spec import DEFAULT_MAX_RUN

    assert parse_duration("3600") == 3600
    assert "3600 (seconds)" in option_help(submit, "--max-run")
    assert f"[cloud: {DEFAULT_MAX_RUN};" in option_help(submit, "--max-run")
    assert "3600 seconds" in option_help(jupyter, "--idle")


def test_jupyter_limits_say_they_are_fixed_at_launch():
    # A reused or restarted instance keeps the --idle and --max-hours it was launched with (the command says so
    # when they differ); the help promised the new values without a word of it.
    from launcher.jupyter.cli import jupyter

    for flag in ("--idle", "--max-hours"):
        assert option_help(jupyter, flag).endswith("; fixed at launch.")


def test_submit_instance_type_names_the_type_a_cloud_job_gets_unless_told():
    # It gave examples only: a job with no --instance-type and none configured runs on each backend's default.
    from launcher.backends import ec2, sagemaker
    from launcher.cli import submit
    from launcher.spec import build_spec

    shown = option_help(submit, "--instance-type")
    for backend, name in ((sagemaker, "sagemaker"), (ec2, "ec2")):
        assert f"{backend.DEFAULT_INSTANCE_TYPE} on {name}" in " ".join(shown.split())
    spec = build_spec(dataset="zalando", backend="sagemaker", bucket="gankit-help",
                      role="arn:aws:iam::123456789012:role/sm", region="us-east-1")
    assert spec.instance_type == sagemaker.DEFAULT_INSTANCE_TYPE


# What the commands do, as each one's first help line begins.
VERBS = {"Train", "Start", "Show", "Print", "List", "Stop", "Download", "Make", "Measure", "Rebuild", "Score",
         "Write", "Upload", "Set", "Build", "Provision", "Create", "Delete", "Open"}


def test_every_command_first_says_what_it_does():
    # `list`, `image` and `jupyter status` began "All jobs...", "The trainer's Docker image." and "State, uptime...".
    from launcher.cli import LAZY

    first = {}
    for path, command in every_command():
        name = path.split()[-1]
        short = LAZY[name][1] if path.count(" ") == 1 and name in LAZY else command.get_short_help_str(1000)
        first[path] = short.split()[0].rstrip(",") if short else ""
    assert {path: word for path, word in first.items() if word not in VERBS and path not in
            ("launcher", "python -m trainer")} == {}


def test_every_region_option_says_the_same():
    # submit and image push said "[config, then the AWS default]", infra "(default: the config's, else
    # AWS_DEFAULT_REGION)": one lookup (trainer.aws.region), two accounts of it.
    import click

    helps = {path: option.help for path, command in every_command() for option in command.params
             if isinstance(option, click.Option) and "--region" in option.opts}
    assert {"launcher submit", "launcher image push", "launcher infra up", "launcher infra down"} <= set(helps)
    assert len(set(helps.values())) == 1, helps


WINDOWS_LIKE = """
import os, signal, sys
from {module} import main
sys.modules["fcntl"] = None  # what Windows lacks, as the CLI starts
del signal.SIGHUP
os.name = "nt"
main(sys.argv[1:])
"""


@pytest.mark.parametrize("module", ["launcher.cli", "trainer.cli"])
def test_windows_gets_one_line_naming_wsl_not_a_traceback(module):
    # Every command, --help included, died on Windows with AttributeError: no signal.SIGHUP.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", WINDOWS_LIKE.format(module=module), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: gankit runs on Linux and macOS") and "WSL" in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
