"""The journey report opens in headless Chromium without a console error, for the real Criteo journeys and
for a simulated world with the model-based sections; a full-page screenshot of each is kept in
`test-artifacts/` for a person to look at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mlflow
import pytest
from playwright.sync_api import sync_playwright

from nextbest.adapters.criteo import read_criteo
from nextbest.cli import main
from nextbest.data import load_events
from nextbest.discovery.summary import DiscoveryOptions, summarise, write_report
from tests.conftest import REPO_ROOT
from tests.integration.conftest import registered_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # needs a Chromium (.ci/run installs one)

ARTIFACTS = REPO_ROOT / "test-artifacts"


def chromium() -> str:
    """The Chromium to drive: NEXTBEST_CHROMIUM, or the system's (Debian's `chromium` package)."""
    found = (
        os.environ.get("NEXTBEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    assert found, "headless Chromium is needed: apt-get install chromium (or set NEXTBEST_CHROMIUM)"
    return found


def render(page: Path, screenshot: Path) -> tuple[list[str], str]:
    """Opens `page`, keeps a full-page screenshot; returns the console errors and page errors, and the
    page's text."""
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            tab.on(
                "console",
                lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
            )
            tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            tab.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            tab.goto(page.as_uri())
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(screenshot), full_page=True)
            text = tab.inner_text("body")
        finally:
            browser.close()
    return problems, text


def test_the_criteo_report_renders_without_errors(shared_data: Path, tmp_path: Path) -> None:
    converted = read_criteo(shared_data / "criteo_attribution" / "train_journeys.jsonl")
    summary = summarise(
        load_events(converted.events), DiscoveryOptions(touch_column="action", title="Criteo journeys")
    )
    page, _ = write_report(summary, tmp_path)
    problems, text = render(page, ARTIFACTS / "journey-report-criteo.png")
    assert problems == []
    assert "Criteo journeys" in text
    assert summary["overview"]["customers"] == 164_647
    effects = summary["attribution"]["markov"]["removal_effects"]
    assert sum(name.startswith("campaign_") for name in effects) == 10  # the log's ten campaigns
    assert all(0 <= effect <= 1 for effect in effects.values())


def test_the_simulated_report_with_the_model_renders_without_errors(
    registry: mlflow.MlflowClient, tmp_path: Path
) -> None:
    registered_world(registry, tmp_path, n_customers=300, seed=8)
    world = tmp_path / "world"
    args = [
        "journeys",
        "--events",
        str(world / "events.parquet"),
        "--customers",
        str(world / "customers.parquet"),
    ]
    args += ["--model", "models:/nextbest@champion", "--segments", "3", "--out", str(tmp_path / "report")]
    assert main(args) == 0
    problems, text = render(tmp_path / "report" / "report.html", ARTIFACTS / "journey-report-simulated.png")
    assert problems == []
    for section in ("Journeys, step by step", "Funnel", "Attribution", "Moments of truth", "Segments"):
        assert section in text
