"""Serving settings: from YAML, from NEXTBEST_* variables, and clear errors naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from nextbest_serving.settings import ServingSettings, SettingsError

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_config_reads_and_round_trips_through_the_environment() -> None:
    settings = ServingSettings.from_yaml(REPO_ROOT / "configs" / "serving" / "default.yaml")
    assert settings == ServingSettings()
    assert ServingSettings.from_env(settings.to_env()) == settings


def test_environment_values_are_parsed() -> None:
    settings = ServingSettings.from_env(
        {
            "NEXTBEST_MAX_EVENTS": "50",
            "NEXTBEST_DEADLINE_MS": "12.5",
            "NEXTBEST_DECISION_LOG": "/tmp/d",
            "NEXTBEST_RELOAD_SECONDS": "2.5",
        }
    )
    assert (settings.max_events, settings.deadline_ms, str(settings.decision_log)) == (50, 12.5, "/tmp/d")
    assert settings.reload_seconds == 2.5


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"NEXTBEST_MAX_EVENTS": "many"}, "NEXTBEST_MAX_EVENTS"),
        ({"NEXTBEST_MAX_BATCH": "0"}, "NEXTBEST_MAX_BATCH"),
        ({"NEXTBEST_DEADLINE_MS": "-1"}, "NEXTBEST_DEADLINE_MS"),
        ({"NEXTBEST_API_KEY": "short"}, "NEXTBEST_API_KEY"),
        ({"NEXTBEST_RELOAD_SECONDS": "0"}, "NEXTBEST_RELOAD_SECONDS: must be a positive number"),
        ({"NEXTBEST_RELOAD_SECONDS": "soon"}, "NEXTBEST_RELOAD_SECONDS: expected a number"),
        (
            {"NEXTBEST_RELOAD_SECONDS": "30", "NEXTBEST_MODEL_URI": "models:/nextbest/3"},
            "NEXTBEST_RELOAD_SECONDS: the model models:/nextbest/3 names no registry alias to follow",
        ),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        ServingSettings.from_env(environ)


def test_unknown_settings_in_a_file_are_named(tmp_path: Path) -> None:
    path = tmp_path / "serving.yaml"
    path.write_text("max_event: 10\n")
    with pytest.raises(SettingsError, match="max_event"):
        ServingSettings.from_yaml(path)


def test_variables_override_the_file_even_with_default_values(tmp_path: Path) -> None:
    path = tmp_path / "serving.yaml"
    path.write_text("max_events: 50\ndeadline_ms: 20\n")
    settings = ServingSettings.from_env(
        {"NEXTBEST_MAX_EVENTS": "10000"}, base=ServingSettings.from_yaml(path)
    )
    assert (settings.max_events, settings.deadline_ms) == (10_000, 20.0)
