"""The BentoML service in-process (its real ASGI app: routes, guards, lifespan) on a model registered in a
real SQLite MLflow store: ranking equals the batch job, bad input is a 4xx naming the field, the API key
keeps every endpoint but the probes closed, and served decisions reach the decision log.

BentoML builds one ASGI app per process (its Prometheus registry is global), so every test here shares one
app, configured with an API key and small limits; `test_serve_process.py` runs the real server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from nextbest.data import load_events
from nextbest.data.events import EventLog
from nextbest.journeys import requests_at_end
from nextbest.registry import assign_aliases
from nextbest.scoring import decide, decisions_table
from nextbest.scoring.decision_log import read_decision_log
from nextbest.scoring.pyfunc import log_model
from nextbest.scoring.schemas import RankResponse
from nextbest.scoring.scorer import JourneyScorer
from nextbest.scoring.tables import records_from_tables
from nextbest.simulate import SimulatedWorld, SimulationConfig, simulate
from nextbest_serving.schemas import ErrorResponse, MetadataResponse
from tests.unit.test_scoring import make_scorer

pytestmark = pytest.mark.integration

API_KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_EVENTS, MAX_BATCH, MAX_BODY = 300, 20, 400_000


class Served:
    """The running app and what it serves."""

    def __init__(
        self, client: TestClient, world: SimulatedWorld, log: EventLog, scorer: JourneyScorer, logs: Path
    ):
        self.client, self.world, self.log, self.scorer, self.decision_log = client, world, log, scorer, logs

    def records(self, n: int, start: int = 0) -> list[dict[str, Any]]:
        requests = requests_at_end(self.log).slice(start, n)
        return [
            r.model_dump(exclude_none=True)
            for r in records_from_tables(self.log, requests, self.world.customers)
        ]

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        return self.client.post(path, json=body, headers=AUTH if headers is None else headers)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("service")
    with pytest.MonkeyPatch.context() as patch:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(folder)
        world = simulate(SimulationConfig(n_customers=60, seed=12))
        log = load_events(world.events)
        scorer = make_scorer(log, world.customers)
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run():
            info = log_model(scorer, records_from_tables(log, requests_at_end(log).slice(0, 1)), "nextbest")
        assign_aliases(mlflow.MlflowClient(uri), "nextbest", str(info.registered_model_version))
        settings = {
            "NEXTBEST_MODEL_URI": "models:/nextbest@champion",
            "NEXTBEST_API_KEY": API_KEY,
            "NEXTBEST_MAX_EVENTS": str(MAX_EVENTS),
            "NEXTBEST_MAX_BATCH": str(MAX_BATCH),
            "NEXTBEST_MAX_BODY_BYTES": str(MAX_BODY),
            "NEXTBEST_DECISION_LOG": str(folder / "decisions"),
            "BENTOML_HOME": str(folder / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
        }
        for name, value in settings.items():
            patch.setenv(name, value)
        from nextbest_serving.service import NextbestService  # reads the settings on import

        with TestClient(NextbestService.to_asgi(), raise_server_exceptions=False) as client:
            yield Served(client, world, log, scorer, folder / "decisions")


def service_instance() -> Any:
    import bentoml

    return bentoml.get_current_service()


def test_rank_ranks_as_the_batch_job_does(served: Served) -> None:
    records = served.records(8)
    requests = requests_at_end(served.log).slice(0, 8)
    batch = decisions_table(decide(served.scorer, served.log, requests, served.world.customers), "1")
    for record, row in zip(records, batch.to_pylist(), strict=True):
        answer = served.post("/rank", record)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] == "1"
        assert [a["action"] for a in body["actions"]] == [a["action"] for a in row["actions"]]
        assert body["actions"][0]["score"] == pytest.approx(row["actions"][0]["score"], rel=1e-5)
        assert body["fallback"] is None


def test_rank_batch_and_score(served: Served) -> None:
    records = served.records(5)
    batch = served.post("/rank_batch", {"requests": records})
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [r["customer_id"] for r in results] == [r["customer_id"] for r in records]
    single = served.post("/rank", records[2]).json()
    assert [a["action"] for a in results[2]["actions"]] == [a["action"] for a in single["actions"]]
    scored = served.post("/score", records[0])
    assert scored.status_code == 200, scored.text
    body = scored.json()
    assert {a["action"] for a in body["actions"]} == set(served.scorer.actions)
    assert 0.0 <= body["p_conversion"] <= 1.0


def test_metadata_names_the_model(served: Served) -> None:
    answer = served.client.get("/metadata", headers=AUTH)
    assert answer.status_code == 200
    MetadataResponse.model_validate_json(answer.text)
    body = answer.json()
    assert body["model_name"] == "nextbest"
    assert body["model_version"] == "1"
    assert body["actions"] == list(served.scorer.actions)
    assert [a["id"] for a in body["catalog"]["actions"]] == list(served.scorer.actions)
    assert body["limits"]["max_events"] == MAX_EVENTS


def _documented(document: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
    """The component schema that a documented request or answer refers to."""
    name = content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


def test_the_openapi_examples_are_valid_and_answered_as_documented(served: Served) -> None:
    document = served.client.get("/docs.json", headers=AUTH).json()
    rank = document["paths"]["/rank"]["post"]
    body = _documented(document, rank["requestBody"]["content"])
    assert "customer_id" in body["required"]  # events too, unless the service keeps a store
    assert "customer store" in body["properties"]["events"]["description"]
    RankResponse.model_validate(_documented(document, rank["responses"]["200"]["content"])["example"])
    example = served.post("/rank", body["example"])
    assert example.status_code == 200, example.text
    answer = RankResponse.model_validate_json(example.text)
    (no_action,) = [a for a in answer.actions if a.action == "no_action"]
    assert (answer.p_conversion, answer.p_churn) == (no_action.p_conversion, no_action.p_churn)


def test_the_openapi_document_states_every_answer(served: Served) -> None:
    """Each operation's answers, refusals included, are the models it answers with, and a field that may
    be null is documented so (BentoML's own document drops the null)."""
    document = served.client.get("/docs.json", headers=AUTH).json()
    paths = document["paths"]
    for route, answer in [
        ("/rank", "RankResponse"),
        ("/rank_batch", "RankBatchResponse"),
        ("/score", "ScoreResponse"),
    ]:
        responses = paths[route]["post"]["responses"]
        assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith(f"/{answer}")
        for status in ("400", "401", "413", "422"):
            assert responses[status]["content"]["application/json"]["schema"]["$ref"].endswith(
                "/ErrorResponse"
            )
    metadata = paths["/metadata"]["get"]["responses"]
    assert metadata["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/MetadataResponse")
    schemas = document["components"]["schemas"]
    answer = schemas["RankResponse"]["properties"]
    assert answer["evidence"]["type"] == "array"
    assert all(answer[name]["nullable"] for name in ("evidence", "fallback", "p_conversion"))
    assert schemas["ErrorResponse"]["properties"]["detail"]["type"] == "array"
    assert not any(name.endswith("IODescriptor") for name in schemas)  # BentoML's versions, unused


def _valid(served: Served) -> dict[str, Any]:
    return served.records(1)[0]


def _with(**changes: Any) -> Any:
    return lambda record: {**record, **changes}


def _event(**changes: Any) -> Any:
    return lambda record: {**record, "events": [{**record["events"][0], **changes}, *record["events"][1:]]}


def _without(field: str) -> Any:
    return lambda record: {k: v for k, v in record.items() if k != field}


# (case, path, how to break a valid request, expected status, text the answer must contain)
MALFORMED: list[tuple[str, str, Any, int, str]] = [
    ("missing customer_id", "/rank", _without("customer_id"), 400, "customer_id"),
    ("missing events without a store", "/rank", _without("events"), 422, "events: required"),
    ("customer_id a number", "/rank", _with(customer_id=42), 400, "customer_id"),
    ("events not a list", "/rank", _with(events="page_view"), 400, "events"),
    ("event without timestamp", "/rank", lambda r: {**r, "events": [{"event_type": "x"}]}, 400, "timestamp"),
    ("event without event_type", "/rank", _event(event_type=None), 400, "event_type"),
    ("event value not a number", "/rank", _event(value="lots"), 400, "value"),
    ("unknown top-level field", "/rank", _with(segment="gold"), 400, "segment"),
    ("unknown event field", "/rank", _event(device="ios"), 400, "device"),
    ("unparsable event time", "/rank", _event(timestamp="yesterday"), 422, "timestamp"),
    ("unparsable as_of", "/rank", _with(as_of="soon"), 422, "as_of"),
    ("top_k zero", "/rank", _with(top_k=0), 400, "top_k"),
    ("top_k text", "/rank", _with(top_k="three"), 400, "top_k"),
    ("explain too many", "/rank", _with(explain=500), 400, "explain"),
    ("unknown candidate action", "/rank", _with(candidates=["teleport"]), 422, "candidates"),
    ("candidates not a list", "/rank", _with(candidates="email_offer"), 400, "candidates"),
    ("profile not a mapping", "/rank", _with(profile=["gold"]), 400, "profile"),
    ("profile value a list", "/rank", _with(profile={"segment": ["gold"]}), 400, "profile"),
    ("context not a mapping", "/rank", _with(context=3), 400, "context"),
    ("too many events", "/rank", lambda r: {**r, "events": r["events"][:1] * (MAX_EVENTS + 1)}, 413, "limit"),
    ("score: missing events without a store", "/score", _without("events"), 422, "events: required"),
    ("batch: not wrapped", "/rank_batch", lambda r: [r], 400, "should be an object"),
    ("batch: bad member", "/rank_batch", lambda r: {"requests": [r, {"customer_id": 1}]}, 400, "customer_id"),
    (
        "batch: member without events, no store",
        "/rank_batch",
        lambda r: {"requests": [r, {"customer_id": "x"}]},
        422,
        "requests[1].events",
    ),
    ("batch: too many", "/rank_batch", lambda r: {"requests": [r] * (MAX_BATCH + 1)}, 413, "limit"),
    ("batch: unknown top-level field", "/rank_batch", lambda r: {"requests": [r], "top_k": 1}, 400, "top_k"),
    (
        "batch: unusable member names its index",
        "/rank_batch",
        lambda r: {"requests": [r, {**r, "as_of": "soon"}]},
        422,
        "requests[1]: as_of",
    ),
    ("candidates empty", "/rank", _with(candidates=[]), 400, "candidates"),
    ("score: candidates empty", "/score", _with(candidates=[]), 400, "candidates"),
    ("score: unknown candidate action", "/score", _with(candidates=["teleport"]), 422, "candidates"),
    ("customer_id empty", "/rank", _with(customer_id=""), 422, "customer_id"),
]


@pytest.mark.parametrize(
    ("case", "path", "breaks", "status", "named"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_requests_are_a_4xx_naming_the_field(
    served: Served, case: str, path: str, breaks: Any, status: int, named: str
) -> None:
    answer = served.post(path, breaks(_valid(served)))
    assert answer.status_code == status, answer.text
    assert named in answer.text
    ErrorResponse.model_validate_json(answer.text)  # the one body of every refusal, as documented
    assert served.client.get("/readyz").status_code == 200
    assert served.post("/rank", _valid(served)).status_code == 200


def test_malformed_json_and_oversized_bodies(served: Served) -> None:
    broken = served.client.post("/rank", content=b'{"customer_id": "c1", "events": [', headers=AUTH)
    assert broken.status_code == 400
    assert "json" in broken.text.lower()
    huge = {"customer_id": "c", "events": [], "context": {"blob": "x" * MAX_BODY}}
    too_large = served.post("/rank", huge)
    assert too_large.status_code == 413
    assert f"{MAX_BODY:,}" in too_large.json()["error"]


def test_unknown_event_types_map_to_the_unknown_token(served: Served) -> None:
    record = _valid(served)
    record["events"] = [
        {**e, "event_type": "hologram_call", "channel": "metaverse"} for e in record["events"]
    ]
    assert served.post("/rank", record).status_code == 200


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
        ),
        max_leaves=12,
    ),
    path=st.sampled_from(["/rank", "/score", "/rank_batch"]),
)
def test_arbitrary_json_never_gets_a_5xx(served: Served, body: Any, path: str) -> None:
    assert served.post(path, body).status_code < 500


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(
        ["customer_id", "as_of", "profile", "context", "candidates", "top_k", "explain", "events"]
    ),
    value=st.none() | st.integers(-5, 5) | st.text(max_size=8) | st.lists(st.text(max_size=5), max_size=3),
)
def test_any_one_field_changed_never_gets_a_5xx(served: Served, field: str, value: Any) -> None:
    record = _valid(served)
    record[field] = value
    assert served.post("/rank", record).status_code < 500


def test_the_api_key_guards_every_endpoint_but_the_probes(served: Served) -> None:
    batcher = service_instance().ranker
    before = batcher.items_processed
    record = _valid(served)
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": API_KEY}):
        for path in ("/rank", "/score", "/rank_batch"):
            answer = served.post(path, record, headers=headers)
            assert answer.status_code == 401, (path, headers)
            assert "API key" in answer.json()["error"]
        assert served.client.get("/metadata", headers=headers).status_code == 401
        assert served.client.get("/docs.json", headers=headers).status_code == 401
    assert batcher.items_processed == before  # refused before any model work
    for probe in ("/livez", "/readyz", "/healthz"):
        assert served.client.get(probe).status_code == 200


def test_authentication_answers_before_the_body_size_limit(served: Served) -> None:
    huge = {"customer_id": "c", "events": [], "context": {"blob": "x" * MAX_BODY}}
    assert served.post("/rank", huge, headers={}).status_code == 401
    assert served.post("/rank", huge).status_code == 413


def test_only_large_batches_spread_over_torch_threads(served: Served) -> None:
    service = service_instance()
    records = served.records(1)
    seen = []
    for size in (1, 31, 32, 64):
        with service._threads_for(records * size):
            seen.append(torch.get_num_threads())
    assert seen == [1, 1, service.settings.torch_threads, service.settings.torch_threads]
    assert torch.get_num_threads() == 1  # back to one thread for whatever the loop does next


def test_a_missed_deadline_serves_the_catalog_order_flagged(served: Served) -> None:
    service = service_instance()
    normal = service.settings
    service.settings = replace(normal, deadline_ms=1e-6)
    try:
        answer = served.post("/rank", {**_valid(served), "candidates": ["call_back", "email_offer"]})
    finally:
        service.settings = normal
    assert answer.status_code == 200
    body = answer.json()
    assert body["fallback"] == "deadline of 1e-06 ms passed"
    assert [a["action"] for a in body["actions"]] == ["email_offer", "call_back"]  # catalog order
    assert body["actions"][0]["score"] is None


def test_served_decisions_reach_the_decision_log(served: Served) -> None:
    records = served.records(3, start=20)
    assert served.post("/rank_batch", {"requests": records}).status_code == 200
    logged = read_decision_log(served.decision_log).decisions
    ids = logged.column("customer_id").to_pylist()
    assert all(r["customer_id"] in ids for r in records)
    lines = [
        json.loads(line)
        for path in served.decision_log.glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    mine = [line for line in lines if line["customer_id"] == records[0]["customer_id"]]
    assert mine[-1]["request"]["events"] == records[0]["events"]
    assert mine[-1]["chosen_probability"] == 1.0
