"""Event vocabularies and the columnar event buffer the generators append to.

Events are kept as integer codes until the very end, so that filtering, sorting and aggregating millions
of them stays in numpy; `EventArrays.to_table` turns them into the contract's string columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from nextbest.journeys.labels import BUSINESS_TOUCHES
from nextbest.simulate._arrays import BoolArray, FloatArray, IntArray

EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "product_view",
    "ad_impression",
    "offer_shown",
    "app_session",
    "store_visit",
    "add_to_cart",
    "purchase",
    "review",
    "referral",
    "support_call",
    "complaint",
    "email_sent",
    "email_open",
    "email_click",
    "unsubscribe",
    "push_sent",
    "sms_sent",
    "outbound_call",
)
CHANNELS: tuple[str, ...] = ("web", "app", "email", "sms", "call_center", "store", "display")
# Every action id that can appear on an event: the decision actions that leave a touchpoint, plus campaigns
# that only appear in the history (`no_action` leaves no event, so it has no code).
ACTIONS: tuple[str, ...] = (
    "email_offer",
    "discount_10",
    "call_back",
    "push_notification",
    "sms_reminder",
    "newsletter",
    "onsite_offer",
)

ET = {name: code for code, name in enumerate(EVENT_TYPES)}
CH = {name: code for code, name in enumerate(CHANNELS)}
AC = {name: code for code, name in enumerate(ACTIONS)}

# Events the customer initiates: business sends (emails, pushes, ads, calls) do not show they are alive.
# The complement of the churn rule's business touches, so simulated churn and the label rule agree by design.
CUSTOMER_INITIATED: frozenset[int] = frozenset(
    code for name, code in ET.items() if name not in BUSINESS_TOUCHES
)

NO_CODE = -1  # null channel or action
CODE = np.int16


@dataclass(frozen=True)
class EventArrays:
    """A column-wise batch of events, with integer codes for the string columns.

    Attributes:
        customer: Customer index (0-based) of each event.
        time: Seconds after the world's start.
        event_type: Index into EVENT_TYPES.
        channel: Index into CHANNELS, or NO_CODE.
        action: Index into ACTIONS, or NO_CODE.
        value: Monetary value, NaN when there is none.
    """

    customer: IntArray
    time: IntArray
    event_type: npt.NDArray[np.int16]
    channel: npt.NDArray[np.int16]
    action: npt.NDArray[np.int16]
    value: FloatArray

    @staticmethod
    def build(
        customer: IntArray,
        time: IntArray,
        event_type: int | npt.NDArray[np.int16],
        channel: int | npt.NDArray[np.int16],
        action: int | npt.NDArray[np.int16] = NO_CODE,
        value: float | FloatArray = np.nan,
    ) -> EventArrays:
        """A batch from per-event arrays, broadcasting scalar codes to every event."""
        n = customer.size

        def codes(x: int | npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
            return np.broadcast_to(np.asarray(x, dtype=CODE), (n,)).copy()

        values = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy()
        return EventArrays(customer, time, codes(event_type), codes(channel), codes(action), values)

    @staticmethod
    def empty() -> EventArrays:
        """A batch without events."""
        none = np.zeros(0, dtype=np.int64)
        return EventArrays.build(none, none, NO_CODE, NO_CODE)

    @staticmethod
    def concat(batches: list[EventArrays]) -> EventArrays:
        """All batches as one, in order."""
        return EventArrays(
            np.concatenate([b.customer for b in batches]),
            np.concatenate([b.time for b in batches]),
            np.concatenate([b.event_type for b in batches]),
            np.concatenate([b.channel for b in batches]),
            np.concatenate([b.action for b in batches]),
            np.concatenate([b.value for b in batches]),
        )

    def __len__(self) -> int:
        return int(self.customer.size)

    def select(self, rows: BoolArray | IntArray) -> EventArrays:
        """The events at a boolean mask or index array."""
        return EventArrays(
            self.customer[rows],
            self.time[rows],
            self.event_type[rows],
            self.channel[rows],
            self.action[rows],
            self.value[rows],
        )

    def sorted(self) -> EventArrays:
        """Ordered by customer, then time; ties keep generation order so the result is deterministic."""
        key = (self.customer << 40) + self.time  # times stay far below 2**40 seconds
        return self.select(np.argsort(key, kind="stable"))

    def to_table(self, customer_ids: pa.Array, start: datetime) -> pa.Table:
        """The contract's `events` table (call on sorted events)."""
        start_us = int(start.timestamp()) * 1_000_000
        return pa.table(
            {
                "customer_id": customer_ids.take(pa.array(self.customer)),
                "timestamp": pa.array(self.time * 1_000_000 + start_us, pa.timestamp("us", tz="UTC")),
                "event_type": _decode(self.event_type, EVENT_TYPES),
                "channel": _decode(self.channel, CHANNELS),
                "action": _decode(self.action, ACTIONS),
                "value": pa.array(self.value, pa.float64(), from_pandas=True),
            }
        )


def _decode(codes: npt.NDArray[np.int16], vocabulary: tuple[str, ...]) -> pa.Array:
    indices = pa.array(codes.astype(np.int32), mask=codes < 0)
    return pa.array(vocabulary, pa.string()).take(indices)
