"""Arbitration: from per-action probabilities to a ranked, rule-abiding list of actions per request.

expected value(a) = weight_a · (value_a · P(conversion | a) - churn_cost · P(churn | a) - cost_a)

(the Pega P·C·V·L arbitration with the business lever as the weight). Each action's uplift is its expected
value minus what the same conversion and churn would be worth with no action, so the output says what
an action adds, not only what it is worth. Eligibility rules, per-action contact limits, cool-downs and
contact caps suppress actions, each with its reason; among the rest, the higher expected value ranks
first and ties go to the earlier catalog entry.

Whatever the scores (NaN, ±Infinity), a suppressed action is never ranked among the eligible ones nor
served: eligibility is the first sort key and the only way into the serving probabilities. An expected
value that is NaN says nothing about the action, so it ranks last among the eligible ones and is served
only where no eligible action has a number.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from nextbest.decisioning.catalog import (
    ActionCatalog,
    CatalogAction,
    ControlGroup,
    Exploration,
)
from nextbest.decisioning.expressions import HistoryQuery, RuleColumns

NOT_A_CANDIDATE = "not among the request's candidates"


@dataclass(frozen=True)
class Ranking:
    """Catalog actions ranked per request (K = catalog actions, in catalog order).

    Attributes:
        actions: the catalog's action ids.
        expected_value, uplift: [N, K] float64.
        p_conversion, p_churn: [N, K] the model's probabilities for each catalog action.
        eligible: [N, K] whether the action may be taken.
        reasons: [N, K] object: the first rule that suppressed the action, None where eligible.
        order: [N, K] catalog indices: the eligible actions best first (NaN expected values last), then
            the suppressed ones, ranked alike.
    """

    actions: tuple[str, ...]
    expected_value: np.ndarray
    uplift: np.ndarray
    p_conversion: np.ndarray
    p_churn: np.ndarray
    eligible: np.ndarray
    reasons: np.ndarray
    order: np.ndarray

    @property
    def top(self) -> np.ndarray:
        """[N] the catalog index of each request's best eligible action; -1 where none is eligible."""
        if self.order.shape[1] == 0:  # a model without actions
            return np.full(len(self.order), -1)
        first = self.order[:, 0]
        return np.where(self.eligible[np.arange(len(first)), first], first, -1)


def rule_names(catalog: ActionCatalog) -> set[tuple[str, str]]:
    """Every (namespace, key) the catalog's rules read: only these columns need building for a request."""
    return {
        name
        for action in catalog.actions
        if action.eligible_if is not None
        for name in action.eligible_if.names
    }


def history_queries(catalog: ActionCatalog) -> set[HistoryQuery]:
    """Every history aggregate the catalog's rules, limits, cool-downs and caps read."""
    queries: set[HistoryQuery] = {cap.query(catalog.contact_events) for cap in catalog.contact_caps}
    for action in catalog.actions:
        if action.eligible_if is not None:
            queries |= action.eligible_if.history_queries
        queries |= contact_queries(catalog, action)
    return queries


def contact_queries(catalog: ActionCatalog, action: CatalogAction) -> set[HistoryQuery]:
    """The history aggregates `action`'s contact policy reads: its limits, its cool-down and, when it
    contacts anyone (has a channel), the catalog's caps."""
    queries = {limit.query(catalog.contact_events) for limit in action.limits}
    if action.cooldown_days is not None:
        queries.add(action.cooldown_query(catalog.contact_events))
    if action.channel is not None:
        queries |= {cap.query(catalog.contact_events) for cap in catalog.contact_caps}
    return queries


def contact_suppressions(
    catalog: ActionCatalog, action: CatalogAction, history: Mapping[HistoryQuery, np.ndarray]
) -> Iterator[tuple[np.ndarray, str]]:
    """Per rule of `action`'s contact policy, in order (limits, cool-down, caps): which requests it
    blocks and why, from `history` holding every query of `contact_queries(catalog, action)`.

    The one statement of what a contact policy allows: ranking and the store's atomic serve
    (`nextbest.store`) both read it.
    """
    for limit in action.limits:
        count = history[limit.query(catalog.contact_events)]
        yield count >= limit.max, f"contact limit: {limit.describe()}"
    if action.cooldown_days is not None:
        since = history[action.cooldown_query(catalog.contact_events)]
        yield (
            since < action.cooldown_days,
            (f"cool-down: {action.id} at most every {action.cooldown_days:g} days"),
        )
    if action.channel is not None:  # caps limit contacts; an action without a channel contacts nobody
        for cap in catalog.contact_caps:
            count = history[cap.query(catalog.contact_events)]
            yield count >= cap.max, f"contact cap: {cap.describe()}"


def rank(
    catalog: ActionCatalog,
    model_actions: tuple[str, ...],
    action_p_conversion: np.ndarray,
    action_p_churn: np.ndarray,
    p_conversion: np.ndarray,
    p_churn: np.ndarray,
    columns: RuleColumns,
    candidates: np.ndarray | None = None,
    held_back: np.ndarray | None = None,
) -> Ranking:
    """Ranks the catalog's actions for N requests.

    Args:
        model_actions: the model's actions, the columns of the [N, A] probabilities.
        action_p_conversion, action_p_churn: [N, A] probabilities if action a is taken.
        p_conversion, p_churn: [N] no-action probabilities, which uplift is measured from
            (`nextbest.scoring.scorer.Scores`: the model's `no_action` action's when it has one).
        columns: what the rules read (see `nextbest.decisioning.expressions`), with every query of
            `history_queries(catalog)` answered.
        candidates: [N, K] which catalog actions each request asks to rank (default: all).
        held_back: [N, K] objects: why each action is held back by what the requests' histories do not
            show (the contacts a customer store served), None where nothing holds it back.
    """
    catalog.check_actions(model_actions)
    columns_of = [model_actions.index(a) for a in catalog.ids]
    conversion, churn = action_p_conversion[:, columns_of], action_p_churn[:, columns_of]
    expected = catalog.expected_values(conversion, churn)  # [N, K]
    without_action = catalog.weights * (
        catalog.values * p_conversion[:, None] - catalog.churn_cost * p_churn[:, None]
    )  # [N, K]
    reasons = _suppressions(catalog, columns)
    if held_back is not None:
        reasons = np.where(reasons == None, held_back, reasons)  # noqa: E711 (element-wise)
    if candidates is not None:
        reasons = np.where(candidates, reasons, NOT_A_CANDIDATE)
    eligible = reasons == None  # noqa: E711 (element-wise on an object array)
    return Ranking(
        catalog.ids,
        expected,
        expected - without_action,
        conversion,
        churn,
        eligible,
        reasons,
        _best_first(expected, eligible),
    )


def _best_first(expected: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """[N, K] catalog indices: eligible before suppressed, then numbers before NaN, then the higher
    expected value; ties keep catalog order (the sort is stable)."""
    unknown = np.isnan(expected)
    # lexsort's last key sorts first.
    return np.lexsort((np.where(unknown, 0.0, -expected), unknown, ~eligible), axis=1)


def _suppressions(catalog: ActionCatalog, columns: RuleColumns) -> np.ndarray:
    """[N, K] object array: the first reason each action is not allowed, None where it is."""
    # Each request's first reason per action, as an index into `messages` (-1: none yet), made text once
    # at the end: object-array comparisons per rule cost more than evaluating the rules.
    first = np.full((columns.size, len(catalog.actions)), -1, dtype=np.int64)
    messages: list[str | None] = []

    def suppress(k: int, blocked: np.ndarray, reason: str) -> None:
        newly = blocked & (first[:, k] < 0)
        if newly.any():
            first[newly, k] = len(messages)
            messages.append(reason)

    for k, action in enumerate(catalog.actions):
        if action.eligible_if is not None:
            suppress(k, ~action.eligible_if.evaluate(columns), f"not eligible: {action.eligible_if.text}")
        for blocked, reason in contact_suppressions(catalog, action, columns.history):
            suppress(k, blocked, reason)
    return np.array([*messages, None], dtype=object)[first]  # index -1: the None at the end


def serving_probabilities(ranking: Ranking, exploration: Exploration, control: np.ndarray) -> np.ndarray:
    """[N, K] the probability with which each catalog action is served: exactly 0 for suppressed actions,
    and each row sums to 1, or is all 0 where no action is eligible. Requests of the control group
    ([N] bool, `control_members`) are served any eligible action uniformly, whatever the exploration."""
    policy = _policy_probabilities(ranking, exploration)
    if not control.any():
        return policy
    return np.where(control[:, None], _normalised(ranking.eligible), policy)


def _policy_probabilities(ranking: Ranking, exploration: Exploration) -> np.ndarray:
    n, k = ranking.eligible.shape
    eligible = ranking.eligible
    best = np.zeros((n, k))
    has_any = ranking.top >= 0
    best[np.flatnonzero(has_any), ranking.top[has_any]] = 1.0
    if exploration.policy == "off":
        return best
    if exploration.policy == "epsilon":
        return (1.0 - exploration.epsilon) * best + exploration.epsilon * _normalised(eligible)
    return _normalised(_softmax_weights(ranking.expected_value, eligible, exploration.temperature))


def _softmax_weights(expected: np.ndarray, eligible: np.ndarray, temperature: float) -> np.ndarray:
    """[N, K] exp(expected value / temperature) over the eligible actions, relative to the row's largest.

    NaN weighs nothing; where the largest is infinite, the softmax's limit: the infinite actions share
    the row if it is +Infinity, every eligible action does if it is -Infinity (nothing has a number).
    """
    # Overflow to +Infinity (a huge value over a small temperature) is handled as any +Infinity is.
    with np.errstate(over="ignore"):
        scaled = np.where(eligible & ~np.isnan(expected), expected / temperature, -np.inf)
        largest = scaled.max(axis=1, keepdims=True, initial=-np.inf)
        finite = np.isfinite(largest)
        relative = np.exp(scaled - np.where(finite, largest, 0.0))
    return np.where(finite, relative, eligible & (scaled == largest))


def _normalised(weights: np.ndarray) -> np.ndarray:
    """Each row of non-negative `weights` scaled to sum to 1; a row of zeros stays zeros."""
    total = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, total, out=np.zeros(weights.shape), where=total > 0)


def draw(probabilities: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """The served action per request: the index whose cumulative probability first exceeds the request's
    uniform draw; -1 where nothing may be served."""
    cumulative = np.cumsum(probabilities, axis=1)
    chosen = (cumulative <= uniforms[:, None] * cumulative[:, -1:]).sum(axis=1)
    return np.where(cumulative[:, -1] > 0, np.minimum(chosen, probabilities.shape[1] - 1), -1)


def request_uniforms(customer_ids: Sequence[str], as_of: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per request, fixed by (seed, customer, as_of): the same request is served
    the same way online, in batch and on a re-run."""
    keys = (
        f"{seed}|{customer}|{instant}" for customer, instant in zip(customer_ids, as_of.tolist(), strict=True)
    )
    return np.fromiter(map(_uniform, keys), np.float64, len(customer_ids))


def control_members(customer_ids: pa.Array, control: ControlGroup) -> np.ndarray:
    """[N] whether each customer is in the control group: a uniform number fixed by (seed, customer) below
    the group's share, so membership is the same at every request, online, in batch and on every worker."""
    if control.share == 0:
        return np.zeros(len(customer_ids), dtype=bool)
    keys = (f"control|{control.seed}|{customer}" for customer in customer_ids.to_pylist())
    return np.fromiter(map(_uniform, keys), np.float64, len(customer_ids)) < control.share


def _uniform(key: str) -> float:
    """A number in [0, 1) that depends on `key` alone (a stable hash, unlike Python's `hash`)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64
