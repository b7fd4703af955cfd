"""The learned policy against the logging policy, a random one and the best single action, on logged data.

Rewards are in the catalog's units: value_a · converted - churn_cost · churned - cost_a for the action a that
was taken. The model's expected values are the direct method of the doubly robust estimate. When the true
outcome probabilities are known (simulated worlds, `truth.parquet`), each policy's true value is reported
beside its estimates, and so is the oracle's (every decision's best action).

The random policy and the oracle play by the catalog's rules, as the learned policy does: random picks
uniformly among the eligible actions, the oracle takes the best eligible one. The gap the learned policy
is judged on is then the one its rules leave open; the oracle ignoring the rules is reported beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from nextbest.decisioning.catalog import ActionCatalog
from nextbest.errors import DataContractError
from nextbest.evaluation.ope import (
    Estimate,
    LoggedDecisions,
    constant_policy,
    estimate_paired_values,
    estimate_policy_value,
    mean_estimate,
    support_problem,
    uniform_policy,
)
from nextbest.model.calibration import expected_calibration_error
from nextbest.scoring.decide import Decisions

LEARNED, LOGGING, RANDOM = "learned", "logging", "random"
ORACLE, UNRULED_ORACLE = "oracle", "oracle ignoring rules"


@dataclass
class PolicyReport:
    """Per policy, its off-policy estimates and (when known) its true value per decision, and why the log
    cannot value the policies it cannot (`unsupported`: policy -> reason)."""

    decisions: int
    skipped: dict[str, int]
    estimates: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    true_values: dict[str, float] = field(default_factory=dict)
    best_single_action: str = ""
    unsupported: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "skipped": self.skipped,
            "best_single_action": self.best_single_action,
            "estimates": {p: {k: e.to_dict() for k, e in v.items()} for p, v in self.estimates.items()},
            "true_values": self.true_values,
            "unsupported": self.unsupported,
        }


def logged_rewards(
    decisions_table: pa.Table, catalog: ActionCatalog
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per logged decision: the catalog index of its action (-1: not in the catalog), its propensity and
    its reward.

    Raises:
        DataContractError: the decisions table lacks `propensity` or `converted` (or `churned` when the
            catalog prices churn).
    """
    needed = ["propensity", "converted", *(["churned"] if catalog.churn_cost else [])]
    missing = [c for c in needed if c not in decisions_table.column_names]
    if missing:
        raise DataContractError(f"decisions: off-policy evaluation needs column(s) {', '.join(missing)}")
    index = {a: i for i, a in enumerate(catalog.ids)}
    action = np.array(
        [index.get(a, -1) for a in decisions_table.column("action").to_pylist()], dtype=np.int64
    )
    propensity = _floats(decisions_table, "propensity")
    converted = _floats(decisions_table, "converted")
    churned = (
        _floats(decisions_table, "churned")
        if "churned" in decisions_table.column_names
        else np.zeros(len(action))
    )
    taken = np.maximum(action, 0)
    reward = catalog.values[taken] * converted - catalog.churn_cost * churned - catalog.costs[taken]
    return action, propensity, reward


def usable_log(
    decisions_table: pa.Table, catalog: ActionCatalog
) -> tuple[LoggedDecisions, np.ndarray, dict[str, int]]:
    """The logged decisions that can be evaluated (action in the catalog, propensity and outcome known),
    which rows they are, and how many were skipped for what.

    Raises:
        DataContractError: no decision can be evaluated.
    """
    action, propensity, reward = logged_rewards(decisions_table, catalog)
    usable = (action >= 0) & np.isfinite(propensity) & np.isfinite(reward)
    skipped = {
        "action not in the catalog": int((action < 0).sum()),
        "missing propensity or outcome": int(((action >= 0) & ~usable).sum()),
    }
    if not usable.any():
        raise DataContractError("decisions: no logged decision can be evaluated (see the skipped counts)")
    return LoggedDecisions(action[usable], propensity[usable], reward[usable]), usable, skipped


def evaluate_policies(
    decided: Decisions,
    decisions_table: pa.Table,
    catalog: ActionCatalog,
    truth: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> PolicyReport:
    """Off-policy estimates (and true values) of the learned, logging, random and best single-action policies.

    Args:
        decided: `decide` at each logged decision (same rows as `decisions_table`).
        decisions_table: the logged decisions (`action`, `propensity`, `converted`, `churned`).
        truth: [N, K] true P(conversion) and P(churn) of each catalog action at each decision, if known.
    """
    logged, usable, skipped = usable_log(decisions_table, catalog)
    n, k = int(usable.sum()), len(catalog.actions)
    predicted = decided.ranking.expected_value[usable]
    eligible = decided.ranking.eligible[usable]
    policies = {LEARNED: decided.probabilities[usable], RANDOM: uniform_policy(n, k, eligible)}
    policies |= {f"always {a}": constant_policy(i, n, k) for i, a in enumerate(catalog.ids)}
    report = PolicyReport(decisions=n, skipped=skipped, unsupported=unsupported_policies(logged, policies))
    for name, policy in policies.items():
        report.estimates[name] = estimate_policy_value(
            logged, policy, predicted, resamples=resamples, seed=seed
        )
    report.estimates[LOGGING] = {"on-policy": mean_estimate(logged.reward, resamples=resamples, seed=seed)}
    singles = [name for name in policies if name.startswith("always ")]
    report.best_single_action = max(singles, key=lambda s: report.estimates[s]["dr"].value)
    if truth is not None:
        true_value = true_action_values(truth, catalog)[usable]
        report.true_values = {
            name: float((policy * true_value).sum(axis=1).mean()) for name, policy in policies.items()
        }
        report.true_values[ORACLE] = float(_best(true_value, eligible).mean())
        report.true_values[UNRULED_ORACLE] = float(true_value.max(axis=1).mean())
        report.true_values[LOGGING] = float(true_value[np.arange(n), logged.action].mean())
    return report


def truth_matrices(
    truth: pa.Table, logged: pa.Table, actions: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """[N, K] true P(conversion) and P(churn) of each catalog action at each logged decision, from a
    simulated world's truth table (`customer_id, as_of, action, p_conversion, p_churn`).

    Raises:
        DataContractError: the truth lacks an action or a logged decision.
    """
    frame = truth.to_pandas()
    keys = pd.MultiIndex.from_arrays(
        [logged.column("customer_id").to_pandas(), logged.column("timestamp").to_pandas()]
    )
    matrices = []
    for outcome in ("p_conversion", "p_churn"):
        table = frame.pivot_table(index=["customer_id", "as_of"], columns="action", values=outcome)
        missing = sorted(set(actions) - set(table.columns))
        if missing:
            raise DataContractError(f"truth: no true probabilities for action(s) {', '.join(missing)}")
        matrices.append(table.reindex(keys)[list(actions)].to_numpy(dtype=np.float64))
    if np.isnan(matrices[0]).any():
        raise DataContractError("truth: some logged decisions have no true probabilities")
    return matrices[0], matrices[1]


def gap_closed(report: PolicyReport) -> float:
    """Share of the random-to-oracle gap in true value that the learned policy closes."""
    values = report.true_values
    return (values[LEARNED] - values[RANDOM]) / (values[ORACLE] - values[RANDOM])


def _best(true_value: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """[N] the true value of each decision's best eligible action (0 where none is, as nothing is served)."""
    return np.where(eligible.any(axis=1), np.where(eligible, true_value, -np.inf).max(axis=1), 0.0)


def true_action_values(truth: tuple[np.ndarray, np.ndarray], catalog: ActionCatalog) -> np.ndarray:
    """[N, K] the true expected value of each catalog action at each decision, in the catalog's units:
    value · P(conversion) - churn_cost · P(churn) - cost, from the true probabilities `truth` ([N, K] each).
    """
    conversion, churn = truth
    result: np.ndarray = catalog.values * conversion - catalog.churn_cost * churn - catalog.costs
    return result


def _floats(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False))


def unsupported_policies(logged: LoggedDecisions, policies: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Policy -> why `logged` cannot value it (see `support_problem`), for the policies it cannot value."""
    problems = {name: support_problem(logged, policy) for name, policy in policies.items()}
    return {name: problem for name, problem in problems.items() if problem is not None}


def cannot_value(unsupported: Mapping[str, str]) -> list[str]:
    """One sentence per reason in `unsupported` (policy -> reason): which policies the log cannot value."""
    by_reason: dict[str, list[str]] = {}
    for policy, reason in unsupported.items():
        by_reason.setdefault(reason, []).append(policy)
    return [
        f"This log cannot value {', '.join(policies)}: {reason}, so the estimates are undefined (NaN) "
        "or biased."
        for reason, policies in by_reason.items()
    ]


@dataclass(frozen=True)
class Assessment:
    """One model on the holdout: its policy's estimated value and its calibration error of
    P(conversion | action taken)."""

    policy_value: Estimate
    calibration_error: float


@dataclass(frozen=True)
class Comparison:
    """The challenger against the champion on the same logged decisions (see `compare_models`).

    Attributes:
        difference: the challenger's value minus the champion's, paired on the same decisions.
        unsupported: "champion"/"challenger" -> why the log cannot value that model's policy.
    """

    champion: Assessment
    challenger: Assessment
    difference: Estimate
    unsupported: dict[str, str]


def compare_models(
    champion: Decisions,
    challenger: Decisions,
    decisions_table: pa.Table,
    catalog: ActionCatalog,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Two models' policies and calibration on the same logged decisions (`decide` at each of them, with
    the same catalog), and the paired difference of their values: doubly robust estimates, each policy's
    with its own model's expected values as the direct method.

    Raises:
        DataContractError: no logged decision can be evaluated.
    """
    logged, usable, _ = usable_log(decisions_table, catalog)
    models = {"champion": champion, "challenger": challenger}
    policies = {name: d.probabilities[usable] for name, d in models.items()}
    paired = estimate_paired_values(
        logged,
        (policies["challenger"], challenger.ranking.expected_value[usable]),
        (policies["champion"], champion.ranking.expected_value[usable]),
        resamples=resamples,
        seed=seed,
    )
    converted = _floats(decisions_table, "converted")[usable]
    rows = np.arange(len(logged.action))
    calibration = {
        name: expected_calibration_error(d.ranking.p_conversion[usable][rows, logged.action], converted)
        for name, d in models.items()
    }
    return Comparison(
        champion=Assessment(paired.baseline["dr"], calibration["champion"]),
        challenger=Assessment(paired.target["dr"], calibration["challenger"]),
        difference=paired.difference["dr"],
        unsupported=unsupported_policies(logged, policies),
    )


def promotion_verdict(
    comparison: Comparison, *, margin: float = 0.0, ece_tolerance: float = 0.005
) -> tuple[bool, list[str]]:
    """Whether the challenger may replace the champion, and why (or why not).

    It may when the log can value both policies, the lower end of the interval of its value minus the
    champion's (paired) is at least -`margin` (in the catalog's units per decision: 0 asks for evidence
    that it is not worse at all, a positive margin accepts a loss of up to `margin`), and its calibration
    error is not worse than the champion's by more than `ece_tolerance`.
    """
    reasons = cannot_value(comparison.unsupported)
    difference = comparison.difference
    value_ok = difference.low >= -margin  # False when the difference is undefined (NaN)
    reasons.append(
        f"policy value difference (DR, challenger - champion) {difference.value:+.4f} "
        f"[{difference.low:+.4f}, {difference.high:+.4f}]: {'not' if value_ok else 'possibly'} worse than "
        f"the champion's by more than the margin, {margin:g}"
    )
    champion, challenger = comparison.champion.calibration_error, comparison.challenger.calibration_error
    calibration_ok = challenger <= champion + ece_tolerance
    reasons.append(
        f"calibration error {challenger:.4f} {'<=' if calibration_ok else '>'} champion's "
        f"{champion:.4f} + {ece_tolerance:g}"
    )
    return not comparison.unsupported and value_ok and calibration_ok, reasons
