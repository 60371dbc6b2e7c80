"""How time relates to computation across the networks of a study, with the uncertainty of each figure.

For each time (training step, validation step, training epoch, validation epoch, total) against each
measure of computation (FLOPs, MACs, params, bytes moved, operator calls) :func:`analyze_points`
gives Pearson r and Spearman rho with p-values and 95% intervals, the least-squares line with R^2 and
each network's residual (measured / predicted by the line), and the log-log slope with its 95%
interval -- both the regression's interval across networks and a bootstrap interval over the
repeated measurements of each network. A step time is :data:`STUDY_ESTIMATOR` (the lower
quartile of every timed step, pooled over the repeats whose reference probe did not drift;
dnncost.measuring.measurement says why) and its bootstrap resamples the repeats with the same
estimator; an epoch time is the median over epochs. Per network it gives achieved GFLOP/s and the
share of the machine's calibrated peak. :class:`Verdict` states in plain words whether time is linear in FLOPs
here, with the numbers behind the answer. For data-parallel results (world size > 1)
:func:`data_parallel` gives each network's communication share (time with a gradient all-reduce in
flight / step time) beside its parameters and FLOPs, with Spearman rho of the share against each.

Time is proportional to FLOPs exactly when every network runs at the same FLOP/s; then the log-log
slope is 1, the line fits (R^2 near 1) and the achieved FLOP/s of the fastest and slowest network
agree. Time can also be affine in FLOPs (a fixed cost per step plus a part proportional to FLOPs):
then the line fits and predicts every network closely, but the log-log slope is below 1. Otherwise
no straight line in FLOPs predicts the networks' times, which is the paper's finding.
"""
from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from typing import Any

import numpy as np

from dnncost.measuring.measurement import (
    STUDY_ESTIMATOR,
    STUDY_ESTIMATOR_WHY,
    Estimator,
    Measurement,
    Repeats,
    bootstrap_estimates,
    estimate,
    run_reference,
)
from dnncost.study.store import NetworkResult, TimingRow

CONFIDENCE = 0.95  # source: the conventional 95% interval
MIN_POINTS = 3  # source: a line through two points always fits; a fit needs at least three
BOOTSTRAP_SAMPLES = 2000  # source: Efron & Tibshirani (1993) ch. 13, >= 1000 for percentile intervals
SPEARMAN_VARIANCE = 1.06  # source: Fieller, Hartley & Pearson (1957), var(atanh(rho)) ~ 1.06 / (n - 3)
LINEAR_SLOPE = 1.0  # time proportional to FLOPs: log-log slope 1
R2_MIN = 0.9  # source: our choice; a line leaving > 10% of the variance unexplained is not 'linear'
SPREAD_MAX = 2.0  # source: our choice; if achieved FLOP/s differ 2-fold, FLOPs mispredict time 2-fold
RESIDUAL_MAX = 0.25  # source: our choice; a useful line predicts every network within +-25%
MIN_FLOPS_SPAN = 1.25  # source: our choice; an exponent log(time ratio) / log(FLOPs ratio) over
# less than a 25% difference in FLOPs magnifies the repeats' noise into nonsense (ShuffleNet v1
# g3/g8 differ by 4% in FLOPs: 2026-12-02's study read "FLOPs^10.08" off them)


class TimeMetric(str, Enum):
    """The times a study measures, per network."""

    TRAIN_STEP = "train_step"
    EVAL_STEP = "eval_step"
    TRAIN_EPOCH = "train_epoch"
    VAL_EPOCH = "val_epoch"
    TOTAL = "total"

    @property
    def label(self) -> str:
        return {"train_step": "training step", "eval_step": "validation step",
                "train_epoch": "training epoch", "val_epoch": "validation epoch",
                "total": "total training + validation"}[self.value]


class CostMetric(str, Enum):
    """The measures of computation a time is set against."""

    FLOPS = "flops"
    MACS = "macs"
    PARAMS = "params"
    BYTES = "bytes"
    OPS = "op_count"

    @property
    def label(self) -> str:
        return {"flops": "FLOPs", "macs": "MACs", "params": "parameters", "bytes": "bytes moved",
                "op_count": "operator calls"}[self.value]


# -- the data: one point per network -------------------------------------------------------------------
STEP_METRICS = (TimeMetric.TRAIN_STEP, TimeMetric.EVAL_STEP)
"""The times read from timed repeats (by STUDY_ESTIMATOR); the others are epochs (their median)."""


def estimator_of(metric: TimeMetric) -> Estimator:
    """How the repeated values of ``metric`` become one figure: STUDY_ESTIMATOR for a step, the
    median for the epoch times (each epoch is one value)."""
    return STUDY_ESTIMATOR if metric in STEP_METRICS else Estimator.MEDIAN


@dataclass(frozen=True)
class NetworkPoint:
    """One network's measured times and the computation of the work each time covers.

    ``times[m]`` holds the repeated values of time ``m`` in seconds (one per repeat of a step -- its
    median --, one per epoch for the epoch times); ``samples[m]`` the raw timed steps of each of
    those repeats (step times; without them each value stands for its repeat); ``costs[m][c]`` is
    measure ``c`` of the work timed by ``m`` (e.g. the FLOPs of one training step, or of one whole
    training epoch).
    """

    name: str
    family: str
    times: Mapping[TimeMetric, tuple[float, ...]]
    costs: Mapping[TimeMetric, Mapping[CostMetric, float]]
    val_accuracy: float | None = None
    samples: Mapping[TimeMetric, tuple[tuple[float, ...], ...]] = field(default_factory=dict)

    def repeat_samples(self, metric: TimeMetric) -> tuple[tuple[float, ...], ...]:
        """Each repeat's timed samples of ``metric`` (a value alone where no samples were kept)."""
        return self.samples.get(metric) or tuple((v,) for v in self.times.get(metric, ()))

    def time(self, metric: TimeMetric) -> float:
        """The figure of ``metric`` by :func:`estimator_of` (NaN when not measured)."""
        return _estimate(self.repeat_samples(metric), estimator_of(metric))

    def replicates(self, metric: TimeMetric, *, seed: int = 0,
                   resamples: int | None = None) -> np.ndarray:
        """Bootstrap replicates of :meth:`time`: the repeats resampled with replacement, the same
        estimator applied (empty when not measured). Seeded by ``seed`` and the network's name, so
        every fit sees the same replicates of a network."""
        return _replicates(self.repeat_samples(metric), estimator_of(metric), self.name, seed,
                           BOOTSTRAP_SAMPLES if resamples is None else resamples)

    def interval(self, metric: TimeMetric, *, seed: int = 0) -> tuple[float, float]:
        """The 95% bootstrap interval of :meth:`time` over the repeats (NaN with fewer than two)."""
        if len(self.repeat_samples(metric)) < 2:
            return NAN2
        return _percentile_interval(self.replicates(metric, seed=seed))

    def cost(self, metric: TimeMetric, cost: CostMetric) -> float:
        return float(self.costs.get(metric, {}).get(cost, math.nan))


@lru_cache(maxsize=4096)
def _estimate(samples: tuple[tuple[float, ...], ...], estimator: Estimator) -> float:
    return estimate(samples, estimator)


@lru_cache(maxsize=1024)
def _replicates(samples: tuple[tuple[float, ...], ...], estimator: Estimator, name: str, seed: int,
                resamples: int) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    out = bootstrap_estimates(samples, estimator, rng=rng, resamples=resamples)
    out.flags.writeable = False  # shared by every caller through the cache
    return out


def kept_repeats(rows: Sequence[TimingRow], *, reference_s: float | None) -> tuple[TimingRow, ...]:
    """The repeats an estimate is taken over: those whose reference probe stayed within
    DRIFT_THRESHOLD of ``reference_s`` (all of them when every one drifted, or when not every
    repeat was probed, e.g. stored before probes were) -- :attr:`Repeats.kept`."""
    probes = [r.conditions.probe_s for r in rows]
    if not rows or any(p is None for p in probes):
        return tuple(rows)
    repeats = Repeats(tuple(Measurement(r.samples) for r in rows),
                      probe_s=tuple(p for p in probes if p is not None), reference_s=reference_s)
    shifted = repeats.shifted
    return tuple(r for r, s in zip(rows, shifted, strict=True) if not s) or tuple(rows)


def measured_step_s(net: NetworkResult, mode: str, *, reference_s: float | None) -> float:
    """A network's measured step of ``mode`` -- the one figure the study, its report, ``evaluate``
    and the predictor's comparisons use: STUDY_ESTIMATOR over every timed step of the repeats kept
    against ``reference_s`` (:func:`kept_repeats`); NaN when the step was not timed."""
    rows = kept_repeats(net.steps(mode, world_size=1), reference_s=reference_s)
    if not rows:
        return math.nan
    return _estimate(tuple(r.samples or (r.median_s,) for r in rows), STUDY_ESTIMATOR)


def group_reference(networks: Sequence[NetworkResult]) -> float | None:
    """The reference probe of a group's step timings: the run's quiet level
    (:func:`~dnncost.measuring.measurement.run_reference` of every stored probe; None when none
    was probed), what each repeat's drift is set against."""
    return run_reference([p for net in networks for t in net.steps("train", world_size=1)
                          + net.steps("eval", world_size=1)
                          if (p := t.conditions.probe_s) is not None])


def group_record(networks: Sequence[NetworkResult]) -> float | None:
    """The fastest probe on record for the machine when a group's step timings ran (None when none
    was probed): what the group's reference is set against to see a whole-run shift."""
    refs = [t.conditions.probe_reference_s for net in networks for t in net.steps("train", world_size=1)
            + net.steps("eval", world_size=1) if t.conditions.probe_reference_s is not None]
    return min(refs) if refs else None


def _cost_of(count, scale: float = 1.0) -> dict[CostMetric, float]:
    return {CostMetric.FLOPS: count.flops * scale, CostMetric.MACS: count.macs * scale,
            CostMetric.PARAMS: float(count.params), CostMetric.BYTES: count.bytes * scale,
            CostMetric.OPS: count.op_count * scale}


def points_from_results(networks: Sequence[NetworkResult]) -> tuple[list[NetworkPoint], dict[str, str]]:
    """Study results -> (points, {network: why left out}). Step times are the repeats whose
    reference probe did not drift (:func:`kept_repeats`, against the group's reference), with their
    raw samples; epoch costs scale the counted step by samples / batch size; the epoch times come
    from the latest complete training run."""
    points, skipped = [], {}
    reference = group_reference(networks)
    for net in networks:
        if not {"train", "eval"} <= set(net.counts):
            skipped[net.name] = ("failed: " + net.errors[-1].message) if net.errors else "not counted"
            continue
        train, evals = net.counts["train"], net.counts["eval"]
        kept = {metric: kept_repeats(net.steps(mode, world_size=1), reference_s=reference)
                for metric, mode in ((TimeMetric.TRAIN_STEP, "train"), (TimeMetric.EVAL_STEP, "eval"))}
        times: dict[TimeMetric, tuple[float, ...]] = {
            m: tuple(t.median_s for t in rows) for m, rows in kept.items()}
        samples = {m: tuple(t.samples for t in rows) for m, rows in kept.items() if rows}
        costs = {TimeMetric.TRAIN_STEP: _cost_of(train), TimeMetric.EVAL_STEP: _cost_of(evals)}
        accuracy = None
        done = net.completed_trainings
        if done and done[-1].epochs:
            epochs = done[-1].epochs
            times[TimeMetric.TRAIN_EPOCH] = tuple(e.train_time_s for e in epochs)
            times[TimeMetric.VAL_EPOCH] = tuple(e.val_time_s for e in epochs)
            times[TimeMetric.TOTAL] = (sum(e.train_time_s + e.val_time_s for e in epochs),)
            train_scale = epochs[-1].train_samples / net.batch_size
            val_scale = epochs[-1].val_samples / net.batch_size
            costs[TimeMetric.TRAIN_EPOCH] = _cost_of(train, train_scale)
            costs[TimeMetric.VAL_EPOCH] = _cost_of(evals, val_scale)
            costs[TimeMetric.TOTAL] = {
                c: (v + costs[TimeMetric.VAL_EPOCH][c]) * len(epochs) if c is not CostMetric.PARAMS else v
                for c, v in costs[TimeMetric.TRAIN_EPOCH].items()}
            accuracy = epochs[-1].val_accuracy
        times = {m: v for m, v in times.items() if v}
        if not times:
            skipped[net.name] = ("failed: " + net.errors[-1].message) if net.errors else "not timed"
            continue
        points.append(NetworkPoint(net.name, net.family, times, costs, accuracy, samples=samples))
    return points, skipped


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


NAN2 = (math.nan, math.nan)


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
    repeat_slope_ci, repeat_r_ci = _bootstrap(usable, time_metric, x, seed=seed, samples=bootstrap)
    return Fit(
        time_metric=time_metric, cost_metric=cost_metric, names=tuple(p.name for p in usable),
        x=tuple(x.tolist()), y=tuple(y.tolist()), **stats_,
        spearman_ci=_spearman_ci(stats_["spearman_rho"], len(usable)),
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


def _spearman_ci(rho: float, n: int) -> tuple[float, float]:
    """95% interval of Spearman's rho by Fisher's z with the Fieller-Hartley-Pearson variance."""
    from scipy import stats

    if n <= 3 or not math.isfinite(rho):
        return (math.nan, math.nan)
    z = math.atanh(max(min(rho, 1.0 - 1e-12), -1.0 + 1e-12))
    half = stats.norm.ppf(0.5 + CONFIDENCE / 2) * math.sqrt(SPEARMAN_VARIANCE / (n - 3))
    return (math.tanh(z - half), math.tanh(z + half))


def _bootstrap(points: Sequence[NetworkPoint], metric: TimeMetric, x: np.ndarray, *, seed: int,
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
    return _percentile_interval(slopes), _percentile_interval(r)


def _percentile_interval(values: np.ndarray) -> tuple[float, float]:
    """The central CONFIDENCE interval of the finite ``values``; NaN when there are none."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return (math.nan, math.nan)
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return (float(lo), float(hi))


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
    return Rank(against, n, rho, float(result.pvalue), _spearman_ci(rho, n))


def data_parallel(networks: Sequence[NetworkResult]) -> DataParallelAnalysis | None:
    """The latest stored data-parallel step of every counted network that has one; None when the
    results hold none."""
    rows = []
    for net in networks:
        stored = net.data_parallel()
        if not stored or "train" not in net.counts:
            continue
        timing, comm = stored[-1]
        count = net.counts["train"]
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


# -- explaining time by several measures at once ------------------------------------------------------
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
    family, and the claims these numbers support, in words."""

    time_metric: TimeMetric
    names: tuple[str, ...]
    models: tuple[MeasureModel, ...]  # each measure alone, in EXPLAINING order, then all together
    shares: tuple[MeasureShare, ...]
    families: tuple[FamilyLine, ...]
    best_vs_flops_ci: tuple[float, float]  # CV R^2 of the best single measure minus FLOPs'
    claims: tuple[str, ...]

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
                "best_single_minus_flops_cv_r2_ci": list(self.best_vs_flops_ci),
                "claims": list(self.claims)}


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
        cv_r_squared_ci=_percentile_interval(boot),
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
            repeat_ci, _ = _bootstrap(members, metric, x, seed=seed, samples=bootstrap)
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
    share_rows = tuple(MeasureShare(m, float(shares[j]), _percentile_interval(boot_shares_arr[:, j]),
                                    float(unique[j])) for j, m in enumerate(measures))
    best = max(range(len(measures)), key=lambda j: models[j].cv_r_squared)
    flops_j = measures.index(CostMetric.FLOPS) if CostMetric.FLOPS in measures else best
    diff_ci = _percentile_interval(boots[best] - boots[flops_j])
    families = tuple(family_lines(usable, metric, seed=seed))
    claims = _claims(metric, models, share_rows, families, measures[best], diff_ci,
                     fit(usable, metric, seed=seed))
    return Explanation(time_metric=metric, names=names, models=tuple(models), shares=share_rows,
                       families=families, best_vs_flops_ci=diff_ci, claims=claims)


def _claims(metric: TimeMetric, models: Sequence[MeasureModel], shares: Sequence[MeasureShare],
            families: Sequence[FamilyLine], best: CostMetric, diff_ci: tuple[float, float],
            across: Fit | None) -> tuple[str, ...]:
    """The sentences the explanation's numbers support, every figure with its interval."""
    joint, singles = models[-1], models[:-1]
    what = f"{metric.label} time"
    n = len(joint.loo_ratio)
    out = [
        f"Leave-one-network-out over {n} networks, each measure alone predicts {what} with "
        "cross-validated R² " + "; ".join(
            f"{m.label} {m.cv_r_squared:.2f} ({_fmt_ci(m.cv_r_squared_ci)})" for m in singles)
        + f"; all {len(joint.measures)} together {joint.cv_r_squared:.2f} "
          f"({_fmt_ci(joint.cv_r_squared_ci)}), with a median held-out error of "
          f"{joint.median_error:.0%} (worst {joint.worst_error:.0%}).",
    ]
    if best is not CostMetric.FLOPS and all(math.isfinite(v) for v in diff_ci):
        settled = diff_ci[0] > 0
        out.append(f"{best.label.capitalize()} predict{'s' if best is CostMetric.BYTES else ''} "
                   f"{what} best of the single measures; its cross-validated R² exceeds FLOPs' by "
                   f"{diff_ci[0]:+.2f} to {diff_ci[1]:+.2f} (95% interval over resampled networks)"
                   + ("." if settled else ": the interval includes 0, so this run does not settle "
                                         "which measure is better."))
    elif best is CostMetric.FLOPS:
        out.append(f"FLOPs predict {what} best of the single measures on this run.")
    out.append(f"Shares of the variance (Shapley/LMG decomposition of the joint in-sample R² = "
               f"{joint.r_squared:.2f}): " + "; ".join(
                   f"{s.measure.label} {s.share:.2f} ({_fmt_ci(s.share_ci)}), unique "
                   f"{s.unique:.2f}" for s in shares)
               + ". 'Unique' is the R² lost when that measure is dropped from the joint fit.")
    out.append(f"The joint fit's fixed cost per step is {joint.intercept_s * 1e3:.3g} ms.")
    if families:
        inside = "; ".join(_family_claim(f) for f in families)
        tail = (f" Across all networks: FLOPs^{across.loglog_slope:.2f} "
                f"({_fmt_ci(across.loglog_slope_ci)}), R² {across.r_squared:.2f}."
                if across is not None else "")
        out.append(f"Inside each family (depth/width variants), {what} grows as {inside}.{tail}")
    return tuple(out)


def _family_claim(f: FamilyLine) -> str:
    """One family's part of the within-family sentence: its exponent with an interval, or, when
    its variants' FLOPs are too close for one, the plain ratios."""
    head = f"{f.family} (n = {len(f.names)})"
    if not math.isfinite(f.loglog_slope):
        return (f"{head} {f.flops_ratio:.2f}× the FLOPs in {f.time_ratio:.2f}× the time (FLOPs too "
                "close for an exponent)")
    ci = (f" ({_fmt_ci(f.slope_ci)})" if math.isfinite(f.slope_ci[0]) else
          f" ({_fmt_ci(f.repeat_slope_ci)} over repeats)" if math.isfinite(f.repeat_slope_ci[0])
          else "")
    return (f"{head} FLOPs^{f.loglog_slope:.2f}{ci}, {f.flops_ratio:.1f}× the FLOPs in "
            f"{f.time_ratio:.1f}× the time")


# -- the verdict ---------------------------------------------------------------------------------------
class Linearity(str, Enum):
    """How time relates to FLOPs across the networks."""

    PROPORTIONAL = "proportional"  # time = FLOPs / one speed shared by every network
    AFFINE = "affine"  # time = a + b * FLOPs predicts every network well, with a fixed cost a
    NOT_LINEAR = "not linear"  # no straight line predicts every network well
    UNKNOWN = "unknown"  # too few networks to say


@dataclass(frozen=True)
class Verdict:
    """Is time linear in FLOPs here? A plain-words headline, the reasons with their numbers."""

    kind: Linearity
    headline: str
    reasons: tuple[str, ...]
    numbers: Mapping[str, object]

    @property
    def linear(self) -> bool | None:
        """True for proportional or affine, False for not linear, None when unknown."""
        if self.kind is Linearity.UNKNOWN:
            return None
        return self.kind is not Linearity.NOT_LINEAR

    @property
    def text(self) -> str:
        return " ".join((self.headline, *self.reasons))


def _fmt_ci(ci: tuple[float, float], digits: int = 2) -> str:
    if not all(math.isfinite(v) for v in ci):
        return "n/a"
    return f"{ci[0]:.{digits}f} to {ci[1]:.{digits}f}"


def _gflops(flops_per_s: float) -> str:
    g = flops_per_s / 1e9
    return f"{g:,.0f} GFLOP/s" if g >= 1000 else f"{g:.3g} GFLOP/s"


def _fmt_p(p: float) -> str:
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.2g}"


def verdict(fit_: Fit | None) -> Verdict:
    """Judge how time relates to FLOPs from one Fit (normally training-step time vs FLOPs).

    Proportional: the log-log slope's interval (the wider of across-networks and over-repeats)
    includes 1, the line explains R^2 >= R2_MIN and achieved FLOP/s differ at most SPREAD_MAX-fold.
    Affine: not proportional, but R^2 >= R2_MIN and the line predicts every network within
    RESIDUAL_MAX. Not linear: otherwise.
    """
    if fit_ is None:
        return Verdict(Linearity.UNKNOWN, f"Not enough data: the verdict needs at least {MIN_POINTS} "
                                          "networks with both a count and a time.", (), {})
    rates = [xi / yi for xi, yi in zip(fit_.x, fit_.y, strict=True)]  # achieved FLOP/s of each network
    fastest, slowest = int(np.argmax(rates)), int(np.argmin(rates))
    spread = rates[fastest] / rates[slowest]
    residuals = {n: fit_.residual(n) for n in fit_.names}
    worst = max(residuals, key=lambda n: abs(math.log(residuals[n])) if residuals[n] > 0 else math.inf)
    worst_ratio = residuals[worst]
    low, high = fit_.slope_ci
    slope_is_1 = not math.isfinite(low) or low <= LINEAR_SLOPE <= high
    fits_line = fit_.r_squared >= R2_MIN
    line_predicts = worst_ratio > 0 and abs(worst_ratio - 1) <= RESIDUAL_MAX
    what = f"{fit_.time_metric.label} time"
    numbers = {"n": fit_.n, "loglog_slope": fit_.loglog_slope, "loglog_slope_ci": list(fit_.slope_ci),
               "regression_slope_ci": list(fit_.loglog_slope_ci),
               "repeat_slope_ci": list(fit_.repeat_slope_ci), "r_squared": fit_.r_squared,
               "pearson_r": fit_.pearson_r, "pearson_ci": list(fit_.pearson_ci),
               "spearman_rho": fit_.spearman_rho, "spearman_p": fit_.spearman_p,
               "flops_per_s_spread": spread, "fastest": fit_.names[fastest],
               "slowest": fit_.names[slowest], "worst_residual": worst_ratio,
               "worst_residual_network": worst}
    off = (f"{worst_ratio:.2f}× the line's prediction" if worst_ratio > 0
           else "a time the line cannot predict (it predicts no positive time)")
    reasons = (
        f"Across {fit_.n} networks, {what} grows as FLOPs^{fit_.loglog_slope:.2f} (log-log slope; "
        f"95% interval {_fmt_ci(fit_.loglog_slope_ci)} across networks, "
        f"{_fmt_ci(fit_.repeat_slope_ci)} over repeated measurements; "
        f"{'it includes 1' if slope_is_1 else 'it excludes 1'}).",
        f"The least-squares line explains R² = {fit_.r_squared:.2f} of the variance "
        f"(Pearson r = {fit_.pearson_r:.2f}, 95% interval {_fmt_ci(fit_.pearson_ci)}; "
        f"Spearman ρ = {fit_.spearman_rho:.2f}, {_fmt_p(fit_.spearman_p)}); the network furthest "
        f"from it, {worst}, takes {off}.",
        (f"Achieved speed differs {spread:.1f}-fold between networks: "
         f"{_gflops(rates[fastest])} for {fit_.names[fastest]}, "
         f"{_gflops(rates[slowest])} for {fit_.names[slowest]}." if spread >= 1.05 else
         f"Every network achieves about the same speed, {_gflops(rates[fastest])}."),
    )
    if slope_is_1 and fits_line and spread <= SPREAD_MAX:
        return Verdict(Linearity.PROPORTIONAL, f"Linear: {what} is proportional to FLOPs on this "
                                               "machine, within the measurements' uncertainty.",
                       reasons, numbers)
    if fits_line and line_predicts:
        return Verdict(Linearity.AFFINE, f"Linear with a fixed cost: {what} ≈ a + b × FLOPs predicts "
                                         f"every network within ±{RESIDUAL_MAX:.0%}, but time is not "
                                         "proportional to FLOPs.", reasons, numbers)
    why = [w for w, bad in ((f"R² < {R2_MIN}", not fits_line),
                            (f"the line is off by more than ±{RESIDUAL_MAX:.0%} for {worst}",
                             not line_predicts),
                            ("the log-log slope is not 1", not slope_is_1)) if bad]
    return Verdict(Linearity.NOT_LINEAR, f"Not linear: no straight line in FLOPs predicts {what} "
                                         f"on this machine ({'; '.join(why)}).", reasons, numbers)


# -- everything together --------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyAnalysis:
    """The whole analysis of one group of comparable results (one configuration, one machine)."""

    points: tuple[NetworkPoint, ...]
    fits: tuple[Fit, ...]
    efficiency: tuple[Efficiency, ...]
    verdict: Verdict
    peak_flops_per_s: float | None = None
    skipped: Mapping[str, str] = field(default_factory=dict)
    layer_types: tuple[LayerShare, ...] = ()
    data_parallel: DataParallelAnalysis | None = None
    explanation: Explanation | None = None

    def fit(self, time_metric: TimeMetric, cost_metric: CostMetric = CostMetric.FLOPS) -> Fit | None:
        for f in self.fits:
            if f.time_metric is time_metric and f.cost_metric is cost_metric:
                return f
        return None

    def network_rows(self) -> list[dict[str, object]]:
        """One row per network: computation, times (steps by STUDY_ESTIMATOR with their 95%
        interval over repeats, epochs by the median), speed, residual, accuracy."""
        line = self.fit(TimeMetric.TRAIN_STEP)
        speed = {e.name: e for e in self.efficiency}
        rows: list[dict[str, object]] = []
        for p in self.points:
            e = speed[p.name]
            low, high = p.interval(TimeMetric.TRAIN_STEP)
            rows.append({
                "network": p.name, "family": p.family,
                "params": _int(p.cost(TimeMetric.TRAIN_STEP, CostMetric.PARAMS)),
                "eval_flops": _int(p.cost(TimeMetric.EVAL_STEP, CostMetric.FLOPS)),
                "train_flops": _int(p.cost(TimeMetric.TRAIN_STEP, CostMetric.FLOPS)),
                "train_bytes": _int(p.cost(TimeMetric.TRAIN_STEP, CostMetric.BYTES)),
                "train_ops": _int(p.cost(TimeMetric.TRAIN_STEP, CostMetric.OPS)),
                "train_step_ms": p.time(TimeMetric.TRAIN_STEP) * 1e3,
                "train_step_ci_low_ms": low * 1e3, "train_step_ci_high_ms": high * 1e3,
                "train_step_repeats": len(p.times.get(TimeMetric.TRAIN_STEP, ())),
                "eval_step_ms": p.time(TimeMetric.EVAL_STEP) * 1e3,
                "train_epoch_s": p.time(TimeMetric.TRAIN_EPOCH),
                "val_epoch_s": p.time(TimeMetric.VAL_EPOCH),
                "total_s": p.time(TimeMetric.TOTAL),
                "train_gflops_per_s": e.train_gflops_per_s,
                "eval_gflops_per_s": e.eval_gflops_per_s,
                "train_share_of_peak": e.train_share_of_peak,
                "residual": line.residual(p.name) if line and p.name in line.names else math.nan,
                "val_accuracy": p.val_accuracy,
            })
        return rows

    def fit_rows(self) -> list[dict[str, object]]:
        return [f.to_row() for f in self.fits]

    def to_dict(self) -> dict[str, object]:
        return {
            "verdict": {"linear": self.verdict.linear, "kind": self.verdict.kind.value,
                        "headline": self.verdict.headline,
                        "reasons": list(self.verdict.reasons), "numbers": dict(self.verdict.numbers)},
            "peak_flops_per_s": self.peak_flops_per_s,
            "step_estimator": {"name": STUDY_ESTIMATOR.value, "why": STUDY_ESTIMATOR_WHY},
            "networks": self.network_rows(),
            "fits": self.fit_rows(),
            "residuals": {f"{f.time_metric.value}_vs_flops": {n: f.residual(n) for n in f.names}
                          for f in self.fits if f.cost_metric is CostMetric.FLOPS},
            "repeats": {p.name: {m.value: list(v) for m, v in p.times.items()} for p in self.points},
            "skipped": dict(self.skipped),
            "layer_types": [{"layer_type": r.layer_type, "time_share": r.time_share,
                             "flops_share": r.flops_share, "networks": r.networks}
                            for r in self.layer_types],
            "data_parallel": self.data_parallel.to_dict() if self.data_parallel else None,
            "explanation": self.explanation.to_dict() if self.explanation else None,
        }


def _int(value: float) -> int | None:
    """A count as an integer for tables (None when unknown)."""
    return int(value) if math.isfinite(value) else None


def analyze_points(points: Sequence[NetworkPoint], *, peak_flops_per_s: float | None = None,
                   skipped: Mapping[str, str] | None = None,
                   layer_types: Sequence[LayerShare] = (), seed: int = 0,
                   data_parallel: DataParallelAnalysis | None = None) -> StudyAnalysis:
    """Every relation of every time to every measure of computation, speed per network, verdict."""
    fits = tuple(f for t in TimeMetric for c in CostMetric
                 if (f := fit(points, t, cost_metric=c, seed=seed)) is not None)
    by_key = {(f.time_metric, f.cost_metric): f for f in fits}
    main = by_key.get((TimeMetric.TRAIN_STEP, CostMetric.FLOPS)) or by_key.get(
        (TimeMetric.EVAL_STEP, CostMetric.FLOPS))
    return StudyAnalysis(points=tuple(points), fits=fits,
                         efficiency=tuple(efficiency(points, peak_flops_per_s=peak_flops_per_s)),
                         verdict=verdict(main), peak_flops_per_s=peak_flops_per_s,
                         skipped=dict(skipped or {}), layer_types=tuple(layer_types),
                         data_parallel=data_parallel,
                         explanation=explain(points, TimeMetric.TRAIN_STEP, seed=seed))


def analyze(networks: Sequence[NetworkResult], *, peak_flops_per_s: float | None = None,
            seed: int = 0) -> StudyAnalysis:
    """Analyse stored study results (one configuration on one machine)."""
    points, skipped = points_from_results(networks)
    return analyze_points(points, peak_flops_per_s=peak_flops_per_s, skipped=skipped,
                          layer_types=layer_type_shares(networks), seed=seed,
                          data_parallel=data_parallel(networks))


__all__ = ["EXPLAINING", "STEP_METRICS", "CostMetric", "DataParallelAnalysis", "DataParallelRow",
           "Efficiency", "Explanation", "FamilyLine", "Fit", "LayerShare", "Linearity",
           "MeasureModel", "MeasureShare", "NetworkPoint", "Rank", "StudyAnalysis", "TimeMetric",
           "Verdict", "analyze", "analyze_points", "data_parallel", "efficiency", "estimator_of",
           "explain", "family_lines", "fit", "group_record", "group_reference", "kept_repeats",
           "layer_type_shares", "points_from_results", "verdict"]
