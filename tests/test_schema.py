"""TrainConfig is the schema: `train`'s options come from its fields, and SageMaker's string
hyperparameters convert to and from it with the same parsing and messages as the CLI's."""

import dataclasses
import json

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer.cli import train
from trainer.config import IN_HYPERPARAMETERS, TrainConfig, options
from trainer.errors import UsageError

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)


def test_every_train_option_is_a_field_with_its_type_default_and_help():
    params = {p.name: p for p in train.params if p.name != "help"}
    assert list(params) == [f.name for f in dataclasses.fields(TrainConfig)]
    for name, o in options().items():
        param = params[name]
        assert param.opts == [o.flag] and param.required == o.required and param.help == o.help
        if o.choices:
            assert list(param.type.choices) == list(o.choices)
        else:
            assert param.type.name == {str: "text", int: "integer", float: "float"}[o.type]
        if not o.required:  # a required one has no default at all (Click's own "unset"), so leaving it out fails
            assert param.default == o.default
    assert options()["preset"].show_default and options()["batch_size"].help.startswith("Images per step [preset:")


def test_hyperparameters_become_typed_fields():
    cfg = TrainConfig.from_hyperparameters({"dataset": '"zalando"', "output_dir": "o", "epochs": "3", "lr": "1e-4",
                                            "batch-size": "16", "loss": '"hinge"', "data_dir": 7})
    assert (cfg.dataset, cfg.epochs, cfg.lr, cfg.batch_size, cfg.loss, cfg.data_dir) == (
        "zalando", 3, 1e-4, 16, "hinge", "7")  # SDK-quoted, dashed or a JSON number: all as Click would take them
    assert cfg.to_hyperparameters() == {"dataset": "zalando", "output_dir": "o", "data_dir": "7", "epochs": "3",
                                        "batch_size": "16", "lr": "0.0001", "loss": "hinge"}


@pytest.mark.parametrize("hyperparameters, source, message", [
    ({"dataset": "mnist", "output_dir": "o", "learning_rate": "1"}, "--hp",
     "--hp learning_rate: the trainer has no such option; see `python -m trainer train --help`"),
    ({"dataset": "mnist", "output_dir": "o", "a b": "1"}, "hyperparameter",
     "hyperparameter 'a b': the trainer has no such option"),
    ({"dataset": "mnist", "output_dir": "o", "epochs": "zero"}, "--hp",
     f"Invalid value for '--epochs': 'zero' is not a valid integer. {IN_HYPERPARAMETERS}"),
    ({"dataset": "mnist", "output_dir": "o", "lr": "fast"}, "--hp",
     f"Invalid value for '--lr': 'fast' is not a valid float. {IN_HYPERPARAMETERS}"),
    ({"dataset": "mnist", "output_dir": "o", "model": "vae"}, "--hp",
     f"Invalid value for '--model': 'vae' is not one of 'cgan', 'dcgan'. {IN_HYPERPARAMETERS}"),
    ({"output_dir": "o"}, "--hp", f"Missing option '--dataset'. {IN_HYPERPARAMETERS}"),
])
def test_bad_hyperparameters_are_one_line_naming_the_flag(hyperparameters, source, message):
    with pytest.raises(UsageError) as e:
        TrainConfig.from_hyperparameters(hyperparameters, source=source)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def value_of(o):
    """Any value of an option's type, valid for resolve() or not (NaN aside: it equals nothing)."""
    if o.choices:
        return st.sampled_from(o.choices)
    return {str: TEXT, int: st.integers(), float: st.floats(allow_nan=False)}[o.type]


@st.composite
def configs(draw):
    values = {name: draw(value_of(o)) for name, o in options().items()
              if o.required or draw(st.booleans())}
    return TrainConfig(**values)


@FAST
@given(configs())
def test_hyperparameters_round_trip(cfg):
    hyperparameters = cfg.to_hyperparameters()
    assert all(isinstance(v, str) for v in hyperparameters.values())
    assert TrainConfig.from_hyperparameters(json.loads(json.dumps(hyperparameters))) == cfg


def raw_value(o):
    """What a hyperparameters.json may hold for an option: usually its type's text, often garbage."""
    typed = value_of(o).map(str)
    return (typed | TEXT).filter(lambda s: not (s.startswith('"') and s.endswith('"')))  # quoting: tested above


@st.composite
def raw_hyperparameters(draw):
    names = draw(st.lists(st.sampled_from(sorted(options())), max_size=5, unique=True))
    return {"dataset": "mnist", "output_dir": "o", **{name: draw(raw_value(options()[name])) for name in names}}


@FAST
@given(raw_hyperparameters())
def test_hyperparameters_parse_as_the_train_command_does(hyperparameters):
    """The schema's parsing and Click's (what the container ran before) agree: same config or same complaint."""
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in hyperparameters.items()]
    try:
        with train.make_context("train", argv) as ctx:
            expected, complaint = TrainConfig(**ctx.params), None
    except click.BadParameter as e:
        expected, complaint = None, f"{e.format_message()} {IN_HYPERPARAMETERS}"
    try:
        got = TrainConfig.from_hyperparameters(hyperparameters)
    except UsageError as e:
        assert str(e) == complaint
    else:
        assert complaint is None and repr(got) == repr(expected)  # repr: NaN equals itself there


def test_submit_takes_the_trainers_options_so_they_cannot_drift():
    from launcher.cli import submit

    params = {p.name: p for p in submit.params}
    for name in ("model", "preset", "epochs", "batch_size"):
        assert params[name].opts == [options()[name].flag]
        assert params[name].type.to_info_dict() == train_param(name).type.to_info_dict()
    assert params["model"].default == "cgan" and params["model"].help == options()["model"].help
    # Unset, the trainer's default applies; the help says which it is.
    assert params["preset"].default is None and f"[trainer default: {options()['preset'].default}]" in params["preset"].help
    assert params["epochs"].default is None and params["epochs"].help == (f"{options()['epochs'].help} "
                                                                          f"[trainer default: {options()['epochs'].default}]")
    assert params["batch_size"].help.startswith(options()["batch_size"].help)


def train_param(name):
    return next(p for p in train.params if p.name == name)
