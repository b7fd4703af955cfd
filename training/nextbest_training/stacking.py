"""Fitting the hybrid (`nextbest.model.stacking`): trees on the training split, blends on validation.

scikit-learn fits both; the scorer keeps only their numbers (`TreeEnsemble`, `HeadBlend`), so serving and
batch scoring never import it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from nextbest.model.stacking import HeadBlend, TreeEnsemble
from nextbest_training.baselines import make_estimator

# The blend has three parameters fitted on thousands of rows: next to no regularisation is needed.
BLEND_C = 1e4


def tree_features(history: np.ndarray, decision_action: np.ndarray, num_actions: int) -> np.ndarray:
    """[N, H + A] the trees' input: each request's history block and the action taken, one-hot (all zeros
    for no action), the layout `Stacking.tree_logits` scores."""
    one_hot = (decision_action[:, None] == np.arange(num_actions)[None, :]).astype(history.dtype)
    return np.hstack([history, one_hot])


def fit_trees(
    features: np.ndarray,
    labels: Mapping[str, np.ndarray],
    random_state: int = 0,
    n_threads: int | None = None,
) -> dict[str, TreeEnsemble]:
    """The tree baseline's gradient-boosted trees (`make_estimator("gbt")`) per outcome, on the rows whose
    label is known; outcomes without both classes get none."""
    trees = {}
    for outcome, values in labels.items():
        known = ~np.isnan(values)
        if len(np.unique(values[known])) < 2:
            continue
        estimator = make_estimator("gbt", random_state)
        with threadpool_limits(limits=n_threads):
            estimator.fit(features[known], values[known].astype(np.int8))
        trees[outcome] = trees_from_sklearn(estimator)
    return trees


def trees_from_sklearn(estimator: HistGradientBoostingClassifier) -> TreeEnsemble:
    """The arrays of a fitted binary `HistGradientBoostingClassifier` (numeric features, no categorical
    ones): the same raw scores as its `decision_function`."""
    predictors = [iteration[0] for iteration in estimator._predictors]  # one tree per iteration
    nodes = [predictor.nodes for predictor in predictors]
    width = max(len(n) for n in nodes)
    own = np.broadcast_to(np.arange(width), (len(nodes), width))
    arrays = {
        "feature": np.zeros((len(nodes), width), np.intp),
        "threshold": np.zeros((len(nodes), width)),
        "left": own.copy(),
        "right": own.copy(),
        "value": np.zeros((len(nodes), width)),
    }
    for t, tree in enumerate(nodes):
        splits = np.flatnonzero(~tree["is_leaf"].astype(bool))
        leaves = np.flatnonzero(tree["is_leaf"].astype(bool))
        arrays["feature"][t, splits] = tree["feature_idx"][splits]
        arrays["threshold"][t, splits] = tree["num_threshold"][splits]
        arrays["left"][t, splits] = tree["left"][splits]
        arrays["right"][t, splits] = tree["right"][splits]
        arrays["value"][t, leaves] = tree["value"][leaves]
    baseline = float(np.ravel(estimator._baseline_prediction)[0])
    return TreeEnsemble(baseline=baseline, num_features=int(estimator.n_features_in_), **arrays)


def fit_blend(network: np.ndarray, trees: np.ndarray, labels: np.ndarray) -> HeadBlend:
    """The logistic regression of `labels` (NaN: unknown, left out) on the two logits."""
    known = ~np.isnan(labels)
    x = np.stack([network[known], trees[known]], axis=1).astype(np.float64)
    model = LogisticRegression(C=BLEND_C, max_iter=1_000).fit(x, labels[known].astype(np.int8))
    return HeadBlend(
        network=float(model.coef_[0, 0]), trees=float(model.coef_[0, 1]), bias=float(model.intercept_[0])
    )
