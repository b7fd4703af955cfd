"""The `tune:` section of a training config: what `nextbest tune` searches over.

The space maps dotted config keys (the ones `nextbest train` takes as `--key value`) to a list of choices
or a range:

```yaml
tune:
  space:
    model.network.init_args.config.encoder: [transformer, gru]
    model.learning_rate: {low: 3.0e-4, high: 1.0e-2, log: true}
    model.network.init_args.config.n_layers: {low: 1, high: 3}
```

A range of two integers draws integers; any other range draws floats (`log: true` on a log scale).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from nextbest.errors import NextbestError

# What a config without a `tune.space` searches: the encoder choices of issue 17 at sizes a CPU trains.
DEFAULT_SPACE: dict[str, Any] = {
    "model.network.init_args.config.encoder": ["transformer", "gru"],
    "model.network.init_args.config.d_model": [32, 64, 128],
    "model.network.init_args.config.n_layers": [1, 2],
    "data.journey.max_events": [25, 50, 100],
    "model.learning_rate": {"low": 3.0e-4, "high": 1.0e-2, "log": True},
}
RANGE_KEYS = frozenset({"low", "high", "log"})


class SearchSpaceError(NextbestError, ValueError):
    """A `tune.space` entry is invalid; the message names its key."""


@dataclass(frozen=True)
class TuneSettings:
    """The `tune:` section of a config (read by `nextbest tune`, ignored by `nextbest train`).

    Args:
        space: dotted config key -> list of choices, or `{low, high, log}` range; default: `DEFAULT_SPACE`.
    """

    space: dict[str, Any] | None = None


@dataclass(frozen=True)
class Choice:
    """One of a list of values."""

    key: str
    values: tuple[Any, ...]

    def suggest(self, trial: optuna.Trial) -> Any:
        return trial.suggest_categorical(self.key, self.values)

    def contains(self, value: Any) -> bool:
        return value in self.values


@dataclass(frozen=True)
class Range:
    """An integer (both bounds integers) or float between `low` and `high`, inclusive."""

    key: str
    low: float
    high: float
    log: bool = False

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        kinds = int if self.integer else int | float
        number = isinstance(value, kinds) and not isinstance(value, bool)
        return number and self.low <= value <= self.high


Parameter = Choice | Range


def parse_space(raw: Mapping[str, Any] | None, is_config_key: Callable[[str], bool]) -> list[Parameter]:
    """The parameters of `raw` (`DEFAULT_SPACE` when None), checked against the config's keys.

    Raises:
        SearchSpaceError: naming the `tune.space.<key>` that is not a config key or not a valid choice
            list or range.
    """
    space = DEFAULT_SPACE if raw is None else raw
    if not space:
        raise SearchSpaceError("tune.space is empty: give at least one key to search, or leave it out")
    return [_parameter(key, spec, is_config_key) for key, spec in space.items()]


def suggest(trial: optuna.Trial, parameters: list[Parameter]) -> dict[str, Any]:
    """One value per parameter, drawn by the trial's sampler."""
    return {p.key: p.suggest(trial) for p in parameters}


def _parameter(key: str, spec: Any, is_config_key: Callable[[str], bool]) -> Parameter:
    where = f"tune.space.{key}"
    if not is_config_key(key):
        raise SearchSpaceError(f"{where}: `{key}` is not a key of this config (see `nextbest train --help`)")
    if isinstance(spec, list):
        if not spec:
            raise SearchSpaceError(f"{where}: the list of choices is empty")
        if not all(isinstance(v, str | int | float | bool) for v in spec):
            raise SearchSpaceError(f"{where}: choices must be strings, numbers or booleans, got {spec!r}")
        return Choice(key, tuple(spec))
    if isinstance(spec, Mapping):
        return _range(where, key, spec)
    raise SearchSpaceError(f"{where}: expected a list of choices or {{low, high, log}}, got {spec!r}")


def _range(where: str, key: str, spec: Mapping[str, Any]) -> Range:
    unknown = sorted(set(spec) - RANGE_KEYS)
    if unknown:
        raise SearchSpaceError(f"{where}: unknown range field(s) {unknown}; a range has low, high and log")
    if "low" not in spec or "high" not in spec:
        raise SearchSpaceError(f"{where}: a range needs both low and high")
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    for name, bound in (("low", low), ("high", high)):
        if not isinstance(bound, int | float) or isinstance(bound, bool):
            raise SearchSpaceError(f"{where}.{name} must be a number, got {bound!r}")
    if not low < high:
        raise SearchSpaceError(f"{where}: low ({low}) must be below high ({high})")
    if not isinstance(log, bool):
        raise SearchSpaceError(f"{where}.log must be true or false, got {log!r}")
    if log and low <= 0:
        raise SearchSpaceError(f"{where}: a log range needs low > 0, got {low}")
    return Range(key, low, high, log)
