"""The registry module's pure parts: model URIs and SQLite tracking URIs parsed into their parts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nextbest.registry import (
    CHAMPION,
    DEFAULT_MODEL_URI,
    RegisteredModelUri,
    model_uri,
    reads_tracking_store,
    sqlite_file,
)

names = st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True)


@given(names, names)
def test_an_alias_uri_parses_back_into_its_name_and_alias(name: str, alias: str) -> None:
    assert RegisteredModelUri.parse(model_uri(alias, name)) == RegisteredModelUri(name, alias=alias)


@given(names, st.integers(min_value=1, max_value=10**9))
def test_a_version_uri_names_its_version(name: str, version: int) -> None:
    assert RegisteredModelUri.parse(f"models:/{name}/{version}") == RegisteredModelUri(
        name, version=str(version)
    )


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        (DEFAULT_MODEL_URI, RegisteredModelUri("nextbest", alias=CHAMPION)),
        ("models:/nextbest/Production", RegisteredModelUri("nextbest")),  # a stage names no version
        ("models:/nextbest", RegisteredModelUri("nextbest")),
        ("runs:/abc/model", None),
        ("/srv/models/nextbest", None),
        ("models:/a/1/extra", None),
    ],
)
def test_model_uris(uri: str, parsed: RegisteredModelUri | None) -> None:
    assert RegisteredModelUri.parse(uri) == parsed


@pytest.mark.parametrize(
    ("uri", "in_store"), [("models:/m@a", True), ("runs:/abc/model", True), ("/srv/model", False)]
)
def test_registry_and_run_uris_are_read_through_the_tracking_store(uri: str, in_store: bool) -> None:
    assert reads_tracking_store(uri) is in_store


@given(st.from_regex(r"/?[a-z0-9_]{1,8}(/[a-z0-9_.]{1,8}){0,3}", fullmatch=True))
def test_a_sqlite_uri_names_its_file_relative_or_absolute(path: str) -> None:
    assert sqlite_file(f"sqlite:///{path}") == Path(path)
    assert sqlite_file(f"sqlite:///{path}?mode=ro") == Path(path)


@pytest.mark.parametrize(
    "uri", ["sqlite://", "sqlite:///:memory:", "postgresql://host/db", "http://mlflow:5000", "file:///m"]
)
def test_other_stores_and_memory_have_no_sqlite_file(uri: str) -> None:
    assert sqlite_file(uri) is None
