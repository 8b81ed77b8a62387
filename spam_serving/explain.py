"""Per-prediction explanations: Saabas path attributions of the boosted trees, in numpy.

Why not ``Booster.predict(pred_contribs=True)``: measured on this model (370 trees, 3,063
features) it costs ~0.9 ms per row (exact TreeSHAP) or ~0.8 ms (``approx_contribs``), more than
parsing + featurizing + the ONNX call together, and importing xgboost adds ~180 MB RSS to every
serving worker. The same attribution XGBoost calls ``approx_contribs`` (each split on the
decision path credits its feature with the change in the node's expected value) is a handful of
vectorised array lookups once the trees are flattened, so the serving path stays lean; the
attributions sum exactly to the model's margin, which the tests check against XGBoost itself.

The tables are built from XGBoost's JSON model at export time and stored in the bundle as
``explainer.npz``. For the ensemble model (trees + a linear second stage over the trees'
margin, the char n-gram logit and the signs; one stage per door), :class:`EnsembleExplainer`
scales the trees' attributions by the row's stage's tree weight and adds each stacking-block
column's weight times its value: the sum is still the model's logit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class TreeExplainer:
    """Flattened tree ensemble: ``[n_trees, max_nodes]`` tables walked level by level.

    The walk indexes flat (1-D) copies of the tables with global node ids (``tree * width +
    node``): one ``take`` per lookup instead of 2-D fancy indexing with broadcast index arrays,
    which costs several times more per call for the one-row case that serving is."""

    def __init__(
        self,
        feature: np.ndarray,
        threshold: np.ndarray,
        left: np.ndarray,
        right: np.ndarray,
        default_left: np.ndarray,
        mean_value: np.ndarray,
        bias: float,
        max_depth: int,
    ) -> None:
        self.feature = feature
        self.threshold = threshold
        self.left = left
        self.right = right
        self.default_left = default_left
        self.mean_value = mean_value
        self.bias = float(bias)
        self.max_depth = int(max_depth)
        n_trees, width = feature.shape
        base = np.arange(n_trees, dtype=np.intp)[:, None] * width
        self._roots = base[:, 0]
        self._feature = feature.astype(np.intp).ravel()
        self._threshold = threshold.ravel()
        self._left = (left + base).ravel()
        self._right = (right + base).ravel()
        self._default_left = default_left.ravel()
        self._mean = mean_value.ravel()

    @classmethod
    def from_xgboost_json(cls, model_json: bytes | str) -> TreeExplainer:
        """Build from ``Booster.save_raw("json")`` (binary:logistic gbtree, numeric splits)."""
        learner = json.loads(model_json)["learner"]
        objective = learner["objective"]["name"]
        if objective != "binary:logistic":
            raise ValueError(f"explainer supports binary:logistic, not {objective}")
        base_score = float(str(learner["learner_model_param"]["base_score"]).strip("[]"))
        trees = learner["gradient_booster"]["model"]["trees"]
        width = max(len(t["left_children"]) for t in trees)
        n = len(trees)
        feature = np.zeros((n, width), dtype=np.int32)
        threshold = np.zeros((n, width), dtype=np.float32)
        left = np.full((n, width), -1, dtype=np.int32)
        right = np.full((n, width), -1, dtype=np.int32)
        default_left = np.zeros((n, width), dtype=bool)
        mean_value = np.zeros((n, width), dtype=np.float64)
        max_depth = 0
        for i, tree in enumerate(trees):
            lc = np.asarray(tree["left_children"], dtype=np.int32)
            rc = np.asarray(tree["right_children"], dtype=np.int32)
            cond = np.asarray(tree["split_conditions"], dtype=np.float64)
            cover = np.asarray(tree["sum_hessian"], dtype=np.float64)
            k = len(lc)
            feature[i, :k] = tree["split_indices"]
            threshold[i, :k] = cond
            left[i, :k] = lc
            right[i, :k] = rc
            default_left[i, :k] = np.asarray(tree["default_left"], dtype=bool)
            means, depth = _node_means(lc, rc, cond, cover)
            mean_value[i, :k] = means
            max_depth = max(max_depth, depth)
        # Leaves point to themselves so a fixed number of steps is safe for shallower paths.
        idx = np.arange(width, dtype=np.int32)[None, :].repeat(n, axis=0)
        leaf = left < 0
        left = np.where(leaf, idx, left)
        right = np.where(leaf, idx, right)
        margin_base = float(np.log(base_score / (1.0 - base_score)))
        bias = margin_base + float(mean_value[:, 0].sum())
        return cls(feature, threshold, left, right, default_left, mean_value, bias, max_depth)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """``[N, n_features]`` margin attributions; ``bias + row.sum()`` is the row's margin."""
        x = np.asarray(x, dtype=np.float32)
        n_rows, n_features = x.shape
        x_flat = x.ravel()
        has_nan = bool(np.isnan(x_flat).any())
        row_offset = np.arange(n_rows, dtype=np.intp)[:, None] * n_features
        node = np.broadcast_to(self._roots, (n_rows, len(self._roots)))
        mean = self._mean
        flat_parts, delta_parts = [], []
        for _ in range(self.max_depth):
            cell = row_offset + self._feature.take(node)
            value = x_flat.take(cell)
            go_left = value < self._threshold.take(node)
            if has_nan:  # missing values follow the split's default direction, as in XGBoost
                go_left = np.where(np.isnan(value), self._default_left.take(node), go_left)
            child = np.where(go_left, self._left.take(node), self._right.take(node))
            delta = mean.take(child) - mean.take(node)
            moved = child != node
            flat_parts.append(cell[moved])
            delta_parts.append(delta[moved])
            node = child
        if not flat_parts:
            return np.zeros((n_rows, n_features))
        sums = np.bincount(
            np.concatenate(flat_parts),
            weights=np.concatenate(delta_parts),
            minlength=n_rows * n_features,
        )
        return sums.reshape(n_rows, n_features)

    def top_features(
        self, x: np.ndarray, names: list[str], k: int
    ) -> list[list[dict[str, float | str]]]:
        """The ``k`` largest absolute attributions per row, largest first."""
        contrib = self.contributions(x)
        result = []
        for r in range(contrib.shape[0]):
            row = contrib[r]
            nz = np.flatnonzero(row)
            order = nz[np.argsort(-np.abs(row[nz]), kind="stable")][:k]
            result.append(
                [
                    {
                        "feature": names[j],
                        "value": None if np.isnan(x[r, j]) else float(x[r, j]),  # absent
                        "contribution": float(row[j]),
                    }
                    for j in order
                ]
            )
        return result

    def save(self, path: Path, **extra: np.ndarray) -> None:
        np.savez_compressed(
            path,
            **extra,
            feature=self.feature,
            threshold=self.threshold,
            left=self.left,
            right=self.right,
            default_left=self.default_left,
            mean_value=self.mean_value,
            bias=np.array([self.bias]),
            max_depth=np.array([self.max_depth]),
        )

    @classmethod
    def load(cls, path: Path) -> TreeExplainer:
        """The explainer in ``path``: an :class:`EnsembleExplainer` when it holds a stack."""
        with np.load(path) as z:
            tree = TreeExplainer(
                z["feature"],
                z["threshold"],
                z["left"],
                z["right"],
                z["default_left"],
                z["mean_value"],
                float(z["bias"][0]),
                int(z["max_depth"][0]),
            )
            if "stack_w_block" not in z:
                return tree
            fields = None
            if "stack_fields_w_block" in z:
                fields = (
                    float(z["stack_fields_intercept"][0]),
                    float(z["stack_fields_w_trees"][0]),
                    np.asarray(z["stack_fields_w_block"], dtype=np.float64),
                )
            return EnsembleExplainer(
                tree,
                int(z["stack_n_base"][0]),
                float(z["stack_intercept"][0]),
                float(z["stack_w_trees"][0]),
                np.asarray(z["stack_w_block"], dtype=np.float64),
                fields,
            )


class EnsembleExplainer(TreeExplainer):
    """Attributions of the ensemble's logit: trees (scaled by their stage weight) over the
    first ``n_base`` columns, ``weight * value`` for each stacking-block column. With
    ``fields`` (intercept, tree weight, block weights of the JSON-fields stage), rows whose
    last block column (``form:json_fields``) is 1 use those weights."""

    def __init__(
        self,
        tree: TreeExplainer,
        n_base: int,
        intercept: float,
        w_trees: float,
        w_block: np.ndarray,
        fields: tuple[float, float, np.ndarray] | None = None,
    ) -> None:
        self.__dict__.update(tree.__dict__)
        self.tree = tree
        self.n_base = n_base
        self.intercept = intercept
        self.w_trees = w_trees
        self.w_block = np.asarray(w_block, dtype=np.float64)
        self.fields = (
            None
            if fields is None
            else (float(fields[0]), float(fields[1]), np.asarray(fields[2], dtype=np.float64))
        )
        #: the raw-mail stage's bias; :meth:`row_bias` gives each row's own
        self.bias = intercept + w_trees * tree.bias

    @classmethod
    def from_stack(cls, tree: TreeExplainer, n_base: int, stack) -> EnsembleExplainer:
        """From an ensemble second stage (``spam_assets.lib.ensemble.Stack``, duck-typed:
        ``intercept``, ``w_trees``, ``w_block``, optional ``fields``)."""
        f = stack.fields
        fields = None if f is None else (f.intercept, f.w_trees, f.w_block)
        return cls(tree, n_base, stack.intercept, stack.w_trees, stack.w_block, fields)

    def _is_fields(self, x: np.ndarray) -> np.ndarray:
        if self.fields is None:
            return np.zeros(len(x), dtype=bool)
        return np.asarray(x)[:, -1] > 0.5

    def row_bias(self, x: np.ndarray) -> np.ndarray:
        """Each row's bias (the logit with every attribution at zero)."""
        out = np.full(len(x), self.bias)
        if self.fields is not None:
            f_int, f_trees, _ = self.fields
            out[self._is_fields(x)] = f_int + f_trees * self.tree.bias
        return out

    def contributions(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        trees = self.tree.contributions(x[:, : self.n_base])
        block = x[:, self.n_base :].astype(np.float64)
        w_trees = np.full((len(x), 1), self.w_trees)
        w_block = np.broadcast_to(self.w_block, block.shape).copy()
        if self.fields is not None:
            sel = self._is_fields(x)
            w_trees[sel] = self.fields[1]
            w_block[sel] = self.fields[2]
        return np.hstack([trees * w_trees, block * w_block])

    def save(self, path: Path, **extra: np.ndarray) -> None:
        fields = {}
        if self.fields is not None:
            fields = {
                "stack_fields_intercept": np.array([self.fields[0]]),
                "stack_fields_w_trees": np.array([self.fields[1]]),
                "stack_fields_w_block": self.fields[2],
            }
        self.tree.save(
            path,
            stack_n_base=np.array([self.n_base]),
            stack_intercept=np.array([self.intercept]),
            stack_w_trees=np.array([self.w_trees]),
            stack_w_block=self.w_block,
            **fields,
            **extra,
        )


def _node_means(
    lc: np.ndarray, rc: np.ndarray, cond: np.ndarray, cover: np.ndarray
) -> tuple[np.ndarray, int]:
    """Cover-weighted expected value of every node (XGBoost's ``FillNodeMeanValues``)."""
    means = np.zeros(len(lc), dtype=np.float64)
    depth = 0
    # (node, depth, expanded) stack: children are resolved before their parent.
    stack = [(0, 0, False)]
    while stack:
        node, d, expanded = stack.pop()
        depth = max(depth, d)
        if lc[node] < 0:
            means[node] = cond[node]
        elif expanded:
            a, b = lc[node], rc[node]
            means[node] = (means[a] * cover[a] + means[b] * cover[b]) / cover[node]
        else:
            stack.append((node, d, True))
            stack.append((int(lc[node]), d + 1, False))
            stack.append((int(rc[node]), d + 1, False))
    return means, depth
