"""What the model's inputs looked like at training, saved with the model, and the same statistics of any
later set of requests, so that the monitor compares like with like.

An input is either categorical (its value counts: the event types and channels in the histories, text
profile attributes) or numeric (its values: history length, gaps between events, numeric profile
attributes, the score). Training fixes the bins (its most frequent categories, the deciles of its
values) and saves each input's counts in them; the monitor counts the requests it watches in the same
bins. Histories are read exactly as the model reads them: the events strictly before each request's
as_of, the last `max_events` of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.events import EventLog
from nextbest.data.normalize import normalise_column
from nextbest.data.schema import MICROS_PER_DAY, ColumnSpec, ColumnType
from nextbest.journeys.profile import profile_rows, take_rows
from nextbest.journeys.windows import Windows, history_windows, ranges

if TYPE_CHECKING:  # the scorer carries a reference: a runtime import would be circular
    from nextbest.scoring.scorer import JourneyScorer

MISSING = "(missing)"
OTHER = "(other)"
# Categories beyond the most frequent ones share one bin: a long tail of rare values adds noise, not signal.
MAX_CATEGORIES = 20
NUMERIC_QUANTILES = tuple(np.linspace(0.1, 0.9, 9))
MICROS_PER_HOUR = MICROS_PER_DAY / 24
PROFILE_PREFIX = "profile."
SCORE = "score"

# Training requests a reference is computed from: enough for stable deciles, and a quick scoring pass.
REFERENCE_REQUESTS = 20_000

# Value counts of a categorical input (None: missing), or the values of a numeric one (NaN: missing).
Observations: TypeAlias = dict[str | None, int] | np.ndarray


@dataclass(frozen=True)
class Binning:
    """The bins of one input: `categories` (and an "other" bin) or the interior `edges` of numeric bins
    (bin i holds (edges[i-1], edges[i]]); both kinds end with a "missing" bin."""

    categories: tuple[str, ...] | None = None
    edges: tuple[float, ...] | None = None

    @classmethod
    def fit(cls, observed: Observations) -> Binning:
        """The most frequent categories, or the distinct deciles of the values."""
        if isinstance(observed, dict):
            known = sorted(
                ((n, v) for v, n in observed.items() if v is not None), key=lambda x: (-x[0], x[1])
            )
            return cls(categories=tuple(v for _, v in known[:MAX_CATEGORIES]))
        values = observed[~np.isnan(observed)]
        edges = np.unique(np.quantile(values, NUMERIC_QUANTILES)) if len(values) else np.zeros(0)
        return cls(edges=tuple(float(e) for e in edges))

    def labels(self) -> list[str]:
        if self.categories is not None:
            return [*self.categories, OTHER, MISSING]
        edges = self.edges or ()
        if not edges:
            return ["all", MISSING]
        inner = [f"({lo:.4g}, {hi:.4g}]" for lo, hi in pairwise(edges)]
        return [f"≤ {edges[0]:.4g}", *inner, f"> {edges[-1]:.4g}", MISSING]

    def counts(self, observed: Observations) -> np.ndarray:
        """[bins] how many of the observations fall in each bin (int64)."""
        if self.categories is not None:
            if not isinstance(observed, dict):
                raise TypeError("a categorical input needs value counts")
            position = {c: i for i, c in enumerate(self.categories)}
            counts = np.zeros(len(self.categories) + 2, dtype=np.int64)
            for value, n in observed.items():
                counts[-1 if value is None else position.get(value, len(self.categories))] += n
            return counts
        if isinstance(observed, dict):
            raise TypeError("a numeric input needs values")
        missing = np.isnan(observed)
        edges = np.asarray(self.edges or (), dtype=np.float64)
        index = np.searchsorted(edges, observed[~missing], side="left")
        counts = np.bincount(index, minlength=len(edges) + 1)
        return np.append(counts, missing.sum()).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        if self.categories is not None:
            return {"categories": list(self.categories)}
        return {"edges": list(self.edges or ())}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Binning:
        if "categories" in data:
            return cls(categories=tuple(data["categories"]))
        return cls(edges=tuple(float(e) for e in data["edges"]))


@dataclass(frozen=True)
class InputReference:
    """Each model input's bins and its counts in them on the training requests.

    Attributes:
        bins: per input, its binning.
        counts: per input, the training requests' counts in its bins.
        max_events: the history length the model reads (the last that many events).
        requests: how many training requests the counts come from.
    """

    bins: dict[str, Binning]
    counts: dict[str, np.ndarray]
    max_events: int
    requests: int

    @classmethod
    def fit(cls, inputs: Mapping[str, Observations], max_events: int, requests: int) -> InputReference:
        """Bins fitted to `inputs` (from `model_inputs`) and their counts."""
        bins = {name: Binning.fit(observed) for name, observed in inputs.items()}
        counts = {name: bins[name].counts(observed) for name, observed in inputs.items()}
        return cls(bins, counts, max_events, requests)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_events": self.max_events,
            "requests": self.requests,
            "inputs": {
                name: {**binning.to_dict(), "counts": self.counts[name].tolist()}
                for name, binning in self.bins.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputReference:
        inputs = data["inputs"]
        return cls(
            bins={name: Binning.from_dict(entry) for name, entry in inputs.items()},
            counts={name: np.asarray(entry["counts"], dtype=np.int64) for name, entry in inputs.items()},
            max_events=int(data["max_events"]),
            requests=int(data["requests"]),
        )


def training_reference(
    scorer: JourneyScorer, log: EventLog, requests: pa.Table, customers: pa.Table | None, seed: int = 0
) -> InputReference:
    """The reference of `scorer`'s inputs on its training `requests` (a seeded sample of at most
    `REFERENCE_REQUESTS`), its scores included."""
    requests = sample_rows(requests, REFERENCE_REQUESTS, seed)
    scores = scorer.score(log, requests, customers).p_conversion
    max_events = scorer.encoder.config.max_events
    inputs = model_inputs(log, requests, max_events, customers, scores)
    return InputReference.fit(inputs, max_events, requests.num_rows)


def sample_rows(table: pa.Table, most: int, seed: int) -> pa.Table:
    """A seeded sample of at most `most` rows of `table`, in their order."""
    if table.num_rows <= most:
        return table
    rows = np.sort(np.random.default_rng(seed).choice(table.num_rows, most, replace=False))
    return table.take(pa.array(rows))


def model_inputs(
    log: EventLog,
    requests: pa.Table,
    max_events: int,
    customers: pa.Table | None = None,
    scores: np.ndarray | None = None,
) -> dict[str, Observations]:
    """The model's inputs at each request (`customer_id`, `as_of`): the event types and channels of the
    histories, history length (every event before as_of), hours between consecutive history events, the
    profile attributes (with `customers`) and the score (with `scores`, one per request)."""
    ids = requests.column("customer_id").combine_chunks().cast(pa.string())
    as_of = np.asarray(requests.column("as_of").combine_chunks().cast(pa.int64()), dtype=np.int64)
    windows = history_windows(log.timestamps, log.offsets, log.index_of(ids), as_of, max_events)
    rows = ranges(windows.start, windows.end)
    inputs: dict[str, Observations] = {
        name: _token_counts(log, name, rows) for name in ("event_type", "channel")
    }
    inputs["history_length"] = windows.total_before.astype(np.float64)
    inputs["gap_hours"] = _gap_hours(log.timestamps, windows, rows)
    if customers is not None:
        inputs |= _profile_inputs(customers, ids, as_of)
    if scores is not None:
        inputs[SCORE] = np.asarray(scores, dtype=np.float64)
    return inputs


def _token_counts(log: EventLog, column: str, rows: np.ndarray) -> dict[str | None, int]:
    dictionary, codes = log.token_codes(column)
    counts = np.bincount(codes[rows] + 1, minlength=len(dictionary) + 1)  # slot 0: null
    names: list[str | None] = [None, *dictionary.to_pylist()]
    return {names[i]: int(counts[i]) for i in np.flatnonzero(counts)}


def _gap_hours(timestamps: np.ndarray, windows: Windows, rows: np.ndarray) -> np.ndarray:
    """Hours between consecutive events of each window (none across two windows)."""
    gaps = np.diff(timestamps[rows]) / MICROS_PER_HOUR
    starts = np.cumsum(windows.lengths) - windows.lengths  # each window's first position in `rows`
    crossing = starts[(starts > 0) & (windows.lengths > 0)] - 1
    keep = np.ones(len(gaps), dtype=bool)
    keep[crossing[crossing < len(gaps)]] = False
    return np.asarray(gaps[keep], dtype=np.float64)


def with_trained_kinds(customers: pa.Table, reference: InputReference) -> pa.Table:
    """`customers` with each text attribute that the reference read as a number, and whose every value is
    an ISO-8601 time, as times: JSON, and so a store, carries a sign-up date as text."""
    for i, name in enumerate(customers.column_names):
        binning = reference.bins.get(PROFILE_PREFIX + name)
        column = customers.column(i)
        if binning is None or binning.categories is not None or not pa.types.is_string(column.type):
            continue
        parsed = normalise_column(
            column.combine_chunks(), ColumnSpec(name, ColumnType.TIMESTAMP, required=False)
        )
        if not parsed.rejections:
            customers = customers.set_column(i, name, parsed.values)
    return customers


def _profile_inputs(customers: pa.Table, ids: pa.Array, as_of: np.ndarray) -> dict[str, Observations]:
    """Each attribute of the requests' customers: numbers as values, dates as days before as_of (the
    model reads a sign-up date as tenure), anything else as value counts."""
    profiles = take_rows(customers, profile_rows(customers, ids))
    inputs: dict[str, Observations] = {}
    for name in customers.column_names:
        if name == "customer_id":
            continue
        column = profiles.column(name).combine_chunks()
        kind = column.type
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            micros = pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64())
            values = np.asarray(pc.cast(micros, pa.float64()).fill_null(np.nan), dtype=np.float64)
            inputs[PROFILE_PREFIX + name] = (as_of - values) / MICROS_PER_DAY
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
            values = pc.cast(column, pa.float64()).fill_null(np.nan)
            inputs[PROFILE_PREFIX + name] = np.asarray(values, dtype=np.float64)
        else:
            counted = pc.value_counts(pc.cast(column, pa.string()))
            inputs[PROFILE_PREFIX + name] = dict(
                zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True)
            )
    return inputs
