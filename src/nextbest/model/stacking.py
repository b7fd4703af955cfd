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
        flat["split"] = (self.left != np.arange(nodes)).ravel()
        object.__setattr__(self, "_flat", flat)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """[N] raw scores of `features` [N, F] (finite values: the encoder never gives NaN)."""
        if features.shape[1] != self.num_features:
            raise ValueError(f"the trees read {self.num_features} features, got {features.shape[1]}")
        leaves, _ = self._walk(features, watch=None)
        return self.baseline + self._flat["value"].take(leaves).sum(axis=1)  # [N]

    def action_logits(self, history: np.ndarray, num_actions: int) -> np.ndarray:
        """[A+1, N] raw scores of each `history` row [N, H] followed by an action one-hot: all zeros (no
        action) in row 0, action k in row k + 1; what `logits` gives for those A+1 inputs, from one walk per
        history row and tree. A variant's walk leaves the no-action walk only at a node that splits on its
        own action's column where 1 and 0 part ways, which few nodes do; only those walks are continued
        apart, so the cost grows with the trees' action splits rather than with A."""
        n, width = history.shape
        if width + num_actions != self.num_features:
            raise ValueError(
                f"the trees read {self.num_features} features, got {width} + {num_actions} actions"
            )
        flat = self._flat
        action = flat["feature"] - width
        parts = flat["split"] & (action >= 0) & (flat["threshold"] >= 0) & (flat["threshold"] < 1)
        no_action = np.hstack([history, np.zeros((n, num_actions), history.dtype)])
        leaves, (walk, node) = self._walk(no_action, watch=parts)
        base = flat["value"].take(leaves)  # [N, T] each tree's leaf value with no action
        logits = np.broadcast_to(self.baseline + base.sum(axis=1), (num_actions + 1, n)).copy()
        # A walk's first node on each action's column (the walk visits them in step order).
        taken = action.take(node)
        _, first = np.unique(walk * num_actions + taken, return_index=True)
        walk, node, taken = walk[first], node[first], taken[first]
        row = walk // leaves.shape[1]
        parted = self._walk_on(flat["children"].take(2 * node), history, row, taken)  # right: 1 > threshold
        np.add.at(logits, (taken + 1, row), flat["value"].take(parted) - base.ravel().take(walk))
        return logits

    def _walk(
        self, features: np.ndarray, watch: np.ndarray | None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """The leaf [N, T] of every row's walk down every tree, and the walks (flat row · T + tree) that
        pass a node where `watch` (over flat node ids) holds, with that node, in step order."""
        flat = self._flat
        feature, threshold, children = flat["feature"], flat["threshold"], flat["children"]
        values = np.ascontiguousarray(features, dtype=np.float64).ravel()  # [N·F]
        row_start = (np.arange(len(features)) * features.shape[1])[:, None]  # [N, 1]
        node = np.broadcast_to(flat["roots"], (len(features), len(flat["roots"])))  # [N, T]
        walks, nodes = [], []
        for _ in range(self.depth):
            if watch is not None:
                at = np.flatnonzero(watch.take(node))
                walks.append(at)
                nodes.append(node.ravel().take(at))
            go_left = values.take(row_start + feature.take(node)) <= threshold.take(node)  # [N, T]
            node = children.take(2 * node + go_left)  # [N, T]
        empty = np.zeros(0, np.intp)
        return node, (np.concatenate([empty, *walks]), np.concatenate([empty, *nodes]))

    def _walk_on(
        self, node: np.ndarray, history: np.ndarray, row: np.ndarray, action: np.ndarray
    ) -> np.ndarray:
        """The leaves reached from `node` [W] by walks of `history` rows `row` [W], each with its `action`
        [W] taken (its one-hot column 1, the others 0)."""
        flat = self._flat
        feature, threshold, children = flat["feature"], flat["threshold"], flat["children"]
        values = np.ascontiguousarray(history, dtype=np.float64).ravel()
        width = history.shape[1]
        while flat["split"].take(node).any():  # they start part-way down: most end in a step or two
            column = feature.take(node)
            in_history = column < width
            x = np.where(
                in_history,
                values.take(row * width + np.where(in_history, column, 0)),
                column - width == action,
            )
            node = children.take(2 * node + (x <= threshold.take(node)))
        return node

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
        action, [N, A] for the per-action heads (each action as if it were taken: `action_logits`)."""
        logits: dict[str, np.ndarray] = {}
        for outcome, trees in self.trees.items():
            variants = trees.action_logits(history, self.num_actions)  # [A+1, N]
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
