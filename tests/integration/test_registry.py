"""The registry module on a real SQLite MLflow store: versions resolved from aliases, aliases assigned and
moved, and a store that is not there refused by every command that reads a model, without creating it."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from nextbest.cli import main
from nextbest.registry import (
    CHALLENGER,
    CHAMPION,
    RegistryError,
    alias_versions,
    assign_aliases,
    existing_tracking_uri,
    model_uri,
    move_alias,
    resolved_version,
)
from tests.integration.conftest import registered_world
from tests.integration.test_serve_process import free_port

pytestmark = pytest.mark.integration


def test_versions_are_resolved_and_aliases_move(registry: mlflow.MlflowClient, tmp_path: Path) -> None:
    registered_world(registry, tmp_path, n_customers=20, seed=1)  # version 1: challenger and champion
    second = registry.create_model_version(
        "nextbest", source=registry.get_model_version("nextbest", "1").source
    )
    assert assign_aliases(registry, "nextbest", second.version) == [CHALLENGER]
    assert alias_versions("nextbest", (CHAMPION, CHALLENGER)) == {CHAMPION: "1", CHALLENGER: "2"}
    assert resolved_version(model_uri(CHAMPION)) == "1"
    assert resolved_version("models:/nextbest/7") == "7"  # a version URI names itself, unread
    assert resolved_version("runs:/abc/model") is None

    move_alias("nextbest", CHAMPION, "2")
    assert resolved_version(model_uri(CHAMPION)) == "2"
    with pytest.raises(RegistryError, match=r"models:/nextbest@nobody is not in the registry at sqlite:///"):
        resolved_version(model_uri("nobody"))


def test_a_missing_sqlite_store_is_named_and_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(
        RegistryError, match=r"no MLflow tracking store at sqlite:///mlflow\.db \(the default"
    ):
        existing_tracking_uri()
    elsewhere = tmp_path / "elsewhere" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
    with pytest.raises(RegistryError, match=rf"{elsewhere} does not exist"):
        existing_tracking_uri()
    assert not elsewhere.parent.exists()


COMMANDS_THAT_READ = {
    "serve": ["serve", "--port", str(free_port())],
    "score": ["score", "--model", "models:/nextbest@champion", "--events", "e.parquet", "--out", "o"],
    "evaluate": ["evaluate", "--model", "models:/nextbest@champion", "--events", "e", "--decisions", "d"],
    "promote": ["promote", "--events", "e.parquet", "--decisions", "d.parquet"],
}


@pytest.mark.parametrize("command", COMMANDS_THAT_READ.values(), ids=COMMANDS_THAT_READ.keys())
def test_commands_that_read_a_model_refuse_a_store_that_is_not_there(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(command) == 1
    error = capsys.readouterr().err
    assert f"no MLflow tracking store at sqlite:///mlflow.db (the default store): {tmp_path}" in error
    assert "Traceback" not in error
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no mlruns


def test_a_model_missing_from_the_store_names_the_store(
    registry: mlflow.MlflowClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registered_world(registry, tmp_path, n_customers=20, seed=1)
    args = ["score", "--model", "models:/other@champion", "--events", "e.parquet", "--out", "o"]
    assert main(args) == 1
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert f"models:/other@champion is not in the registry at {store}" in capsys.readouterr().err
