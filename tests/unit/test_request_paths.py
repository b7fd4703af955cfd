"""The two ways in agree: each payload, sent as a /rank body (JSON, through the online record path) and
written as contract files (through the batch job's `score_chunk`), is refused by both or scored alike.

The batch files also hold a bystander customer with unusable rows, as real files do: a bad row elsewhere
in a file must not change how this customer's rows are read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nextbest.batch.chunk import ScoringOptions, score_chunk
from nextbest.data import load_events
from nextbest.errors import DataContractError
from nextbest.scoring import JourneyScorer, RankResponse, score_records
from nextbest.scoring.schemas import ServedScoringRequest
from nextbest.simulate import SimulationConfig, simulate
from tests.unit.test_scoring import make_scorer

AS_OF = "2026-03-02T00:00:00Z"
EVENT = {"timestamp": "2026-03-01T10:00:00Z", "event_type": "purchase", "channel": "web", "value": 20.0}
LATER = {"timestamp": "2026-03-01T11:00:00Z", "event_type": "page_view", "channel": "web"}
PROFILE = {"segment": "gold", "tenure_days": 30.0}
BYSTANDER = "zz-bystander"


def payload(**changes: Any) -> dict[str, Any]:
    return {"customer_id": "c1", "as_of": AS_OF, "events": [EVENT, LATER], "profile": PROFILE, **changes}


def valued(value: float) -> dict[str, Any]:
    return payload(events=[{**EVENT, "value": value}, LATER])


# (payload, whether it is scored): numbers the contract does not hold, NaN and Infinity alike, are refused;
# an event sent twice is kept once; a time the timestamp type holds is read; an empty id is no id.
PAYLOADS = {
    "plain": (payload(), True),
    "value-1e300": (valued(1e300), False),
    "value-3.5e38": (valued(3.5e38), False),
    "value-NaN": (valued(float("nan")), False),
    "value-Infinity": (valued(float("inf")), False),
    "value-minus-Infinity": (valued(float("-inf")), False),
    "profile-1e300": (payload(profile={**PROFILE, "tenure_days": 1e300}), False),
    "profile-Infinity": (payload(profile={**PROFILE, "tenure_days": float("inf")}), False),
    "profile-NaN": (payload(profile={**PROFILE, "tenure_days": float("nan")}), False),
    "duplicate-events": (payload(events=[EVENT, EVENT, LATER]), True),
    "event-in-year-9999": (
        payload(events=[EVENT, LATER, {**LATER, "timestamp": "9999-12-31T00:00:00Z"}]),
        True,
    ),
    "as_of-in-year-9999": (payload(as_of="9999-12-31T00:00:00Z"), True),
    "empty-customer_id": (payload(customer_id=""), False),
}


@pytest.fixture(scope="module")
def scorer() -> JourneyScorer:
    world = simulate(SimulationConfig(n_customers=150, seed=4))
    return make_scorer(load_events(world.events), world.customers)


def online(scorer: JourneyScorer, body: dict[str, Any]) -> RankResponse | None:
    """The /rank answer to `body` sent as JSON (NaN and Infinity as their JavaScript literals); None if
    refused."""
    request = ServedScoringRequest.model_validate_json(json.dumps(body))
    try:
        (answer,) = score_records(scorer, [request], "1")
    except DataContractError:
        return None
    return answer


def batch(scorer: JourneyScorer, body: dict[str, Any], directory: Path) -> dict[str, Any] | None:
    """The batch output row for `body` written as events, customers and requests files; None if the
    customer is not scored."""
    customer = body["customer_id"]
    events = [{"customer_id": customer, **event} for event in body["events"]]
    events += [
        {"customer_id": BYSTANDER, **LATER},
        {"customer_id": BYSTANDER, **LATER, "timestamp": "yesterday"},
    ]
    profile = body["profile"]
    customers = {
        "customer_id": [customer, BYSTANDER],
        "segment": [profile["segment"], "gold"],
        "tenure_days": pa.array([profile["tenure_days"], 1.0], pa.float64()),
    }
    requests = {"customer_id": [customer, BYSTANDER], "as_of": [body["as_of"], "soon"]}
    tables = {
        "events": pa.Table.from_pylist(events),
        "customers": pa.table(customers),
        "requests": pa.table(requests),
    }
    paths = {name: directory / f"{name}.parquet" for name in tables}
    for name, table in tables.items():
        pq.write_table(table, paths[name])
    options = ScoringOptions("1")
    scored = score_chunk(scorer, paths["events"], paths["requests"], paths["customers"], options)
    rows = [row for row in scored.decisions.to_pylist() if row["customer_id"] == customer]
    assert len(rows) <= 1
    return rows[0] if rows else None


@pytest.mark.parametrize(("body", "scored"), list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_online_and_batch_give_the_same_outcome(
    scorer: JourneyScorer, body: dict[str, Any], scored: bool, tmp_path: Path
) -> None:
    answer, row = online(scorer, body), batch(scorer, body, tmp_path)
    assert (answer is not None, row is not None) == (scored, scored)
    if answer is None or row is None:
        return
    assert answer.p_conversion == pytest.approx(row["p_conversion"], rel=1e-5)
    assert answer.chosen_action == row["chosen_action"]
    assert [a.action for a in answer.actions] == [a["action"] for a in row["actions"]]
    assert [a.score for a in answer.actions] == pytest.approx([a["score"] for a in row["actions"]], rel=1e-5)
