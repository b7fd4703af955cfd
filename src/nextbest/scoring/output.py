"""Decisions as the batch output table of DESIGN §3 (a row per request), with what was suppressed and why."""

from __future__ import annotations

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
    exploration is off), and the suppressed actions with their reasons (catalog order). When the
    decisions were explained, an `evidence` column lists the history events that weighed most.

    `score` is the action's expected value, `uplift` its expected value over taking no action.
    """
    scores, ranking = decisions.scores, decisions.ranking
    n, k = ranking.expected_value.shape
    ids = np.asarray(ranking.actions, dtype=object)
    eligible_in_order = np.take_along_axis(ranking.eligible, ranking.order, axis=1)
    kept = eligible_in_order.sum(axis=1)
    if top_k is not None:
        kept = np.minimum(kept, top_k)
    rows, position = np.nonzero(np.arange(k)[None, :] < kept[:, None])  # eligible actions come first
    picked = ranking.order[rows, position]
    ranked = pa.StructArray.from_arrays(
        [
            pa.array(ids[picked], pa.string()),
            pa.array(position + 1, pa.int32()),
            *(
                pa.array(getattr(ranking, name)[rows, picked], pa.float64())
                for name in ("expected_value", "uplift", "p_conversion", "p_churn")
            ),
        ],
        fields=list(ACTION_STRUCT),
    )
    suppressed_rows, suppressed_actions = np.nonzero(~ranking.eligible)
    suppressed = pa.StructArray.from_arrays(
        [
            pa.array(ids[suppressed_actions], pa.string()),
            pa.array(ranking.reasons[suppressed_rows, suppressed_actions], pa.string()),
        ],
        fields=list(SUPPRESSED_STRUCT),
    )
    table = pa.table(
        [
            scores.customer_ids.cast(pa.string()),
            pa.array(scores.as_of, pa.int64()).cast(UTC_US),
            pa.repeat(pa.scalar(model_version, pa.string()), n),
            pa.array(scores.p_conversion, pa.float64()),
            pa.array(scores.p_churn, pa.float64()),
            _action_names(ids, ranking.top),
            _action_names(ids, decisions.chosen),
            pa.array(decisions.chosen_probability, pa.float64(), from_pandas=True),
            _lists(ranked, kept, OUTPUT_SCHEMA.field("actions").type),
            _lists(suppressed, (~ranking.eligible).sum(axis=1), OUTPUT_SCHEMA.field("suppressed").type),
        ],
        schema=OUTPUT_SCHEMA,
    )
    if decisions.evidence is None:
        return table
    return table.append_column(EVIDENCE_FIELD, decisions.evidence)


def _lists(values: pa.StructArray, counts: np.ndarray, list_type: pa.DataType) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=list_type)


def _action_names(ids: np.ndarray, index: np.ndarray) -> pa.Array:
    """The action id at each request's catalog `index`; null where the index is -1 (no action)."""
    names: np.ndarray = ids[np.maximum(index, 0)] if len(ids) else np.full(len(index), None, dtype=object)
    return pa.array(np.where(index >= 0, names, np.full(len(index), None, dtype=object)), pa.string())
