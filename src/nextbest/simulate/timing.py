"""Time-of-day and day-of-week structure of sessions and campaign sends (times in UTC, read as local)."""

from __future__ import annotations

import numpy as np

from nextbest.simulate._arrays import DAY, HOUR, FloatArray, IntArray, sample_rows

# Session kinds: where an organic session happens.
WEB, APP, STORE, SERVICE = 0, 1, 2, 3

_HOURLY = np.array(
    [
        [2, 1, 1, 1, 1, 1, 2, 3, 5, 6, 6, 7, 9, 9, 7, 6, 6, 7, 8, 10, 12, 12, 9, 5],  # web: lunch, evening
        [3, 2, 1, 1, 1, 1, 4, 8, 9, 5, 4, 5, 7, 6, 5, 5, 6, 8, 9, 11, 14, 15, 12, 7],  # app: commute, late
        [0, 0, 0, 0, 0, 0, 0, 0, 1, 4, 8, 10, 12, 12, 11, 11, 12, 13, 13, 10, 6, 1, 0, 0],  # store: open
        [0, 0, 0, 0, 0, 0, 0, 1, 6, 12, 12, 11, 9, 10, 11, 10, 9, 7, 4, 2, 1, 0, 0, 0],  # service: office
    ],
    dtype=np.float64,
)
_HOURLY_CDF = np.cumsum(_HOURLY / _HOURLY.sum(axis=1, keepdims=True), axis=1)
# Relative popularity of each weekday (Monday first) per session kind. A session is postponed by k days
# with probability proportional to the popularity of that day times _POSTPONE_DECAY**k.
_WEEKDAY_WEIGHT = np.array(
    [
        [1.0, 1.0, 1.0, 1.0, 0.95, 0.75, 0.85],
        [0.85, 0.85, 0.85, 0.9, 0.95, 1.0, 1.0],
        [0.35, 0.35, 0.4, 0.45, 0.7, 1.0, 0.5],
        [1.0, 0.9, 0.85, 0.85, 0.8, 0.2, 0.08],
    ]
)
_POSTPONE_DECAY = 0.6 ** np.arange(7)


def schedule_sessions(
    rng: np.random.Generator, earliest: IntArray, kind: IntArray, start_weekday: int
) -> IntArray:
    """A start time at or after `earliest` for each session, on a plausible weekday and hour for its kind.

    Args:
        rng: Random generator.
        earliest: Earliest allowed start (seconds after the world's start).
        kind: Session kind (WEB, APP, STORE, SERVICE) of each session.
        start_weekday: Weekday of the world's start (Monday is 0).
    """
    n = earliest.size
    hour = (_HOURLY_CDF[kind] < rng.random(n)[:, None]).sum(axis=1)
    time_of_day = np.minimum(hour, 23) * HOUR + rng.integers(0, HOUR, n)
    day = earliest // DAY
    day = day + (day * DAY + time_of_day < earliest)
    weekdays = (day[:, None] + start_weekday + np.arange(7)) % 7
    day = day + sample_rows(rng, _WEEKDAY_WEIGHT[kind[:, None], weekdays] * _POSTPONE_DECAY)
    result: IntArray = day * DAY + time_of_day
    return result


def business_hours(rng: np.random.Generator, instant: IntArray) -> IntArray:
    """Moves instants (seconds) to a call-centre hour of the same day, as a decision job would run."""
    hour = (_HOURLY_CDF[SERVICE] < rng.random(instant.size)[:, None]).sum(axis=1)
    moved: IntArray = instant // DAY * DAY + np.minimum(hour, 23) * HOUR + rng.integers(0, HOUR, instant.size)
    return moved


def campaign_slots(
    rng: np.random.Generator, instant: FloatArray, send_hours: tuple[int, ...], start_weekday: int
) -> IntArray:
    """Snaps instants (seconds) to a send slot on the same day; most weekend sends move to a weekday."""
    n = instant.size
    day = np.floor(instant / DAY).astype(np.int64)
    weekday = (day + start_weekday) % 7
    postponed = (weekday >= 5) & (rng.random(n) < 0.8)
    day = day + np.where(postponed, 7 - weekday + rng.integers(0, 5, n), 0)
    hour = np.asarray(send_hours, dtype=np.int64)[rng.integers(0, len(send_hours), n)]
    result: IntArray = day * DAY + hour * HOUR + rng.integers(0, 20 * 60, n)
    return result
