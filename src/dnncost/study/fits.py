"""The analysis's statistics across networks: each time against each measure of computation
(:func:`fit`: Pearson r and Spearman rho with p-values and 95% intervals, the least-squares line
with R^2 and each network's residual, the log-log slope with the regression's interval across
networks and a bootstrap interval over each network's repeats); achieved FLOP/s per network; the
per-layer-type shares of time and FLOPs; and, for data-parallel results, each network's
communication share ranked against its parameters and FLOPs.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dnncost.core.kinds import Mode
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
from dnncost.study.store import NetworkResult

SPEARMAN_VARIANCE = 1.06  # source: Fieller, Hartley & Pearson (1957), var(atanh(rho)) ~ 1.06 / (n - 3)


# -- one relation: a time against a measure of computation ---------------------------------------------
@dataclass(frozen=True)
class Fit:
    """One time metric against one cost metric, across networks.

    ``slope``/``intercept`` (seconds per unit, seconds) and ``r_squared`` are the least-squares
    line; ``loglog_slope`` is the exponent s of time ~ cost^s with the regression's interval
    ``loglog_slope_ci`` and the bootstrap-over-repeats interval ``repeat_slope_ci``.
    ``predicted`` is the line's time for each network (residual = measured / predicted).
    """

    time_metric: TimeMetric
    cost_metric: CostMetric
    names: tuple[str, ...]
    x: tuple[float, ...]
    y: tuple[float, ...]
    pearson_r: float
    pearson_p: float
    pearson_ci: tuple[float, float]
    spearman_rho: float
    spearman_p: float
    spearman_ci: tuple[float, float]
    slope: float
    intercept: float
    r_squared: float
    loglog_slope: float
    loglog_intercept: float
    loglog_r_squared: float
    loglog_slope_ci: tuple[float, float]
    repeat_slope_ci: tuple[float, float]
    repeat_r_ci: tuple[float, float]
    predicted: Mapping[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.names)

    def residual(self, name: str) -> float:
        """Measured / predicted by the line; NaN where the line predicts no positive time."""
        p = self.predicted.get(name, math.nan)
        return float(self.y[self.names.index(name)] / p) if p > 0 else math.nan

    @property
    def slope_ci(self) -> tuple[float, float]:
        """The wider of the two intervals of the log-log slope: across networks and over repeats."""
        lows = [v for v in (self.loglog_slope_ci[0], self.repeat_slope_ci[0]) if math.isfinite(v)]
        highs = [v for v in (self.loglog_slope_ci[1], self.repeat_slope_ci[1]) if math.isfinite(v)]
        return (min(lows) if lows else math.nan, max(highs) if highs else math.nan)

    def to_row(self) -> dict[str, object]:
        return {
            "time": self.time_metric.value, "against": self.cost_metric.value, "n": self.n,
            "pearson_r": self.pearson_r, "pearson_p": self.pearson_p,
            "pearson_ci_low": self.pearson_ci[0], "pearson_ci_high": self.pearson_ci[1],
            "spearman_rho": self.spearman_rho, "spearman_p": self.spearman_p,
            "spearman_ci_low": self.spearman_ci[0], "spearman_ci_high": self.spearman_ci[1],
            "r_squared": self.r_squared, "slope_s_per_unit": self.slope, "intercept_s": self.intercept,
            "loglog_slope": self.loglog_slope, "loglog_slope_ci_low": self.loglog_slope_ci[0],
            "loglog_slope_ci_high": self.loglog_slope_ci[1],
            "repeat_slope_ci_low": self.repeat_slope_ci[0],
            "repeat_slope_ci_high": self.repeat_slope_ci[1],
            "repeat_r_ci_low": self.repeat_r_ci[0], "repeat_r_ci_high": self.repeat_r_ci[1],
        }




def fit(points: Sequence[NetworkPoint], time_metric: TimeMetric, *,
        cost_metric: CostMetric = CostMetric.FLOPS, seed: int = 0,
        bootstrap: int = BOOTSTRAP_SAMPLES) -> Fit | None:
    """Relate ``time_metric`` to ``cost_metric`` over ``points``; None with fewer than MIN_POINTS
    networks having both (positive) figures."""
    usable = [p for p in points
              if p.time(time_metric) > 0 and p.cost(time_metric, cost_metric) > 0]
    if len(usable) < MIN_POINTS:
        return None
    x = np.array([p.cost(time_metric, cost_metric) for p in usable])
    y = np.array([p.time(time_metric) for p in usable])
    if np.ptp(x) > 0 and np.ptp(y) > 0:
        with warnings.catch_warnings():  # e.g. scipy's small-sample notes; NaNs speak for themselves
            warnings.simplefilter("ignore")
            stats_ = _statistics(x, y)
    else:  # a constant column: no correlation or slope is defined
        stats_ = dict(pearson_r=math.nan, pearson_p=math.nan, pearson_ci=NAN2,
                      spearman_rho=math.nan, spearman_p=math.nan, slope=math.nan,
                      intercept=math.nan, r_squared=math.nan, loglog_slope=math.nan,
                      loglog_intercept=math.nan, loglog_r_squared=math.nan, loglog_slope_ci=NAN2)
    repeat_slope_ci, repeat_r_ci = bootstrap_slopes(usable, time_metric, x, seed=seed, samples=bootstrap)
    return Fit(
        time_metric=time_metric, cost_metric=cost_metric, names=tuple(p.name for p in usable),
        x=tuple(x.tolist()), y=tuple(y.tolist()), **stats_,
        spearman_ci=spearman_ci(stats_["spearman_rho"], len(usable)),
        repeat_slope_ci=repeat_slope_ci, repeat_r_ci=repeat_r_ci,
        predicted={p.name: float(stats_["slope"] * xi + stats_["intercept"])
                   for p, xi in zip(usable, x, strict=True)},
    )


def _statistics(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Pearson, Spearman, the least-squares line, and the line in log-log with its interval."""
    from scipy import stats

    pearson = stats.pearsonr(x, y)
    p_ci = pearson.confidence_interval(CONFIDENCE)
    spearman = stats.spearmanr(x, y)
    line = stats.linregress(x, y)
    log_line = stats.linregress(np.log(x), np.log(y))
    t = stats.t.ppf(0.5 + CONFIDENCE / 2, len(x) - 2)
    half = t * float(log_line.stderr)
    return dict(
        pearson_r=float(pearson.statistic), pearson_p=float(pearson.pvalue),
        pearson_ci=(float(p_ci.low), float(p_ci.high)),
        spearman_rho=float(spearman.statistic), spearman_p=float(spearman.pvalue),
        slope=float(line.slope), intercept=float(line.intercept), r_squared=float(line.rvalue ** 2),
        loglog_slope=float(log_line.slope), loglog_intercept=float(log_line.intercept),
        loglog_r_squared=float(log_line.rvalue ** 2),
        loglog_slope_ci=(float(log_line.slope) - half, float(log_line.slope) + half),
    )


def spearman_ci(rho: float, n: int) -> tuple[float, float]:
    """95% interval of Spearman's rho by Fisher's z with the Fieller-Hartley-Pearson variance."""
    from scipy import stats

    if n <= 3 or not math.isfinite(rho):
        return (math.nan, math.nan)
    z = math.atanh(max(min(rho, 1.0 - 1e-12), -1.0 + 1e-12))
    half = stats.norm.ppf(0.5 + CONFIDENCE / 2) * math.sqrt(SPEARMAN_VARIANCE / (n - 3))
    return (math.tanh(z - half), math.tanh(z + half))


def bootstrap_slopes(points: Sequence[NetworkPoint], metric: TimeMetric, x: np.ndarray, *, seed: int,
               samples: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile intervals of the log-log slope and Pearson r when each network's time is its
    estimate (:func:`estimator_of`) over its repeats resampled with replacement (the measurement
    noise of the repeats; :meth:`NetworkPoint.replicates`). NaN intervals when no network has two
    or more repeats."""
    if all(len(p.repeat_samples(metric)) < 2 for p in points) or np.ptp(x) == 0:
        return (math.nan, math.nan), (math.nan, math.nan)
    y = np.stack([p.replicates(metric, seed=seed, resamples=samples) for p in points],
                 axis=1)  # (samples, networks)
    lx = np.log(x) - np.log(x).mean()
    ly = np.log(y) - np.log(y).mean(axis=1, keepdims=True)
    slopes = (ly @ lx) / (lx @ lx)
    xc = x - x.mean()
    yc = y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (yc @ xc) / (np.sqrt((yc ** 2).sum(axis=1)) * math.sqrt((xc ** 2).sum()))
    return percentile_interval(slopes), percentile_interval(r)


# -- per network: speed --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Efficiency:
    """Achieved FLOP/s of a network's steps and their share of the machine's calibrated peak."""

    name: str
    train_gflops_per_s: float
    eval_gflops_per_s: float
    train_share_of_peak: float | None
    eval_share_of_peak: float | None


def efficiency(points: Sequence[NetworkPoint], *, peak_flops_per_s: float | None) -> list[Efficiency]:
    out = []
    for p in points:
        rates = []
        for metric in (TimeMetric.TRAIN_STEP, TimeMetric.EVAL_STEP):
            t = p.time(metric)
            rates.append(p.cost(metric, CostMetric.FLOPS) / t if t > 0 else math.nan)
        shares = [r / peak_flops_per_s if peak_flops_per_s and math.isfinite(r) else None for r in rates]
        out.append(Efficiency(p.name, rates[0] / 1e9, rates[1] / 1e9, shares[0], shares[1]))
    return out


# -- per layer type: where the time goes against where the FLOPs are ------------------------------------
@dataclass(frozen=True)
class LayerShare:
    """A layer type's share of measured training-step time and of counted training-step FLOPs,
    each the mean over every network with a breakdown, a network without the type counting as 0
    (so every network weighs the same); ``networks`` is how many networks have the type."""

    layer_type: str
    time_share: float
    flops_share: float
    networks: int


def layer_type_shares(networks: Sequence[NetworkResult]) -> list[LayerShare]:
    """Mean per-network shares of time and FLOPs by layer type, over networks with a breakdown;
    largest time share first."""
    per_type: dict[str, list[tuple[float, float]]] = {}
    measured = [n for n in networks if n.breakdown]
    for net in measured:
        total_s = sum(s for s, _ in net.breakdown.values())
        total_f = sum(f for _, f in net.breakdown.values())
        if total_s <= 0 or total_f <= 0:
            continue
        for layer_type, (s, f) in net.breakdown.items():
            per_type.setdefault(layer_type, []).append((s / total_s, f / total_f))
    n = len(measured)
    rows = [LayerShare(t, sum(v[0] for v in vals) / n, sum(v[1] for v in vals) / n, len(vals))
            for t, vals in per_type.items()]
    return sorted(rows, key=lambda r: -r.time_share)


# -- data-parallel training: how communication grows with parameters, beside FLOPs ---------------------
@dataclass(frozen=True)
class DataParallelRow:
    """One network's data-parallel training step (the latest stored): ``step_s`` is the slowest
    worker's median step, ``allreduce_s`` the median time with a gradient all-reduce in flight,
    ``train_flops`` the counted FLOPs of one worker's step."""

    name: str
    family: str
    world_size: int
    backend: str
    batch_size: int  # per worker
    threads: int  # per worker
    params: int
    train_flops: int
    gradient_bytes: int
    allreduce_bytes: int  # per step, what each worker hands to all-reduce
    step_s: float
    allreduce_s: float
    single_process_s: float | None
    efficiency: float | None

    @property
    def comm_share(self) -> float:
        """Median all-reduce time / median step time."""
        return self.allreduce_s / self.step_s if self.step_s > 0 else math.nan

    def to_row(self) -> dict[str, object]:
        return {"network": self.name, "family": self.family, "world_size": self.world_size,
                "backend": self.backend, "batch_per_worker": self.batch_size,
                "threads_per_worker": self.threads, "params": self.params,
                "train_flops": self.train_flops, "gradient_bytes": self.gradient_bytes,
                "allreduce_bytes_per_step": self.allreduce_bytes, "step_ms": self.step_s * 1e3,
                "allreduce_ms": self.allreduce_s * 1e3, "comm_share": self.comm_share,
                "single_process_ms": (self.single_process_s * 1e3
                                      if self.single_process_s is not None else None),
                "efficiency": self.efficiency}


@dataclass(frozen=True)
class Rank:
    """Spearman rho (with its p-value and 95% interval) of the communication share against one
    measure of computation; NaN with fewer than MIN_POINTS networks or a constant column."""

    against: CostMetric
    n: int
    rho: float
    p: float
    ci: tuple[float, float]


@dataclass(frozen=True)
class DataParallelAnalysis:
    """Communication share per network, and how it ranks with parameters and with FLOPs."""

    rows: tuple[DataParallelRow, ...]  # fewest parameters first
    vs_params: Rank
    vs_flops: Rank

    def to_dict(self) -> dict[str, object]:
        return {"networks": [r.to_row() for r in self.rows],
                **{f"spearman_comm_share_vs_{k.against.value}": {
                    "rho": k.rho, "p": k.p, "ci": list(k.ci), "n": k.n}
                   for k in (self.vs_params, self.vs_flops)}}


def _rank(shares: Sequence[float], values: Sequence[float], against: CostMetric) -> Rank:
    from scipy import stats

    n = len(shares)
    if n < MIN_POINTS or np.ptp(shares) == 0 or np.ptp(values) == 0:
        return Rank(against, n, math.nan, math.nan, NAN2)
    result = stats.spearmanr(values, shares)
    rho = float(result.statistic)
    return Rank(against, n, rho, float(result.pvalue), spearman_ci(rho, n))


def data_parallel(networks: Sequence[NetworkResult]) -> DataParallelAnalysis | None:
    """The latest stored data-parallel step of every counted network that has one; None when the
    results hold none."""
    rows = []
    for net in networks:
        stored = net.data_parallel()
        if not stored or Mode.TRAIN.value not in net.counts:
            continue
        timing, comm = stored[-1]
        count = net.counts[Mode.TRAIN.value]
        rows.append(DataParallelRow(
            name=net.name, family=net.family, world_size=timing.world_size, backend=timing.backend,
            batch_size=net.batch_size, threads=timing.threads, params=count.params,
            train_flops=count.flops, gradient_bytes=comm.gradient_bytes,
            allreduce_bytes=comm.allreduce_bytes_per_step, step_s=timing.median_s,
            allreduce_s=comm.allreduce_s_per_step, single_process_s=comm.single_process_median_s,
            efficiency=comm.efficiency))
    if not rows:
        return None
    rows.sort(key=lambda r: r.params)
    usable = [r for r in rows if math.isfinite(r.comm_share)]
    shares = [r.comm_share for r in usable]
    return DataParallelAnalysis(
        rows=tuple(rows),
        vs_params=_rank(shares, [r.params for r in usable], CostMetric.PARAMS),
        vs_flops=_rank(shares, [r.train_flops for r in usable], CostMetric.FLOPS))


__all__ = ["DataParallelAnalysis", "DataParallelRow", "Efficiency", "Fit", "LayerShare", "Rank",
           "bootstrap_slopes", "data_parallel", "efficiency", "fit", "layer_type_shares", "spearman_ci"]
