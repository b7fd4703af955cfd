"""Training examples from the contract tables: which (customer, as_of) requests, with which labels.

Three sources, combined when several are given:

* a label frame: its rows, with their `conversion` / `churn`;
* a decisions table: one example per decision, conditioned on the action taken, with the logged
  `converted` / `churned` outcomes (or, where absent, outcomes read off later events by the rules);
* neither: every customer at one or more cutoffs, labelled by the rules. The default cutoff is the last
  instant whose outcome windows are fully observed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.events import EventLog
from nextbest.data.schema import MICROS_PER_DAY, UTC_US
from nextbest.journeys.labels import (
    OUTCOMES,
    LabelRules,
    labels_from_frame,
    labels_from_rules,
)
from nextbest.journeys.requests import requests_at_cutoffs

NO_DECISION = -1


@dataclass(frozen=True)
class TrainingExamples:
    """Requests with labels, the action taken (if any), and the group each belongs to for splitting.

    Attributes:
        requests: `customer_id`, `as_of` (timestamp[us, UTC]).
        labels: `conversion` and `churn` float32 arrays, NaN where unknown.
        decision_action: index into `actions` of the action taken at the request, or -1.
        groups: the unit that must not straddle train and validation (customer, or e.g. user).
        actions: the candidate business actions, in index order.
    """

    requests: pa.Table
    labels: dict[str, np.ndarray]
    decision_action: np.ndarray
    groups: pa.Array
    actions: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.requests.num_rows)

    def take(self, indices: np.ndarray) -> TrainingExamples:
        rows = pa.array(indices, pa.int64())
        return TrainingExamples(
            requests=self.requests.take(rows),
            labels={k: v[indices] for k, v in self.labels.items()},
            decision_action=self.decision_action[indices],
            groups=self.groups.take(rows),
            actions=self.actions,
        )


def build_examples(
    log: EventLog,
    rules: LabelRules,
    labels: pa.Table | None = None,
    decisions: pa.Table | None = None,
    cutoffs: Sequence[datetime] | None = None,
    customers: pa.Table | None = None,
    group_by: str | None = None,
) -> TrainingExamples:
    """Examples from whichever of `labels`, `decisions` and rule cutoffs apply (see the module docstring).

    Args:
        group_by: a customers column whose value groups customers for splitting (e.g. `user_id`);
            by default each customer is its own group.
    """
    actions = _actions(decisions)
    parts = []
    if labels is not None:
        parts.append(_from_label_frame(labels))
    if decisions is not None:
        parts.append(_from_decisions(log, decisions, rules, actions))
    if not parts or cutoffs:
        parts.append(_from_cutoffs(log, rules, cutoffs))
    requests = pa.concat_tables([p[0] for p in parts])
    merged = {o: np.concatenate([p[1][o] for p in parts]).astype(np.float32) for o in OUTCOMES}
    decision_action = np.concatenate([p[2] for p in parts])
    groups = _groups(requests.column("customer_id").combine_chunks(), customers, group_by)
    return TrainingExamples(requests, merged, decision_action, groups, actions)


def default_cutoff(log: EventLog, rules: LabelRules) -> datetime:
    """The latest cutoff whose conversion and churn windows both end by the last event."""
    horizon = max(rules.conversion_horizon_days, rules.churn_inactivity_days)
    micros = int(log.timestamps.max()) + 1 - int(horizon * MICROS_PER_DAY)
    return pa.scalar(micros, pa.int64()).cast(UTC_US).as_py()


def split_groups(groups: pa.Array, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Example indices per split (e.g. train, validation, test), whole groups at a time, reproducibly.

    Args:
        fractions: the share of groups in each split but the first, which takes the rest.
    """
    encoded = pc.dictionary_encode(groups.cast(pa.string()))
    distinct = np.asarray(pc.sort_indices(encoded.dictionary))  # sorted: independent of row order
    shuffled = np.random.default_rng(seed).permutation(distinct)
    split_of_group = np.zeros(len(distinct), dtype=np.int64)
    bounds = np.cumsum([0, *(round(f * len(distinct)) for f in fractions)])
    for split, (lo, hi) in enumerate(pairwise(bounds), start=1):
        split_of_group[shuffled[lo:hi]] = split
    split = split_of_group[np.asarray(encoded.indices)]
    return [np.flatnonzero(split == s) for s in range(len(fractions) + 1)]


def _actions(decisions: pa.Table | None) -> tuple[str, ...]:
    if decisions is None:
        return ()
    return tuple(sorted(pc.unique(decisions.column("action")).drop_null().cast(pa.string()).to_pylist()))


Part = tuple[pa.Table, dict[str, np.ndarray], np.ndarray]


def _from_label_frame(labels: pa.Table) -> Part:
    requests = labels.select(["customer_id", "as_of"])
    return requests, labels_from_frame(labels), np.full(labels.num_rows, NO_DECISION, dtype=np.int64)


def _from_decisions(log: EventLog, decisions: pa.Table, rules: LabelRules, actions: tuple[str, ...]) -> Part:
    customer_ids = decisions.column("customer_id").combine_chunks()
    as_of = decisions.column("timestamp").combine_chunks()
    requests = pa.table({"customer_id": customer_ids, "as_of": as_of})
    outcomes = labels_from_rules(log, log.index_of(customer_ids), _micros(as_of), rules)
    for outcome, column in (("conversion", "converted"), ("churn", "churned")):
        if column in decisions.column_names:
            logged = np.asarray(
                pc.cast(decisions.column(column), pa.float32()).to_numpy(zero_copy_only=False)
            )
            outcomes[outcome] = np.where(np.isnan(logged), outcomes[outcome], logged).astype(np.float32)
    taken = pc.index_in(
        decisions.column("action").cast(pa.string()), value_set=pa.array(actions, pa.string())
    )
    return requests, outcomes, np.asarray(taken.fill_null(NO_DECISION), dtype=np.int64)


def _from_cutoffs(log: EventLog, rules: LabelRules, cutoffs: Sequence[datetime] | None) -> Part:
    requests = requests_at_cutoffs(log, list(cutoffs) if cutoffs else [default_cutoff(log, rules)])
    customer = log.index_of(requests.column("customer_id").combine_chunks())
    outcomes = labels_from_rules(log, customer, _micros(requests.column("as_of")), rules)
    return requests, outcomes, np.full(requests.num_rows, NO_DECISION, dtype=np.int64)


def _groups(customer_ids: pa.Array, customers: pa.Table | None, group_by: str | None) -> pa.Array:
    if group_by is None:
        return customer_ids
    if customers is None or group_by not in customers.column_names:
        raise ValueError(f"group_by={group_by!r} needs a customers table with a {group_by!r} column")
    rows = pc.index_in(customer_ids, value_set=customers.column("customer_id").combine_chunks())
    groups = customers.column(group_by).combine_chunks().cast(pa.string()).take(rows)
    # Customers without a profile row form their own group.
    return pc.if_else(pc.is_null(groups), customer_ids, groups)


def _micros(times: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.cast(times, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
