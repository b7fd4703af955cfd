"""Decisions as the batch output table of DESIGN §3 (a row per request), with what was suppressed and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from nextbest.data.schema import UTC_US
from nextbest.scoring.decide import Decisions
from nextbest.scoring.explain import EVIDENCE_TYPE

ACTION_STRUCT = pa.struct(
    [
        ("action", pa.string()),
        ("rank", pa.int32()),
        ("score", pa.float64()),
        ("uplift", pa.float64()),
        ("p_conversion", pa.float64()),
        ("p_churn", pa.float64()),
    ]
)
SUPPRESSED_STRUCT = pa.struct([("action", pa.string()), ("reason", pa.string())])
OUTPUT_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("as_of", UTC_US),
        ("model_version", pa.string()),
        ("p_conversion", pa.float64()),
        ("p_churn", pa.float64()),
        ("top_action", pa.string()),
        ("chosen_action", pa.string()),
        ("chosen_probability", pa.float64()),
        ("control", pa.bool_()),
        ("actions", pa.list_(ACTION_STRUCT)),
        ("suppressed", pa.list_(SUPPRESSED_STRUCT)),
    ]
)
EVIDENCE_FIELD = pa.field("evidence", EVIDENCE_TYPE)


def output_schema(explained: bool) -> pa.Schema:
    """The batch output's schema: `OUTPUT_SCHEMA`, plus the `evidence` column when decisions are explained."""
    return OUTPUT_SCHEMA.append(EVIDENCE_FIELD) if explained else OUTPUT_SCHEMA


def decisions_table(decisions: Decisions, model_version: str, top_k: int | None = None) -> pa.Table:
    """One row per request: no-action probabilities, the eligible actions best first (at most `top_k`),
    the served action with the probability it was chosen with (exploration; 1 for the top action when
    exploration is off), whether the customer is in the control group, and the suppressed actions with
    their reasons (catalog order). When the decisions were explained, an `evidence` column lists the
    history events that weighed most.

    `score` is the action's expected value, `uplift` its expected value over taking no action.
    """
    scores, ranking = decisions.scores, decisions.ranking
    layout = _Layout.of(decisions, top_k)
    ids = np.asarray(ranking.actions, dtype=object)
    ranked = pa.StructArray.from_arrays(
        [
            pa.array(ids[layout.picked], pa.string()),
            pa.array(layout.position + 1, pa.int32()),
            *(pa.array(values, pa.float64()) for values in layout.figures),
        ],
        fields=list(ACTION_STRUCT),
    )
    suppressed = pa.StructArray.from_arrays(
        [
            pa.array(ids[layout.suppressed_actions], pa.string()),
            pa.array(layout.reasons, pa.string()),
        ],
        fields=list(SUPPRESSED_STRUCT),
    )
    table = pa.table(
        [
            scores.customer_ids.cast(pa.string()),
            pa.array(scores.as_of, pa.int64()).cast(UTC_US),
            pa.repeat(pa.scalar(model_version, pa.string()), len(scores)),
            pa.array(scores.p_conversion, pa.float64()),
            pa.array(scores.p_churn, pa.float64()),
            _action_names(ids, ranking.top),
            _action_names(ids, decisions.chosen),
            pa.array(decisions.chosen_probability, pa.float64(), from_pandas=True),
            pa.array(decisions.control, pa.bool_()),
            _lists(ranked, layout.kept, OUTPUT_SCHEMA.field("actions").type),
            _lists(suppressed, layout.suppressed_counts, OUTPUT_SCHEMA.field("suppressed").type),
        ],
        schema=OUTPUT_SCHEMA,
    )
    if decisions.evidence is None:
        return table
    return table.append_column(EVIDENCE_FIELD, decisions.evidence)


def decision_rows(decisions: Decisions, model_version: str, top_k: int | None = None) -> list[dict[str, Any]]:
    """`decisions_table(...).to_pylist()` built straight from the arrays: the same rows, as Python objects.

    For callers that want objects, not a table: the online service answers a request or a few at a time,
    and the table's two dozen Arrow arrays cost it more than the rest of its output work.
    """
    scores, ranking = decisions.scores, decisions.ranking
    layout = _Layout.of(decisions, top_k)
    ids = ranking.actions
    figures = (values.tolist() for values in layout.figures)
    listed = zip(layout.picked.tolist(), layout.position.tolist(), *figures, strict=True)
    ranked = _split(
        [
            {"action": ids[a], "rank": r + 1, "score": e, "uplift": u, "p_conversion": c, "p_churn": h}
            for a, r, e, u, c, h in listed
        ],
        layout.kept,
    )
    reasons = zip(layout.suppressed_actions.tolist(), layout.reasons.tolist(), strict=True)
    suppressed = _split([{"action": ids[a], "reason": why} for a, why in reasons], layout.suppressed_counts)
    columns = (  # in the order of OUTPUT_SCHEMA's fields
        scores.customer_ids.cast(pa.string()).to_pylist(),
        [_EPOCH + timedelta(microseconds=us) for us in scores.as_of.tolist()],
        [model_version] * len(scores),
        scores.p_conversion.tolist(),
        scores.p_churn.tolist(),
        [ids[i] if i >= 0 else None for i in ranking.top.tolist()],
        [ids[i] if i >= 0 else None for i in decisions.chosen.tolist()],
        [None if np.isnan(p) else p for p in decisions.chosen_probability.tolist()],
        decisions.control.tolist(),
        ranked,
        suppressed,
    )
    rows = [dict(zip(OUTPUT_SCHEMA.names, values, strict=True)) for values in zip(*columns, strict=True)]
    if decisions.evidence is not None:
        for row, evidence in zip(rows, decisions.evidence.to_pylist(), strict=True):
            row["evidence"] = evidence
    return rows


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class _Layout:
    """Where each request's listed actions come from, shared by the table and the rows.

    Attributes:
        kept: [N] ranked actions listed per request (eligible ones, at most top_k).
        rows, position, picked: per listed action, its request, its place in the request's ranking and its
            catalog index; requests in order, best first.
        figures: the listed actions' expected value, uplift, P(conversion) and P(churn).
        suppressed_actions: per suppressed action, its catalog index (requests in order).
        reasons: why each suppressed action was suppressed.
        suppressed_counts: [N] suppressed actions per request.
    """

    kept: np.ndarray
    position: np.ndarray
    picked: np.ndarray
    figures: list[np.ndarray]
    suppressed_actions: np.ndarray
    reasons: np.ndarray
    suppressed_counts: np.ndarray

    @classmethod
    def of(cls, decisions: Decisions, top_k: int | None) -> _Layout:
        ranking = decisions.ranking
        k = ranking.expected_value.shape[1]
        kept = np.take_along_axis(ranking.eligible, ranking.order, axis=1).sum(axis=1)
        if top_k is not None:
            kept = np.minimum(kept, top_k)
        rows, position = np.nonzero(np.arange(k)[None, :] < kept[:, None])  # eligible actions come first
        picked = ranking.order[rows, position]
        suppressed_rows, suppressed_actions = np.nonzero(~ranking.eligible)
        names = ("expected_value", "uplift", "p_conversion", "p_churn")
        return cls(
            kept,
            position,
            picked,
            [getattr(ranking, name)[rows, picked] for name in names],
            suppressed_actions,
            ranking.reasons[suppressed_rows, suppressed_actions],
            (~ranking.eligible).sum(axis=1),
        )


def _split(items: list[Any], counts: np.ndarray) -> list[list[Any]]:
    """`items` cut into consecutive lists of `counts[i]` items."""
    ends = np.cumsum(counts).tolist()
    return [items[end - count : end] for end, count in zip(ends, counts.tolist(), strict=True)]


def _lists(values: pa.StructArray, counts: np.ndarray, list_type: pa.DataType) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=list_type)


def _action_names(ids: np.ndarray, index: np.ndarray) -> pa.Array:
    """The action id at each request's catalog `index`; null where the index is -1 (no action)."""
    names: np.ndarray = ids[np.maximum(index, 0)] if len(ids) else np.full(len(index), None, dtype=object)
    return pa.array(np.where(index >= 0, names, np.full(len(index), None, dtype=object)), pa.string())
