"""The promotion gate on simulated worlds whose truth is known (the simulator's truth table).

The models here are the truth seen through noise on the logit scale, ranked by the real catalog ranking:
the test sets their faults, and each policy's true value per decision is read off the truth, so whether
the gate promoted the better policy is known.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

from nextbest.decisioning.catalog import ActionCatalog
from nextbest.decisioning.expressions import RuleColumns
from nextbest.decisioning.policy import rank, serving_probabilities
from nextbest.evaluation.policies import compare_models, promotion_verdict, truth_matrices
from nextbest.scoring.decide import Decisions
from nextbest.scoring.scorer import Scores
from nextbest.simulate import SimulationConfig, simulate

# The demo catalog's values and costs, without its rules: the models alone make the difference.
CATALOG = ActionCatalog.from_dict(
    {
        "churn_cost": 15.0,
        "actions": [
            {"id": "email_offer", "value": 40.0, "cost": 0.2},
            {"id": "discount_10", "value": 36.0, "cost": 0.2},
            {"id": "call_back", "value": 40.0, "cost": 4.0},
            {"id": "push_notification", "value": 40.0, "cost": 0.05},
            {"id": "sms_reminder", "value": 40.0, "cost": 0.1},
            {"id": "no_action", "value": 40.0},
        ],
    }
)


@dataclass(frozen=True)
class World:
    decisions: pa.Table
    conversion: np.ndarray  # [N, K] true P(conversion | action) at each logged decision
    churn: np.ndarray  # [N, K]

    def true_value(self, decided: Decisions) -> float:
        """The policy's true value per decision, in the catalog's units."""
        values = CATALOG.expected_values(self.conversion, self.churn)
        return float((decided.probabilities * values).sum(axis=1).mean())


@functools.cache
def world(customers: int, seed: int) -> World:
    simulated = simulate(SimulationConfig(n_customers=customers, seed=seed))
    conversion, churn = truth_matrices(simulated.truth, simulated.decisions, CATALOG.ids)
    return World(simulated.decisions, conversion, churn)


def model(
    world: World, seed: int, *, miscalibration: float = 0.0, overrated: str | None = None, by: float = 0.0
) -> Decisions:
    """The decisions of a model that sees the true logits through independent noise (sd 0.3).

    `miscalibration` shifts every action's conversion logit by one draw per decision (sd as given): the
    ranking barely changes, the probabilities are off. `overrated` gets `by` added to its conversion logit
    everywhere: a systematic error that serves it too often.
    """
    rng = np.random.default_rng(seed)
    n, k = world.conversion.shape
    shift = rng.normal(0.0, miscalibration, (n, 1)) + np.where(np.array(CATALOG.ids) == overrated, by, 0.0)
    conversion = _expit(_logit(world.conversion) + rng.normal(0.0, 0.3, (n, k)) + shift)
    churn = _expit(_logit(world.churn) + rng.normal(0.0, 0.3, (n, k)))
    baseline = CATALOG.ids.index("no_action")
    ranking = rank(
        CATALOG,
        CATALOG.ids,
        conversion,
        churn,
        conversion[:, baseline],
        churn[:, baseline],
        RuleColumns(n, {}, {}, {}),
    )
    scores = Scores(
        pa.array([str(i) for i in range(n)]),
        np.zeros(n, dtype=np.int64),
        conversion[:, baseline],
        churn[:, baseline],
        conversion,
        churn,
    )
    no_control = np.zeros(len(ranking.top), dtype=bool)
    probabilities = serving_probabilities(ranking, CATALOG.exploration, no_control)
    return Decisions(scores, ranking, probabilities, ranking.top, no_control)


def promoted(world: World, champion: Decisions, challenger: Decisions) -> bool:
    comparison = compare_models(champion, challenger, world.decisions, CATALOG, resamples=400)
    return promotion_verdict(comparison)[0]


@pytest.mark.slow
def test_a_worse_but_better_calibrated_challenger_is_rarely_promoted() -> None:
    """The champion ranks well but its probabilities are off, so its estimate varies more; the challenger
    is calibrated but serves e-mail offers too often. Its true value is lower in every world (by about
    0.4 of 3 per decision), yet comparing the lower ends of the two separate intervals promoted it in 3
    of these 10 worlds; the paired difference's interval promotes it in none."""
    promotions = 0
    for seed in range(10):
        truth = world(1_500, seed)
        champion = model(truth, 100 + seed, miscalibration=1.5)
        challenger = model(truth, 200 + seed, overrated="email_offer", by=1.0)
        assert truth.true_value(challenger) < truth.true_value(champion) - 0.3
        promotions += promoted(truth, champion, challenger)
    assert promotions <= 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_clearly_better_challenger_is_promoted_and_a_clearly_worse_one_is_not(seed: int) -> None:
    truth = world(6_000, seed)
    good = model(truth, 100 + seed)
    bad = model(truth, 100 + seed, overrated="call_back", by=2.0)  # calls nearly everyone, at 4 a call
    assert truth.true_value(good) > truth.true_value(bad) + 2.0
    assert promoted(truth, champion=bad, challenger=good)
    assert not promoted(truth, champion=good, challenger=bad)


def test_a_challenger_that_decides_as_the_champion_does_is_promoted() -> None:
    """A retrained model that serves the same actions is not worse: the paired difference is exactly 0."""
    truth = world(1_500, 0)
    comparison = compare_models(model(truth, 1), model(truth, 1), truth.decisions, CATALOG, resamples=50)
    assert (comparison.difference.low, comparison.difference.high) == (0.0, 0.0)
    assert promotion_verdict(comparison)[0]


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
