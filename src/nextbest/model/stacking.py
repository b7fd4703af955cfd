"""The hybrid: the journey network stacked with gradient-boosted trees on the engineered history aggregates.

Per outcome, trees read a request's `history` block (the encoder's history features and scaled aggregates)
and the action taken (one-hot; all zeros for no action), as the tree baseline does; per head, a logistic
regression on the network's logit and the trees' logit, fitted on validation rows that neither model was
fitted on, gives the hybrid's logit. The trees are plain arrays evaluated in numpy, so scoring needs no
scikit-learn (training converts the fitted classifier, see `nextbest_training.stacking`) and the model
still saves as JSON and tensors, with nothing pickled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nextbest.model.heads import HEADS

# The node arrays of `TreeEnsemble`, with the dtype each is scored in.
ARRAYS = {"feature": np.intp, "threshold": np.float64, "left": np.intp, "right": np.intp, "value": np.float64}


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    """Binary gradient-boosted trees as arrays: logit = `baseline` + the sum of each tree's leaf value.

    Node arrays are [T, M]: T trees, each padded to the M nodes of the largest; node 0 is the root. A split
    node sends a row left when its feature value is <= the threshold; a leaf (and padding) is its own child
    both ways, so `depth` steps from the root land every row on its leaf.

    Attributes:
        baseline: the raw score before any tree (the prior's log-odds, for boosting).
        feature: [T, M] int, the feature a node splits on (0 at leaves).
        threshold: [T, M] float, the split threshold (unused at leaves).
        left, right: [T, M] int, the children of each node.
        value: [T, M] float, each leaf's contribution to the logit (0 elsewhere).
        num_features: width of the input rows.
        depth: the deepest leaf's distance from its root (derived from `left` and `right`).
    """

    baseline: float
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    num_features: int
    depth: int = field(init=False)
    _flat: dict[str, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        shape = self.feature.shape
        for name in ("threshold", "left", "right", "value"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"TreeEnsemble.{name} has shape {getattr(self, name).shape}, not {shape}")
        object.__setattr__(self, "depth", _depth(self.left, self.right))
        trees, nodes = shape
        roots = np.arange(trees) * nodes  # [T]
        # Flat node ids (tree · M + node), with the children of node k at 2k (right) and 2k + 1 (left): each
        # step of `logits` is then a few `np.take`s over all N·T walks, whatever the trees' shapes.
        children = np.stack([self.right, self.left], axis=-1) + roots[:, None, None]  # [T, M, 2]
        flat = {"roots": roots, "children": children.ravel()}
        flat.update({name: getattr(self, name).ravel() for name in ("feature", "threshold", "value")})
        object.__setattr__(self, "_flat", flat)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """[N] raw scores of `features` [N, F] (finite values: the encoder never gives NaN)."""
        if features.shape[1] != self.num_features:
            raise ValueError(f"the trees read {self.num_features} features, got {features.shape[1]}")
        flat = self._flat
        feature, threshold, children = flat["feature"], flat["threshold"], flat["children"]
        values = np.ascontiguousarray(features, dtype=np.float64).ravel()  # [N·F]
        row_start = (np.arange(len(features)) * self.num_features)[:, None]  # [N, 1]
        node = np.broadcast_to(flat["roots"], (len(features), len(flat["roots"])))  # [N, T]
        for _ in range(self.depth):
            go_left = values.take(row_start + feature.take(node)) <= threshold.take(node)  # [N, T]
            node = children.take(2 * node + go_left)  # [N, T]
        return self.baseline + flat["value"].take(node).sum(axis=1)  # [N]

    def to_dict(self) -> dict[str, Any]:
        arrays = {name: getattr(self, name).tolist() for name in ARRAYS}
        return {"baseline": self.baseline, "num_features": self.num_features, **arrays}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TreeEnsemble:
        arrays = {name: np.asarray(data[name], dtype=dtype) for name, dtype in ARRAYS.items()}
        return cls(baseline=float(data["baseline"]), num_features=int(data["num_features"]), **arrays)


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    """Steps from the roots of the [T, M] child arrays until every walk has reached its leaf."""
    splits = left != np.arange(left.shape[1])  # [T, M]; leaves and padding are their own children
    reached = np.zeros_like(splits)
    reached[:, 0] = True
    depth = 0
    while (reached & splits).any():
        tree, node = np.nonzero(reached & splits)
        reached = np.zeros_like(splits)
        reached[tree, left[tree, node]] = True
        reached[tree, right[tree, node]] = True
        depth += 1
    return depth


@dataclass(frozen=True)
class HeadBlend:
    """One head's hybrid logit: `network` · network logit + `trees` · trees logit + `bias`."""

    network: float = 1.0
    trees: float = 0.0
    bias: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {"network": self.network, "trees": self.trees, "bias": self.bias}


@dataclass(frozen=True)
class Stacking:
    """Trees per outcome and a blend per head; `combine` turns the network's logits into the hybrid's.

    Attributes:
        trees: per outcome (`nextbest.model.OUTCOMES`), the trees; an outcome without them (no labels to
            fit on) keeps the network's logits.
        blends: per head name, the blend of the two logits; a head without one keeps the network's logit.
        num_actions: the width of the action one-hot that follows the history block in the trees' input.
    """

    trees: dict[str, TreeEnsemble]
    blends: dict[str, HeadBlend]
    num_actions: int

    def tree_logits(self, history: np.ndarray) -> dict[str, np.ndarray]:
        """The trees' logits per head (by name) for requests with `history` blocks [N, H]: [N] with no
        action, [N, A] for the per-action heads (one tree pass per action, as if it were taken)."""
        n, a = len(history), self.num_actions
        # Row block 0 takes no action, block k + 1 action k: every variant in one pass over the trees.
        one_hot = np.repeat(np.eye(a + 1, a, k=-1, dtype=history.dtype), n, axis=0)  # [(A+1)·N, A]
        features = np.hstack([np.tile(history, (a + 1, 1)), one_hot])  # [(A+1)·N, H + A]
        logits: dict[str, np.ndarray] = {}
        for outcome, trees in self.trees.items():
            variants = trees.logits(features).reshape(a + 1, n)  # [A+1, N]
            for head in HEADS:
                if head.outcome == outcome:
                    logits[head.name] = variants[1:].T if head.per_action else variants[0]
        return logits

    def combine(self, network_logits: Mapping[str, np.ndarray], history: np.ndarray) -> dict[str, np.ndarray]:
        """The hybrid's logits per head from the network's (same shapes) and the requests' `history`."""
        trees = self.tree_logits(history)
        combined = dict(network_logits)
        for head, blend in self.blends.items():
            if head in trees:
                combined[head] = blend.network * network_logits[head] + blend.trees * trees[head] + blend.bias
        return combined

    def to_dict(self) -> dict[str, Any]:
        return {
            "trees": {outcome: trees.to_dict() for outcome, trees in self.trees.items()},
            "blends": {head: blend.to_dict() for head, blend in self.blends.items()},
            "num_actions": self.num_actions,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stacking:
        return cls(
            trees={outcome: TreeEnsemble.from_dict(t) for outcome, t in data["trees"].items()},
            blends={head: HeadBlend(**blend) for head, blend in data["blends"].items()},
            num_actions=int(data["num_actions"]),
        )
