"""`nextbest simulate live`: the simulated world played against a running service (DESIGN §5a).

The world is the offline simulator's, with its decisions made by the service instead of the logging
policy (`simulate(config, decider)`). The player posts the world's customers to `/customers`, then goes
through the decisions a simulated day at a time: it posts to `/events` every event that has happened by
then (the deciding customers' up to their own decision), asks `/rank_batch` for that day's customers as of
their decision times, and hands the served actions back to the world, whose customers respond by their
true response model. Once the world is played out, the events that followed the decisions (touchpoints
with the `decision_id` that served them, purchases, returns, silence) are posted too.

Each decision is valued by its true expected value under the service's catalog (the definition of
`nextbest.evaluation.policies.true_action_values`), beside what a uniformly random choice among the
actions and the best action (the oracle) would have earned, in all and per day; both ignore the catalog's
rules and limits. The world and its figures depend only on the seed and the answers: equal answers give
equal results.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from nextbest.decisioning.catalog import NO_ACTION, ActionCatalog
from nextbest.errors import NextbestError
from nextbest.evaluation.policies import true_action_values, truth_matrices
from nextbest.simulate._arrays import DAY, FloatArray, IntArray
from nextbest.simulate.actions import Served
from nextbest.simulate.client import ServiceClient
from nextbest.simulate.config import SimulationConfig
from nextbest.simulate.output import SimulatedWorld
from nextbest.simulate.population import customer_ids
from nextbest.simulate.world import DecisionRound, simulate

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Figures:
    """The true value per decision of the served actions, of a uniformly random choice among the actions
    and of the best one (the oracle), in the catalog's units; which model versions answered how often; and
    per served action, its decisions and the mean of their true P(conversion) and P(churn) (what a monitor's
    realised rates estimate).
    """

    decisions: int
    value_per_decision: float
    random_value_per_decision: float
    oracle_value_per_decision: float
    model_versions: dict[str, int]
    served_truth: dict[str, dict[str, float]]

    @staticmethod
    def of(
        values: FloatArray,
        truth: tuple[FloatArray, FloatArray],
        served: IntArray,
        versions: list[str],
        actions: tuple[str, ...],
    ) -> Figures:
        """The figures of decisions with true values `values` and true probabilities `truth` (conversion,
        churn) [N, K] each, served actions `served` [N] (indices of `actions`) answered by model
        `versions`."""
        rows = np.arange(len(served))
        conversion, churn = (matrix[rows, served] for matrix in truth)
        return Figures(
            decisions=len(served),
            value_per_decision=float(values[rows, served].mean()),
            random_value_per_decision=float(values.mean(axis=1).mean()),
            oracle_value_per_decision=float(values.max(axis=1).mean()),
            model_versions=dict(sorted(Counter(versions).items())),
            served_truth={
                actions[a]: {
                    "decisions": int((served == a).sum()),
                    "p_conversion": float(conversion[served == a].mean()),
                    "p_churn": float(churn[served == a].mean()),
                }
                for a in np.unique(served).tolist()
            },
        )


@dataclass(frozen=True)
class LiveResult:
    """What a live run earned, in all and per day of the live period (days without decisions left out),
    and how many events it posted."""

    total: Figures
    per_day: dict[int, Figures]
    events_posted: int

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.total),
            "events_posted": self.events_posted,
            "days": [{"day": day, **asdict(figures)} for day, figures in self.per_day.items()],
        }


def play(service: ServiceClient, config: SimulationConfig, *, progress: bool = True) -> LiveResult:
    """Plays the world of `config` against `service` and values what it served.

    Raises:
        NextbestError: the service cannot be reached, answers other than 2xx, or its catalog's actions
            are not the world's.
    """
    metadata = service.get("/metadata")
    catalog = ActionCatalog.from_dict(_field(metadata, "catalog", "GET /metadata"), "the service's catalog")
    if set(catalog.ids) != set(config.action_ids):
        raise NextbestError(
            f"the service's catalog has actions {sorted(catalog.ids)}, the simulated world "
            f"{sorted(config.action_ids)}: serve a model trained on simulated worlds with their catalog"
        )
    limits = _field(metadata, "limits", "GET /metadata")
    with tqdm(total=config.n_customers, unit="decision", desc="playing", disable=not progress) as bar:
        max_events, max_batch = (_field(limits, k, "GET /metadata") for k in ("max_events", "max_batch"))
        player = _Player(service, config, max_events, max_batch, bar)
        world = simulate(config, player)
        player.post_rest(world.events)
    total, per_day = _valued(world, catalog, player.versions)
    return LiveResult(total, per_day, player.events_posted)


def _valued(
    world: SimulatedWorld, catalog: ActionCatalog, versions: dict[tuple[str, str], str]
) -> tuple[Figures, dict[int, Figures]]:
    """The figures of the world's decisions, in all and per live day; `versions` names the model version
    that answered each (customer id, decision time)."""
    decisions = world.decisions
    truth = truth_matrices(world.truth, decisions, catalog.ids)
    values = true_action_values(truth, catalog)
    index = {a: i for i, a in enumerate(catalog.ids)}
    served = np.array([index[a] for a in decisions.column("action").to_pylist()], dtype=np.int64)
    stamps = decisions.column("timestamp").to_pylist()
    ids, times = decisions.column("customer_id").to_pylist(), [t.strftime(_TIME_FORMAT) for t in stamps]
    answered = np.array([versions[key] for key in zip(ids, times, strict=True)], dtype=object)
    first_day = world.config.start + timedelta(days=world.config.decision_window[0])
    day = np.array([(t - first_day).days + 1 for t in stamps], dtype=np.int64)

    def figures(rows: np.ndarray) -> Figures:
        return Figures.of(
            values[rows], (truth[0][rows], truth[1][rows]), served[rows], list(answered[rows]), catalog.ids
        )

    per_day = {int(d): figures(day == d) for d in np.unique(day)}
    return figures(np.ones(len(served), dtype=bool)), per_day


class _Player:
    """The decider of a live world: posts what happened, asks the service, returns what it served."""

    def __init__(
        self,
        service: ServiceClient,
        config: SimulationConfig,
        max_events: int,
        max_batch: int,
        bar: tqdm[Any],
    ) -> None:
        self._service = service
        self._config = config
        self._max_events, self._max_batch = max_events, max_batch
        self._bar = bar
        self._actions = {a: i for i, a in enumerate(config.action_ids)}
        self._ids = customer_ids(config.n_customers, config.customer_prefix)
        self._customers_posted = False
        # Every event of customer c before posted_until[c] (seconds) has been posted, none after it.
        self._posted_until = np.zeros(config.n_customers, dtype=np.int64)
        # (customer id, time, action) of each served contact -> the decision_id that served it.
        self._decision_ids: dict[tuple[str, str, str], str] = {}
        # (customer id, decision time) -> the model version that answered.
        self.versions: dict[tuple[str, str], str] = {}
        self.events_posted = 0

    def __call__(self, moment: DecisionRound) -> Served:
        if not self._customers_posted:  # profiles first: the catalog's rules read them
            self._post_customers(moment.customers)
            self._customers_posted = True
        action = np.zeros(moment.customer.size, dtype=np.int64)
        propensity = np.ones(moment.customer.size)
        for events, decided in zip(*_rounds(moment, self._posted_until), strict=True):
            self._post_events(moment.history.select(events).to_table(self._ids, self._config.start))
            action[decided], propensity[decided] = self._ask(moment.customer[decided], moment.as_of[decided])
        self._posted_until[moment.customer] = moment.as_of
        return Served(action, propensity)

    def post_rest(self, events: pa.Table) -> None:
        """Posts the world's (observable) events not posted yet, in time order."""
        customer = pc.index_in(events.column("customer_id"), value_set=self._ids)
        start_us = int(self._config.start.timestamp()) * 1_000_000
        posted_us = pa.array(self._posted_until * 1_000_000 + start_us).take(customer)
        micros = events.column("timestamp").cast(pa.int64())
        self._post_events(events.filter(pc.greater_equal(micros, posted_us)).sort_by("timestamp"))

    def _post_customers(self, customers: pa.Table) -> None:
        rows = [
            {k: v.isoformat() if isinstance(v, date) else v for k, v in row.items() if v is not None}
            for row in customers.to_pylist()
        ]
        for chunk in _chunks(rows, self._max_batch):
            self._service.post("/customers", {"customers": chunk})

    def _post_events(self, table: pa.Table) -> None:
        """Posts `table`'s events in order, `max_events` a call (made into JSON a call at a time, so a
        world's worth of outcome events never sits in memory as Python objects)."""
        for begin in range(0, table.num_rows, self._max_events):
            chunk = [self._event(row) for row in table.slice(begin, self._max_events).to_pylist()]
            answer = self._service.post("/events", {"events": chunk})
            if answer.get("rejected"):
                raise NextbestError(f"POST /events rejected simulated events: {answer['rejected'][:3]}")
            self.events_posted += len(chunk)
            self._bar.set_postfix(events=f"{self.events_posted:,}")  # the outcomes' events come last

    def _event(self, row: dict[str, Any]) -> dict[str, Any]:
        event = {k: v for k, v in row.items() if v is not None}
        event["timestamp"] = row["timestamp"].strftime(_TIME_FORMAT)
        key = (row["customer_id"], event["timestamp"], row["action"])
        if key in self._decision_ids:  # the touchpoint of a served action: the contact already stored
            event["decision_id"] = self._decision_ids[key]
        return event

    def _ask(self, customer: IntArray, as_of: IntArray) -> tuple[IntArray, FloatArray]:
        """The service's served action at each decision (the no-action baseline when it served none)."""
        start = self._config.start.timestamp()
        ids = self._ids.take(customer).to_pylist()
        times = [datetime.fromtimestamp(start + t, UTC).strftime(_TIME_FORMAT) for t in as_of.tolist()]
        requests = [{"customer_id": c, "as_of": t} for c, t in zip(ids, times, strict=True)]
        answers = []
        for chunk in _chunks(requests, self._max_batch):
            answers += _field(
                self._service.post("/rank_batch", {"requests": chunk}), "results", "POST /rank_batch"
            )
        if len(answers) != len(requests):
            raise NextbestError(f"POST /rank_batch answered {len(answers):,} of {len(requests):,} requests")
        chosen = [self._served(answer) for answer in answers]
        for request, answer, (action, _) in zip(requests, answers, chosen, strict=True):
            decision_id = _field(answer, "decision_id", "POST /rank_batch")
            self._decision_ids[(request["customer_id"], request["as_of"], action)] = decision_id
            version = _field(answer, "model_version", "POST /rank_batch")
            self.versions[(request["customer_id"], request["as_of"])] = str(version)
        self._bar.update(len(answers))
        indices = np.array([self._actions[action] for action, _ in chosen], dtype=np.int64)
        return indices, np.array([probability for _, probability in chosen])

    def _served(self, answer: dict[str, Any]) -> tuple[str, float]:
        action = answer.get("chosen_action") or NO_ACTION
        if action not in self._actions:
            raise NextbestError(f"the service served {action!r}, which the simulated world does not know")
        probability = answer.get("chosen_probability")
        return action, 1.0 if probability is None else float(probability)


def _rounds(moment: DecisionRound, posted_until: IntArray) -> tuple[list[IntArray], list[IntArray]]:
    """Per simulated day with decisions, in time order: the rows of `moment.history` to post before its
    decisions, and its decisions (rows of `moment.customer`).

    An event is posted before the first day that begins after it, or before its customer's decision if
    that comes first; events after a deciding customer's decision wait for its outcome, and customers not
    deciding now have their events posted later, once it is known which of them still happen.
    """
    decision_day = moment.as_of // DAY
    days = np.unique(decision_day)
    n = len(moment.customers)
    deadline = np.full(n, -1, dtype=np.int64)
    deadline[moment.customer] = moment.as_of
    history = moment.history
    fresh = np.flatnonzero(
        (history.time >= posted_until[history.customer]) & (history.time < deadline[history.customer])
    )
    owner = history.customer[fresh]
    release = np.minimum(history.time[fresh] // DAY + 1, deadline[owner] // DAY)
    event_round = np.searchsorted(days, release)
    decision_round = np.searchsorted(days, decision_day)
    order = fresh[np.lexsort((history.time[fresh], event_round))]
    events = _split(order, np.sort(event_round), len(days))
    decisions = _split(np.argsort(decision_round, kind="stable"), np.sort(decision_round), len(days))
    return events, decisions


def _split(rows: IntArray, groups: IntArray, count: int) -> list[IntArray]:
    """`rows` cut where `groups` (sorted, aligned with `rows`) changes, one part per group 0..count-1."""
    return np.split(rows, np.searchsorted(groups, np.arange(1, count)))


def _field(answer: Any, name: str, route: str) -> Any:
    """`answer[name]`, or an error naming the route: the address answers JSON, but not as nextbest does."""
    if not isinstance(answer, dict) or answer.get(name) is None:
        raise NextbestError(f"{route}: the answer has no {name!r}; is the address a nextbest service's?")
    return answer[name]


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for begin in range(0, len(rows), size):
        yield rows[begin : begin + size]
