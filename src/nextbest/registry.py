"""The MLflow model registry as nextbest uses it: where the tracking store is, the registered model's name
and aliases, model URIs and the version one names, and moving the aliases. Every other module asks here.

The store is `MLFLOW_TRACKING_URI`, else the embedded default (SQLite in the working directory, artifacts
beside it), the same for training and for every scorer. Training creates it; a command that reads a model
from it (serve, score, evaluate, promote) refuses a SQLite store whose file does not exist: MLflow would
create an empty one there and report only that the model is not found.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nextbest.errors import NextbestError

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MODEL_NAME = "nextbest"
# A new fit is the challenger; the champion serves, and moves only by promotion (or to a model's first fit).
CHALLENGER, CHAMPION = "challenger", "champion"
_SCHEMES_IN_STORE = ("models:", "runs:")  # URIs read through the tracking store, not from a path
_REGISTERED = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<reference>[^/]+))?")


class RegistryError(NextbestError):
    """A tracking store or registered model that is not there."""


@dataclass(frozen=True)
class RegisteredModelUri:
    """A `models:/` URI: the registered model's name, and the alias or version it names (or neither)."""

    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, uri: str) -> RegisteredModelUri | None:
        """The parts of a `models:/name@alias` or `models:/name/N` URI; a `models:/name/<stage>` URI
        names no version; None for URIs that are not `models:/`."""
        parts = _REGISTERED.fullmatch(uri)
        if parts is None:
            return None
        reference = parts["reference"]
        version = reference if reference is not None and reference.isdigit() else None
        return cls(parts["name"], parts["alias"], version)


def model_uri(alias: str, name: str = MODEL_NAME) -> str:
    """The URI of the version that `alias` points at."""
    return f"models:/{name}@{alias}"


# The model a service or job uses unless told otherwise: the registry's current champion.
DEFAULT_MODEL_URI = model_uri(CHAMPION)


def tracking_uri() -> str:
    """The tracking (and registry) URI nextbest uses."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def sqlite_file(uri: str) -> Path | None:
    """The database file of a SQLite URI (`sqlite:///relative.db`, `sqlite:////absolute.db`); None for
    other URIs and for an in-memory database."""
    scheme, separator, rest = uri.partition(":///")
    if not separator or scheme.partition("+")[0] != "sqlite":
        return None
    path = rest.partition("?")[0]
    return None if path in ("", ":memory:") else Path(path)


def existing_tracking_uri() -> str:
    """`tracking_uri()`, checked to lead to a store that exists (a SQLite file, where it is one)."""
    uri = tracking_uri()
    database = sqlite_file(uri)
    if database is not None and not database.is_file():
        where = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "the default store"
        raise RegistryError(
            f"no MLflow tracking store at {uri} ({where}): {database.absolute()} does not exist; set "
            "MLFLOW_TRACKING_URI to the store that holds the model, or run from the folder that holds "
            "its mlflow.db"
        )
    return uri


def reads_tracking_store(model_uri: str) -> bool:
    """Whether the model at `model_uri` is read through the tracking store (registry and run URIs)."""
    return model_uri.startswith(_SCHEMES_IN_STORE)


def tracking_uri_for(model_uri: str) -> str:
    """The tracking URI to load `model_uri` with: checked to exist when the model is read through it."""
    return existing_tracking_uri() if reads_tracking_store(model_uri) else tracking_uri()


def registry_client() -> MlflowClient:
    """A client of the existing registry (see `existing_tracking_uri`)."""
    from mlflow import MlflowClient

    uri = existing_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def resolved_version(uri: str) -> str | None:
    """The registry version that a `models:/name@alias` or `models:/name/N` URI names (the alias is
    looked up now); None for other URIs."""
    registered = RegisteredModelUri.parse(uri)
    if registered is None or registered.alias is None:
        return None if registered is None else registered.version
    return alias_versions(registered.name, (registered.alias,))[registered.alias]


def alias_versions(name: str, aliases: tuple[str, ...]) -> dict[str, str]:
    """The version each of `aliases` of the registered model `name` points at."""
    from mlflow.exceptions import MlflowException

    client = registry_client()
    versions = {}
    for alias in aliases:
        try:
            versions[alias] = str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            raise RegistryError(
                f"{model_uri(alias, name)} is not in the registry at {client.tracking_uri}: {exc.message}"
            ) from exc
    return versions


def assign_aliases(client: MlflowClient, name: str, version: str) -> list[str]:
    """Points `challenger` at a newly registered version, and `champion` too when the model has none yet;
    returns the aliases set."""
    aliases = [CHALLENGER]
    client.set_registered_model_alias(name, CHALLENGER, version)
    if CHAMPION not in client.get_registered_model(name).aliases:
        client.set_registered_model_alias(name, CHAMPION, version)
        aliases.append(CHAMPION)
    return aliases


def move_alias(name: str, alias: str, version: str) -> None:
    """Points `alias` of the registered model `name` at `version`."""
    registry_client().set_registered_model_alias(name, alias, version)
