"""Criteo attribution journeys -> contract tables (`nextbest convert criteo`).

Source: ``criteo_attribution/train_journeys.jsonl``, one JSON object per line::

    {"user": int, "campaigns": [int, ...], "timestamps": [seconds since log start, ...], "conversion": 0|1}

It is the Criteo "Attribution Modeling for Bidding" 30-day log, filtered to 10 campaigns and cut into
journeys by the CausalMTA authors (KDD 2022). Criteo's data terms are non-commercial (CC BY-NC-SA 4.0).

Mapping:

* **customers** -- every *journey* (line) is one contract customer, ``customer_id = f"u{user}-j{k}"``
  where ``k`` is the journey's index among that user's journeys in file order (0 for the first). The ids
  are stable: ``--limit`` and re-runs give every kept journey the same id. ``customers.parquet`` holds
  ``customer_id`` and the raw ``user_id`` (int64), a grouping key for user-level splits, not a feature.
* **events** -- every touchpoint is one row: ``event_type = "ad_impression"``, ``channel = "display"``,
  ``action = f"campaign_{id}"``, ``value`` null. ``timestamp = 2017-01-01T00:00:00Z + seconds``: the
  log's real start date is not published, so the origin is a fixed convention and calendar features
  (weekday, hour) are relative to it, not real. Converted journeys get one extra ``purchase`` event
  (``channel`` and ``action`` null: the data do not say where the conversion happened) 1 second after
  the journey's last touch; the true conversion time is not in the data.
* **labels** -- one row per journey: ``as_of = last touch + 1 second`` and ``conversion`` (int8) from the
  source flag. Features are built strictly before ``as_of``, so the purchase event at ``as_of`` never
  leaks into them.

Facts about the file (``dataset.json`` reports the counts and the sort check; the tests pin them):

* 164,647 journeys of 157,332 users, 643,987 touchpoints (3 to 84 per journey), conversion rate 9.96%.
* Timestamps are non-decreasing within every journey (26 pairs of consecutive touches share a second);
  the converter does not rely on it: ``as_of`` uses the journey's latest touch, and events are sorted.
* The file holds the 148,247 unconverted journeys first, then the 16,400 converted ones, so
  ``--limit N`` with N <= 148,247 keeps no positive at all: use it for smoke runs, not for modelling.
* 7,315 users have two journeys, always an unconverted one followed by a converted one, and in 78% of
  these pairs the two overlap in time: split train/validation by ``user_id``, never by ``customer_id``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from nextbest.adapters._output import (
    ConvertedDataset,
    base_provenance,
    read_source,
    row_problems_error,
    source_provenance,
)
from nextbest.data.schema import UTC_US
from nextbest.errors import DataContractError

NAME = "criteo_attribution"
#: Fixed time origin: the source only has seconds since the (unpublished) start of the log.
TIME_ORIGIN = datetime(2017, 1, 1, tzinfo=UTC)
LICENSE = (
    "Criteo Attribution Modeling for Bidding data set, journeys prepared by the CausalMTA authors "
    "(github.com/yaodi833/CausalMTA); Criteo's data terms are non-commercial (CC BY-NC-SA 4.0)."
)
PROTOCOL_SUMMARY = (
    "one customer per journey; conversion label as of 1 s after the last touch; "
    "time origin 2017-01-01T00:00:00Z + seconds"
)

_US_PER_S = 1_000_000
_HINT = (
    'each line must look like {"user": int, "campaigns": [int, ...], "timestamps": [int, ...], '
    '"conversion": 0|1}'
)
_SCHEMA = pa.schema(
    [
        ("user", pa.int64()),
        ("campaigns", pa.list_(pa.int64())),
        ("timestamps", pa.list_(pa.int64())),
        ("conversion", pa.int64()),
    ]
)
_PARSE_OPTIONS = pj.ParseOptions(explicit_schema=_SCHEMA, unexpected_field_behavior="ignore")

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def read_criteo(path: str | Path, limit: int | None = None) -> ConvertedDataset:
    """Convert the Criteo attribution journeys file into the contract tables.

    Args:
        path: The JSON-lines file (``train_journeys.jsonl``).
        limit: Keep only the first `limit` journeys of the file (the whole file is still parsed and must
            be well-formed). The file lists all unconverted journeys first, see the module docstring.

    Returns:
        Events, labels (``conversion``), customers (``customer_id``, ``user_id``) and provenance.

    Raises:
        DataContractError: The file is missing, not JSON lines, or a journey is malformed; the message
            names the line and the field.
        ValueError: `limit` is smaller than 1.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    src = Path(path)
    data = read_source(src)
    table = _parse(src, data)
    if limit is not None:
        table = table.slice(0, limit)
    columns = {name: table[name].combine_chunks() for name in _SCHEMA.names}
    _validate(src, data, columns)
    return _convert(src, data, columns, limit)


def _parse(path: Path, data: bytes) -> pa.Table:
    if not data.strip():
        raise DataContractError(f"{path}: no journeys, the file is empty; {_HINT}")
    try:
        return pj.read_json(pa.BufferReader(data), parse_options=_PARSE_OPTIONS)
    except pa.ArrowInvalid as exc:
        raise _parse_error(path, data, exc) from exc


def _parse_error(path: Path, data: bytes, exc: pa.ArrowInvalid) -> DataContractError:
    """Name the first line that does not parse.

    Arrow's own message counts rows from the start of its read block, not of the file, so the culprit
    is found again by bisection: with an explicit schema every line parses or fails on its own.
    """
    lines = [(number, line) for number, line in enumerate(data.split(b"\n"), start=1) if line.strip()]
    lo, hi = 0, len(lines)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _chunk_error(lines[lo:mid]) is not None:
            hi = mid
        else:
            lo = mid
    message = _chunk_error(lines[lo:hi])
    if message is None:
        return DataContractError(f"{path}: not valid JSON lines ({exc}); {_HINT}")
    return DataContractError(f"{path}, line {lines[lo][0]}: {message}; {_HINT}")


def _chunk_error(lines: list[tuple[int, bytes]]) -> str | None:
    try:
        pj.read_json(pa.BufferReader(b"\n".join(line for _, line in lines)), parse_options=_PARSE_OPTIONS)
    except pa.ArrowInvalid as exc:
        return _readable(str(exc))
    return None


def _readable(arrow_message: str) -> str:
    """Arrow's parse error in the words of the line format (and without its block-relative row)."""
    message = re.sub(r" in row \d+$", "", arrow_message)
    wrong_type = re.fullmatch(
        r"JSON parse error: Column\(/(\w+)(/\[\])?\) changed from (\w+) to (\w+)", message
    )
    if wrong_type is not None:
        name, element, expected, found = wrong_type.groups()
        where = f'an element of "{name}"' if element else f'"{name}"'
        return f"{where} is {_article(found)}, expected {_article(expected)}"
    not_integer = re.fullmatch(r"Failed to convert JSON to int64, couldn't parse:(.*)", message)
    if not_integer is not None:
        return f"{not_integer.group(1)} is not an integer"
    return message


def _article(noun: str) -> str:
    return f"an {noun}" if noun[:1] in {"a", "e", "i", "o", "u"} else f"a {noun}"


def _validate(path: Path, data: bytes, columns: dict[str, pa.Array]) -> None:
    """Reject journeys the mapping cannot represent, naming how many and on which lines."""
    problems = _problems(columns)
    if problems:
        # Arrow skips blank lines, so journey i is the i-th non-blank line, not line i + 1.
        lines = [number for number, line in enumerate(data.split(b"\n"), start=1) if line.strip()]
        line_numbers = np.asarray(lines, dtype=np.int64)
        raise row_problems_error(path, "journey", problems, line_numbers, _HINT)


def _problems(columns: dict[str, pa.Array]) -> list[tuple[str, BoolArray]]:
    """(description, mask of offending journeys) for every rule that some journey breaks."""
    checks = [
        (f'lack the field "{name}" (or it is null)', _as_bool(columns[name].is_null()))
        for name in _SCHEMA.names
    ]
    checks += [
        (f'have a null inside "{name}"', _has_null_element(columns[name]))
        for name in ("campaigns", "timestamps")
    ]
    # Journeys lacking a list are reported above, not again as a length mismatch.
    both = ~_as_bool(columns["campaigns"].is_null()) & ~_as_bool(columns["timestamps"].is_null())
    n_campaigns = _lengths(columns["campaigns"])
    n_timestamps = _lengths(columns["timestamps"])
    checks.append(
        ('have "campaigns" and "timestamps" of different lengths', both & (n_campaigns != n_timestamps))
    )
    checks.append(("have no touchpoint", both & (n_campaigns == 0) & (n_timestamps == 0)))
    # A null conversion is already reported as a missing field.
    binary = pc.is_in(columns["conversion"], value_set=pa.array([0, 1])).fill_null(True)
    checks.append(('have a "conversion" other than 0 or 1', ~_as_bool(binary)))
    return [(description, mask) for description, mask in checks if mask.any()]


def _as_bool(flags: pa.Array) -> BoolArray:
    return np.asarray(flags.to_numpy(zero_copy_only=False), dtype=bool)


def _lengths(lists: pa.ListArray) -> IntArray:
    return np.asarray(pc.list_value_length(lists).fill_null(0).to_numpy(), dtype=np.int64)


def _has_null_element(lists: pa.ListArray) -> BoolArray:
    mask = np.zeros(len(lists), dtype=bool)
    null_values = _as_bool(pc.list_flatten(lists).is_null())
    mask[pc.list_parent_indices(lists).to_numpy()[null_values]] = True
    return mask


def _convert(path: Path, data: bytes, columns: dict[str, pa.Array], limit: int | None) -> ConvertedDataset:
    users = np.asarray(columns["user"].to_numpy(), dtype=np.int64)
    timestamps = columns["timestamps"]
    seconds = np.asarray(pc.list_flatten(timestamps).to_numpy(), dtype=np.int64)
    parents = np.asarray(pc.list_parent_indices(timestamps).to_numpy(), dtype=np.int64)
    converted = np.asarray(columns["conversion"].to_numpy(), dtype=np.int8)
    customer_id = _customer_ids(users)
    starts = np.concatenate([[0], np.cumsum(_lengths(timestamps))[:-1]])
    # The latest touch, not the last listed one: the file is sorted, but the mapping need not rely on it.
    as_of = _to_timestamp(np.maximum.reduceat(seconds, starts) + 1)

    events = _events(customer_id, parents, seconds, columns["campaigns"], as_of, converted)
    labels = pa.table({"customer_id": customer_id, "as_of": as_of, "conversion": pa.array(converted)})
    customers = pa.table({"customer_id": customer_id, "user_id": pa.array(users)})
    labels, customers = labels.sort_by("customer_id"), customers.sort_by("customer_id")

    provenance = base_provenance(NAME, source_provenance(path, data), events, labels, customers)
    provenance.update(_details(users, parents, seconds, converted, limit))
    return ConvertedDataset(NAME, events, labels, customers, provenance)


def _events(
    customer_id: pa.Array,
    parents: IntArray,
    seconds: IntArray,
    campaigns: pa.ListArray,
    as_of: pa.Array,
    converted: npt.NDArray[np.int8],
) -> pa.Table:
    """Touchpoints plus one purchase at `as_of` per converted journey, sorted by customer and time."""
    touches = _event_rows(
        customer_id.take(parents),
        _to_timestamp(seconds),
        "ad_impression",
        pa.repeat(pa.scalar("display", pa.string()), len(seconds)),
        pc.binary_join_element_wise("campaign_", pc.cast(pc.list_flatten(campaigns), pa.string()), ""),
    )
    buyers = np.flatnonzero(converted)
    no_string = pa.nulls(len(buyers), pa.string())
    purchases = _event_rows(customer_id.take(buyers), as_of.take(buyers), "purchase", no_string, no_string)
    # The sort is stable, so touches that share a second keep their order in the file.
    return pa.concat_tables([touches, purchases]).sort_by(
        [("customer_id", "ascending"), ("timestamp", "ascending")]
    )


def _customer_ids(users: IntArray) -> pa.Array:
    """``u{user}-j{k}``, k = index of the journey among its user's journeys in file order."""
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    positions = np.arange(len(users))
    group_start = np.ones(len(users), dtype=bool)
    group_start[1:] = sorted_users[1:] != sorted_users[:-1]
    first_of_group = np.maximum.accumulate(np.where(group_start, positions, 0))
    k = np.empty(len(users), dtype=np.int64)
    k[order] = positions - first_of_group
    return pc.binary_join_element_wise(
        "u", pc.cast(pa.array(users), pa.string()), "-j", pc.cast(pa.array(k), pa.string()), ""
    )


def _to_timestamp(seconds: IntArray) -> pa.Array:
    origin_us = int(TIME_ORIGIN.timestamp()) * _US_PER_S
    return pa.array(seconds * _US_PER_S + origin_us, pa.int64()).cast(UTC_US)


def _event_rows(
    customer_id: pa.Array, timestamp: pa.Array, event_type: str, channel: pa.Array, action: pa.Array
) -> pa.Table:
    n = len(customer_id)
    return pa.table(
        {
            "customer_id": customer_id,
            "timestamp": timestamp,
            "event_type": pa.repeat(pa.scalar(event_type, pa.string()), n),
            "channel": channel,
            "action": action,
            "value": pa.nulls(n, pa.float64()),
        }
    )


def _details(
    users: IntArray, parents: IntArray, seconds: IntArray, converted: npt.NDArray[np.int8], limit: int | None
) -> dict[str, Any]:
    step = np.diff(seconds)[parents[1:] == parents[:-1]]
    return {
        "limit": limit,
        "journeys": len(users),
        "users": len(np.unique(users)),
        "touchpoints": len(seconds),
        "purchases": int(converted.sum()),
        "timestamps_sorted_within_journeys": bool((step >= 0).all()),
        "tied_timestamps_within_journeys": int((step == 0).sum()),
        "protocol": {
            "summary": PROTOCOL_SUMMARY,
            "customer_id": "u{user}-j{k}, k = index of the journey among the user's journeys in file order",
            "time_origin": TIME_ORIGIN.isoformat().replace("+00:00", "Z"),
            "events": 'touch -> ad_impression, channel "display", action "campaign_{id}"',
            "purchase": "converted journeys: purchase event 1 s after the last touch (true time unknown)",
            "as_of": "last touch + 1 s; features strictly before as_of",
            "split": "group by user_id: a user's two journeys overlap in time",
        },
        "license": LICENSE,
        "notes": _notes(converted, limit),
    }


def _notes(converted: npt.NDArray[np.int8], limit: int | None) -> list[str]:
    if limit is not None and not converted.any():
        return [f"the first {limit:,} journeys hold no conversion: the file lists converted journeys last"]
    return []
