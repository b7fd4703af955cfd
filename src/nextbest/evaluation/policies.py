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
    estimate_policy_value,
    mean_estimate,
    uniform_policy,
)
from nextbest.scoring.decide import Decisions

LEARNED, LOGGING, RANDOM = "learned", "logging", "random"
ORACLE, UNRULED_ORACLE = "oracle", "oracle ignoring rules"


@dataclass
class PolicyReport:
    """Per policy, its off-policy estimates and (when known) its true value per decision."""

    decisions: int
    skipped: dict[str, int]
    estimates: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    true_values: dict[str, float] = field(default_factory=dict)
    best_single_action: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "skipped": self.skipped,
            "best_single_action": self.best_single_action,
            "estimates": {p: {k: e.to_dict() for k, e in v.items()} for p, v in self.estimates.items()},
            "true_values": self.true_values,
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


def learned_policy_value(
    decided: Decisions,
    decisions_table: pa.Table,
    catalog: ActionCatalog,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> Estimate:
    """The doubly robust estimate of the learned policy's value alone (what promotion compares)."""
    logged, usable, _ = usable_log(decisions_table, catalog)
    predicted = decided.ranking.expected_value[usable]
    policy = decided.probabilities[usable]
    return estimate_policy_value(logged, policy, predicted, resamples=resamples, seed=seed)["dr"]


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
    report = PolicyReport(decisions=n, skipped=skipped)
    for name, policy in policies.items():
        report.estimates[name] = estimate_policy_value(
            logged, policy, predicted, resamples=resamples, seed=seed
        )
    report.estimates[LOGGING] = {"on-policy": mean_estimate(logged.reward, resamples=resamples, seed=seed)}
    singles = [name for name in policies if name.startswith("always ")]
    report.best_single_action = max(singles, key=lambda s: report.estimates[s]["dr"].value)
    if truth is not None:
        true_value = _true_values(truth, catalog, usable)
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


def _true_values(
    truth: tuple[np.ndarray, np.ndarray], catalog: ActionCatalog, rows: np.ndarray
) -> np.ndarray:
    conversion, churn = truth
    return (catalog.values * conversion - catalog.churn_cost * churn - catalog.costs)[rows]


def _floats(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False))


@dataclass(frozen=True)
class Assessment:
    """What promotion compares for one model on a holdout: its policy value and its calibration."""

    version: str
    policy_value: Estimate
    ece: float


def promotion_verdict(
    champion: Assessment, challenger: Assessment, ece_tolerance: float = 0.005
) -> tuple[bool, list[str]]:
    """Whether the challenger may replace the champion, and why (or why not).

    It may when its policy value's lower confidence bound is not below the champion's, and its expected
    calibration error is not worse than the champion's by more than `ece_tolerance`.
    """
    reasons = []
    value_ok = challenger.policy_value.low >= champion.policy_value.low
    reasons.append(
        f"policy value lower bound {challenger.policy_value.low:.4f} "
        f"{'>=' if value_ok else '<'} champion's {champion.policy_value.low:.4f}"
    )
    calibration_ok = challenger.ece <= champion.ece + ece_tolerance
    reasons.append(
        f"calibration error {challenger.ece:.4f} {'<=' if calibration_ok else '>'} champion's "
        f"{champion.ece:.4f} + {ece_tolerance:g}"
    )
    return value_ok and calibration_ok, reasons
