"""The interval around every predicted step time: how far, on this machine, a measurement may land
from the prediction, for a stated coverage (80% unless asked otherwise).

What it is made of, per mode (training step, validation step), all stored with the model as plain
numbers (:class:`IntervalModel`):

- **residuals** r_i = log(measured_i / predicted_i) on the networks the calibration timed but did
  not fit on: its held-out random networks and its transfer set of hand-written standard networks
  (:mod:`dnncost.prediction.transfer`), each measured by the calibration's own protocol (the
  fastest of its passes);
- **pass spreads**: for every network the calibration timed in two or more passes (a minute or
  more apart), half the log-range of its passes' step times, log(slowest / fastest) / 2: how much
  the same step moves between occasions on this machine.

The method is split-conformal prediction with signed errors (Papadopoulos et al. 2002, "Inductive
confidence machines for regression", ECML; Lei et al. 2018, "Distribution-free predictive inference
for regression", JASA 113:1094-1111; with each tail bounded on its own as in Linusson, Johansson &
Lofstrom 2014, "Signed-error conformal regression", PAKDD). For coverage c, alpha = 1 - c is split
between the two tails: the lower bound is the k_lo-th smallest residual, k_lo = floor((n + 1)
alpha / 2), the upper the k_hi-th smallest, k_hi = ceil((n + 1)(1 - alpha / 2)); were a new
network's residual exchangeable with the calibration's, each bound would be crossed with probability
at most alpha / 2. With too few residuals for a bound (k_lo < 1 or k_hi > n: fewer than 9 at 80%,
as a quick calibration's 5) the extremes would cover only (n - 1) / (n + 1) of new networks (67% at
n = 5), so the interval is the wider of them and the normal prediction interval of the residuals,
mean +- t(n - 1, (1 + c) / 2) s sqrt(1 + 1 / n) (the classical one; Hahn & Meeker 1991,
"Statistical Intervals"), and :meth:`IntervalModel.guaranteed` says it rests on that assumption.
The interval is centred on the prediction: its sides are the residuals' spread about their median,
not the median itself. That median is the model's bias on the calibration's own networks, which are
small (steps of 5-140 ms), and it did not carry over to the networks users predict: on the
validation steps it came to x0.93-0.98 in four calibrations, while their four sets of 10-16 unseen
timm networks of 60-250 GFLOPs ran at a median x0.90-1.10 of their predictions, x1.01 on average.
Shifted by it, sets S and T's 32x32 validation rows held 62% and 57% of their networks inside
the interval; centred, 77% and 79%, while no row of sets P to T lost more than one network
(source: benchmarks/fit_choices.py, 2-core Xeon, docs/results.md). The bias is still
reported: :meth:`IntervalModel.summary`'s ``median_ratio``, and ``dnncost calibrate``'s held-out and
transfer rows.

The residuals were measured in the calibration's own session; a user's measurement comes at another
time, so the pass-to-pass noise is added: with m the residuals' median and h the c-quantile of the
pass spreads, each side's distance from m is widened in quadrature (independent errors),
low = -sqrt((m - q_lo)^2 + h^2), high = sqrt((q_hi - m)^2 + h^2) (our choice: h = 0 when no
network was timed twice, as in a quick calibration). The interval is exp(low) to exp(high) times
the predicted time.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dnncost.prediction import reading

COVERAGE = 0.8  # source: issue 22, "70.8 ms (80%: 62-84 ms)"
ROUNDING = 1e-9  # source: our choice; (n + 1) * 0.1 is 1.9999999999999998 in floating point at n = 19


def conformal_bounds(residuals: Sequence[float], coverage: float) -> tuple[float, float, bool]:
    """(lower, upper, guaranteed): the signed split-conformal bounds of ``residuals`` for
    ``coverage`` (see the module docstring); ``guaranteed`` is False where too few residuals made
    a bound fall back on the extreme one."""
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must lie strictly between 0 and 1, got {coverage}")
    r = np.sort(np.asarray(residuals, dtype=float))
    n = len(r)
    if n == 0:
        raise ValueError("no residuals to bound")
    alpha = 1.0 - coverage
    k_lo = math.floor((n + 1) * alpha / 2 + ROUNDING)
    k_hi = math.ceil((n + 1) * (1 - alpha / 2) - ROUNDING)
    guaranteed = k_lo >= 1 and k_hi <= n
    return float(r[max(k_lo, 1) - 1]), float(r[min(k_hi, n) - 1]), guaranteed


def normal_bounds(residuals: Sequence[float], coverage: float) -> tuple[float, float]:
    """The normal prediction interval of one more residual: mean +- t s sqrt(1 + 1 / n), t the
    Student quantile at (1 + coverage) / 2 with n - 1 degrees of freedom (n >= 2)."""
    from scipy.stats import t as student_t

    r = np.asarray(residuals, dtype=float)
    n = len(r)
    if n < 2:
        raise ValueError("a normal prediction interval needs two residuals or more")
    t = float(student_t.ppf((1 + coverage) / 2, n - 1))
    half = t * float(r.std(ddof=1)) * math.sqrt(1 + 1 / n)
    return float(r.mean()) - half, float(r.mean()) + half


@dataclass(frozen=True)
class IntervalModel:
    """The interval's ingredients per mode ('train', 'eval'): the calibration's residuals
    log(measured / predicted) on networks it did not fit, and its networks' pass spreads (half
    the log-range of their passes). Empty: no interval (a model fitted without them)."""

    residuals: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    spreads: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def log_bounds(self, mode: str, coverage: float = COVERAGE) -> tuple[float, float] | None:
        """(low, high) of log(measured / predicted) at ``coverage``, about the prediction (the
        residuals' spread about their median); None without residuals."""
        residuals = self.residuals.get(mode, ())
        if not residuals:
            return None
        q_lo, q_hi, guaranteed = conformal_bounds(residuals, coverage)
        if not guaranteed and len(residuals) >= 2:
            n_lo, n_hi = normal_bounds(residuals, coverage)
            q_lo, q_hi = min(q_lo, n_lo), max(q_hi, n_hi)
        m = float(np.median(residuals))
        spreads = self.spreads.get(mode, ())
        h = float(np.quantile(spreads, coverage)) if spreads else 0.0
        return -math.hypot(m - q_lo, h), math.hypot(q_hi - m, h)

    def factors(self, mode: str, coverage: float = COVERAGE) -> tuple[float, float] | None:
        """(low, high) as factors of the predicted time; None without residuals of ``mode``."""
        bounds = self.log_bounds(mode, coverage)
        return (math.exp(bounds[0]), math.exp(bounds[1])) if bounds is not None else None

    def guaranteed(self, mode: str, coverage: float = COVERAGE) -> bool:
        """Whether ``mode`` has enough residuals for both conformal bounds at ``coverage``."""
        residuals = self.residuals.get(mode, ())
        return bool(residuals) and conformal_bounds(residuals, coverage)[2]

    def summary(self, coverage: float = COVERAGE) -> dict[str, object]:
        """Per mode: the factors at ``coverage``, the residuals' median bias, their count."""
        out: dict[str, object] = {"coverage": coverage}
        for mode, residuals in self.residuals.items():
            factors = self.factors(mode, coverage)
            out[mode] = {"low": factors[0] if factors else None,
                         "high": factors[1] if factors else None,
                         "median_ratio": math.exp(float(np.median(residuals))) if residuals else None,
                         "residuals": len(residuals), "spreads": len(self.spreads.get(mode, ())),
                         "guaranteed": self.guaranteed(mode, coverage)}
        return out

    def to_dict(self) -> dict[str, object]:
        return {"residuals": {m: list(v) for m, v in self.residuals.items()},
                "spreads": {m: list(v) for m, v in self.spreads.items()}}

    @classmethod
    def from_dict(cls, data: object, where: str = "interval") -> IntervalModel:
        d = reading.mapping(data, where, required=("residuals", "spreads"))

        def per_mode(value: object, name: str) -> dict[str, tuple[float, ...]]:
            return {m: tuple(float(x) for x in reading.numbers(v, f"{where}.{name}.{m}"))
                    for m, v in reading.mapping(value, f"{where}.{name}").items()}

        return cls(per_mode(d["residuals"], "residuals"), per_mode(d["spreads"], "spreads"))


def pass_spread(pass_steps: Sequence[float]) -> float | None:
    """Half the log-range of one network's passes, log(slowest / fastest) / 2; None with fewer
    than two passes (or a non-positive time)."""
    if len(pass_steps) < 2 or min(pass_steps) <= 0:
        return None
    return math.log(max(pass_steps) / min(pass_steps)) / 2


__all__ = ["COVERAGE", "IntervalModel", "conformal_bounds", "normal_bounds", "pass_spread"]
