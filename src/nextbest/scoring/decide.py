"""Scores plus arbitration: what every scorer (batch, online, evaluation) runs for a set of requests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nextbest.data.events import EventLog
from nextbest.decisioning.catalog import ActionCatalog
from nextbest.decisioning.expressions import HistoryQuery, RuleColumns
from nextbest.decisioning.history import history_values
from nextbest.decisioning.policy import (
    Ranking,
    control_members,
    draw,
    history_queries,
    rank,
    request_uniforms,
    rule_names,
    serving_probabilities,
)
from nextbest.journeys.profile import take_rows
from nextbest.journeys.requests import ResolvedRequests
from nextbest.scoring.explain import event_weights
from nextbest.scoring.scorer import DEFAULT_BATCH_SIZE, JourneyScorer, Scores

REQUEST_KEYS = ("customer_id", "as_of")


@dataclass(frozen=True)
class Decisions:
    """The model's probabilities, the catalog's ranking, and the action served to each request.

    Attributes:
        probabilities: [N, K] the probability with which each catalog action is served (exploration).
        chosen: [N] the catalog index of the served action (-1: none eligible).
        control: [N] whether the request's customer is in the catalog's control group (served a random
            eligible action).
        evidence: [N] when asked for, the history events that weighed most in each served action's value
            (see `nextbest.scoring.explain`); None otherwise.
    """

    scores: Scores
    ranking: Ranking
    probabilities: np.ndarray
    chosen: np.ndarray
    control: np.ndarray
    evidence: pa.Array | None = None

    @property
    def chosen_probability(self) -> np.ndarray:
        """[N] the probability with which the served action was chosen (NaN where none was)."""
        if self.probabilities.shape[1] == 0:  # a model without actions serves none
            return np.full(len(self.chosen), np.nan)
        rows = np.arange(len(self.chosen))
        return np.where(self.chosen >= 0, self.probabilities[rows, np.maximum(self.chosen, 0)], np.nan)


def decide(
    scorer: JourneyScorer,
    log: EventLog,
    requests: pa.Table,
    customers: pa.Table | None = None,
    *,
    catalog: ActionCatalog | None = None,
    candidates: np.ndarray | None = None,
    held_back: np.ndarray | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    explain: int = 0,
    customer_ids: pa.Array | None = None,
) -> Decisions:
    """Scores `requests` and ranks the actions of `catalog` (default: the model's packaged catalog).

    Columns of `requests` beyond `customer_id` and `as_of` are the request context that rules read as
    `context.<column>`. `candidates` ([N, K] bool over the catalog's actions) narrows what each request
    may be served; `held_back` ([N, K] objects) holds actions back for reasons the histories do not
    show (see `nextbest.decisioning.policy.rank`). With `explain` > 0, the `explain` history events that
    weighed most in each served action's value come with the decision (one extra forward pass per
    event: opt-in). `customer_ids` are the requests' customers where `requests` keys them otherwise
    (online, each record is keyed by its position): the control group and the exploration draw hash the
    customer, so that a customer is served alike online, in batch and on every worker.
    """
    catalog = catalog if catalog is not None else scorer.action_catalog
    catalog.check_context(requests.schema)
    resolved = ResolvedRequests.of(log, requests, customers)
    journeys = scorer.encoder.encode_resolved(resolved)
    scores = scorer.score_encoded(journeys, batch_size=batch_size, progress=progress)
    columns = rule_columns(resolved, rule_names(catalog), history_queries(catalog))
    ranking = rank(
        catalog,
        scorer.actions,
        scores.action_p_conversion,
        scores.action_p_churn,
        scores.p_conversion,
        scores.p_churn,
        columns,
        candidates,
        held_back,
    )
    exploration = catalog.exploration
    customer_ids = scores.customer_ids if customer_ids is None else customer_ids
    control = control_members(customer_ids, catalog.control)
    probabilities = serving_probabilities(ranking, exploration, control)
    if exploration.policy == "off" and not control.any():  # the best eligible action: nothing to draw
        chosen = ranking.top
    else:
        uniforms = request_uniforms(customer_ids.to_pylist(), scores.as_of, exploration.seed)
        chosen = draw(probabilities, uniforms)
    evidence = None
    if explain > 0:
        weights = event_weights(scorer, journeys, catalog, ranking, chosen, explain)
        evidence = weights.to_arrow(log)
    return Decisions(scores, ranking, probabilities, chosen, control, evidence)


def rule_columns(
    requests: ResolvedRequests, names: set[tuple[str, str]], queries: set[HistoryQuery]
) -> RuleColumns:
    """What the catalog's rules read for each request: the profile and context columns they name (and
    no others: converting a text column costs a Python object per request) and their history aggregates."""
    wanted = {
        namespace: {key for ns, key in names if ns == namespace} for namespace in ("profile", "context")
    }
    customers, table = requests.customers, requests.table
    profile: dict[str, np.ndarray] = {}
    read_profile = [
        c for c in (customers.column_names if customers is not None else []) if c in wanted["profile"]
    ]
    if customers is not None and read_profile:
        rows = take_rows(customers.select(read_profile), requests.profile_rows)
        profile = {name: _values(rows.column(name)) for name in read_profile}
    context = {
        name: _values(table.column(name))
        for name in table.column_names
        if name not in REQUEST_KEYS and name in wanted["context"]
    }
    history = history_values(
        requests.log, requests.customer, requests.as_of, queries, history=requests.history
    )
    return RuleColumns(len(requests), profile, context, history)


def _values(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Numbers as float64 (NaN = missing); anything else as Python objects (None = missing), booleans as
    the texts "true" and "false": the encoder reads them as categories, and rules type them as texts."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.string())
    return np.asarray(column.to_pylist(), dtype=object)
