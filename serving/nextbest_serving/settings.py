"""What the service is configured with, and where it comes from: environment variables (which reach
every BentoML worker process), set by `nextbest serve` from its options or a YAML file.

| variable                     | setting                                                       |
|------------------------------|---------------------------------------------------------------|
| NEXTBEST_MODEL_URI           | the MLflow model to load (models:/nextbest@champion)          |
| NEXTBEST_API_KEY             | when set, every endpoint but the probes requires it           |
| NEXTBEST_MAX_EVENTS          | most events in one request's history (10000)                  |
| NEXTBEST_MAX_BATCH           | most requests in one /rank_batch call (2000)                  |
| NEXTBEST_MAX_BODY_BYTES      | largest request body (16 MiB)                                 |
| NEXTBEST_DEADLINE_MS         | per-request deadline before the fallback ranking (1000)       |
| NEXTBEST_DECISION_LOG        | directory of the decision log (unset: no log)                 |
| NEXTBEST_DECISION_LOG_ROWS   | decisions per log file before it rotates (100000)             |
| NEXTBEST_TORCH_THREADS       | torch threads for a batch of 32+ requests; fewer use 1 (2)    |
| NEXTBEST_RELOAD_SECONDS      | check the model's alias this often; serve a new version (off) |
| NEXTBEST_STORE               | the customer store's URI (sqlite:///PATH, redis://...; none)  |
| NEXTBEST_STORE_MAX_EVENTS    | events kept per customer in the store (1000)                  |
| NEXTBEST_STORE_TTL_DAYS      | the store keeps no event older than this (off)                |
| NEXTBEST_WORKERS             | worker processes, each with the model, over one store (1)     |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from nextbest.errors import NextbestError
from nextbest.registry import DEFAULT_MODEL_URI, RegisteredModelUri
from nextbest.store import DEFAULT_MAX_EVENTS

ENV_PREFIX = "NEXTBEST_"


class SettingsError(NextbestError):
    """A setting with a value the service cannot use."""


@dataclass(frozen=True)
class ServingSettings:
    """The service's settings; see the module docstring for the environment variable of each."""

    model_uri: str = DEFAULT_MODEL_URI
    api_key: str | None = None
    max_events: int = 10_000
    max_batch: int = 2_000
    max_body_bytes: int = 16 * 1024 * 1024
    deadline_ms: float = 1_000.0
    decision_log: Path | None = None
    decision_log_rows: int = 100_000
    torch_threads: int = 2
    reload_seconds: float | None = None
    store: str | None = None
    store_max_events: int = DEFAULT_MAX_EVENTS
    store_ttl_days: float | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        whole = ("max_events", "max_batch", "max_body_bytes", "decision_log_rows", "torch_threads")
        for name in (*whole, "store_max_events", "workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingsError(f"{_env_name(name)}: must be a whole number of at least 1, got {value!r}")
        if not isinstance(self.deadline_ms, int | float) or self.deadline_ms <= 0:
            raise SettingsError(
                f"{_env_name('deadline_ms')}: must be a positive number, got {self.deadline_ms!r}"
            )
        self._check_reload()
        if self.store_ttl_days is not None and not (
            isinstance(self.store_ttl_days, int | float) and self.store_ttl_days > 0
        ):
            raise SettingsError(
                f"{_env_name('store_ttl_days')}: must be a positive number, got {self.store_ttl_days!r}"
            )
        if self.api_key is not None and len(self.api_key) < 16:
            raise SettingsError(f"{_env_name('api_key')}: must be at least 16 characters")

    def _check_reload(self) -> None:
        if self.reload_seconds is None:
            return
        name = _env_name("reload_seconds")
        if not isinstance(self.reload_seconds, int | float) or not self.reload_seconds > 0:
            raise SettingsError(f"{name}: must be a positive number, got {self.reload_seconds!r}")
        registered = RegisteredModelUri.parse(self.model_uri)
        if registered is None or registered.alias is None:
            raise SettingsError(
                f"{name}: the model {self.model_uri} names no registry alias to follow; reloading needs a "
                "models:/<name>@<alias> URI"
            )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, base: ServingSettings | None = None
    ) -> ServingSettings:
        """`base` (default: the defaults) with the settings that `NEXTBEST_*` variables set (unset or
        empty variables change nothing)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = environ.get(_env_name(field.name), "")
            if raw:
                values[field.name] = _parse(field.name, raw)
        return replace(base if base is not None else cls(), **values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ServingSettings:
        """Settings from a YAML mapping of field names (the shipped one: `configs/serving/default.yaml`)."""
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"{path}: cannot read serving settings: {exc}") from exc
        data = data or {}
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            unknown = sorted(set(data) - known) if isinstance(data, dict) else data
            raise SettingsError(f"{path}: unknown setting(s) {unknown}; known: {sorted(known)}")
        if data.get("decision_log") is not None:
            data["decision_log"] = Path(data["decision_log"])
        return cls(**data)

    def to_env(self) -> dict[str, str]:
        """The environment variables that give these settings to `from_env` (unset ones left out)."""
        return {
            _env_name(f.name): str(getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        }


def _env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _parse(name: str, raw: str) -> Any:
    if name in ("model_uri", "api_key", "store"):
        return raw
    if name == "decision_log":
        return Path(raw)
    try:
        return float(raw) if name in ("deadline_ms", "reload_seconds", "store_ttl_days") else int(raw)
    except ValueError:
        raise SettingsError(f"{_env_name(name)}: expected a number, got {raw!r}") from None
