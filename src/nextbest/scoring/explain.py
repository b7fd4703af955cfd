"""Which history events weighed most in a decision, by occlusion.

An event's weight is how much the served action's expected value (in the catalog's units) falls when
that one event is taken out of the customer's history: positive weights argue for the action, negative
ones against it. Each history without the event is re-encoded whole, so the event leaves the sequence
and every history aggregate it counted in. Occlusion answers the question a reader asks ("what if this
had not happened?") in the decision's own units, where gradients would answer a local, unitless one.
The rules' history counts are not redone: the weight explains the value, not the eligibility.

It costs one re-encoded request per event in the model's window, so it is opt-in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from nextbest.data.events import EventLog
from nextbest.data.schema import UTC_US
from nextbest.decisioning.catalog import ActionCatalog
from nextbest.decisioning.policy import Ranking
from nextbest.journeys.encoder import EncodedJourneys
from nextbest.journeys.profile import take_rows
from nextbest.journeys.windows import ranges
from nextbest.scoring.scorer import JourneyScorer

# Requests explained per pass: each becomes as many re-encoded copies as it has events in its window.
REQUESTS_PER_PASS = 16
EVIDENCE_TYPE = pa.list_(
    pa.struct(
        [
            ("timestamp", pa.timestamp("us", tz="UTC")),
            ("event_type", pa.string()),
            ("channel", pa.string()),
            ("action", pa.string()),
            ("weight", pa.float64()),
        ]
    )
)


@dataclass(frozen=True)
class EventWeights:
    """Per request, its most influential events, strongest first.

    Attributes:
        event_rows: [N, n] rows of the event log (in its sorted order); -1 pads requests with fewer.
        weights: [N, n] the served action's expected value with the event minus without it (NaN: pad).
    """

    event_rows: np.ndarray
    weights: np.ndarray

    def to_arrow(self, log: EventLog) -> pa.Array:
        """[N] lists of (timestamp, event_type, channel, action, weight) from `log`, strongest first."""
        found = self.event_rows >= 0
        counts = found.sum(axis=1)
        events = log.source.take(pa.array(log.order[self.event_rows[found]], pa.int64()))
        fields = {
            name: events.column(name).combine_chunks()
            if name in events.column_names
            else pa.nulls(events.num_rows, pa.string())
            for name in ("timestamp", "event_type", "channel", "action")
        }
        fields["weight"] = pa.array(self.weights[found], pa.float64())
        structs = pa.StructArray.from_arrays(list(fields.values()), names=list(fields))
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]), pa.int32())
        return pa.ListArray.from_arrays(offsets, structs).cast(EVIDENCE_TYPE)


def event_weights(
    scorer: JourneyScorer,
    journeys: EncodedJourneys,
    catalog: ActionCatalog,
    ranking: Ranking,
    served: np.ndarray,
    top_n: int,
) -> EventWeights:
    """The `top_n` events of each request whose removal moves the value of its `served` action most.

    Args:
        journeys: the requests as `scorer` encoded them.
        catalog: the catalog the requests were ranked with.
        ranking: their ranking (its expected values are the full-history values).
        served: [N] catalog index of the action served to each request (-1: none, nothing to explain).
        top_n: how many events per request, by absolute weight.
    """
    n = len(journeys)
    event_rows = np.full((n, top_n), -1, dtype=np.int64)
    weights = np.full((n, top_n), np.nan)
    start, end = journeys.windows.start, journeys.windows.end
    explained = np.flatnonzero((served >= 0) & (end > start))
    for chunk_start in range(0, len(explained), REQUESTS_PER_PASS):
        rows = explained[chunk_start : chunk_start + REQUESTS_PER_PASS]
        variants = _histories_without_each_event(scorer, journeys, rows)
        value = _served_values(scorer, catalog, variants, served[variants.request])
        full = ranking.expected_value[variants.request, served[variants.request]]
        for i in rows:
            mine = np.flatnonzero(variants.request == i)
            change = full[mine] - value[mine]
            strongest = np.argsort(-np.abs(change), kind="stable")[:top_n]
            event_rows[i, : len(strongest)] = variants.removed[mine][strongest]
            weights[i, : len(strongest)] = change[strongest]
    return EventWeights(event_rows, weights)


def conversion_event_weights(
    scorer: JourneyScorer, journeys: EncodedJourneys, p_conversion: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every event in the model window of the requests `rows`, and how much P(conversion) with no action
    falls when that event is taken out of the history (the journey report's moments of truth).

    Args:
        p_conversion: [N] the full-history P(conversion) of every request of `journeys`.

    Returns:
        The events' rows in `log` (sorted order) and their weights, both [M].
    """
    start, end = journeys.windows.start, journeys.windows.end
    rows = rows[end[rows] > start[rows]]
    removed, weights = [np.zeros(0, np.int64)], [np.zeros(0)]
    for chunk_start in range(0, len(rows), REQUESTS_PER_PASS):
        part = rows[chunk_start : chunk_start + REQUESTS_PER_PASS]
        variants = _histories_without_each_event(scorer, journeys, part)
        without = scorer.score_encoded(variants.journeys).p_conversion
        removed.append(variants.removed)
        weights.append(p_conversion[variants.request] - without)
    return np.concatenate(removed), np.concatenate(weights)


@dataclass(frozen=True)
class _Variants:
    """Copies of requests' histories, each without one event, encoded as the scorer encodes requests.

    Attributes:
        journeys: one encoded request per copy.
        request: [M] which original request each copy is of.
        removed: [M] the event-log row (sorted order) the copy leaves out.
    """

    journeys: EncodedJourneys
    request: np.ndarray
    removed: np.ndarray


def _histories_without_each_event(
    scorer: JourneyScorer, journeys: EncodedJourneys, rows: np.ndarray
) -> _Variants:
    """For each request of `rows` and each event in its model window, its history without that event.

    The history is everything before as_of (the aggregates read beyond the model's window), so each copy
    is re-encoded whole: the event leaves the sequence and every count it was part of.
    """
    log, customers = journeys.requests.log, journeys.requests.customers
    start, end, first = journeys.windows.start, journeys.windows.end, journeys.windows.first
    request = np.repeat(rows, end[rows] - start[rows])  # [M]
    removed = ranges(start[rows], end[rows])  # [M]
    history = ranges(first[request], end[request])  # every copy's full history, copy after copy
    owner = np.repeat(np.arange(len(request)), end[request] - first[request])
    kept = history != removed[owner]
    keys = pa.array([str(k) for k in range(len(request))], pa.string())
    events = log.source.take(pa.array(log.order[history[kept]], pa.int64()))
    events = _with_ids(events, keys.take(pa.array(owner[kept], pa.int64())))
    requests = pa.table(
        {"customer_id": keys, "as_of": pa.array(journeys.as_of[request], pa.int64()).cast(UTC_US)}
    )
    profiles = None
    if customers is not None:
        profiles = _with_ids(take_rows(customers, journeys.requests.profile_rows[request]), keys)
    encoded = scorer.encoder.encode(EventLog.from_normalised(events), requests, profiles)
    return _Variants(encoded, request, removed)


def _with_ids(table: pa.Table, ids: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index("customer_id"), "customer_id", ids)


def _served_values(
    scorer: JourneyScorer, catalog: ActionCatalog, variants: _Variants, served: np.ndarray
) -> np.ndarray:
    """[M] the catalog's expected value of each copy's served action (`served`: catalog indices)."""
    scores = scorer.score_encoded(variants.journeys)
    columns = [scorer.actions.index(a) for a in catalog.ids]
    values = catalog.expected_values(
        scores.action_p_conversion[:, columns], scores.action_p_churn[:, columns]
    )
    return values[np.arange(len(served)), served]
