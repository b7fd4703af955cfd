"""What the sequence model adds to the journey report: the moments of truth and the journey segments.

Moments of truth: for a sample of customers, each touch in the model's window is taken out of the history
(re-encoded whole, `nextbest.scoring.explain`) and the fall in P(conversion) averaged per touch label.
Segments: k-means on the network's journey embeddings (its representation of each customer now), each
described by size, conversion and churn, its most frequent path and its most frequent best next action.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from nextbest.discovery.attribution import Paths
from nextbest.discovery.journeys import Journeys, names_order, top_paths
from nextbest.journeys import requests_at_end
from nextbest.journeys.windows import ranges
from nextbest.scoring.decide import decide
from nextbest.scoring.explain import conversion_event_weights
from nextbest.scoring.scorer import JourneyScorer

MICROS_PER_DAY = 86_400 * 1_000_000


def moments_of_truth(
    scorer: JourneyScorer,
    journeys: Journeys,
    customers: pa.Table | None,
    column: str,
    sample: int,
    seed: int = 0,
) -> list[dict[str, object]]:
    """Touch labels (`column` values) by the mean fall in P(conversion) when one such touch is removed,
    over the events of `sample` customers (each customer scored just after its last event)."""
    log = journeys.log
    picked = _sample(log.num_customers, sample, seed)
    requests = requests_at_end(log).take(pa.array(picked))
    encoded = scorer.encoder.encode(log, requests, customers)
    p_conversion = scorer.score_encoded(encoded).p_conversion
    rows, weights = conversion_event_weights(scorer, encoded, p_conversion, np.arange(len(encoded)))
    dictionary, codes = log.token_codes(column)
    names = (*dictionary.to_pylist(), "(none)")
    labels = np.where(codes[rows] >= 0, codes[rows], len(names) - 1)
    counts = np.bincount(labels, minlength=len(names))
    means = np.bincount(labels, weights=weights, minlength=len(names)) / np.maximum(counts, 1)
    order = np.lexsort((names_order(list(names)), -means))
    return [
        {"touch": names[i], "mean_effect": float(means[i]), "touches": int(counts[i])}
        for i in order
        if counts[i]
    ]


def segments(
    scorer: JourneyScorer,
    journeys: Journeys,
    paths: Paths,
    customers: pa.Table | None,
    k: int,
    sample: int,
    churn_days: int,
    seed: int = 0,
) -> list[dict[str, object]]:
    """`k` segments of (at most `sample`) customers by k-means on their journey embeddings, described."""
    log = journeys.log
    picked = _sample(log.num_customers, sample, seed)
    requests = requests_at_end(log).take(pa.array(picked))
    embedded = scorer.embeddings(scorer.encoder.encode(log, requests, customers))
    assignment = kmeans(embedded, k, seed)
    decided = decide(scorer, log, requests, customers)
    top = np.asarray(decided.ranking.top)
    action_names = np.array([*decided.ranking.actions, ""], dtype=object)[np.where(top >= 0, top, -1)]
    last_event = log.timestamps[log.offsets[1:] - 1]
    churned = last_event[picked] < log.timestamps.max(initial=0) - churn_days * MICROS_PER_DAY
    segment_of_customer = np.full(log.num_customers, -1)
    segment_of_customer[picked] = assignment
    journey_segment = segment_of_customer[journeys.customer]
    described = []
    for segment in range(k):
        members = assignment == segment
        if not members.any():
            continue
        mine = journey_segment == segment
        typical = top_paths(_subset(paths, mine), limit=1)
        actions, counts = np.unique(action_names[members], return_counts=True)
        described.append(
            {
                "segment": segment + 1,
                "customers": int(members.sum()),
                "share": float(members.mean()),
                "conversion_rate": float(journeys.converted[mine].mean()) if mine.any() else 0.0,
                "churn_rate": float(churned[members].mean()),
                "typical_path": typical[0]["path"] if typical else [],
                "next_best_action": str(actions[np.argmax(counts)]) or None,
            }
        )
    return sorted(described, key=lambda s: -int(s["customers"]))  # type: ignore[call-overload]


def kmeans(points: np.ndarray, k: int, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """Cluster of each point (k-means++ start, Lloyd iterations; deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    x = points.astype(np.float64)
    k = min(k, len(x))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        distance = np.min(((x[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        total = distance.sum()
        centres.append(x[rng.choice(len(x), p=distance / total)] if total > 0 else x[rng.integers(len(x))])
    centre = np.array(centres)
    assignment = np.zeros(len(x), dtype=np.int64)
    for _ in range(iterations):
        distance = (x**2).sum(1)[:, None] - 2 * x @ centre.T + (centre**2).sum(1)[None]
        new = np.argmin(distance, axis=1)
        if _ and np.array_equal(new, assignment):
            break
        assignment = new
        for c in range(k):
            if (assignment == c).any():
                centre[c] = x[assignment == c].mean(0)
    return assignment


def _sample(population: int, size: int, seed: int) -> np.ndarray:
    if population <= size:
        return np.arange(population)
    return np.sort(np.random.default_rng(seed).choice(population, size, replace=False))


def _subset(paths: Paths, keep: np.ndarray) -> Paths:
    """The journeys `keep` (a mask) of `paths`."""
    rows = ranges(paths.offsets[:-1][keep], paths.offsets[1:][keep])
    offsets = np.concatenate([[0], np.cumsum(np.diff(paths.offsets)[keep])]).astype(np.int64)
    return Paths(paths.codes[rows], offsets, paths.names, paths.converted[keep])
