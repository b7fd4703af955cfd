"""The `tune.space` of a config: choices and ranges parse into Optuna suggestions, and a bad entry is an
error that names its key."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from nextbest_training.search_space import (
    DEFAULT_SPACE,
    Choice,
    Range,
    SearchSpaceError,
    parse_space,
    suggest,
)

KEYS = {"model.learning_rate", "model.network.init_args.config.encoder", "data.journey.max_events"}


def known(key: str) -> bool:
    return key in KEYS or key in DEFAULT_SPACE


def test_lists_are_choices_and_mappings_are_ranges() -> None:
    space = {
        "model.network.init_args.config.encoder": ["transformer", "gru"],
        "data.journey.max_events": {"low": 10, "high": 50},
        "model.learning_rate": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
    }
    encoder, events, rate = parse_space(space, known)
    assert encoder == Choice("model.network.init_args.config.encoder", ("transformer", "gru"))
    assert events == Range("data.journey.max_events", 10, 50)
    assert events.integer
    assert rate == Range("model.learning_rate", 1.0e-4, 1.0e-2, log=True)
    assert not rate.integer


def test_a_config_value_is_in_the_space_or_not() -> None:
    assert Choice("k", ("gru", "transformer")).contains("gru")
    assert not Choice("k", ("gru",)).contains("lstm")
    assert Range("k", 10, 50).contains(25)
    assert not Range("k", 10, 50).contains(25.5)  # an integer range draws integers only
    assert Range("k", 1.0e-3, 1.0e-2).contains(0.002)
    assert not Range("k", 1.0e-3, 1.0e-2).contains(0.02)
    assert not Range("k", 0, 1).contains(True)


def test_suggestions_stay_in_the_space() -> None:
    parameters = parse_space(None, known)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        values = suggest(study.ask(), parameters)
        assert set(values) == set(DEFAULT_SPACE)
        assert values["model.network.init_args.config.encoder"] in ("transformer", "gru")
        assert isinstance(values["data.journey.max_events"], int)
        assert 3.0e-4 <= values["model.learning_rate"] <= 1.0e-2


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"model.learnig_rate": [0.001]}, "tune.space.model.learnig_rate: `model.learnig_rate` is not a key"),
        ({"model.learning_rate": []}, "tune.space.model.learning_rate: the list of choices is empty"),
        ({"model.learning_rate": [[0.1]]}, "tune.space.model.learning_rate: choices must be"),
        ({"model.learning_rate": 0.001}, "tune.space.model.learning_rate: expected a list of choices"),
        ({"model.learning_rate": {"low": 0.1}}, "tune.space.model.learning_rate: a range needs both"),
        ({"model.learning_rate": {"low": 0.1, "high": 0.01}}, "low (0.1) must be below high (0.01)"),
        ({"model.learning_rate": {"low": "a", "high": 1}}, "tune.space.model.learning_rate.low must be"),
        ({"model.learning_rate": {"low": 0, "high": 1, "log": True}}, "a log range needs low > 0"),
        ({"model.learning_rate": {"low": 1, "high": 2, "log": "yes"}}, "model.learning_rate.log must be"),
        ({"model.learning_rate": {"low": 1, "high": 2, "step": 1}}, "unknown range field(s) ['step']"),
        ({}, "tune.space is empty"),
    ],
    ids=[
        "unknown-key",
        "no-choices",
        "nested-choice",
        "scalar",
        "no-high",
        "inverted",
        "text-bound",
        "log-of-zero",
        "log-not-bool",
        "unknown-field",
        "empty",
    ],
)
def test_a_bad_space_names_the_key(space: dict[str, Any], message: str) -> None:
    with pytest.raises(SearchSpaceError) as raised:
        parse_space(space, known)
    assert message in str(raised.value)
