"""A fitted gradient-boosted tree ensemble as plain numbers: how the per-kernel model's trees are
kept, stored and evaluated.

scikit-learn's ``HistGradientBoostingRegressor`` fits the trees (:mod:`dnncost.prediction.fitting`);
:meth:`TreeEnsemble.from_sklearn` copies out exactly what its ``predict`` uses -- per tree and node
the feature, the numeric threshold, the two children, whether it is a leaf, the leaf value, where a
missing value goes, and for a categorical split the categories sent left; the baseline prediction;
and the input preprocessing scikit-learn applies when a feature is categorical (categorical columns
moved first, each category replaced by its index among the categories seen in fitting, an unseen
one treated as missing). :meth:`TreeEnsemble.predict` evaluates every tree for every row with
numpy, mirroring scikit-learn's ``_predictor.pyx`` (``_predict_one_from_raw_data``) node for node:

- a missing value (NaN) goes where ``missing_go_to_left`` says;
- at a categorical split, a category in the node's left set goes left, any other known one right
  (an unknown one is already missing);
- at a numeric split, ``x <= threshold`` goes left;

and sums the leaves tree after tree onto the baseline, in scikit-learn's order
(``tests/test_trees.py`` checks it against scikit-learn's ``predict`` to 1e-12).

Why plain numbers rather than pickle or skops.io: a stored model travels in calibration files and
in study databases that users copy, merge and share, so reading one must never run code. pickle
runs whatever the data names (an allow-list of whole libraries cannot be made safe: numpy and
scipy hold classes that write files or import modules when built). skops.io is made for untrusted
loading, but it is a new dependency for one record, it still rebuilds scikit-learn objects from a
list of types to trust that has to be kept right, and it ties every stored file to scikit-learn's
private layout. Here nothing but numbers and lists is ever read, each checked for type and shape
(a malformed file is one :class:`~dnncost.prediction.errors.ModelFormatError`), loading needs no
scikit-learn at all, and the evaluation is checked against scikit-learn's own predictions.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from dnncost.prediction import reading
from dnncost.prediction.errors import ModelFormatError

MAX_CATEGORIES = 256  # source: scikit-learn's bitsets of categories (8 x 32 bits; max_bins <= 255)
_TREE_FIELDS = ("feature", "threshold", "left", "right", "is_leaf", "value", "missing_go_to_left",
                "left_categories")


@dataclass(frozen=True, eq=False)
class Tree:
    """One regression tree as parallel arrays, one entry per node (node 0 the root; a node's
    children come after it). Internal nodes: ``feature``, ``threshold`` (numeric splits),
    ``left_categories`` (categorical splits: the category indices sent left, else None),
    ``missing_go_to_left``, ``left`` and ``right``; leaves: ``value`` (the other entries 0)."""

    feature: np.ndarray  # int64
    threshold: np.ndarray  # float64
    left: np.ndarray  # int64
    right: np.ndarray  # int64
    is_leaf: np.ndarray  # bool
    value: np.ndarray  # float64
    missing_go_to_left: np.ndarray  # bool
    left_categories: tuple[tuple[int, ...] | None, ...]

    @property
    def size(self) -> int:
        return len(self.is_leaf)

    def to_dict(self) -> dict[str, object]:
        return {"feature": self.feature.tolist(), "threshold": self.threshold.tolist(),
                "left": self.left.tolist(), "right": self.right.tolist(),
                "is_leaf": self.is_leaf.tolist(), "value": self.value.tolist(),
                "missing_go_to_left": self.missing_go_to_left.tolist(),
                "left_categories": [list(c) if c is not None else None for c in self.left_categories]}

    @classmethod
    def from_dict(cls, data: object, where: str) -> Tree:
        d = reading.mapping(data, where, required=_TREE_FIELDS)
        n = len(reading.sequence(d["is_leaf"], f"{where}.is_leaf"))
        cats = reading.sequence(d["left_categories"], f"{where}.left_categories", length=n)
        return cls(feature=reading.integers(d["feature"], f"{where}.feature", length=n),
                   threshold=reading.numbers(d["threshold"], f"{where}.threshold", length=n,
                                             finite=False),  # +inf: a split on missing values
                   left=reading.integers(d["left"], f"{where}.left", length=n),
                   right=reading.integers(d["right"], f"{where}.right", length=n),
                   is_leaf=reading.booleans(d["is_leaf"], f"{where}.is_leaf", length=n),
                   value=reading.numbers(d["value"], f"{where}.value", length=n),
                   missing_go_to_left=reading.booleans(d["missing_go_to_left"],
                                                       f"{where}.missing_go_to_left", length=n),
                   left_categories=tuple(
                       None if c is None else tuple(int(v) for v in reading.integers(
                           c, f"{where}.left_categories[{i}]")) for i, c in enumerate(cats)))


@dataclass(frozen=True)
class _Flat:
    """Every tree's nodes in one set of arrays (tree t's nodes from ``roots[t]``); a leaf's
    children are itself, so that walking a fixed number of levels leaves every row on its leaf."""

    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    missing_go_to_left: np.ndarray
    split: np.ndarray  # categorical splits: their row of left_sets; -1 elsewhere
    left_sets: np.ndarray  # (splits, MAX_CATEGORIES) bool: category index -> goes left
    depth: int


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    """prediction(x) = baseline + sum over trees of the leaf x reaches (see the module docstring).

    ``columns[j]`` is the input column the trees see as their feature j; ``categories[j]`` the
    sorted raw values of a categorical feature j (a value is replaced by its index here, an unseen
    one by NaN), None for a numeric one. Construction checks the whole structure: every index in
    range, children after their parent (so every walk ends), categorical splits on categorical
    features only; ModelFormatError otherwise."""

    baseline: float
    n_features: int
    columns: tuple[int, ...]
    categories: tuple[tuple[float, ...] | None, ...]
    trees: tuple[Tree, ...]

    def __post_init__(self) -> None:
        _check(self)

    # -- evaluating ------------------------------------------------------------------------------
    def predict(self, x: np.ndarray) -> np.ndarray:
        """The ensemble's prediction for each row of ``x`` (rows x n_features; NaN: missing)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"x must be rows x {self.n_features} features, got shape {x.shape}")
        out = np.full(len(x), self.baseline)
        flat = self._flat
        if not len(x) or not len(flat.roots):
            return out
        z = self._encoded(x)  # (rows, features) as the trees see them
        rows = np.arange(len(z))[:, None]
        node = np.repeat(flat.roots[None, :], len(z), axis=0)  # (rows, trees)
        for _ in range(flat.depth):
            v = z[rows, flat.feature[node]]
            missing = np.isnan(v)
            go_left = np.where(missing, flat.missing_go_to_left[node], v <= flat.threshold[node])
            categorical = (flat.split[node] >= 0) & ~missing
            if categorical.any():
                go_left[categorical] = flat.left_sets[flat.split[node[categorical]],
                                                      v[categorical].astype(np.intp)]
            node = np.where(go_left, flat.left[node], flat.right[node])
        leaves = flat.value[node]
        for t in range(leaves.shape[1]):  # tree after tree, as scikit-learn adds them
            out += leaves[:, t]
        return out

    def _encoded(self, x: np.ndarray) -> np.ndarray:
        z = x[:, list(self.columns)]
        for j, cats in enumerate(self.categories):
            if cats is None:
                continue
            if not cats:
                z[:, j] = np.nan
                continue
            known = np.asarray(cats)
            index = np.minimum(np.searchsorted(known, z[:, j]), len(known) - 1)
            z[:, j] = np.where(known[index] == z[:, j], index, np.nan)  # unseen or NaN: missing
        return z

    @cached_property
    def _flat(self) -> _Flat:
        starts = np.cumsum([0] + [t.size for t in self.trees])
        sets: list[np.ndarray] = []
        split_parts = []
        for tree in self.trees:
            split = np.full(tree.size, -1, dtype=np.int64)
            for i, cats in enumerate(tree.left_categories):
                if cats is not None:
                    row = np.zeros(MAX_CATEGORIES, dtype=bool)
                    row[list(cats)] = True
                    split[i] = len(sets)
                    sets.append(row)
            split_parts.append(split)
        cat = np.concatenate
        offsets = np.concatenate([np.full(t.size, s) for t, s in zip(self.trees, starts, strict=False)]) \
            if self.trees else np.zeros(0, dtype=np.int64)
        is_leaf = cat([t.is_leaf for t in self.trees]) if self.trees else np.zeros(0, dtype=bool)
        own = np.arange(len(is_leaf))

        def child(side: str) -> np.ndarray:
            local = cat([getattr(t, side) for t in self.trees]) if self.trees else own
            return np.where(is_leaf, own, local + offsets)

        def joined(name: str, dtype: type) -> np.ndarray:
            return cat([getattr(t, name) for t in self.trees]) if self.trees else np.zeros(0, dtype)

        return _Flat(roots=starts[:-1].astype(np.int64), feature=joined("feature", np.int64),
                     threshold=joined("threshold", np.float64), left=child("left"),
                     right=child("right"), value=joined("value", np.float64),
                     missing_go_to_left=joined("missing_go_to_left", bool),
                     split=cat(split_parts) if split_parts else np.zeros(0, dtype=np.int64),
                     left_sets=np.array(sets, dtype=bool).reshape(len(sets), MAX_CATEGORIES),
                     depth=max((_depth(t) for t in self.trees), default=0))

    # -- plain data ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        """JSON-ready: numbers, booleans, lists and None only."""
        return {"baseline": self.baseline, "n_features": self.n_features,
                "columns": list(self.columns),
                "categories": [list(c) if c is not None else None for c in self.categories],
                "trees": [t.to_dict() for t in self.trees]}

    @classmethod
    def from_dict(cls, data: object, where: str = "trees") -> TreeEnsemble:
        """The ensemble :meth:`to_dict` gave; ModelFormatError (naming the field) for anything
        else."""
        d = reading.mapping(data, where, required=("baseline", "n_features", "columns",
                                                   "categories", "trees"))
        n = reading.integer(d["n_features"], f"{where}.n_features", low=1, high=10_000)
        cats = reading.sequence(d["categories"], f"{where}.categories", length=n)
        return cls(baseline=reading.number(d["baseline"], f"{where}.baseline"), n_features=n,
                   columns=tuple(int(c) for c in reading.integers(d["columns"], f"{where}.columns",
                                                                  length=n)),
                   categories=tuple(None if c is None else tuple(
                       float(v) for v in reading.numbers(c, f"{where}.categories[{j}]"))
                       for j, c in enumerate(cats)),
                   trees=tuple(Tree.from_dict(t, f"{where}.trees[{i}]") for i, t in
                               enumerate(reading.sequence(d["trees"], f"{where}.trees"))))

    @classmethod
    def from_sklearn(cls, estimator: Any) -> TreeEnsemble:
        """The trees of a fitted ``HistGradientBoostingRegressor`` (squared error), as plain
        arrays; ValueError for any other estimator."""
        if getattr(estimator, "loss", None) != "squared_error" or \
                getattr(estimator, "n_trees_per_iteration_", None) != 1:
            raise ValueError("only a fitted HistGradientBoostingRegressor with the squared-error "
                             "loss can be exported")
        n = int(estimator.n_features_in_)
        is_cat = estimator.is_categorical_
        if is_cat is None:
            columns: list[int] = list(range(n))
            categories: list[tuple[float, ...] | None] = [None] * n
        else:  # scikit-learn moves the categorical columns first and ordinal-encodes them
            cat_cols = [int(i) for i in np.flatnonzero(is_cat)]
            columns = cat_cols + [int(i) for i in np.flatnonzero(~is_cat)]
            encoder = estimator._preprocessor.named_transformers_["encoder"]
            categories = [tuple(float(v) for v in found if not np.isnan(v))
                          for found in encoder.categories_] + [None] * (n - len(cat_cols))
            known, _ = estimator._bin_mapper.make_known_categories_bitsets()
            for i, cats in enumerate(categories[:len(cat_cols)]):
                if _categories_of(known[i]) != tuple(range(len(cats or ()))):
                    raise ValueError("the estimator's known categories are not its encoder's")
        trees = []
        for (predictor,) in estimator._predictors:
            nodes = predictor.nodes
            leaf = nodes["is_leaf"].astype(bool)
            split_cat = nodes["is_categorical"].astype(bool) & ~leaf
            raw = predictor.raw_left_cat_bitsets
            trees.append(Tree(
                feature=np.where(leaf, 0, nodes["feature_idx"]).astype(np.int64),
                threshold=np.where(leaf | split_cat, 0.0, nodes["num_threshold"]).astype(np.float64),
                left=np.where(leaf, 0, nodes["left"]).astype(np.int64),
                right=np.where(leaf, 0, nodes["right"]).astype(np.int64),
                is_leaf=leaf, value=np.where(leaf, nodes["value"], 0.0).astype(np.float64),
                missing_go_to_left=nodes["missing_go_to_left"].astype(bool) & ~leaf,
                left_categories=tuple(_categories_of(raw[b]) if c else None
                                      for c, b in zip(split_cat, nodes["bitset_idx"], strict=True))))
        return cls(baseline=float(np.ravel(estimator._baseline_prediction)[0]), n_features=n,
                   columns=tuple(columns), categories=tuple(categories), trees=tuple(trees))


def _categories_of(bitset: np.ndarray) -> tuple[int, ...]:
    """The categories set in one of scikit-learn's bitsets (8 uint32 words, bit c % 32 of word
    c // 32 for category c)."""
    words = [int(w) for w in bitset]
    return tuple(c for c in range(MAX_CATEGORIES) if words[c // 32] >> (c % 32) & 1)


def _depth(tree: Tree) -> int:
    """Levels from the root to the deepest leaf (0: the root is a leaf)."""
    level, depth = np.zeros(1, dtype=np.int64), 0
    while True:
        inner = level[~tree.is_leaf[level]]
        if not len(inner):
            return depth
        level = np.unique(np.concatenate([tree.left[inner], tree.right[inner]]))
        depth += 1


def _check(ensemble: TreeEnsemble) -> None:
    """ModelFormatError for any structure the evaluation could not walk (see TreeEnsemble)."""
    n = ensemble.n_features
    if not np.isfinite(ensemble.baseline):
        raise ModelFormatError("the trees' baseline must be a finite number")
    if len(ensemble.columns) != n or sorted(ensemble.columns) != list(range(n)):
        raise ModelFormatError(f"the trees' columns must order the {n} input features")
    if len(ensemble.categories) != n:
        raise ModelFormatError(f"the trees' categories must list one entry per feature ({n})")
    for j, cats in enumerate(ensemble.categories):
        if cats is not None and (len(cats) > MAX_CATEGORIES or not np.all(np.isfinite(cats))
                                 or np.any(np.diff(np.asarray(cats, dtype=float)) <= 0)):
            raise ModelFormatError(f"the categories of feature {j} must be at most {MAX_CATEGORIES} "
                                   "finite numbers in increasing order")
    for t, tree in enumerate(ensemble.trees):
        _check_tree(tree, f"tree {t}", ensemble.categories)


def _check_tree(tree: Tree, where: str, categories: Sequence[tuple[float, ...] | None]) -> None:
    m = tree.size
    arrays: Mapping[str, tuple[np.ndarray, Any]] = {
        "feature": (tree.feature, np.int64), "threshold": (tree.threshold, np.float64),
        "left": (tree.left, np.int64), "right": (tree.right, np.int64),
        "is_leaf": (tree.is_leaf, np.bool_), "value": (tree.value, np.float64),
        "missing_go_to_left": (tree.missing_go_to_left, np.bool_)}
    if m < 1:
        raise ModelFormatError(f"{where} has no nodes")
    for name, (array, dtype) in arrays.items():
        if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != (m,):
            raise ModelFormatError(f"{where}: {name} must be {m} values of {np.dtype(dtype).name}")
    if len(tree.left_categories) != m:
        raise ModelFormatError(f"{where}: left_categories must have {m} entries")
    inner = np.flatnonzero(~tree.is_leaf)
    if np.any(tree.feature[inner] < 0) or np.any(tree.feature[inner] >= len(categories)):
        raise ModelFormatError(f"{where}: a split names a feature outside 0..{len(categories) - 1}")
    if np.any(tree.left[inner] <= inner) or np.any(tree.right[inner] <= inner) \
            or np.any(tree.left[inner] >= m) or np.any(tree.right[inner] >= m):
        raise ModelFormatError(f"{where}: every child must come after its parent, within the "
                               f"tree's {m} nodes")
    if not np.all(np.isfinite(tree.value[tree.is_leaf])) or np.any(np.isnan(tree.threshold)):
        raise ModelFormatError(f"{where}: leaf values must be finite and thresholds numbers")
    categorical = np.array([c is not None for c in categories])
    splits = np.zeros(m, dtype=bool)
    splits[inner] = categorical[tree.feature[inner]]
    listed = np.array([c is not None for c in tree.left_categories])
    if np.any(listed != splits):
        wrong = int(np.flatnonzero(listed != splits)[0])
        raise ModelFormatError(f"{where}: node {wrong} must list the categories it sends left exactly "
                               "when it splits a categorical feature")
    for node in np.flatnonzero(splits).tolist():
        count = len(categories[int(tree.feature[node])] or ())
        if any(not 0 <= c < max(count, 1) for c in tree.left_categories[node] or ()):
            raise ModelFormatError(f"{where}: node {node} sends left a category outside the "
                                   f"{count} of feature {int(tree.feature[node])}")


__all__ = ["MAX_CATEGORIES", "Tree", "TreeEnsemble"]
