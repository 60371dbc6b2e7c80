"""Fitting the per-kernel time model on timed random networks (see :mod:`dnncost.prediction.model`
for what is fitted): one regressor per kernel kind (a padded convolution's apart:
features.regressor_key) -- a non-negative line in FLOPs and bytes, fitted
on relative error, and scikit-learn's gradient-boosted trees on the log of what it misses, exported
as plain numbers -- and the step weights of what is not a kernel (the step less its predicted
kernels), fitted with a robust loss."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

from dnncost.counting.cost import CostReport
from dnncost.counting.formulas import OpKind
from dnncost.prediction.features import REGRESSOR_KEYS, features, op_kind, regressor_key
from dnncost.prediction.kernels import STEP_FEATURES, step_features
from dnncost.prediction.model import KindRegressor, OperatorModel
from dnncost.prediction.sampling import is_probe
from dnncost.prediction.trees import TreeEnsemble

MIN_KIND_SAMPLES = 20  # source: our choice; fewer kernels of a kind: its line only, no trees


@dataclass(frozen=True)
class NetworkSample:
    """One network's timed step: its counted calls, each call's kernel seconds, its module and
    parameter-tensor counts, its measured step -- the network's measured time as dnncost defines
    it everywhere, STUDY_ESTIMATOR over every plain timed step of every pass, ``step_samples`` --
    and, when it was timed in several passes, each pass's own figure (``pass_steps``)."""

    name: str
    report: CostReport
    kernel_s: tuple[float, ...]
    modules: int
    param_tensors: int
    step_s: float
    pass_steps: tuple[float, ...] = ()
    step_samples: tuple[tuple[float, ...], ...] = ()  # each pass's plain timed steps


def fit_operator_model(samples: Sequence[NetworkSample], **meta: Any) -> OperatorModel:
    """Fit the kernel regressors and the step weights on ``samples`` (``meta``: OperatorModel's
    identifying fields: fingerprint, threads, torch_version, quick, busy_networks, passes, probe_s,
    held_out)."""
    if not samples:
        raise ValueError("no timed networks to fit the time model on")
    records = [(r, s.report.mode, t) for s in samples
               for r, t in zip(s.report.records, s.kernel_s, strict=True) if t > 0]
    x = np.array([features(r, m) for r, m, _ in records])
    flops = np.array([r.cost.flops for r, _, _ in records], dtype=float)
    nbytes = np.array([r.cost.bytes for r, _, _ in records], dtype=float)
    secs = np.array([t for _, _, t in records])
    kinds = np.array([list(OpKind).index(k) if (k := op_kind(r)) is not None else -1
                      for r, _, _ in records])
    keys = np.array([regressor_key(r) or "" for r, _, _ in records])
    fitted = {}
    for key in REGRESSOR_KEYS:
        idx = keys == key
        if idx.any():
            fitted[key] = fit_kind(x[idx], flops[idx], nbytes[idx], secs[idx])
    xf = x.copy()
    xf[:, 0] = np.maximum(kinds, 0)
    fallback = fit_kind(xf, flops, nbytes, secs)
    # what the steps cost beyond their kernels, on the networks (a kernel probe's step is one
    # kernel: 108 of them outweighed the networks' rows, and put efficientnet_b0's training step
    # at 0.24 ms beyond its kernels where it measured 4.5; source: measured, development set)
    nets = [s for s in samples if not is_probe(s.name)] or list(samples)
    # fitted on the step less the kernels as the model predicts them, which is what a prediction
    # adds it to: a quick calibration's kernels, fitted mostly on its kernel probes, came out
    # 1-8% under its own networks' measured kernels, a shortfall step weights fitted on the
    # measured kernels never saw. Refitted so, four quick calibrations' 32x32 rows on their unseen
    # timm networks came 0.4-1.9 points closer in 7 of 8; every other row of them and of four full
    # calibrations moved by -0.9 to +1.1 points (source: benchmarks/fit_choices.py, 2-core Xeon,
    # docs/results.md)
    kernels = OperatorModel(kinds=fitted, fallback=fallback, step_weights=(0.0,) * len(STEP_FEATURES))
    predicted = [float(kernels.kernel_seconds(s.report.records, s.report.mode).sum()) for s in nets]
    weights = fit_overhead(nets, predicted, fastest_s=float(secs.min()))
    return OperatorModel(kinds=fitted, fallback=fallback, step_weights=tuple(float(w) for w in weights),
                         created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         networks=len({s.name for s in samples if not is_probe(s.name)}),
                         kernels=len(records), **meta)


def fit_overhead(nets: Sequence[NetworkSample], kernel_s: Sequence[float], *,
                 fastest_s: float) -> np.ndarray:
    """The step weights of what ``nets``' steps cost beyond their kernels, which take
    ``kernel_s`` seconds a step (:func:`fit_operator_model` gives the model's predictions of
    them); ``fastest_s``, the fastest kernel timed, bounds the weight of a kernel call."""
    feats = np.array([step_features(s.report, s.modules, s.param_tensors, k)
                      for s, k in zip(nets, kernel_s, strict=True)])
    rest = np.array([s.step_s - k for s, k in zip(nets, kernel_s, strict=True)])
    steps = np.array([s.step_s for s in nets])
    # a call's correction (the clock's own cost) cannot exceed the fastest kernel timed: a step
    # never costs less than nothing
    lower = np.where(np.array(STEP_FEATURES) == "kernel_calls", -fastest_s, 0.0)
    return fit_step_weights(feats, rest, steps, lower=lower)


def fit_line(flops: np.ndarray, nbytes: np.ndarray, seconds: np.ndarray) -> tuple[float, float, float]:
    """Non-negative a, b, c of seconds ~ a + b * FLOPs + c * bytes, least squares on relative error."""
    from scipy.optimize import lsq_linear

    x = np.column_stack([np.ones_like(seconds), flops, nbytes]) / seconds[:, None]
    scale = np.linalg.norm(x, axis=0)
    scale[scale == 0] = 1.0
    coef = lsq_linear(x / scale, np.ones(len(seconds)), bounds=(0, np.inf), method="bvls").x / scale
    if not np.any(coef > 0):
        coef[0] = float(np.median(seconds))
    return float(coef[0]), float(coef[1]), float(coef[2])


STEP_LOSS_SCALE = 0.05  # source: our choice, about the step-to-step noise of a quiet machine: a
# network whose rest is off by more than 5% of its step weighs in linearly, not squared


def fit_step_weights(features: np.ndarray, rest: np.ndarray, steps: np.ndarray, *,
                     lower: np.ndarray) -> np.ndarray:
    """Weights w >= ``lower`` of rest ~ features . w (one row per timed step), fitted on the error
    relative to each step with a robust (soft L1) loss: a step slowed by another process (only
    ever more time, and far more than noise) pulls the weights far less than under least squares."""
    from scipy.optimize import least_squares, lsq_linear

    a = features / steps[:, None]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    lo = lower * scale
    start = lsq_linear(a / scale, rest / steps, bounds=(lo, np.inf), method="bvls").x
    start = np.maximum(start, lo)
    robust = least_squares(lambda w: (a / scale) @ w - rest / steps, start, bounds=(lo, np.inf),
                           loss="soft_l1", f_scale=STEP_LOSS_SCALE)
    return np.asarray(robust.x / scale, dtype=float)


TREE_PARAMS: dict[str, Any] = {"max_iter": 200, "learning_rate": 0.1, "max_leaf_nodes": 31,
                               "min_samples_leaf": 10, "l2_regularization": 1.0,
                               "random_state": 0}
"""source: scikit-learn's defaults (max_iter 100 raised to 200, min_samples_leaf 20 lowered to 10
for kinds with few samples, a little L2) -- chosen before any evaluation, not tuned on one."""


def fit_kind(x: np.ndarray, flops: np.ndarray, nbytes: np.ndarray, seconds: np.ndarray
             ) -> KindRegressor:
    """Fit one kind's regressor on its timed kernels."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    line = fit_line(flops, nbytes, seconds)
    reg = KindRegressor(line, None, len(seconds))
    if len(seconds) < MIN_KIND_SAMPLES:
        return reg
    target = np.log(seconds) - np.log(np.maximum(reg.base(flops, nbytes), 1e-12))
    trees = HistGradientBoostingRegressor(categorical_features=[0], **TREE_PARAMS)
    x = x.copy()
    x[:, 0] = np.maximum(x[:, 0], 0)  # unknown operators share code 0's category
    trees.fit(x, target)
    return replace(reg, trees=TreeEnsemble.from_sklearn(trees))


__all__ = ["MIN_KIND_SAMPLES", "NetworkSample", "STEP_LOSS_SCALE", "TREE_PARAMS", "fit_kind",
           "fit_line", "fit_operator_model", "fit_overhead", "fit_step_weights"]
