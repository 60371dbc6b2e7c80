"""dnncost.prediction.trees: the per-kernel model's trees as plain numbers reproduce scikit-learn's
predictions (missing values, unseen categories, every kind of split), survive a JSON round trip
exactly, and a malformed stored ensemble is one clear ModelFormatError."""
from __future__ import annotations

import copy
import json
from collections.abc import Callable

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from dnncost.prediction.errors import ModelFormatError
from dnncost.prediction.trees import Tree, TreeEnsemble

CATS = (3.0, 7.0, 12.0, 40.0, 41.0)  # the raw category values seen in fitting (not 0..k-1)


def data(rng: np.random.Generator, n: int, *, unseen: bool) -> np.ndarray:
    """5 features: 0 numeric, 1 and 3 numeric with missing values, 2 and 4 categorical (raw
    values CATS, some missing); ``unseen`` adds categories never fitted on (5, 100, -1)."""
    x = rng.normal(size=(n, 5))
    x[rng.random(n) < 0.15, 1] = np.nan
    x[rng.random(n) < 0.3, 3] = np.nan
    pool = CATS + ((5.0, 100.0, -1.0) if unseen else ())
    x[:, 2] = rng.choice(pool + (np.nan,), size=n)
    x[:, 4] = rng.choice(pool[:3] + (np.nan,), size=n)
    return x


def target(x: np.ndarray) -> np.ndarray:
    """Depends on whether x3 is missing only (a split on missing values), on x1 and whether it is
    missing, on categories, and smoothly on x0."""
    return (np.sin(2 * x[:, 0]) + np.where(np.isnan(x[:, 1]), 2.0, np.nan_to_num(x[:, 1]))
            + np.where(np.isin(x[:, 2], (3.0, 12.0, 41.0)), 1.5, 0.0)
            + np.where(x[:, 4] == 7.0, -1.0, 0.0) + np.where(np.isnan(x[:, 3]), 3.0, 0.0))


@pytest.fixture(scope="module")
def fitted() -> HistGradientBoostingRegressor:
    rng = np.random.default_rng(0)
    x = data(rng, 4000, unseen=False)
    return HistGradientBoostingRegressor(categorical_features=[2, 4], max_iter=60, max_leaf_nodes=31,
                                         min_samples_leaf=10, random_state=0).fit(x, target(x))


def test_the_plain_trees_reproduce_sklearn_on_new_data(fitted) -> None:
    trees = TreeEnsemble.from_sklearn(fitted)
    x = data(np.random.default_rng(1), 3000, unseen=True)
    x[::17, 0] = np.nan  # missing where fitting never saw one: its split's default side
    assert np.max(np.abs(trees.predict(x) - fitted.predict(x))) < 1e-12
    # the data exercised every kind of split the model has
    inner = [(t, ~t.is_leaf) for t in trees.trees]
    assert any(np.any(m & np.isfinite(t.threshold) & (t.feature == 2)) for t, m in inner)  # numeric
    assert any(c is not None for t in trees.trees for c in t.left_categories)  # categorical
    assert any(np.any(t.missing_go_to_left[m]) for t, m in inner)  # missing sent left
    assert any(np.any(~t.missing_go_to_left[m]) for t, m in inner)  # and right
    assert any(np.any(np.isinf(t.threshold)) for t in trees.trees)  # a split on missing values
    assert trees.columns == (2, 4, 0, 1, 3)  # scikit-learn moves the categorical columns first


def test_the_project_s_own_fit_is_reproduced() -> None:
    """fit_kind's setting: categorical feature 0 (the operator code), the project's TREE_PARAMS."""
    from dnncost.prediction.fitting import TREE_PARAMS

    rng = np.random.default_rng(2)
    x = rng.normal(size=(1500, 6))
    x[:, 0] = rng.integers(0, 20, 1500)
    y = x[:, 1] ** 2 + (x[:, 0] % 3) + 0.01 * rng.normal(size=1500)
    est = HistGradientBoostingRegressor(categorical_features=[0], **TREE_PARAMS).fit(x, y)
    probe = rng.normal(size=(500, 6))
    probe[:, 0] = rng.integers(-2, 30, 500)  # codes 20..29 and negatives were never seen
    assert np.max(np.abs(TreeEnsemble.from_sklearn(est).predict(probe) - est.predict(probe))) < 1e-12


def test_json_round_trip_is_exact(fitted) -> None:
    trees = TreeEnsemble.from_sklearn(fitted)
    again = TreeEnsemble.from_dict(json.loads(json.dumps(trees.to_dict())))
    x = data(np.random.default_rng(3), 500, unseen=True)
    assert np.array_equal(again.predict(x), trees.predict(x))
    assert again.to_dict() == trees.to_dict()


def test_a_tree_that_is_one_leaf_and_an_empty_input() -> None:
    leaf = Tree(feature=np.zeros(1, np.int64), threshold=np.zeros(1), left=np.zeros(1, np.int64),
                right=np.zeros(1, np.int64), is_leaf=np.ones(1, bool), value=np.array([0.25]),
                missing_go_to_left=np.zeros(1, bool), left_categories=(None,))
    trees = TreeEnsemble(baseline=1.0, n_features=2, columns=(0, 1), categories=(None, None),
                         trees=(leaf, leaf))
    assert trees.predict(np.array([[np.nan, 5.0]])).tolist() == [1.5]  # 1 + 0.25 + 0.25
    assert trees.predict(np.zeros((0, 2))).shape == (0,)
    with pytest.raises(ValueError, match="2 features"):
        trees.predict(np.zeros((3, 4)))


def test_only_a_squared_error_regressor_is_exported() -> None:
    est = HistGradientBoostingRegressor(loss="absolute_error", max_iter=2).fit(np.eye(20), np.arange(20))
    with pytest.raises(ValueError, match="squared-error"):
        TreeEnsemble.from_sklearn(est)


def _set(path: str, value: object) -> Callable[[dict], None]:
    def change(d: dict) -> None:
        *head, last = path.split("/")
        for key in head:
            d = d[int(key)] if isinstance(d, list) else d[key]  # type: ignore[assignment]
        if isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value
    return change


def _first_inner(d: dict) -> int:
    return d["trees"][0]["is_leaf"].index(False)


MALFORMED: dict[str, tuple[Callable[[dict], None], str]] = {
    "a string for a number": (_set("baseline", "0.5"), "baseline must be a number"),
    "a bool for an integer": (_set("n_features", True), "n_features must be an integer"),
    "a float among integers": (_set("trees/0/left/0", 1.0), r"trees\[0\].left must hold integers"),
    "a number among booleans": (_set("trees/0/is_leaf/0", 0), "is_leaf must hold true/false"),
    "a short array": (lambda d: d["trees"][0]["value"].pop(), "value has .* items, expected"),
    "a missing field": (lambda d: d["trees"][0].pop("right"), "lacks right"),
    "an unknown field": (_set("trees/0/code", "import os"), "unknown fields: code"),
    "a loop": (_set("trees/0/left/0", 0), "every child must come after its parent"),
    "a child outside the tree": (_set("trees/0/right/0", 10**6), "every child must come after"),
    "a feature out of range": (_set("trees/0/feature/0", 99), "outside 0..4"),
    "unsorted categories": (_set("categories/0", [7.0, 3.0]), "increasing order"),
    "columns not a permutation": (_set("columns", [0, 0, 1, 2, 3]), "columns must order"),
    "a NaN leaf": (lambda d: d["trees"][0]["value"].__setitem__(
        d["trees"][0]["is_leaf"].index(True), float("nan")), r"value must hold finite numbers"),
    "not a dict": (lambda d: d["trees"].__setitem__(0, "gASVAAAA"), r"trees\[0\] must be an object"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_ensemble_is_one_clear_error(fitted, case: str) -> None:
    data_ = copy.deepcopy(TreeEnsemble.from_sklearn(fitted).to_dict())
    change, message = MALFORMED[case]
    change(data_)
    with pytest.raises(ModelFormatError, match=message):
        TreeEnsemble.from_dict(data_)


def test_categories_must_match_their_split(fitted) -> None:
    d = TreeEnsemble.from_sklearn(fitted).to_dict()
    tree = d["trees"][0]
    i = next(i for i, c in enumerate(tree["left_categories"]) if c is None and not tree["is_leaf"][i])
    tree["left_categories"][i] = [0]  # a numeric split that claims categories
    with pytest.raises(ModelFormatError, match=f"node {i} must list the categories"):
        TreeEnsemble.from_dict(d)
