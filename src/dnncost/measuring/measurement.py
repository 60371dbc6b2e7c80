"""The statistics of a set of timed samples: raw samples kept, every figure derived from them.

Shared by step timing, calibration and the micro-benchmarks, so a median, an interval and "noisy"
mean one thing everywhere. :class:`Repeats` holds independent repeats of one measurement, each with
the reference probe's time (:mod:`dnncost.measuring.probe`) beside it, and the estimators over them:

- ``median``: the median of the repeats' medians -- what the study reported before; a machine slow
  for half the repeats moves it.
- ``min-of-medians`` (**the estimator for the study**, :data:`STUDY_ESTIMATOR`): the fastest
  repeat's median. Interference on a shared machine only ever adds time (a step cannot run faster
  than the machine allows), so the least-disturbed repeat is the best estimate of the network's own
  cost (Chen & Revels, "Robust benchmarking in noisy environments", 2016, argue the same for the
  minimum); taking it over repeat *medians* keeps one lucky step from deciding it. It needs neither
  probe nor CPU times, so it works on any device and thread count and on stored repeat medians
  alone (:func:`estimate`), old studies included. It cannot undo a machine busy for the *whole*
  run: then every repeat is slow, the probe says so (``shifted``, :class:`MachineLoad`.busy), and
  only ``cpu-time`` (one thread) still holds.
- ``lower-quartile``: the 25th percentile of all samples pooled; between the two above.
- ``probe-normalised``: each repeat's median scaled by reference probe / that repeat's probe, then
  the median: removes a whole-machine slowdown in proportion, assuming the network slows as the
  probe does (not true for every network: memory-bound ones feel a neighbour more).
- ``cpu-time``: the median over repeats of each repeat's median per-step CPU time of this process
  (divided by the thread count). Time slices given to other processes do not count, so a machine
  shared by more runnable threads than cores -- the common case -- hardly moves it; cache and
  memory-bandwidth contention still do. CPU device only (on a GPU the CPU time is launch overhead),
  and sound for one thread only: with several, threads spinning at a barrier while a sibling waits
  for a core count too (measured here, load ~12 on 2 cores: LeNet-5 at 2 threads gave 9.7 and 19.7
  ms of CPU time per step in two runs, at 1 thread 5.0 and 5.6 ms).

A repeat whose probe ran more than :data:`DRIFT_THRESHOLD` slower than the reference is *shifted*:
the whole repeat ran on a slowed machine, whatever its own spread says.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy.stats import quantile_test

NOISE_THRESHOLD = 0.10  # source: torch.utils.benchmark.utils.common._IQR_WARN_THRESHOLD (IQR/median)
DRIFT_THRESHOLD = 0.10  # source: torch.utils.benchmark's 10% IQR/median warn threshold, applied to
# the probe against its quiet-machine reference; issue 16 measured 10-20% drifts of this VM's speed
MIN_SAMPLES_FOR_CI = 6  # source: order statistics; the (min, max) interval covers the median with
#                         probability 1 - 2 * 0.5**n, which first reaches 95% at n = 6


class NoisyMeasurementWarning(UserWarning):
    """A measurement whose IQR exceeds NOISE_THRESHOLD of its median: the machine was busy."""


@dataclass(frozen=True)
class Measurement:
    """Raw timed samples (seconds, one per step) and the statistics of them.

    ``cpu_samples`` (optional, one per step): the process's CPU time during the step divided by
    the run's thread count -- the step's time with other processes' time slices taken out (on a
    CPU device; with several threads, threads spinning at a barrier while a sibling waits for a
    core still count).
    """

    samples: tuple[float, ...]
    cpu_samples: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a Measurement needs at least one sample")
        if self.cpu_samples and len(self.cpu_samples) != len(self.samples):
            raise ValueError(f"{len(self.cpu_samples)} CPU-time samples for {len(self.samples)} steps")

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def cpu_median(self) -> float:
        """The median of ``cpu_samples`` (NaN when not recorded)."""
        return float(np.median(self.cpu_samples)) if self.cpu_samples else math.nan

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
                "noisy": self.noisy, "samples_s": list(self.samples),
                "cpu_median_s": self.cpu_median, "cpu_samples_s": list(self.cpu_samples)}


def probe_drift(probe_s: float, reference_s: float | None) -> float:
    """Fractional slowdown of a probe time against the reference (0.25: 25% slower than the
    quiet machine); NaN without a reference."""
    if reference_s is None or not reference_s > 0 or not math.isfinite(probe_s):
        return math.nan
    return probe_s / reference_s - 1


class Estimator(str, Enum):
    """How independent repeats of one measurement become one figure (see the module docstring)."""

    MEDIAN = "median"
    MIN_OF_MEDIANS = "min-of-medians"
    LOWER_QUARTILE = "lower-quartile"
    PROBE_NORMALISED = "probe-normalised"
    CPU_TIME = "cpu-time"


STUDY_ESTIMATOR = Estimator.MIN_OF_MEDIANS  # source: the module docstring's reasoning, and the CV
# of run estimates measured by benchmarks/timing_noise.py


@dataclass(frozen=True)
class Repeats:
    """Independent repeats of one measurement (each its own warm-up and timed steps), with the
    reference probe's time next to each (``probe_s``: one per repeat, or empty when not probed)
    and the quiet-machine reference (``reference_s``) they are set against."""

    runs: tuple[Measurement, ...]
    probe_s: tuple[float, ...] = ()
    reference_s: float | None = None

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("Repeats needs at least one run")
        if self.probe_s and len(self.probe_s) != len(self.runs):
            raise ValueError(f"{len(self.probe_s)} probe times for {len(self.runs)} runs")

    @property
    def medians(self) -> tuple[float, ...]:
        return tuple(r.median for r in self.runs)

    @property
    def reference(self) -> float | None:
        """The reference probe: the given one, else the fastest probe among the repeats."""
        if self.reference_s is not None:
            return self.reference_s
        return min(self.probe_s) if self.probe_s else None

    @property
    def drift(self) -> tuple[float, ...]:
        """Each repeat's probe slowdown against the reference (empty when not probed)."""
        ref = self.reference
        return tuple(probe_drift(p, ref) for p in self.probe_s)

    @property
    def shifted(self) -> tuple[bool, ...]:
        """Per repeat: its probe drifted beyond DRIFT_THRESHOLD -- the whole repeat ran on a slowed
        machine, even when its own samples agree (low IQR). All False when not probed."""
        if not self.probe_s:
            return (False,) * len(self.runs)
        return tuple(d > DRIFT_THRESHOLD for d in self.drift)

    def estimate(self, estimator: Estimator | str = STUDY_ESTIMATOR) -> float:
        """One figure (seconds) from the repeats by ``estimator``; ``probe-normalised`` without
        probe times, and ``cpu-time`` without CPU-time samples, are the plain median."""
        estimator = Estimator(estimator)
        medians = np.asarray(self.medians)
        if estimator is Estimator.CPU_TIME:
            if all(r.cpu_samples for r in self.runs):
                return float(np.median([r.cpu_median for r in self.runs]))
            return float(np.median(medians))
        if estimator is Estimator.MEDIAN:
            return float(np.median(medians))
        if estimator is Estimator.MIN_OF_MEDIANS:
            return float(medians.min())
        if estimator is Estimator.LOWER_QUARTILE:
            pooled = np.concatenate([np.asarray(r.samples) for r in self.runs])
            return float(np.percentile(pooled, 25))
        ref = self.reference
        if not self.probe_s or ref is None:
            return float(np.median(medians))
        return float(np.median(medians * ref / np.asarray(self.probe_s)))

    def to_dict(self) -> dict[str, object]:
        return {"runs": [r.to_dict() for r in self.runs], "probe_s": list(self.probe_s),
                "reference_s": self.reference, "drift": list(self.drift),
                "shifted": list(self.shifted),
                "estimates_s": {e.value: self.estimate(e) for e in Estimator},
                "study_estimator": STUDY_ESTIMATOR.value}


def estimate(medians: Sequence[float], estimator: Estimator | str = STUDY_ESTIMATOR) -> float:
    """One figure from stored repeat medians alone (no samples, no probe): ``median`` or
    ``min-of-medians``; the others need :class:`Repeats`. NaN when there are none."""
    estimator = Estimator(estimator)
    if not medians:
        return math.nan
    if estimator is Estimator.MEDIAN:
        return float(np.median(medians))
    if estimator is Estimator.MIN_OF_MEDIANS:
        return float(min(medians))
    raise ValueError(f"estimator '{estimator.value}' needs the samples or probe times (use Repeats)")


__all__ = ["DRIFT_THRESHOLD", "MIN_SAMPLES_FOR_CI", "NOISE_THRESHOLD", "STUDY_ESTIMATOR", "Estimator",
           "Measurement", "NoisyMeasurementWarning", "Repeats", "estimate", "probe_drift"]
