"""How well step time is predicted from structure, measured honestly: leave one family out.

For every network with measured training- and validation-step times, each method predicts the
time with nothing measured on that network's family:

- ``per_operator``: the per-kernel model (dnncost.prediction.model), fitted on random networks'
  kernels only (never on a network evaluated here);
- ``per_operator_scaled``: the same, times one factor per mode fitted on the *other* families'
  networks (the geometric mean of their measured / predicted): a network-level correction;
- ``flops_line`` / ``params_line``: time = a * FLOPs (or params) + b, fitted on the other families'
  networks by least squares on relative error;
- ``roofline``: the sum over operator calls of max(FLOPs / peak, bytes / bandwidth) with the
  machine's calibrated peak (the faster of a matmul and a 3x3 convolution benchmark,
  dnncost.measuring.calibrate) and copy bandwidth -- no per-class efficiency, no overhead.

Each network enters as an :class:`Observation` of plain numbers -- its measured step, counted FLOPs
and parameters, and the per-kernel model's and the roofline's predictions made beforehand (the
study stores them, dnncost.study.predicted) -- so evaluating recounts and predicts nothing.

Metrics: mean absolute percentage error (MAPE), the share of networks within +-10%, Spearman's rho
and pairwise ordering accuracy (of every pair of networks, the share the method puts in the
measured order); the shares predicted too fast and too slow (one-sidedness: an unbiased method
splits them about evenly); and for the per-kernel model, whose every prediction carries an interval
(dnncost.prediction.interval), the coverage: the share of networks whose measured time falls inside
their interval.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from itertools import combinations

import numpy as np

from dnncost.core.kinds import Mode
from dnncost.counting.cost import CostReport
from dnncost.prediction.interval import COVERAGE

TOLERANCE = 0.10  # source: issue 6, "the share within +-10%"


class Method(str, Enum):
    """A way of predicting step time."""

    PER_OPERATOR = "per_operator"
    PER_OPERATOR_SCALED = "per_operator_scaled"
    FLOPS_LINE = "flops_line"
    PARAMS_LINE = "params_line"
    ROOFLINE = "roofline"

    @property
    def label(self) -> str:
        return {"per_operator": "per-operator model (micro-benchmarks only)",
                "per_operator_scaled": "per-operator model x scale from other families",
                "flops_line": "FLOPs-only line", "params_line": "params-only line",
                "roofline": "plain roofline, calibrated peak"}[self.value]


# -- metrics ---------------------------------------------------------------------------------------
def _arrays(predicted: Sequence[float], measured: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if p.shape != m.shape or p.ndim != 1:
        raise ValueError(f"predicted and measured must be vectors of one length, got {p.shape}, {m.shape}")
    if np.any(m <= 0):
        raise ValueError("measured times must be positive")
    return p, m


def mape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Mean of |predicted - measured| / measured (a fraction: 0.1 is 10%)."""
    p, m = _arrays(predicted, measured)
    return float(np.mean(np.abs(p - m) / m)) if len(m) else math.nan


def share_within(predicted: Sequence[float], measured: Sequence[float], *,
                 tolerance: float = TOLERANCE) -> float:
    """Share of predictions within +-``tolerance`` (relative) of the measured value."""
    p, m = _arrays(predicted, measured)
    return float(np.mean(np.abs(p - m) / m <= tolerance + 1e-12)) if len(m) else math.nan


def spearman(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Spearman's rank correlation (NaN with fewer than 3 points or a constant vector)."""
    from scipy.stats import spearmanr

    p, m = _arrays(predicted, measured)
    if len(m) < 3 or np.ptp(p) == 0 or np.ptp(m) == 0:
        return math.nan
    return float(spearmanr(p, m).statistic)


def one_sided(predicted: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """(too fast, too slow): the shares of predictions below and above the measured value."""
    p, m = _arrays(predicted, measured)
    return (float(np.mean(p < m)), float(np.mean(p > m))) if len(m) else (math.nan, math.nan)


def coverage(intervals: Sequence[tuple[float, float]], measured: Sequence[float]) -> float:
    """Share of measured values inside their [low, high] interval (bounds included)."""
    _, m = _arrays([0.0] * len(intervals), measured)
    bounds = np.asarray(intervals, dtype=float).reshape(len(m), 2)
    return float(np.mean((bounds[:, 0] <= m) & (m <= bounds[:, 1]))) if len(m) else math.nan


def pairwise_accuracy(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Of every pair with different measured times, the share whose predictions are ordered the
    same way (a tie in the prediction counts half)."""
    p, m = _arrays(predicted, measured)
    score, pairs = 0.0, 0
    for i, j in combinations(range(len(m)), 2):
        if m[i] == m[j]:
            continue
        pairs += 1
        agree = np.sign(p[i] - p[j]) * np.sign(m[i] - m[j])
        score += 1.0 if agree > 0 else 0.5 if agree == 0 else 0.0
    return score / pairs if pairs else math.nan


@dataclass(frozen=True)
class Metrics:
    """How well one method predicts one kind of step over n networks."""

    n: int
    mape: float
    within: float  # share within +-TOLERANCE
    spearman: float
    pairwise: float
    too_fast: float = math.nan  # share predicted below the measured time
    too_slow: float = math.nan  # share predicted above it
    coverage: float = math.nan  # share measured inside the interval; NaN: no intervals

    @classmethod
    def of(cls, predicted: Sequence[float], measured: Sequence[float], *,
           intervals: Sequence[tuple[float, float]] | None = None) -> Metrics:
        """The metrics of ``predicted`` against ``measured``; ``intervals`` (one per network)
        give the coverage."""
        fast, slow = one_sided(predicted, measured)
        return cls(len(measured), mape(predicted, measured), share_within(predicted, measured),
                   spearman(predicted, measured), pairwise_accuracy(predicted, measured),
                   fast, slow,
                   coverage(intervals, measured) if intervals is not None else math.nan)


# -- the data -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Observation:
    """One network's measured step of one mode and what the methods predict it from: its counted
    FLOPs and parameters, and the per-kernel model's and the plain roofline's predictions of it
    (None where there is no model, or no calibrated peak and bandwidth)."""

    name: str
    family: str
    mode: str  # 'train' or 'eval'
    measured_s: float
    flops: float
    params: float
    per_operator_s: float | None = None
    per_operator_interval_s: tuple[float, float] | None = None  # its (low, high), where it has one
    roofline_s: float | None = None


@dataclass(frozen=True)
class Point:
    """One network and mode: measured seconds and each method's held-out prediction."""

    name: str
    family: str
    mode: str
    measured_s: float
    predicted_s: Mapping[Method, float]
    interval_s: tuple[float, float] | None = None  # the per-operator prediction's (low, high)

    def error(self, method: Method) -> float:
        """Relative error of ``method``: predicted / measured - 1."""
        return self.predicted_s[method] / self.measured_s - 1


@dataclass(frozen=True)
class Evaluation:
    """Held-out predictions of every method for every network and mode."""

    points: tuple[Point, ...]
    methods: tuple[Method, ...]
    notes: Mapping[str, str] = field(default_factory=dict)  # method -> why it is missing

    def modes(self) -> list[str]:
        return [m.value for m in Mode if any(p.mode == m.value for p in self.points)]

    def of_mode(self, mode: str) -> list[Point]:
        return [p for p in self.points if p.mode == mode]

    def metrics(self, method: Method, mode: str) -> Metrics:
        """``method``'s metrics over the networks of ``mode`` (coverage: the per-operator model,
        where every network has an interval)."""
        pts = self.of_mode(mode)
        intervals = [p.interval_s for p in pts]
        return Metrics.of([p.predicted_s[method] for p in pts], [p.measured_s for p in pts],
                          intervals=[i for i in intervals if i is not None]
                          if method is Method.PER_OPERATOR and None not in intervals else None)

    def table_rows(self) -> list[dict[str, object]]:
        """One row per mode and method: MAPE and share within +-10% (in %), rho, pairwise
        accuracy, the method's MAPE over the per-operator model's ('x per-op error'), the shares
        predicted too fast and too slow, and the interval's coverage (in %)."""
        rows: list[dict[str, object]] = []
        for mode in self.modes():
            base = (self.metrics(Method.PER_OPERATOR, mode).mape
                    if Method.PER_OPERATOR in self.methods else math.nan)
            for method in self.methods:
                m = self.metrics(method, mode)
                rows.append({"step": mode, "method": method.value, "n": m.n,
                             "mape_pct": 100 * m.mape, "within_10pct": 100 * m.within,
                             "spearman": m.spearman, "pairwise": m.pairwise,
                             "x_per_op_error": m.mape / base if base else math.nan,
                             "too_fast_pct": 100 * m.too_fast, "too_slow_pct": 100 * m.too_slow,
                             "coverage_pct": 100 * m.coverage})
        return rows

    def headline(self, mode: str = "train") -> str:
        """One sentence on the per-operator model against the FLOPs-only line, for a report."""
        if Method.PER_OPERATOR not in self.methods or not self.of_mode(mode):
            return f"No per-operator prediction of the {mode} step to evaluate."
        m = self.metrics(Method.PER_OPERATOR, mode)
        text = (f"Predicted from structure alone, the {mode} step of {m.n} networks is off by "
                f"{m.mape:.1%} on average (MAPE), {m.within:.0%} of them within "
                f"+-{TOLERANCE:.0%}, ranked with Spearman rho {m.spearman:.2f}")
        if Method.FLOPS_LINE in self.methods:
            line = self.metrics(Method.FLOPS_LINE, mode)
            text += (f"; a line in FLOPs fitted on the other families is off by {line.mape:.1%} "
                     f"({line.mape / m.mape:.1f}x the error)" if m.mape else "")
        text += f". {m.too_fast:.0%} of them were predicted too fast, {m.too_slow:.0%} too slow"
        if math.isfinite(m.coverage):
            text += f"; {m.coverage:.0%} measured inside their {COVERAGE:.0%} interval"
        return text + "."

    def network_rows(self) -> list[dict[str, object]]:
        """One row per network and mode: measured and predicted milliseconds, error in %."""
        rows = []
        for p in self.points:
            row: dict[str, object] = {"network": p.name, "family": p.family, "step": p.mode,
                                      "measured_ms": p.measured_s * 1e3}
            for method in self.methods:
                row[f"{method.value}_ms"] = p.predicted_s[method] * 1e3
                row[f"{method.value}_err_pct"] = 100 * p.error(method)
            if p.interval_s is not None:
                row["per_operator_low_ms"], row["per_operator_high_ms"] = (
                    p.interval_s[0] * 1e3, p.interval_s[1] * 1e3)
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, object]:
        return {"protocol": "leave-one-family-out", "tolerance": TOLERANCE,
                "methods": {m.value: m.label for m in self.methods},
                "metrics": self.table_rows(), "networks": self.network_rows(),
                "notes": dict(self.notes)}


# -- the protocol ----------------------------------------------------------------------------------
def _line(xs: np.ndarray, ys: np.ndarray) -> Callable[[float], float]:
    """time = a * x + b minimising the squared relative error sum(((a x + b) / y - 1)^2)."""
    design = np.column_stack([xs / ys, 1 / ys])
    (a, b), *_ = np.linalg.lstsq(design, np.ones_like(ys), rcond=None)
    return lambda x: float(a * x + b)


def roofline_seconds(report: CostReport, *, peak_flops_per_s: float, bytes_per_s: float) -> float:
    """Sum over operator calls of max(FLOPs / peak, bytes / bandwidth): no overhead, no efficiency."""
    return sum(max(r.cost.flops / peak_flops_per_s, r.cost.bytes / bytes_per_s) for r in report.records)


def evaluate(observations: Sequence[Observation]) -> Evaluation:
    """Predict every observation with nothing measured on its own family (leave one family out).

    Methods that cannot run are left out with a note: the per-operator ones unless every
    observation has the per-kernel model's prediction, the roofline unless every one has the
    roofline's, the lines with fewer than two other families' networks of a mode.
    """
    notes: dict[str, str] = {}
    methods = [Method.PER_OPERATOR, Method.PER_OPERATOR_SCALED, Method.FLOPS_LINE,
               Method.PARAMS_LINE, Method.ROOFLINE]
    per_op = {id(o): o.per_operator_s for o in observations if o.per_operator_s is not None}
    has_model = bool(observations) and len(per_op) == len(observations)
    if not has_model:
        methods = [m for m in methods if m not in (Method.PER_OPERATOR, Method.PER_OPERATOR_SCALED)]
        notes["per_operator"] = "this machine has no per-operator calibration"
    has_roofline = bool(observations) and all(o.roofline_s is not None for o in observations)
    if not has_roofline:
        methods.remove(Method.ROOFLINE)
        notes["roofline"] = "no calibrated peak FLOP/s and bandwidth (run `dnncost calibrate`)"
    points = []
    for o in observations:
        others = [q for q in observations if q.mode == o.mode and q.family != o.family]
        if len(others) < 2:
            notes["lines"] = (f"'{o.name}' ({o.mode}) has fewer than two networks of other "
                              "families to fit on")
            methods = [m for m in methods if m not in (Method.FLOPS_LINE, Method.PARAMS_LINE,
                                                       Method.PER_OPERATOR_SCALED)]
        predicted: dict[Method, float] = {}
        if has_model:
            predicted[Method.PER_OPERATOR] = per_op[id(o)]
            if others:
                scale = math.exp(float(np.mean([math.log(q.measured_s / per_op[id(q)]) for q in others])))
                predicted[Method.PER_OPERATOR_SCALED] = scale * per_op[id(o)]
        if len(others) >= 2:
            ys = np.array([q.measured_s for q in others])
            flops = np.array([q.flops for q in others], dtype=float)
            params = np.array([q.params for q in others], dtype=float)
            predicted[Method.FLOPS_LINE] = _line(flops, ys)(o.flops)
            predicted[Method.PARAMS_LINE] = _line(params, ys)(o.params)
        if has_roofline and o.roofline_s is not None:
            predicted[Method.ROOFLINE] = o.roofline_s
        points.append(Point(o.name, o.family, o.mode, o.measured_s, predicted,
                            o.per_operator_interval_s if has_model else None))
    points = [Point(p.name, p.family, p.mode, p.measured_s,
                    {m: v for m, v in p.predicted_s.items() if m in methods}, p.interval_s)
              for p in points]
    return Evaluation(tuple(points), tuple(methods), notes)


__all__ = ["Evaluation", "Method", "Metrics", "Observation", "Point", "TOLERANCE", "coverage",
           "evaluate", "mape", "one_sided", "pairwise_accuracy", "roofline_seconds", "share_within",
           "spearman"]
