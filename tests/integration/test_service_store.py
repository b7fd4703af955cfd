"""The service with a customer store (DESIGN §4a), in process through its ASGI app: ingestion, ranking
by customer id, contacts recorded server-side, erasure, and a store that goes away."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import pytest
from starlette.testclient import TestClient

from nextbest.data import load_events
from nextbest.decisioning.catalog import ActionCatalog
from nextbest.journeys import requests_at_end
from nextbest.registry import assign_aliases
from nextbest.scoring.pyfunc import log_model
from nextbest.scoring.records import score_records
from nextbest.scoring.schemas import RankResponse, ScoringRequest
from nextbest.scoring.scorer import JourneyScorer
from nextbest.scoring.tables import records_from_tables
from nextbest.simulate import SimulationConfig, simulate
from tests.integration.test_service import API_KEY, AUTH
from tests.unit.test_scoring import make_scorer

# Every action that contacts anyone at most once a week: a second decision for a customer must serve
# another action than the first, whatever the model thinks.
CATALOG = {
    "actions": [
        {"id": "email_offer", "channel": "email", "value": 40, "limits": [{"max": 1, "days": 7}]},
        {"id": "discount_10", "channel": "email", "value": 30, "limits": [{"max": 1, "days": 7}]},
        {"id": "call_back", "channel": "call_center", "value": 60, "limits": [{"max": 1, "days": 7}]},
        {"id": "no_action", "value": 0},
    ]
}
EVENTS = [
    {"customer_id": "c1", "timestamp": "2026-11-01T08:00:00Z", "event_type": "page_view", "channel": "web"},
    {"customer_id": "c1", "timestamp": "2026-11-02T09:30:00Z", "event_type": "add_to_cart", "channel": "web"},
    {"customer_id": "c1", "timestamp": "2026-11-03T10:00:00Z", "event_type": "purchase", "value": 42.0},
]
AS_OF = "2026-11-10T12:00:00Z"


@dataclasses.dataclass
class StoreService:
    client: TestClient
    scorer: JourneyScorer
    store: Path

    def post(self, path: str, body: Any) -> Any:
        return self.client.post(path, json=body, headers=AUTH)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreService]:
    folder = tmp_path_factory.mktemp("service-store")
    with pytest.MonkeyPatch.context() as patch:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(folder)
        world = simulate(SimulationConfig(n_customers=40, seed=5))
        log = load_events(world.events)
        scorer = dataclasses.replace(
            make_scorer(log, world.customers), catalog=ActionCatalog.from_dict(CATALOG)
        )
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run():
            info = log_model(scorer, records_from_tables(log, requests_at_end(log).slice(0, 1)), "nextbest")
        assign_aliases(mlflow.MlflowClient(uri), "nextbest", str(info.registered_model_version))
        store = folder / "state.db"
        settings = {
            "NEXTBEST_MODEL_URI": "models:/nextbest@champion",
            "NEXTBEST_API_KEY": API_KEY,
            "NEXTBEST_STORE": f"sqlite:///{store}",
            "BENTOML_HOME": str(folder / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
        }
        for name, value in settings.items():
            patch.setenv(name, value)
        from nextbest_serving.service import NextbestService

        _forget_bentoml_metrics()
        with TestClient(NextbestService.to_asgi(), raise_server_exceptions=False) as client:
            yield StoreService(client, scorer, store)


def _forget_bentoml_metrics() -> None:
    """BentoML registers its request metrics in prometheus_client's process-wide registry once per ASGI
    app it builds: a second app in one test process (test_service.py's came first) needs them gone."""
    from prometheus_client import REGISTRY

    names = REGISTRY._collector_to_names  # no public way to list the collectors
    for collector in [c for c, found in names.items() if any(n.startswith("bentoml_") for n in found)]:
        REGISTRY.unregister(collector)


def test_posted_events_are_checked_row_by_row_and_stored_once(service: StoreService) -> None:
    bad = {"customer_id": "c0", "timestamp": "not a time", "event_type": "visit"}
    good = {"customer_id": "c0", "timestamp": "2026-11-01T08:00:00Z", "event_type": "visit"}
    first = service.post("/events", {"events": [good, bad]})
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 1
    (rejected,) = first.json()["rejected"]
    assert (rejected["index"], rejected["field"]) == (1, "timestamp")
    again = service.post("/events", {"events": [good]}).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1)


def test_rank_by_id_ranks_as_the_same_events_sent_in_the_body(service: StoreService) -> None:
    assert service.post("/events", {"events": EVENTS}).json()["accepted"] == 3
    assert (
        service.post("/customers", {"customers": [{"customer_id": "c1", "segment": "gold"}]}).status_code
        == 200
    )
    answer = service.post("/score", {"customer_id": "c1", "as_of": AS_OF})
    assert answer.status_code == 200, answer.text
    body_events = [{k: v for k, v in e.items() if k != "customer_id"} for e in EVENTS]
    record = ScoringRequest(customer_id="c1", as_of=AS_OF, events=body_events, profile={"segment": "gold"})
    (expected,) = score_records(service.scorer, [record], "1")
    assert answer.json()["p_conversion"] == pytest.approx(expected.p_conversion)
    # Events sent again in the body count once: the same probabilities.
    both = service.post("/score", {"customer_id": "c1", "as_of": AS_OF, "events": body_events}).json()
    assert both["p_conversion"] == pytest.approx(expected.p_conversion)


def test_served_contacts_hold_the_limit_and_are_kept_server_side(service: StoreService) -> None:
    request = {"customer_id": "c2", "as_of": AS_OF}
    first = RankResponse.model_validate(service.post("/rank", request).json())
    assert first.decision_id
    assert first.chosen_action
    second = RankResponse.model_validate(
        service.post("/rank", {**request, "as_of": "2026-11-11T12:00:00Z"}).json()
    )
    assert second.decision_id != first.decision_id
    if first.chosen_action != "no_action":
        assert second.chosen_action != first.chosen_action
        held = [s for s in second.suppressed if s.action == first.chosen_action]
        assert [h.reason.split(":")[0] for h in held] == ["contact limit"]
    stored = service.client.get("/customers/c2", headers=AUTH).json()
    assert [c["decision_id"] for c in stored["contacts"]] == [first.decision_id, second.decision_id]


def test_concurrent_ranks_for_one_customer_serve_each_limited_action_at_most_once(
    service: StoreService,
) -> None:
    request = {"customer_id": "c3", "as_of": AS_OF}
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: service.post("/rank", request), range(16)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    served = [a.json()["chosen_action"] for a in answers]
    for action in ("email_offer", "discount_10", "call_back"):
        assert served.count(action) <= 1, served
    contacts = service.client.get("/customers/c3", headers=AUTH).json()["contacts"]
    assert sorted(c["action"] for c in contacts) == sorted(a for a in served if a is not None)


def test_erasure_removes_everything_and_says_how_much(service: StoreService) -> None:
    service.post("/events", {"events": [{**EVENTS[0], "customer_id": "c4"}]})
    service.post("/rank", {"customer_id": "c4", "as_of": AS_OF})
    erased = service.client.delete("/customers/c4", headers=AUTH)
    assert erased.json() == {"customer_id": "c4", "events": 1, "contacts": 1, "profile": False}
    gone = service.client.get("/customers/c4", headers=AUTH)
    assert gone.status_code == 404
    assert "nothing stored" in gone.json()["error"]
