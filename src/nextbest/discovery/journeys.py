"""Journeys cut from an event log: each conversion ends one journey and the next begins after it.

A customer with two purchases has up to three journeys: the touches up to the first purchase (converted),
those up to the second (converted), and what came after (not converted, unless the log has not seen its
end). The conversion event ends a journey but is not one of its touches. Everything here is vectorised
over the sorted log: one pass of numpy per figure, whatever the number of customers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.events import EventLog
from nextbest.discovery.attribution import Paths

MICROS_PER_HOUR = 3_600 * 1_000_000
UNKNOWN = "(none)"  # the label of a touch without a channel


@dataclass(frozen=True)
class Journeys:
    """The journeys of a log, as CSR arrays over its touches (conversion events left out).

    Attributes:
        touch_rows: sorted-log positions of the touches, journey by journey, oldest first.
        offsets: journey j's touches are touch_rows[offsets[j]:offsets[j+1]] (int64, journeys + 1).
        converted: [J] whether journey j ended in a conversion.
        customer: [J] the index of j's customer in the log's `customer_ids`.
        converted_at: [J] time of the conversion (µs since the epoch); the last event's time otherwise.
        event_journey: for every event of the sorted log (conversions too), its journey.
        first_event: [J] sorted-log position of each journey's first event.
    """

    log: EventLog
    touch_rows: np.ndarray
    offsets: np.ndarray
    converted: np.ndarray
    customer: np.ndarray
    converted_at: np.ndarray
    event_journey: np.ndarray
    first_event: np.ndarray

    @property
    def count(self) -> int:
        return len(self.converted)

    def labels(self, column: str) -> tuple[tuple[str, ...], np.ndarray]:
        """Each touch's label in `column` (`channel`, `event_type`, ...) as codes into the returned names;
        a touch without a value gets `UNKNOWN`."""
        dictionary, codes = self.log.token_codes(column)
        names = (*dictionary.to_pylist(), UNKNOWN)
        touch_codes = codes[self.touch_rows]
        return names, np.where(touch_codes >= 0, touch_codes, len(names) - 1).astype(np.int64)

    def paths(self, column: str, collapse_repeats: bool = True) -> Paths:
        """The journeys as paths of `column` labels; with `collapse_repeats`, a run of touches with the same
        label counts once (web, web, email → web, email), as path analyses usually read them."""
        names, codes = self.labels(column)
        offsets = self.offsets
        if collapse_repeats and len(codes):
            journey = np.repeat(np.arange(self.count), np.diff(offsets))
            keep = np.ones(len(codes), dtype=bool)
            keep[1:] = (codes[1:] != codes[:-1]) | (journey[1:] != journey[:-1])
            codes = codes[keep]
            offsets = np.concatenate([[0], np.cumsum(np.bincount(journey[keep], minlength=self.count))])
        return Paths(codes, offsets.astype(np.int64), names, self.converted)


def cut_journeys(log: EventLog, conversion_event: str) -> Journeys:
    """Cuts every customer's events into journeys at its `conversion_event`s (see the module docstring)."""
    dictionary, codes = log.token_codes("event_type")
    known = dictionary.to_pylist()
    conversion = (
        codes == known.index(conversion_event) if conversion_event in known else np.zeros(len(codes), bool)
    )
    customer = log.customer_index
    starts = np.ones(log.num_events, dtype=bool)
    starts[1:] = (customer[1:] != customer[:-1]) | conversion[:-1]
    journey = np.cumsum(starts) - 1  # the journey of every sorted event
    count = int(journey[-1]) + 1 if log.num_events else 0
    touches = np.flatnonzero(~conversion)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(journey[touches], minlength=count))]).astype(
        np.int64
    )
    converted = np.zeros(count, dtype=bool)
    converted[journey[conversion]] = True
    first = np.flatnonzero(starts)
    last = np.concatenate([first[1:], [log.num_events]]) - 1  # each journey's last event
    return Journeys(
        log,
        touches,
        offsets,
        converted,
        customer[last],
        log.timestamps[last],
        journey,
        first.astype(np.int64),
    )


def top_paths(paths: Paths, limit: int = 20, separator: str = " > ") -> list[dict[str, object]]:
    """The most frequent paths with their journeys, conversions and conversion rate, most frequent first."""
    if not len(paths.converted):
        return []
    labels = pa.array(np.asarray(paths.names, dtype=object)[paths.codes], pa.string())
    lists = pa.ListArray.from_arrays(pa.array(paths.offsets.astype(np.int32)), labels)
    keys = pc.binary_join(lists, separator)
    codes, names = _dictionary(keys)
    journeys = np.bincount(codes, minlength=len(names))
    conversions = np.bincount(codes, weights=paths.converted, minlength=len(names))
    best = np.lexsort((names_order(names), -journeys))[:limit]
    return [
        {
            "path": names[i].split(separator) if names[i] else [],
            "journeys": int(journeys[i]),
            "conversions": int(conversions[i]),
            "conversion_rate": float(conversions[i] / journeys[i]),
        }
        for i in best
    ]


def names_order(names: list[str]) -> np.ndarray:
    """Rank of each name in alphabetical order (a deterministic tie-break)."""
    order = np.argsort(np.asarray(names, dtype=object), kind="stable")
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    return rank


def _dictionary(keys: pa.Array) -> tuple[np.ndarray, list[str]]:
    encoded = pc.dictionary_encode(keys)
    return np.asarray(encoded.indices, dtype=np.int64), encoded.dictionary.to_pylist()


def transitions(paths: Paths) -> dict[str, object]:
    """Touch-to-touch transitions within journeys: a [from, to] count matrix over the labels, and for each
    switch between different labels how often the journey went on to convert."""
    k = len(paths.names)
    journey = np.repeat(np.arange(len(paths.converted)), np.diff(paths.offsets))
    same = journey[1:] == journey[:-1]
    source, target = paths.codes[:-1][same], paths.codes[1:][same]
    pairs = source * k + target
    counts = np.bincount(pairs, minlength=k * k).reshape(k, k)
    converting = np.bincount(pairs, weights=paths.converted[journey[1:][same]], minlength=k * k).reshape(k, k)
    switches = [
        {
            "from": paths.names[a],
            "to": paths.names[b],
            "transitions": int(counts[a, b]),
            "conversion_rate": float(converting[a, b] / counts[a, b]),
        }
        for a, b in zip(*np.nonzero(counts), strict=True)
        if a != b
    ]
    switches.sort(key=lambda s: (-int(s["transitions"]), str(s["from"]), str(s["to"])))
    return {"labels": list(paths.names), "counts": counts.tolist(), "switches": switches}


def funnel(journeys: Journeys, stages: list[str]) -> list[dict[str, object]]:
    """Journeys reaching each stage (an event type, the conversion event included) in order: a journey
    reaches stage k with its first stage-k event after the event that reached stage k - 1. The drop-off
    is the share of the previous stage's journeys that do not reach this one."""
    dictionary, codes = journeys.log.token_codes("event_type")
    known = dictionary.to_pylist()
    never = np.iinfo(np.int64).max
    reached_at = np.full(journeys.count, -1, dtype=np.int64)  # the event that reached the previous stage
    alive = np.ones(journeys.count, dtype=bool)
    previous, result = journeys.count, []
    for stage in stages:
        hits = np.flatnonzero(codes == (known.index(stage) if stage in known else -2))
        journey = journeys.event_journey[hits]
        ok = alive[journey] & (hits > reached_at[journey])
        first = np.full(journeys.count, never, dtype=np.int64)
        np.minimum.at(first, journey[ok], hits[ok])
        alive = first < never
        reached_at = np.where(alive, first, -1)
        count = int(alive.sum())
        share = count / max(journeys.count, 1)
        drop_off = 1 - count / previous if previous else 0.0
        result.append({"stage": stage, "journeys": count, "share_of_all": share, "drop_off": drop_off})
        previous = count
    return result


def default_stages(journeys: Journeys, conversion_event: str, most: int = 5) -> list[str]:
    """Funnel stages discovered from the data: the (at most `most` - 1) event types most often found in
    converted journeys, if in at least a tenth of them, in the order they first appear on average; then
    the conversion."""
    dictionary, codes = journeys.log.token_codes("event_type")
    known = dictionary.to_pylist()
    rows = journeys.touch_rows[journeys.converted[journeys.event_journey[journeys.touch_rows]]]
    journey, kind = journeys.event_journey[rows], codes[rows]
    valid = kind >= 0
    pairs, first = np.unique(journey[valid] * len(known) + kind[valid], return_index=True)
    position = (rows[valid] - journeys.first_event[journey[valid]])[first]  # of each type's first touch
    kinds = pairs % len(known)
    found = np.bincount(kinds, minlength=len(known))
    share = found / max(int(journeys.converted.sum()), 1)
    mean_position = np.bincount(kinds, weights=position, minlength=len(known)) / np.maximum(found, 1)
    common = [k for k in np.argsort(-share, kind="stable")[: most - 1] if share[k] >= 0.1]
    ordered = sorted(common, key=lambda k: mean_position[k])
    return [known[k] for k in ordered if known[k] != conversion_event] + [conversion_event]


def time_to_convert(journeys: Journeys) -> dict[str, object]:
    """Hours from a converted journey's first touch to its conversion: quantiles and a log-scale histogram."""
    has_touch = np.diff(journeys.offsets) > 0
    done = journeys.converted & has_touch
    first_touch = journeys.log.timestamps[journeys.touch_rows[journeys.offsets[:-1][done]]]
    hours = (journeys.converted_at[done] - first_touch) / MICROS_PER_HOUR
    if not len(hours):
        return {"journeys": 0, "quantiles_hours": {}, "histogram": []}
    quantiles = {f"p{q}": float(np.percentile(hours, q)) for q in (10, 25, 50, 75, 90)}
    edges = [0.0, 1.0, 6.0, 24.0, 72.0, 168.0, 720.0, 2160.0, float("inf")]
    counts = np.histogram(hours, bins=edges)[0]
    histogram = [
        {
            "from_hours": edges[i],
            "to_hours": edges[i + 1] if np.isfinite(edges[i + 1]) else None,
            "journeys": int(c),
        }
        for i, c in enumerate(counts)
    ]
    return {"journeys": len(hours), "quantiles_hours": quantiles, "histogram": histogram}


def stalls(journeys: Journeys, column: str, quiet_days: float, limit: int = 10) -> list[dict[str, object]]:
    """Where journeys stall: the last touch of journeys that did not convert and then went quiet (no event
    for `quiet_days` before the log ends: churn or abandonment), by label, with how often a journey that
    reaches that touch stalls there (its stall rate). Journeys still in progress count in neither."""
    names, codes = journeys.labels(column)
    lengths = np.diff(journeys.offsets)
    quiet_since = journeys.log.timestamps.max(initial=0) - quiet_days * MICROS_PER_HOUR * 24
    stalled_journey = ~journeys.converted & (lengths > 0) & (journeys.converted_at <= quiet_since)
    last = codes[journeys.offsets[1:][stalled_journey] - 1]
    stalled = np.bincount(last, minlength=len(names))
    journey_of = np.repeat(np.arange(journeys.count), lengths)
    decided = (journeys.converted | stalled_journey)[journey_of]  # converted, or stalled for good
    reached = np.unique(journey_of[decided] * len(names) + codes[decided]) % len(names)
    passing = np.maximum(np.bincount(reached, minlength=len(names)), 1)
    order = np.lexsort((names_order(list(names)), -stalled))
    return [
        {
            "touch": names[i],
            "stalled_journeys": int(stalled[i]),
            "share_of_stalls": float(stalled[i] / max(stalled.sum(), 1)),
            "stall_rate": float(stalled[i] / passing[i]),
        }
        for i in order[:limit]
        if stalled[i]
    ]


def sankey(paths: Paths, steps: int = 4, top: int = 6) -> dict[str, object]:
    """Flows of journeys through their first `steps` touches, for a Sankey diagram.

    At each step the `top` most frequent labels keep their name and the rest merge into "other"; after
    its last touch shown, a journey flows to an end node, "converted" or "not converted". Nodes are
    (step, label); links carry journey counts. Journeys without touches are left out.
    """
    count, k = len(paths.converted), len(paths.names)
    shown = np.minimum(np.diff(paths.offsets), steps)
    names: list[tuple[int, str]] = []
    node_at = np.full((count, steps + 1), -1, dtype=np.int64)  # each journey's node at each step
    for step in range(steps):
        rows = np.flatnonzero(shown > step)
        codes = paths.codes[paths.offsets[rows] + step]
        counts = np.bincount(codes, minlength=k)
        ranked = np.argsort(-counts, kind="stable")[:top]
        kept = ranked[counts[ranked] > 0]
        label = np.full(k, len(kept))  # the "other" slot
        label[kept] = np.arange(len(kept))
        node_at[rows, step] = len(names) + label[codes]
        names += [(step, paths.names[c]) for c in kept] + [(step, "other")]
    ends = np.flatnonzero(shown > 0)
    end_key = shown[ends] * 2 + paths.converted[ends]
    keys, end_node = np.unique(end_key, return_inverse=True)
    node_at[ends, shown[ends]] = len(names) + end_node
    names += [(int(key // 2), "converted" if key % 2 else "not converted") for key in keys]
    links: dict[tuple[int, int], int] = {}
    for step in range(steps):
        source, target = node_at[:, step], node_at[:, step + 1]
        valid = (source >= 0) & (target >= 0)
        pairs, counts = np.unique(source[valid] * len(names) + target[valid], return_counts=True)
        links.update(
            {(int(p // len(names)), int(p % len(names))): int(c) for p, c in zip(pairs, counts, strict=True)}
        )
    used = sorted({n for pair in links for n in pair})
    renumber = {old: new for new, old in enumerate(used)}
    return {
        "nodes": [{"step": names[n][0], "label": names[n][1]} for n in used],
        "links": [
            {"source": renumber[s], "target": renumber[t], "journeys": c}
            for (s, t), c in sorted(links.items())
        ],
    }
