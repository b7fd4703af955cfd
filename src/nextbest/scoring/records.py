"""Scoring records (the pyfunc's and the HTTP API's requests, `nextbest.scoring.schemas`) into answers.

The records go through the same contract tables and the same `decide` as the batch job
(`nextbest.scoring.tables`), so a request ranks identically online and in bulk.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.schema import UTC_US
from nextbest.decisioning.catalog import ActionCatalog
from nextbest.decisioning.policy import NOT_A_CANDIDATE
from nextbest.scoring.decide import decide
from nextbest.scoring.output import decision_rows
from nextbest.scoring.schemas import (
    AnyScoringRequest,
    BaseScoringRequest,
    RankedAction,
    RankResponse,
    ScoreResponse,
)
from nextbest.scoring.scorer import JourneyScorer
from nextbest.scoring.tables import candidate_mask, request_tables


def probability_records(
    scorer: JourneyScorer, records: Sequence[AnyScoringRequest], model_version: str
) -> list[ScoreResponse]:
    """The model's calibrated probabilities for each record (for its candidates, when it names them),
    without ranking.

    Raises:
        DataContractError: an event, as_of, profile attribute or candidate cannot be used; the message
            names the field.
    """
    wanted = candidate_mask(records, scorer.actions)
    log, requests, customers = request_tables(scorer, records)
    scores = scorer.score(log, requests, customers)
    as_of = pc.cast(pa.array(scores.as_of, pa.int64()), UTC_US).to_pylist()
    return [
        ScoreResponse.model_validate(
            {
                "customer_id": record.customer_id,
                "as_of": as_of[i].isoformat(),
                "model_version": model_version,
                "p_conversion": float(scores.p_conversion[i]),
                "p_churn": float(scores.p_churn[i]),
                "actions": [
                    {
                        "action": action,
                        "p_conversion": float(scores.action_p_conversion[i, a]),
                        "p_churn": float(scores.action_p_churn[i, a]),
                    }
                    for a, action in enumerate(scorer.actions)
                    if wanted is None or wanted[i, a]
                ],
            }
        )
        for i, record in enumerate(records)
    ]


def score_records(
    scorer: JourneyScorer,
    records: Sequence[AnyScoringRequest],
    model_version: str,
    catalog: ActionCatalog | None = None,
    held_back: np.ndarray | None = None,
) -> list[RankResponse]:
    """Scores and ranks each record with `catalog` (default: the model's packaged catalog); `held_back`
    ([N, K] objects over the catalog's actions) holds actions back for reasons the records' events do not
    show (`nextbest.scoring.stored`).

    Raises:
        DataContractError: an event, as_of, profile attribute or candidate cannot be used; the message
            names the field.
    """
    catalog = catalog if catalog is not None else scorer.action_catalog
    candidates = candidate_mask(records, catalog.ids)
    log, requests, customers = request_tables(scorer, records)
    decisions = decide(
        scorer,
        log,
        requests,
        customers,
        catalog=catalog,
        candidates=candidates,
        held_back=held_back,
        explain=max((r.explain for r in records), default=0),
        customer_ids=pa.array([r.customer_id for r in records], pa.string()),
    )
    rows = decision_rows(decisions, model_version)
    return [_answer(record, row) for record, row in zip(records, rows, strict=True)]


def fallback_answer(
    record: BaseScoringRequest, catalog: ActionCatalog, model_version: str, reason: str
) -> RankResponse:
    """The catalog's default order (its own order, narrowed to the record's candidates and top_k), for
    when the model cannot answer: unscored, and flagged with `reason`."""
    wanted = [a for a in catalog.ids if record.candidates is None or a in record.candidates][: record.top_k]
    actions = [
        RankedAction(action=a, rank=i + 1, score=None, uplift=None, p_conversion=None, p_churn=None)
        for i, a in enumerate(wanted)
    ]
    return RankResponse(
        customer_id=record.customer_id,
        as_of=record.as_of or datetime.now(UTC).isoformat(),
        model_version=model_version,
        p_conversion=None,
        p_churn=None,
        top_action=wanted[0] if wanted else None,
        chosen_action=wanted[0] if wanted else None,
        chosen_probability=1.0 if wanted else None,
        actions=actions,
        suppressed=[],
        fallback=reason,
    )


def _answer(record: BaseScoringRequest, row: dict[str, Any]) -> RankResponse:
    """The record's answer: its row cut to its top_k, without the actions it did not ask about."""
    ranked = row["actions"][: record.top_k] if record.top_k is not None else row["actions"]
    # Validated from plain data in one call: pydantic builds the nested models in Rust, cheaper than a
    # Python constructor call per action.
    return RankResponse.model_validate(
        {
            "customer_id": record.customer_id,
            "as_of": row["as_of"].isoformat(),
            "model_version": row["model_version"],
            "p_conversion": row["p_conversion"],
            "p_churn": row["p_churn"],
            "top_action": ranked[0]["action"] if ranked else None,
            "chosen_action": row["chosen_action"],
            "chosen_probability": row["chosen_probability"],
            "control": row["control"],
            "actions": ranked,
            "suppressed": [s for s in row["suppressed"] if s["reason"] != NOT_A_CANDIDATE],
            "evidence": None
            if not record.explain
            else [_evidence(e) for e in row["evidence"][: record.explain]],
        }
    )


def _evidence(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "timestamp": event["timestamp"].isoformat()}
