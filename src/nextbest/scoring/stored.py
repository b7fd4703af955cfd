"""Scoring requests against a customer store (DESIGN §4a): what a service with a store does per request.

Before scoring, each request gets its customer's stored events before its as_of (default: now) beside
any it brings (the event log keeps an event that was both sent and stored once), and the stored profile
under its own attributes; the contacts the store served hold back the actions whose contact policy they
break (they are no events of the model's history, so ranking cannot see them otherwise). After ranking,
the served action is recorded as a contact in the store's atomic step (`CustomerStore.serve`), which
checks the policy again: when a concurrent call for the same customer got there first, the next eligible
action in the ranking is served instead, and the answer says so.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.decisioning.catalog import ActionCatalog
from nextbest.journeys.requests import epoch_micros
from nextbest.scoring.schemas import RankResponse, ServedScoringRequest, SuppressedAction
from nextbest.scoring.tables import ISO_FORMAT, given_as_of, request_events, request_profiles
from nextbest.store import Candidate, CustomerStore, Decision, Histories, Served
from nextbest.store.contacts import contact_reasons

# Why a ranked action was not served although the ranking allowed it.
SERVED_MEANWHILE = "served meanwhile: {reason}"


@dataclass(frozen=True)
class StoredRequests:
    """Requests with their customers' stored state.

    Attributes:
        records: the requests, each with its as_of set, its history and its profile merged with the
            stored ones.
        held_back: [N, K] objects over the catalog's actions: the contact rule that the stored contacts
            break, None where none does; None when no customer has stored contacts.
    """

    records: list[ServedScoringRequest]
    held_back: np.ndarray | None

    @classmethod
    def read(
        cls, store: CustomerStore, records: Sequence[ServedScoringRequest], catalog: ActionCatalog
    ) -> StoredRequests:
        """Reads the records' customers from `store` (one read for the batch).

        Raises:
            DataContractError: an as_of that is not an ISO-8601 time.
            StoreUnavailableError: the store cannot be reached.
        """
        now = epoch_micros(datetime.now(UTC))
        given = given_as_of(records)
        as_of = np.asarray(given.cast(pa.int64()).fill_null(now), dtype=np.int64)
        customer_ids = [r.customer_id for r in records]
        histories = store.histories(customer_ids, as_of)
        times = pc.strftime(pa.array(as_of, pa.int64()).cast(given.type), ISO_FORMAT).to_pylist()
        events = _events_by_customer(histories, customer_ids, as_of)
        profiles = request_profiles(histories.profiles, pa.array(customer_ids, pa.string()))
        merged = [
            record.model_copy(
                update={
                    "as_of": time,
                    "events": [*customer_events, *(record.events or ())],
                    "profile": {**(profile or {}), **(record.profile or {})} or None,
                }
            )
            for record, time, customer_events, profile in zip(records, times, events, profiles, strict=True)
        ]
        return cls(merged, _held_back(histories, customer_ids, as_of, catalog))


def _events_by_customer(
    histories: Histories, customer_ids: list[str], as_of: np.ndarray
) -> list[list[dict[str, object]]]:
    """Each request's stored events strictly before its own as_of (the store read them before the latest
    as_of of each customer)."""
    table = histories.events
    ids = table.column("customer_id").to_pylist()
    micros = np.asarray(table.column("timestamp").cast(pa.int64()), dtype=np.int64)
    rows = request_events(table)
    spans: dict[str, tuple[int, int]] = {}
    for i, customer_id in enumerate(ids):  # the table is ordered by customer
        start, _ = spans.get(customer_id, (i, i))
        spans[customer_id] = (start, i + 1)
    found = []
    for customer_id, until in zip(customer_ids, as_of.tolist(), strict=True):
        start, end = spans.get(customer_id, (0, 0))
        end = start + int(np.searchsorted(micros[start:end], until, side="left"))
        found.append(rows[start:end])
    return found


def _held_back(
    histories: Histories, customer_ids: list[str], as_of: np.ndarray, catalog: ActionCatalog
) -> np.ndarray | None:
    if not histories.contacts:
        return None
    return contact_reasons(histories.events, histories.contacts, customer_ids, as_of, catalog)


def new_decision_id() -> str:
    """A decision's id: random, unique without coordination between workers and machines."""
    return uuid.uuid4().hex


def served(
    store: CustomerStore, answers: Sequence[RankResponse], catalog: ActionCatalog
) -> list[RankResponse]:
    """The `answers`, each with a new `decision_id` and its served action recorded in `store` as that
    decision's contact (one `CustomerStore.serve_many` for them all). When the store's atomic check holds
    the chosen action back (a concurrent call for the customer served it first), the next eligible
    action of the ranking is served, with no probability (the policy did not draw it), and the
    held-back actions join `suppressed`.

    Raises:
        StoreUnavailableError: the store cannot be reached; nothing was recorded.
    """
    ids = [new_decision_id() for _ in answers]
    pairs = list(zip(answers, ids, strict=True))
    outcomes = store.serve_many([_decision(a, i) for a, i in pairs if a.chosen_action is not None], catalog)
    by_id = {outcome.decision_id: outcome for outcome in outcomes}
    return [_with_outcome(answer, i, by_id.get(i)) for answer, i in pairs]


def _decision(answer: RankResponse, decision_id: str) -> Decision:
    """The answer's ranking as the store's decision: its chosen action first, then the others."""
    assert answer.chosen_action is not None
    ranked = [a.action for a in answer.actions if a.action != answer.chosen_action]
    candidates = (
        Candidate(answer.chosen_action, answer.chosen_probability),
        *(Candidate(action) for action in ranked),
    )
    return Decision(answer.customer_id, datetime.fromisoformat(answer.as_of), decision_id, candidates)


def _with_outcome(answer: RankResponse, decision_id: str, outcome: Served | None) -> RankResponse:
    update: dict[str, object] = {"decision_id": decision_id}
    if outcome is not None and outcome.action != answer.chosen_action:
        contact = outcome.contact
        update["chosen_action"] = outcome.action
        update["chosen_probability"] = None if contact is None else contact.probability
        update["suppressed"] = [
            *answer.suppressed,
            *(
                SuppressedAction(action=action, reason=SERVED_MEANWHILE.format(reason=reason))
                for action, reason in outcome.suppressed
            ),
        ]
    return answer.model_copy(update=update)
