"""`nextbest serve` as a real process over HTTP, on a tiny model trained into a temporary MLflow store:
it ranks as the batch job does, scores, names its version, logs what it served, and refuses to start
without a usable model or, on a public address, without an API key."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import mlflow
import psutil
import pyarrow.parquet as pq
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from nextbest.data import load_events, load_table
from nextbest.data.schema import CUSTOMERS
from nextbest.journeys import requests_at_end
from nextbest.scoring.decision_log import read_decision_log
from nextbest.scoring.tables import records_from_tables
from tests.integration.conftest import train_demo_model
from tests.store.conftest import RedisServer

pytestmark = pytest.mark.integration

NEXTBEST = Path(sys.executable).with_name("nextbest")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated world and an MLflow store holding a model trained on it (nextbest@champion)."""
    folder = tmp_path_factory.mktemp("served")
    train_demo_model(folder)
    return folder


def environment(folder: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "BENTOML_HOME": str(folder / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }


def start_serve(folder: Path, log: Path, *options: str) -> subprocess.Popen[bytes]:
    """`nextbest serve` with `options`, in `folder`, its output to `log`."""
    with log.open("wb") as output:
        return subprocess.Popen(
            [str(NEXTBEST), "serve", *options],
            cwd=folder,
            env=environment(folder),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def server(trained: Path) -> Iterator[str]:
    port = free_port()
    decision_log = ["--decision-log", str(trained / "decisions")]
    process = start_serve(trained, trained / "serve.log", "--port", str(port), *decision_log)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(process, base, trained / "serve.log")
        yield base
    finally:
        process.terminate()  # the server stops with it
        process.wait(timeout=30)


def _wait_until_ready(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"nextbest serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet, or the worker is still loading the model
        time.sleep(0.5)
    pytest.fail(f"nextbest serve was not ready within 120 s:\n{log.read_text()[-3000:]}")


def test_the_server_ranks_as_the_batch_job(trained: Path, server: str, tmp_path: Path) -> None:
    world = trained / "world"
    log = load_events(world / "events.parquet")
    customers = load_table(world / "customers.parquet", CUSTOMERS)
    requests = requests_at_end(log).slice(0, 6)
    pq.write_table(requests, tmp_path / "requests.parquet")
    env = environment(trained)
    batch_job = [
        str(NEXTBEST),
        "score",
        "--model",
        "models:/nextbest@champion",
        "--events",
        str(world / "events.parquet"),
    ]
    batch_job += [
        "--customers",
        str(world / "customers.parquet"),
        "--requests",
        str(tmp_path / "requests.parquet"),
    ]
    subprocess.run([*batch_job, "--out", str(tmp_path / "scores.parquet")], cwd=trained, env=env, check=True)
    expected = pq.read_table(tmp_path / "scores.parquet").to_pylist()

    records = records_from_tables(log, requests, customers)
    for record, row in zip(records, expected, strict=True):
        answer = httpx.post(f"{server}/rank", json=record.model_dump(exclude_none=True), timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["customer_id"] == row["customer_id"]
        assert [a["action"] for a in body["actions"]] == [a["action"] for a in row["actions"]]
        # float32 forward passes over batches of other sizes agree to about 1e-5
        assert body["actions"][0]["score"] == pytest.approx(row["actions"][0]["score"], rel=1e-4, abs=1e-6)
        assert body["p_churn"] == pytest.approx(row["p_churn"], rel=1e-4)

    scored = httpx.post(f"{server}/score", json=records[0].model_dump(exclude_none=True), timeout=30)
    assert scored.status_code == 200
    assert len(scored.json()["actions"]) == 6  # every action of the simulated world
    metadata = httpx.get(f"{server}/metadata", timeout=10).json()
    assert (metadata["model_name"], metadata["model_version"]) == ("nextbest", "1")
    assert metadata["run_id"]
    metrics = httpx.get(f"{server}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert 'endpoint="/rank"' in metrics.text  # Prometheus counts the requests just made
    assert 'nextbest_model_batch_size_count{endpoint="rank"}' in metrics.text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
    }
    decisions = {labels: n for (name, labels), n in samples.items() if name == "nextbest_decisions_total"}
    assert sum(decisions.values()) == len(records)  # what this test ranked, by served action
    assert all(dict(labels)["control"] == "false" for labels in decisions)  # the demo catalog has none
    kinds = {dict(labels)["rule"] for (name, labels) in samples if name == "nextbest_suppressions_total"}
    assert kinds <= {"not eligible", "contact limit", "cool-down", "contact cap"}
    assert samples[("nextbest_served_expected_value_count", ())] == sum(
        n for labels, n in decisions.items() if dict(labels)["action"] != "none"
    )
    versions = {
        dict(labels)["version"]: v
        for (name, labels), v in samples.items()
        if name == "nextbest_model_version"
    }
    assert versions == {"1": 1.0}
    served = read_decision_log(trained / "decisions").decisions
    assert set(served.column("customer_id").to_pylist()) >= {r.customer_id for r in records}


@pytest.mark.slow  # about a minute of requests, after the module's training
def test_every_answer_is_the_documented_one(server: str) -> None:
    """schemathesis sends valid and invalid requests to every operation of /docs.json: no answer is a 5xx,
    and each has a documented status, content type and schema."""
    document = schemathesis.openapi.from_url(f"{server}/docs.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in document.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} >= {
        "POST /rank",
        "POST /rank_batch",
        "POST /score",
        "GET /metadata",
    }
    for operation in operations:
        # Invalid requests need something to break: a GET here takes no parameters.
        modes = list(GenerationMode) if operation.method == "post" else [GenerationMode.POSITIVE]
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
            def answers_as_documented(case: schemathesis.Case) -> None:
                case.call_and_validate(checks=checks, timeout=30)

            answers_as_documented()
    # Found by the above: a line break in a path, which BentoML's own router would answer in plain text.
    broken = httpx.get(f"{server}/customers/a%0Ab", timeout=30)
    assert (broken.status_code, broken.headers["content-type"]) == (404, "application/json")


def test_a_refused_request_is_one_warning_without_its_values_and_a_metric(trained: Path, server: str) -> None:
    secret = "sk-live-0123456789abcdef"
    event = {"timestamp": "2026-01-01T00:00:00Z", "event_type": "page_view", "value": secret}
    body = {"customer_id": "c1", "events": [event]}
    answer = httpx.post(f"{server}/rank", json=body, timeout=30)
    assert answer.status_code == 400
    log = trained / "serve.log"
    deadline = time.monotonic() + 10
    while "refused a request to /rank" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    written = log.read_text()
    assert "refused a request to /rank: events.0.value (" in written
    assert secret not in written
    assert "Traceback" not in written
    metrics = httpx.get(f"{server}/metrics", timeout=10).text
    assert 'nextbest_refused_requests_total{endpoint="/rank",error="' in metrics


def test_an_unloadable_model_stops_the_command_with_the_reason(trained: Path) -> None:
    result = subprocess.run(
        [str(NEXTBEST), "serve", "--model", "models:/nextbest@nobody", "--port", str(free_port())],
        cwd=trained,
        env=environment(trained),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "cannot load the model models:/nextbest@nobody" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_public_address_needs_an_api_key(trained: Path) -> None:
    result = subprocess.run(
        [str(NEXTBEST), "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=trained,
        env=environment(trained),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "without an API key" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=lambda stop: stop.name)
def test_stopping_serve_stops_the_server_and_its_workers(trained: Path, stop: signal.Signals) -> None:
    """What an orchestrator sends (SIGTERM), and a SIGKILL that no handler sees, both leave nothing
    serving on the port within 10 s. `--host localhost` is a name BentoML alone cannot bind."""
    port = free_port()
    log = trained / f"serve-{stop.name}.log"
    process = start_serve(trained, log, "--host", "localhost", "--port", str(port))
    server: list[psutil.Process] = []
    try:
        _wait_until_ready(process, f"http://127.0.0.1:{port}", log)
        server = psutil.Process(process.pid).children(recursive=True)
        assert len(server) >= 2  # BentoML's arbiter and its worker
        os.kill(process.pid, stop)
        deadline = time.monotonic() + 10
        while _running(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _running(server) == []
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
            pass
        assert process.wait(timeout=20) == (0 if stop == signal.SIGTERM else -stop)
    finally:
        for leftover in _running(server):
            leftover.kill()


def _running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The ones still running (an exited process not yet reaped by its parent is not)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running


@pytest.mark.slow
def test_a_promotion_reaches_the_server_without_a_failed_request(trained: Path, tmp_path: Path) -> None:
    """With --reload-seconds, moving the champion alias to a new version makes the running server answer
    with it, while callers keep calling and every call is answered 200 by one version or the other."""
    shutil.copy(trained / "mlflow.db", tmp_path / "mlflow.db")  # its own registry; the artifacts are shared
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (tmp_path / "serve.log").open("wb") as output:
        process = subprocess.Popen(
            [str(NEXTBEST), "serve", "--port", str(port), "--reload-seconds", "1"],
            cwd=trained,
            env={**environment(trained), "MLFLOW_TRACKING_URI": store},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_ready(process, base, tmp_path / "serve.log")
        world = trained / "world"
        log = load_events(world / "events.parquet")
        (record,) = records_from_tables(log, requests_at_end(log).slice(0, 1))
        body = record.model_dump(exclude_none=True)
        answers: list[list[tuple[float, int, str | None]]] = [[] for _ in range(4)]  # per caller
        stop = threading.Event()

        def call(mine: list[tuple[float, int, str | None]]) -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    answer = client.post(f"{base}/rank", json=body)
                    version = answer.json().get("model_version") if answer.status_code == 200 else None
                    mine.append((time.monotonic(), answer.status_code, version))

        callers = [threading.Thread(target=call, args=(mine,)) for mine in answers]
        for caller in callers:
            caller.start()
        registry = mlflow.MlflowClient(store)
        first = registry.get_model_version("nextbest", "1")
        second = str(
            registry.create_model_version("nextbest", source=first.source, run_id=first.run_id).version
        )
        time.sleep(2)  # answers from version 1 first
        promoted = time.monotonic()
        registry.set_registered_model_alias("nextbest", "champion", second)
        deadline = promoted + 60
        while time.monotonic() < deadline and not all(mine[-1][2] == second for mine in answers):
            time.sleep(0.2)
        time.sleep(1)  # answers from version 2 after
        stop.set()
        for caller in callers:
            caller.join()
        for mine in answers:  # each caller's calls follow one another: version 1, then version 2 only
            assert {status for _, status, _ in mine} == {200}
            versions = [v for _, _, v in mine]
            switched = versions.index(second)
            assert set(versions[:switched]) == {"1"}
            assert set(versions[switched:]) == {second}
            print(f"switched {mine[switched][0] - promoted:.1f} s after the promotion, {len(mine)} answers")
        assert httpx.get(f"{base}/metadata").json()["model_version"] == second
        metrics = httpx.get(f"{base}/metrics").text
        assert f'version="{second}"}} 1.0' in metrics
        assert 'version="1"} 0.0' in metrics
        assert (
            f"serving models:/nextbest@champion (version {second}, was 1)"
            in (tmp_path / "serve.log").read_text()
        )
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_two_workers_over_one_redis_store_never_serve_past_a_limit_and_say_503_while_it_is_away(
    trained: Path, tmp_path: Path
) -> None:
    """16 concurrent /rank calls for one customer, answered by 2 workers sharing a real redis-server:
    the demo catalog's limits and its cap of 4 contacts a week hold, and every served action is the
    store's contact. A stopped store answers 503 naming it; the server recovers when it is back."""
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis")
    port = free_port()
    options = ["--port", str(port), "--store", redis.url, "--workers", "2"]
    process = start_serve(trained, tmp_path / "serve.log", *options)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(process, base, tmp_path / "serve.log")
        request = {"customer_id": "c1", "profile": {"email_opt_in": 1.0, "segment": "gold"}}
        with ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(lambda _: httpx.post(f"{base}/rank", json=request, timeout=30), range(16))
            )
        assert [a.status_code for a in answers] == [200] * 16, [a.text for a in answers]
        served = [a.json()["chosen_action"] for a in answers]
        contacts = httpx.get(f"{base}/customers/c1").json()["contacts"]
        assert sorted(c["action"] for c in contacts) == sorted(a for a in served if a is not None)
        assert len([c for c in contacts if c["channel"] is not None]) <= 4  # the cap
        assert served.count("sms_reminder") <= 1
        assert served.count("email_offer") + served.count("discount_10") <= 4
        redis.stop()
        away = httpx.post(f"{base}/rank", json={"customer_id": "c2"}, timeout=30)
        assert away.status_code == 503, away.text
        assert str(redis.port) in away.json()["error"]
        redis.start()
        assert httpx.post(f"{base}/rank", json={"customer_id": "c2"}, timeout=30).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
        redis.stop()


def test_a_server_killed_during_ingestion_keeps_every_acknowledged_event_once(
    trained: Path, tmp_path: Path
) -> None:
    """4 clients post batches of events to a server over a SQLite store; SIGKILL hits the whole server
    mid-stream. Restarted on the same store, it holds every event of every batch answered 200, once."""
    store = ["--store", f"sqlite:///{tmp_path / 'state.db'}"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_serve(trained, tmp_path / "serve.log", "--port", str(port), *store)
    customers = [f"k{c}" for c in range(400)]  # room for every batch under the retention cap
    acknowledged: list[int] = []
    lock = threading.Lock()

    def batch(number: int) -> list[dict[str, object]]:
        return [
            {"customer_id": customers[(number + i) % 400], "timestamp": f"2026-01-01T00:{i % 60:02d}:00",
             "channel": "web", "event_type": "page_view", "event_id": f"b{number}-{i}"}
            for i in range(200)
        ]  # fmt: skip

    def client(first: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            for number in range(first, 1500, 4):
                try:
                    answer = http.post("/events", json={"events": batch(number)})
                except httpx.HTTPError:
                    return  # the server is gone
                assert answer.status_code == 200, answer.text
                with lock:
                    acknowledged.append(number)

    try:
        _wait_until_ready(process, base, tmp_path / "serve.log")
        clients = [threading.Thread(target=client, args=(first,)) for first in range(4)]
        for thread in clients:
            thread.start()
        while len(acknowledged) < 20:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        for thread in clients:
            thread.join(timeout=60)
        process.wait(timeout=30)
        process = start_serve(trained, tmp_path / "restarted.log", "--port", str(port), *store)
        _wait_until_ready(process, base, tmp_path / "restarted.log")
        stored = [event["event_id"] for customer in customers for event in _stored_events(base, customer)]
        assert len(stored) == len(set(stored))
        assert {f"b{number}-{i}" for number in acknowledged for i in range(200)} <= set(stored)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _stored_events(base: str, customer_id: str) -> list[dict[str, object]]:
    """The customer's events as GET /customers/{id} answers them (none when it knows no such customer)."""
    answer = httpx.get(f"{base}/customers/{customer_id}", timeout=30)
    assert answer.status_code in (200, 404), answer.text
    return list(answer.json()["events"]) if answer.status_code == 200 else []
