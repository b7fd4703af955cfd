"""The history aggregates rules and contact limits read (`count`, `days_since`), vectorised over requests.

Each query is answered for every request at once: a match mask over the log's sorted events, its running
sum (for counts in a time window) and its running last match (for the days since the last one), both
looked up at the request's window bounds found by a segmented binary search.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from nextbest.data.events import EventLog
from nextbest.data.schema import MICROS_PER_DAY
from nextbest.data.text import codes_mask
from nextbest.decisioning.expressions import HistoryQuery
from nextbest.journeys.windows import Windows, history_windows, segmented_searchsorted


def history_values(
    log: EventLog,
    customer_index: np.ndarray,
    as_of: np.ndarray,
    queries: Iterable[HistoryQuery],
    *,
    history: Windows | None = None,
) -> dict[HistoryQuery, np.ndarray]:
    """Per query, its float64 value for each request (events strictly before `as_of` only).

    Args:
        customer_index: per request, the customer's index in `log` (-1: no events).
        as_of: per request, int64 µs since the Unix epoch.
        history: the requests' full histories in `log` (`ResolvedRequests.history`), when the caller has
            found them already; else found here from `customer_index` and `as_of`.
    """
    as_of = np.asarray(as_of, dtype=np.int64)
    if history is None:
        customer_index = np.asarray(customer_index, dtype=np.int64)
        history = history_windows(log.timestamps, log.offsets, customer_index, as_of)
    first, end = history.first, history.end
    values: dict[HistoryQuery, np.ndarray] = {}
    # Queries share parts: a catalog's limits all match its contact events, its counts mostly share a
    # window. Each part is computed once (the demo catalog's 7 queries: 5 column masks, not 12).
    column_masks: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
    window_starts: dict[float, np.ndarray] = {}
    for query in set(queries):
        matches = _match_mask(log, query.match, column_masks)
        if query.function == "count":
            assert query.days is not None
            if query.days not in window_starts:
                window_start = as_of - np.int64(round(query.days * MICROS_PER_DAY))
                window_starts[query.days] = segmented_searchsorted(
                    log.timestamps, first, end, window_start, side="left"
                )
            running = np.concatenate([[0], np.cumsum(matches, dtype=np.int64)])
            values[query] = (running[end] - running[window_starts[query.days]]).astype(np.float64)
        else:
            values[query] = _days_since_last_match(log.timestamps, matches, first, end, as_of)
    return values


def _match_mask(
    log: EventLog,
    match: tuple[tuple[str, tuple[str, ...]], ...],
    column_masks: dict[tuple[str, tuple[str, ...]], np.ndarray],
) -> np.ndarray:
    """Per sorted event: is its value in the accepted ones of every matched column? A missing column
    matches nothing. `column_masks` caches each (column, accepted) mask."""
    mask = np.ones(log.num_events, dtype=bool)
    for column, accepted in match:
        if column not in log.source.column_names:
            return np.zeros(log.num_events, dtype=bool)
        if (column, accepted) not in column_masks:
            column_masks[column, accepted] = codes_mask(*log.token_codes(column), accepted)
        mask &= column_masks[column, accepted]
    return mask


def _days_since_last_match(
    timestamps: np.ndarray, matches: np.ndarray, first: np.ndarray, end: np.ndarray, as_of: np.ndarray
) -> np.ndarray:
    positions = np.arange(len(matches))
    last_match = np.maximum.accumulate(np.where(matches, positions, -1)) if len(matches) else positions
    probe = np.where(end > first, end - 1, 0)
    found = last_match[probe] if len(last_match) else np.full(len(end), -1)
    found = np.where((end > first) & (found >= first), found, -1)
    days = (as_of - timestamps[np.maximum(found, 0)]) / MICROS_PER_DAY if len(timestamps) else 0.0
    return np.where(found >= 0, days, np.inf)
