"""The statistics of a set of timed samples: raw samples kept, every figure derived from them.

Shared by step timing, calibration and the micro-benchmarks, so a median, an interval and "noisy"
mean one thing everywhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import quantile_test

NOISE_THRESHOLD = 0.10  # source: torch.utils.benchmark.utils.common._IQR_WARN_THRESHOLD (IQR/median)
MIN_SAMPLES_FOR_CI = 6  # source: order statistics; the (min, max) interval covers the median with
#                         probability 1 - 2 * 0.5**n, which first reaches 95% at n = 6


class NoisyMeasurementWarning(UserWarning):
    """A measurement whose IQR exceeds NOISE_THRESHOLD of its median: the machine was busy."""


@dataclass(frozen=True)
class Measurement:
    """Raw timed samples (seconds, one per step) and the statistics of them."""

    samples: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a Measurement needs at least one sample")

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples))

    @property
    def min(self) -> float:
        return float(np.min(self.samples))

    @property
    def iqr(self) -> float:
        """Interquartile range (75th - 25th percentile), in seconds."""
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float(q3 - q1)

    @property
    def relative_iqr(self) -> float:
        """IQR / median: the noise figure torch.utils.benchmark warns on."""
        return self.iqr / self.median if self.median > 0 else math.inf

    @property
    def cv(self) -> float:
        """Coefficient of variation, sample standard deviation / mean (0 for a single sample)."""
        if self.n < 2 or self.mean <= 0:
            return 0.0
        return float(np.std(self.samples, ddof=1) / self.mean)

    @property
    def ci95(self) -> tuple[float, float]:
        """Distribution-free 95% confidence interval of the median (binomial order statistics,
        scipy.stats.quantile_test); (nan, nan) with fewer than MIN_SAMPLES_FOR_CI samples."""
        if self.n < MIN_SAMPLES_FOR_CI:
            return (math.nan, math.nan)
        ci = quantile_test(np.asarray(self.samples), q=self.median, p=0.5).confidence_interval(0.95)
        return (float(ci.low), float(ci.high))

    @property
    def noisy(self) -> bool:
        """True when IQR / median exceeds NOISE_THRESHOLD."""
        return self.relative_iqr > NOISE_THRESHOLD

    def to_dict(self) -> dict[str, object]:
        low, high = self.ci95
        return {"n": self.n, "median_s": self.median, "mean_s": self.mean, "min_s": self.min,
                "iqr_s": self.iqr, "cv": self.cv, "ci95_low_s": low, "ci95_high_s": high,
                "noisy": self.noisy, "samples_s": list(self.samples)}


__all__ = ["MIN_SAMPLES_FOR_CI", "NOISE_THRESHOLD", "Measurement", "NoisyMeasurementWarning"]
