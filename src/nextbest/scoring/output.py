"""Scores as ranked actions: the batch output table of DESIGN §3.

Until a catalog gives actions values and costs, every action is worth 1 per conversion and costs 0, so an
action's score (its expected value) is P(conversion | action).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from nextbest.data.schema import UTC_US
from nextbest.scoring.scorer import Scores

ACTION_STRUCT = pa.struct(
    [
        ("action", pa.string()),
        ("rank", pa.int32()),
        ("score", pa.float64()),
        ("p_conversion", pa.float64()),
        ("p_churn", pa.float64()),
    ]
)
OUTPUT_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("as_of", UTC_US),
        ("model_version", pa.string()),
        ("p_conversion", pa.float64()),
        ("p_churn", pa.float64()),
        ("top_action", pa.string()),
        ("actions", pa.list_(ACTION_STRUCT)),
    ]
)


def rank_actions(expected_values: np.ndarray) -> np.ndarray:
    """Per request, action indices from best to worst; ties go to the earlier action (deterministic)."""
    return np.argsort(-expected_values, axis=1, kind="stable")


def scores_table(
    scores: Scores, actions: tuple[str, ...], model_version: str, top_k: int | None = None
) -> pa.Table:
    """One row per request with the no-action probabilities and the top `top_k` actions (all when None)."""
    n, num_actions = scores.action_p_conversion.shape
    expected_values = scores.action_p_conversion
    order = rank_actions(expected_values)[:, : num_actions if top_k is None else top_k]  # [N, K]
    k = order.shape[1]
    rows = np.repeat(np.arange(n), k)
    picked = order.reshape(-1)
    ranked = pa.StructArray.from_arrays(
        [
            pa.array(np.asarray(actions, dtype=object)[picked] if k else [], pa.string()),
            pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), n), pa.int32()),
            pa.array(expected_values[rows, picked], pa.float64()),
            pa.array(scores.action_p_conversion[rows, picked], pa.float64()),
            pa.array(scores.action_p_churn[rows, picked], pa.float64()),
        ],
        fields=list(ACTION_STRUCT),
    )
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k, pa.int32())
    top = pa.array(np.asarray(actions, dtype=object)[order[:, 0]] if k else [None] * n, pa.string())
    return pa.table(
        [
            scores.customer_ids.cast(pa.string()),
            pa.array(scores.as_of, pa.int64()).cast(UTC_US),
            pa.repeat(pa.scalar(model_version, pa.string()), n),
            pa.array(scores.p_conversion, pa.float64()),
            pa.array(scores.p_churn, pa.float64()),
            top,
            pa.ListArray.from_arrays(offsets, ranked, type=OUTPUT_SCHEMA.field("actions").type),
        ],
        schema=OUTPUT_SCHEMA,
    )
