"""The hybrid: trees converted from scikit-learn score as it does, and a stacked scorer gives valid per-action
probabilities, round-trips through save/load and refuses trees that read another input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from nextbest.data import load_events
from nextbest.data.events import EventLog
from nextbest.journeys import requests_at_end
from nextbest.model.stacking import HeadBlend, Stacking, TreeEnsemble
from nextbest.scoring import JourneyScorer
from nextbest.simulate import SimulatedWorld, SimulationConfig, simulate
from nextbest_training.baselines import make_estimator
from nextbest_training.stacking import fit_trees, tree_features, trees_from_sklearn
from tests.unit.test_scoring import SAVED_SCORER, make_scorer


@pytest.fixture(scope="module")
def world() -> SimulatedWorld:
    return simulate(SimulationConfig(n_customers=150, seed=4))


@pytest.fixture(scope="module")
def log(world: SimulatedWorld) -> EventLog:
    return load_events(world.events)


def make_hybrid(log: EventLog, customers: pa.Table) -> JourneyScorer:
    """`make_scorer`'s network stacked with trees fitted to a noisy function of its history block."""
    scorer = make_scorer(log, customers)
    history = scorer.encoder.encode(log, requests_at_end(log), customers).static["history"]
    rng = np.random.default_rng(0)
    actions = rng.integers(-1, len(scorer.actions), len(history))
    labels = (history[:, 0] + rng.normal(size=len(history)) > np.median(history[:, 0])).astype(np.float64)
    features = tree_features(history, actions, len(scorer.actions))
    trees = fit_trees(features, {"conversion": labels, "churn": 1.0 - labels})
    blends = {
        "conversion": HeadBlend(network=0.5, trees=1.0, bias=-0.2),
        "action_conversion": HeadBlend(network=0.0, trees=1.0, bias=0.0),
    }
    return dataclasses.replace(scorer, stacking=Stacking(trees, blends, len(scorer.actions)))


@pytest.fixture(scope="module")
def hybrid(log: EventLog, world: SimulatedWorld) -> JourneyScorer:
    return make_hybrid(log, world.customers)


def test_converted_trees_give_scikit_learns_raw_scores() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2_000, 5)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] + 0.5 * rng.normal(size=len(x)) > 0).astype(np.int8)
    estimator = make_estimator("gbt").fit(x, y)
    trees = trees_from_sklearn(estimator)
    np.testing.assert_allclose(trees.logits(x), estimator.decision_function(x), atol=1e-9)
    restored = TreeEnsemble.from_dict(trees.to_dict())
    np.testing.assert_array_equal(restored.logits(x), trees.logits(x))
    assert restored.depth == trees.depth > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_action_variants_from_one_walk_equal_the_trees_on_each_one_hot(seed: int) -> None:
    """Trees whose outcome turns on the action (so many nodes split on its columns) give, per action
    variant, exactly what they give on the explicit history + one-hot rows."""
    rng = np.random.default_rng(seed)
    num_actions = 5
    history = rng.normal(size=(3_000, 4))
    actions = rng.integers(-1, num_actions, len(history))
    uplift = np.where(actions >= 0, np.array([-1.0, 0.0, 1.0, 2.0, -2.0])[actions] * history[:, 1], 0.0)
    labels = (history[:, 0] + uplift + rng.normal(size=len(history)) > 0).astype(np.int8)
    features = tree_features(history, actions, num_actions)
    trees = trees_from_sklearn(make_estimator("gbt").fit(features, labels))
    assert (trees.feature[trees.left != np.arange(trees.left.shape[1])] >= 4).sum() > 10
    rows = history[:500]
    variants = trees.action_logits(rows, num_actions)
    for taken in range(-1, num_actions):
        expected = trees.logits(tree_features(rows, np.full(len(rows), taken), num_actions))
        np.testing.assert_allclose(variants[taken + 1], expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="the trees read 9 features, got 4 \\+ 4 actions"):
        trees.action_logits(rows, num_actions - 1)


def test_the_hybrid_blends_network_and_trees_per_action(hybrid: JourneyScorer, log: EventLog) -> None:
    journeys = hybrid.encoder.encode(log, requests_at_end(log))
    assert hybrid.stacking is not None
    network = dataclasses.replace(hybrid, stacking=None).logits(journeys)
    stacked = hybrid.logits(journeys)
    history = journeys.static["history"]
    trees = hybrid.stacking.trees["conversion"]
    np.testing.assert_allclose(
        stacked["conversion"],
        0.5 * network["conversion"]
        + trees.logits(tree_features(history, np.full(len(history), -1), 4))
        - 0.2,
        rtol=1e-6,
    )
    for action in range(len(hybrid.actions)):  # each column: the trees told that this action is taken
        taken = tree_features(history, np.full(len(history), action), len(hybrid.actions))
        np.testing.assert_allclose(stacked["action_conversion"][:, action], trees.logits(taken), rtol=1e-6)
    for head in ("churn", "action_churn"):  # heads without a blend keep the network's logits
        np.testing.assert_array_equal(stacked[head], network[head])


def test_the_hybrid_gives_valid_probabilities_for_every_action(
    hybrid: JourneyScorer, log: EventLog, world: SimulatedWorld
) -> None:
    scores = hybrid.score(log, requests_at_end(log), world.customers)
    assert scores.action_p_conversion.shape == (len(scores), len(hybrid.actions))
    for name in ("p_conversion", "p_churn", "action_p_conversion", "action_p_churn"):
        values = getattr(scores, name)
        assert np.isfinite(values).all()
        assert ((values >= 0) & (values <= 1)).all(), name
    assert hybrid.logits(hybrid.encoder.encode(log, requests_at_end(log).slice(0, 0)))[
        "action_churn"
    ].shape == (
        0,
        len(hybrid.actions),
    )


def test_a_saved_hybrid_loads_with_its_trees_and_blends(
    hybrid: JourneyScorer, log: EventLog, world: SimulatedWorld, tmp_path: Path
) -> None:
    requests = requests_at_end(log)
    restored = JourneyScorer.load(hybrid.save(tmp_path / "scorer"))
    assert restored.stacking is not None
    assert hybrid.stacking is not None
    assert restored.stacking.blends == hybrid.stacking.blends
    before, after = (
        hybrid.score(log, requests, world.customers),
        restored.score(log, requests, world.customers),
    )
    np.testing.assert_array_equal(after.action_p_conversion, before.action_p_conversion)
    np.testing.assert_array_equal(after.p_churn, before.p_churn)


def test_a_scorer_saved_before_the_hybrid_loads_as_the_network_alone() -> None:
    assert JourneyScorer.load(SAVED_SCORER).stacking is None


def test_trees_that_read_another_input_are_refused(hybrid: JourneyScorer) -> None:
    leaf = np.zeros((1, 1), np.intp)
    trees = TreeEnsemble(0.0, leaf, np.zeros((1, 1)), leaf, leaf, np.zeros((1, 1)), num_features=3)
    stacking = Stacking({"conversion": trees}, {}, len(hybrid.actions))
    with pytest.raises(ValueError, match=r"stacking.trees\['conversion'\] reads 3 features"):
        dataclasses.replace(hybrid, stacking=stacking)
