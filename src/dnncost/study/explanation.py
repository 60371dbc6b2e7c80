"""Explaining time by several measures at once: each measure alone and all of them jointly
(non-negative least squares, leave-one-network-out R^2 with a bootstrap interval), each measure's
Shapley (LMG) share of the variance and its drop-one loss, and the lines inside each family. Numbers
only: the sentences they support are :func:`dnncost.study.verdict.explanation_claims`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dnncost.study.fits import Fit, bootstrap_slopes, fit
from dnncost.study.points import (
    BOOTSTRAP_SAMPLES,
    CONFIDENCE,
    MIN_POINTS,
    NAN2,
    CostMetric,
    NetworkPoint,
    TimeMetric,
    percentile_interval,
)

MIN_FLOPS_SPAN = 1.25  # source: our choice; an exponent log(time ratio) / log(FLOPs ratio) over
# less than a 25% difference in FLOPs magnifies the repeats' noise into nonsense (ShuffleNet v1
# g3/g8 differ by 4% in FLOPs: one study read "FLOPs^10.08" off them)

#: The measures the joint fit sets time against: the work (FLOPs), the memory traffic (bytes), the
#: per-operator overhead (operator calls) and the model size (parameters). source: issue 13.
EXPLAINING = (CostMetric.FLOPS, CostMetric.BYTES, CostMetric.OPS, CostMetric.PARAMS)
EXPLAIN_BOOTSTRAP = 1000  # source: Efron & Tibshirani (1993) ch. 13, >= 1000 for percentile intervals


@dataclass(frozen=True)
class MeasureModel:
    """Time = c + sum of k_m x measure m over ``measures``, every coefficient >= 0 (a fixed cost
    per step and a cost per unit of each measure; non-negative least squares), fitted in seconds.

    ``cv_r_squared`` is leave-one-network-out: each network's time predicted by the fit on the
    others, R^2 = 1 - sum (t - t_pred)^2 / sum (t - mean t)^2 (it can be negative: worse than the
    mean). ``cv_r_squared_ci`` is the percentile interval when the networks' (time, held-out
    prediction) pairs are resampled with replacement. ``loo_ratio[name]`` = held-out prediction /
    measured time."""

    measures: tuple[CostMetric, ...]
    intercept_s: float
    coefficients: Mapping[CostMetric, float]  # seconds per unit
    r_squared: float
    cv_r_squared: float
    cv_r_squared_ci: tuple[float, float]
    loo_ratio: Mapping[str, float]

    @property
    def label(self) -> str:
        return " + ".join(m.label for m in self.measures)

    @property
    def median_error(self) -> float:
        """Median |held-out prediction / measured - 1| over the networks."""
        return float(np.median([abs(r - 1) for r in self.loo_ratio.values()]))

    @property
    def worst_error(self) -> float:
        """Largest |held-out prediction / measured - 1| over the networks."""
        return float(max(abs(r - 1) for r in self.loo_ratio.values()))

    def to_row(self) -> dict[str, object]:
        return {"measures": self.label, "r_squared": self.r_squared,
                "cv_r_squared": self.cv_r_squared, "cv_r_squared_ci_low": self.cv_r_squared_ci[0],
                "cv_r_squared_ci_high": self.cv_r_squared_ci[1], "intercept_s": self.intercept_s,
                "loo_median_error": self.median_error, "loo_worst_error": self.worst_error,
                **{f"s_per_{m.value}": v for m, v in self.coefficients.items()}}


@dataclass(frozen=True)
class MeasureShare:
    """How much of the variance of time one measure explains in the joint fit.

    ``share``: its Shapley (LMG) share of the joint in-sample R^2 -- the gain in R^2 from adding
    it, averaged over every order of adding the measures (Lindeman, Merenda & Gold 1980; Groemping
    2006); the shares of all measures sum to the joint R^2, so overlapping (correlated) measures
    split what they explain together. ``share_ci``: percentile interval over networks resampled
    with replacement. ``unique``: the drop-one loss, joint R^2 minus R^2 without this measure
    (what no other measure can stand in for)."""

    measure: CostMetric
    share: float
    share_ci: tuple[float, float]
    unique: float


@dataclass(frozen=True)
class FamilyLine:
    """Time against FLOPs inside one family (its depth/width variants): the exponent k of
    time ~ FLOPs^k through its networks, with the regression's interval (three or more networks)
    and the interval over resampled repeats -- NaN, all three, when the variants' FLOPs span less
    than MIN_FLOPS_SPAN --; the range of achieved FLOP/s."""

    family: str
    names: tuple[str, ...]  # fewest FLOPs first
    loglog_slope: float
    slope_ci: tuple[float, float]  # regression t interval; NaN with two networks
    repeat_slope_ci: tuple[float, float]
    flops_ratio: float  # largest / smallest FLOPs
    time_ratio: float  # time of the largest / time of the smallest
    min_flops_per_s: float
    max_flops_per_s: float


@dataclass(frozen=True)
class Explanation:
    """Time explained by several measures together: each measure alone and all of them jointly
    (leave-one-network-out R^2), each measure's share of the variance, the lines inside each
    family; ``best`` is the single measure with the best cross-validated R^2 and ``across`` the
    line in FLOPs across all these networks, for the sentences that compare them."""

    time_metric: TimeMetric
    names: tuple[str, ...]
    models: tuple[MeasureModel, ...]  # each measure alone, in EXPLAINING order, then all together
    shares: tuple[MeasureShare, ...]
    families: tuple[FamilyLine, ...]
    best_vs_flops_ci: tuple[float, float]  # CV R^2 of the best single measure minus FLOPs'
    best: CostMetric
    across: Fit | None

    @property
    def joint(self) -> MeasureModel:
        return self.models[-1]

    def single(self, measure: CostMetric) -> MeasureModel | None:
        return next((m for m in self.models if m.measures == (measure,)), None)

    def to_dict(self) -> dict[str, object]:
        return {"time": self.time_metric.value, "networks": list(self.names),
                "models": [m.to_row() for m in self.models],
                "shares": [{"measure": s.measure.value, "shapley_share": s.share,
                            "shapley_share_ci": list(s.share_ci), "drop_one_delta_r2": s.unique}
                           for s in self.shares],
                "families": [{"family": f.family, "networks": list(f.names),
                              "loglog_slope": f.loglog_slope, "slope_ci": list(f.slope_ci),
                              "repeat_slope_ci": list(f.repeat_slope_ci),
                              "flops_ratio": f.flops_ratio, "time_ratio": f.time_ratio,
                              "min_gflops_per_s": f.min_flops_per_s / 1e9,
                              "max_gflops_per_s": f.max_flops_per_s / 1e9}
                             for f in self.families],
                "best_single_minus_flops_cv_r2_ci": list(self.best_vs_flops_ci)}


def _nnls_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients [c, k_1, ...] >= 0 of y ~ c + x @ k by non-negative least squares; columns are
    scaled to a maximum of 1 for the solver's sake and the coefficients scaled back."""
    from scipy.optimize import nnls

    scale = np.where(x.max(axis=0) > 0, x.max(axis=0), 1.0) if x.size else np.ones(0)
    design = np.column_stack([np.ones(len(y)), x / scale])
    coef, _ = nnls(design, y)
    return np.concatenate([coef[:1], coef[1:] / scale])


def _predict(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    return coef[0] + x @ coef[1:]


def _r2(y: np.ndarray, predicted: np.ndarray) -> float:
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - predicted) ** 2).sum()) / total if total > 0 else math.nan


def _subset_r2(x: np.ndarray, y: np.ndarray, columns: tuple[int, ...]) -> float:
    """In-sample R^2 of the non-negative fit on ``columns`` of ``x`` (0 for no column)."""
    if not columns:
        return 0.0
    sub = x[:, list(columns)]
    return _r2(y, _predict(_nnls_fit(sub, y), sub))


def _shapley(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Shapley/LMG share of R^2, drop-one Delta R^2) of each column of ``x``."""
    from itertools import combinations

    k = x.shape[1]
    r2 = {s: _subset_r2(x, y, s) for size in range(k + 1) for s in combinations(range(k), size)}
    shares = np.zeros(k)
    for j in range(k):
        others = [i for i in range(k) if i != j]
        for size in range(k):
            weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
            for s in combinations(others, size):
                shares[j] += weight * (r2[tuple(sorted((*s, j)))] - r2[s])
    full = r2[tuple(range(k))]
    unique = np.array([full - r2[tuple(i for i in range(k) if i != j)] for j in range(k)])
    return shares, unique


def _loo(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's prediction by the non-negative fit on every other row."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        out[i] = _predict(_nnls_fit(x[keep], y[keep]), x[i:i + 1])[0]
    return out


def _measure_model(x: np.ndarray, y: np.ndarray, measures: tuple[CostMetric, ...],
                   names: Sequence[str], picks: np.ndarray) -> tuple[MeasureModel, np.ndarray]:
    """One MeasureModel, and its CV R^2 over each bootstrap resample ``picks`` of the networks."""
    coef = _nnls_fit(x, y)
    held_out = _loo(x, y)
    boot = np.array([_r2(y[p], held_out[p]) for p in picks])
    model = MeasureModel(
        measures=measures, intercept_s=float(coef[0]),
        coefficients={m: float(c) for m, c in zip(measures, coef[1:], strict=True)},
        r_squared=_r2(y, _predict(coef, x)), cv_r_squared=_r2(y, held_out),
        cv_r_squared_ci=percentile_interval(boot),
        loo_ratio={n: float(p / t) for n, p, t in zip(names, held_out, y, strict=True)})
    return model, boot


def family_lines(points: Sequence[NetworkPoint], metric: TimeMetric = TimeMetric.TRAIN_STEP, *,
                 seed: int = 0, bootstrap: int = BOOTSTRAP_SAMPLES) -> list[FamilyLine]:
    """Time against FLOPs inside every family with two or more networks of different FLOPs."""
    from scipy import stats

    lines = []
    for family in sorted({p.family for p in points}):
        members = sorted((p for p in points if p.family == family and p.time(metric) > 0
                          and p.cost(metric, CostMetric.FLOPS) > 0),
                         key=lambda p: p.cost(metric, CostMetric.FLOPS))
        x = np.array([p.cost(metric, CostMetric.FLOPS) for p in members])
        if len(members) < 2 or np.ptp(x) == 0:
            continue
        y = np.array([p.time(metric) for p in members])
        slope, ci, repeat_ci = math.nan, NAN2, NAN2
        if x[-1] / x[0] >= MIN_FLOPS_SPAN:
            line = stats.linregress(np.log(x), np.log(y))
            slope = float(line.slope)
            if len(members) >= MIN_POINTS:
                half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(x) - 2)) * float(line.stderr)
                ci = (slope - half, slope + half)
            repeat_ci, _ = bootstrap_slopes(members, metric, x, seed=seed, samples=bootstrap)
        rates = x / y
        lines.append(FamilyLine(
            family=family, names=tuple(p.name for p in members), loglog_slope=slope,
            slope_ci=ci, repeat_slope_ci=repeat_ci, flops_ratio=float(x[-1] / x[0]),
            time_ratio=float(y[-1] / y[0]), min_flops_per_s=float(rates.min()),
            max_flops_per_s=float(rates.max())))
    return lines


def explain(points: Sequence[NetworkPoint], metric: TimeMetric = TimeMetric.TRAIN_STEP, *,
            measures: Sequence[CostMetric] = EXPLAINING, seed: int = 0,
            bootstrap: int = EXPLAIN_BOOTSTRAP) -> Explanation | None:
    """Explain ``metric`` by ``measures`` together over the networks that have all of them; None
    with fewer than len(measures) + 2 such networks (a joint fit needs more networks than
    coefficients, and leave-one-out one more)."""
    measures = tuple(measures)
    usable = [p for p in points if p.time(metric) > 0
              and all(math.isfinite(p.cost(metric, m)) for m in measures)]
    if len(usable) < len(measures) + 2 or len(usable) < MIN_POINTS + 1:
        return None
    names = tuple(p.name for p in usable)
    x = np.array([[p.cost(metric, m) for m in measures] for p in usable], dtype=float)
    y = np.array([p.time(metric) for p in usable])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(y), size=(bootstrap, len(y)))
    models, boots = [], []
    for j, m in enumerate(measures):
        model, boot = _measure_model(x[:, [j]], y, (m,), names, picks)
        models.append(model)
        boots.append(boot)
    joint, _ = _measure_model(x, y, measures, names, picks)
    models.append(joint)
    shares, unique = _shapley(x, y)
    boot_shares = []
    for p in picks:
        if np.ptp(y[p]) > 0:
            boot_shares.append(_shapley(x[p], y[p])[0])
    boot_shares_arr = (np.clip(np.array(boot_shares), 0.0, None) if boot_shares
                       else np.full((1, len(measures)), math.nan))  # exact 0 below rounding noise
    share_rows = tuple(MeasureShare(m, float(shares[j]), percentile_interval(boot_shares_arr[:, j]),
                                    float(unique[j])) for j, m in enumerate(measures))
    best = max(range(len(measures)), key=lambda j: models[j].cv_r_squared)
    flops_j = measures.index(CostMetric.FLOPS) if CostMetric.FLOPS in measures else best
    diff_ci = percentile_interval(boots[best] - boots[flops_j])
    return Explanation(time_metric=metric, names=names, models=tuple(models), shares=share_rows,
                       families=tuple(family_lines(usable, metric, seed=seed)),
                       best_vs_flops_ci=diff_ci, best=measures[best],
                       across=fit(usable, metric, seed=seed))


__all__ = ["EXPLAINING", "EXPLAIN_BOOTSTRAP", "MIN_FLOPS_SPAN", "Explanation", "FamilyLine",
           "MeasureModel", "MeasureShare", "explain", "family_lines"]
