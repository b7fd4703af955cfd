"""Engineered-feature baselines: history aggregates + a scikit-learn classifier, one per outcome.

They are the bar a sequence model has to clear: `AggregateFeaturizer` turns each request's history
before `as_of` into RFM, token count/share, first/last-touch, gap and recency features; a logistic
regression or gradient-boosted trees then predict each outcome (conversion, churn). At decisions, the
action taken is one more (one-hot) feature, so the baseline is action-conditional too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from nextbest.data.events import EventLog
from nextbest.journeys.aggregates import AggregateFeaturizer, signed_log1p

BaselineKind = Literal["logistic", "gbt"]
KINDS: tuple[BaselineKind, ...] = get_args(BaselineKind)


def make_estimator(kind: BaselineKind, random_state: int = 0) -> Pipeline | HistGradientBoostingClassifier:
    """An unfitted classifier of the given kind.

    Args:
        kind: "logistic": signed log1p, standardisation and L2 logistic regression; "gbt": histogram
            gradient-boosted trees that stop when the loss on an internal 10% validation split has not
            improved for 20 iterations.
        random_state: seed of the validation split and of the tree binning subsample.
    """
    if kind == "logistic":
        # Scaled features keep lbfgs well conditioned, so it converges well within max_iter.
        return make_pipeline(
            FunctionTransformer(signed_log1p),
            StandardScaler(),
            LogisticRegression(C=1.0, max_iter=5_000),
        )
    if kind == "gbt":
        return HistGradientBoostingClassifier(
            learning_rate=0.1,
            max_iter=500,
            max_leaf_nodes=31,
            min_samples_leaf=20,
            l2_regularization=1.0,
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=20,
            random_state=random_state,
        )
    raise ValueError(f"unknown baseline kind {kind!r}; expected one of {', '.join(KINDS)}")


class BaselineModel:
    """History aggregates and one classifier per outcome, fitted on (customer, as_of) requests.

    Args:
        kind: the classifier family, see `make_estimator`.
        max_tokens: the most frequent tokens per column that get count, share and touch features.
        window_days: per window, each such token's count in the last that many days (none by default).
        random_state: seed of the classifiers.
        n_threads: native (OpenMP, BLAS) threads while fitting and predicting; None leaves the
            libraries' default (every core). On small fits, or on a machine shared with other jobs,
            one thread is often faster: the trees synchronise their threads at every iteration.

    Attributes:
        kind: the classifier family ("logistic" or "gbt").
        featurizer: the fitted featurizer (None before `fit`).
        estimators: the fitted classifier of each outcome that had both classes among its known labels.
        skipped: outcomes left without a model, with the reason.
    """

    def __init__(
        self,
        kind: BaselineKind = "gbt",
        *,
        max_tokens: int = 50,
        window_days: Sequence[int] = (),
        random_state: int = 0,
        n_threads: int | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown baseline kind {kind!r}; expected one of {', '.join(KINDS)}")
        self.kind = kind
        self.max_tokens = max_tokens
        self.window_days = tuple(window_days)
        self.random_state = random_state
        self.n_threads = n_threads
        self.featurizer: AggregateFeaturizer | None = None
        self.num_actions = 0
        self.estimators: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}

    @property
    def outcomes(self) -> tuple[str, ...]:
        """The outcomes with a fitted model, in fitting order."""
        return tuple(self.estimators)

    def fit(
        self,
        log: EventLog,
        customer_index: np.ndarray,
        as_of: np.ndarray,
        labels: Mapping[str, np.ndarray],
        actions: np.ndarray | None = None,
        num_actions: int = 0,
    ) -> BaselineModel:
        """Fit the featurizer's vocabularies on `log`, then one classifier per outcome.

        Args:
            log: the event log the features come from (events strictly before each `as_of`).
            customer_index: per request, the customer's index in `log` (-1: no events).
            as_of: per request, the cutoff (int64 µs since the Unix epoch).
            labels: per outcome, 0/1 labels per request, NaN where unknown (left out of that fit).
            actions: per request, the index of the action taken (-1: none); None: no actions.
            num_actions: how many actions there are (the width of the action one-hot).

        Returns:
            self. Outcomes without both classes among their known labels get no model (see `skipped`).
        """
        self.featurizer = AggregateFeaturizer.fit(
            log, max_tokens=self.max_tokens, window_days=self.window_days
        )
        self.num_actions = num_actions
        features = self._features(log, customer_index, as_of, actions)
        self.estimators, self.skipped = {}, {}
        for outcome, values in labels.items():
            y = np.asarray(values, dtype=np.float64)
            if y.shape != (len(features),):
                raise ValueError(f"{outcome}: labels of shape {y.shape} for {len(features)} requests")
            known = ~np.isnan(y)
            classes = np.unique(y[known])
            if len(classes) < 2:
                self.skipped[outcome] = f"known labels hold {len(classes)} class(es), a classifier needs 2"
                continue
            estimator = make_estimator(self.kind, self.random_state)
            with threadpool_limits(limits=self.n_threads):
                self.estimators[outcome] = estimator.fit(features[known], y[known].astype(np.int8))
        return self

    def predict_proba(
        self, log: EventLog, customer_index: np.ndarray, as_of: np.ndarray, actions: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Probability of each fitted outcome per request (float64), from events strictly before `as_of`
        (and the action taken, see `fit`)."""
        features = self._features(log, customer_index, as_of, actions)
        if len(features) == 0:
            # scikit-learn rejects an empty batch; the answer to no requests is no probabilities.
            return {outcome: np.zeros(0) for outcome in self.estimators}
        with threadpool_limits(limits=self.n_threads):
            return {
                outcome: np.asarray(estimator.predict_proba(features)[:, 1], dtype=np.float64)
                for outcome, estimator in self.estimators.items()
            }

    def _features(
        self, log: EventLog, customer_index: np.ndarray, as_of: np.ndarray, actions: np.ndarray | None
    ) -> np.ndarray:
        if self.featurizer is None:
            raise RuntimeError("BaselineModel used before fit")
        features, _ = self.featurizer.transform(log, customer_index, as_of)
        if not self.num_actions:
            return features
        taken = np.full(len(features), -1) if actions is None else np.asarray(actions)
        one_hot = (taken[:, None] == np.arange(self.num_actions)[None, :]).astype(features.dtype)
        return np.hstack([features, one_hot])
