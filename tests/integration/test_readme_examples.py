"""The README's examples, run for real: the commands `make demo` prints at its end (the README's demo-next
block) against a small demo model in a fresh folder laid out as the demo leaves the repository: the
default MLflow store `mlflow.db` in the working directory, the world in `demo-output/world`. `nextbest
serve` starts in the background, the real curl asks it to rank a customer, and the journey report is
written. The README's quickstart (`make demo`, `make test`) is CI's own script (.ci/run)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.integration.conftest import train_demo_model
from tests.integration.test_serve_process import _wait_until_ready, free_port
from tests.unit.test_docs import demo_next_commands, readme_commands

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = f"{Path(sys.executable).parent}/"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as `make demo` leaves the repository (a small model, trained and registered)."""
    folder = tmp_path_factory.mktemp("repository")
    train_demo_model(folder)
    (folder / "demo-output").mkdir()
    (folder / "world").rename(folder / "demo-output" / "world")
    return folder


def shell(command: str, port: int) -> str:
    """`command` as the README writes it, with this environment's nextbest and the service on `port`."""
    return command.replace(".venv/bin/", BIN).replace("127.0.0.1:3000", f"127.0.0.1:{port}")


def environment(folder: Path) -> dict[str, str]:
    """This environment without MLFLOW_TRACKING_URI: the README's commands use the default store."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "BENTOML_HOME": str(folder / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}


@pytest.fixture(scope="module")
def served(repository: Path) -> Iterator[int]:
    """The README's serve command running in the background; yields its port."""
    with serving(repository, demo_next_commands()[0]) as port:
        yield port


@contextlib.contextmanager
def serving(repository: Path, serve: str) -> Iterator[int]:
    """`serve` running in the background; yields its port."""
    port = free_port()
    log = repository / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*shell(serve, port).split(), "--port", str(port)],
            cwd=repository,
            env=environment(repository),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_until_ready(process, f"http://127.0.0.1:{port}", log)
            yield port
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def run(command: str, folder: Path, port: int, timeout: float = 120, codes: tuple[int, ...] = (0,)) -> str:
    result = subprocess.run(
        ["bash", "-c", shell(command, port)],
        cwd=folder,
        env=environment(folder),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode in codes, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_demo_store_is_where_the_readme_says(repository: Path) -> None:
    assert (repository / "mlflow.db").is_file()
    assert (repository / "mlruns").is_dir()


def test_the_readme_curl_ranks_a_customer(repository: Path, served: int) -> None:
    assert shutil.which("curl"), "the README's example uses curl: apt-get install curl"
    curl = demo_next_commands()[1]
    answer = json.loads(run(curl, repository, served))
    assert answer["customer_id"] == "c42"
    assert answer["model_version"] == "1"
    assert 1 <= len(answer["actions"]) <= 3  # top_k
    assert [a["rank"] for a in answer["actions"]] == list(range(1, len(answer["actions"]) + 1))
    assert answer["chosen_action"] == answer["actions"][0]["action"]  # the demo catalog does not explore


def test_the_readme_journey_report_is_written(repository: Path) -> None:
    journeys = demo_next_commands()[2]
    printed = run(journeys, repository, free_port())
    assert "journeys of 300 customers" in printed
    assert (repository / "demo-output" / "journeys" / "report.html").is_file()


def test_the_readme_store_walkthrough(repository: Path) -> None:
    """Load the world into a store, serve over it, post events, rank by id twice, read and erase."""
    load, serve, events, rank, rank_again, read, erase = readme_commands("store")
    assert "loaded in" in run(load, repository, free_port())
    with serving(repository, serve) as port:
        assert json.loads(run(events, repository, port))["accepted"] == 2
        answers = [json.loads(run(command, repository, port)) for command in (rank, rank_again)]
        assert answers[0]["decision_id"] != answers[1]["decision_id"]
        stored = json.loads(run(read, repository, port))
        served_actions = [a["chosen_action"] for a in answers if a["chosen_action"] is not None]
        assert [c["action"] for c in stored["contacts"]][-len(served_actions) :] == served_actions
        assert served_actions.count("sms_reminder") <= 1  # the demo catalog's limit
        erased = json.loads(run(erase, repository, port))
        assert erased["events"] > 2
        assert erased["contacts"] == len(stored["contacts"])


def test_the_readme_learning_loop(repository: Path) -> None:
    """Serve with a store, play a month, monitor, export, retrain, promote; once the service has followed
    the alias, the next month is answered by the version it now names. Then the cron lines, as cron would
    run them."""
    serve, play, monitor, export, train, promote, play_again = readme_commands("loop")
    (repository / "configs").symlink_to(REPO_ROOT / "configs")
    with serving(repository, serve) as port:
        run(play, repository, port)
        first = json.loads((repository / "demo-output" / "live-1.json").read_text())
        assert first["decisions"] == 2000
        assert first["model_versions"] == {"1": 2000}
        run(monitor, repository, port)
        summary = json.loads((repository / "demo-output" / "monitor" / "summary.json").read_text())
        assert summary["decisions"]["total"] == 2000  # live.db is a store of its own
        assert not summary["lift"]["available"]  # the demo catalog has no control group
        run(export, repository, port)
        run(train, repository, port, timeout=600)
        promoted = "Promoted" in run(promote, repository, port, timeout=300, codes=(0, 3))
        version = "2" if promoted else "1"
        deadline = time.monotonic() + 30
        while metadata(port)["model_version"] != version:
            assert time.monotonic() < deadline, "the service did not follow the champion alias"
            time.sleep(0.5)
        run(play_again, repository, port)
        second = json.loads((repository / "demo-output" / "live-2.json").read_text())
        assert second["model_versions"] == {version: 2000}
    for line in readme_commands("cron"):
        command = line.split(maxsplit=5)[5].replace("/srv/nextbest", str(repository))
        run(command, repository, free_port(), timeout=600, codes=(0, 1))  # 1: the monitor alerted
    assert len(list((repository / "demo-output").glob("monitor-*/report.html"))) == 1
    assert len(list((repository / "demo-output").glob("export-*/decisions.parquet"))) == 1


def metadata(port: int) -> dict[str, object]:
    answer = httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=10)
    answer.raise_for_status()
    result: dict[str, object] = answer.json()
    return result
