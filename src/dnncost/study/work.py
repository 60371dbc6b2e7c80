"""Cost vs work: how one network's step time grows with the work of the step (batch size, input size).

Across architectures time is not a function of FLOPs (the study's verdict); inside one network it
should be, once the step is big enough: more samples or more pixels add the same operators with
proportionally more arithmetic, so time = fixed + FLOPs x seconds-per-FLOP. :func:`measure_work`
times and counts a network over a grid of batch sizes and input sizes; :func:`cost_vs_work` takes
those plain :class:`WorkPoint` records and, for each network and each axis varied (batch size at one
input size, input size at one batch size), fits that affine law with 95% intervals, and gives every
point its time per sample, achieved FLOP/s, the share of its time the fixed part takes, and the
local log-log slope (1: time grows as fast as work; 0: time does not move with work). The fit is
weighted by 1/time so that every point counts by its relative error, not the largest steps alone.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import torch

from dnncost.core.kinds import DEFAULT_WARMUP, Mode
from dnncost.counting.counter import count
from dnncost.measuring.timing import StepOptions, time_model
from dnncost.models.loading import load_model

CONFIDENCE = 0.95  # source: the conventional 95% interval
FIXED_SHARE_MAX = 0.1  # source: our choice; time is 'linear in work' once the fixed part is <= 10%
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)  # source: issue 13 ("batch sizes (e.g. 1-128)")
INPUT_SIZES = (32, 64, 128)  # source: issue 13 ("input sizes (e.g. 32, 64, 128)")
MOBILENET_INPUT_SIZES = (32, 48, 64)  # source: our choice (issue 24): MobileNet's 128x128 step took
# ~20 s of the default study's 8-minute budget on 2 cores (16x the 32x32 step's work, 6 of them
# warm-up and timed); 48 keeps three points for the series' fit and its interval
#: network -> the input sizes its cost-vs-work series runs at. source: our choice; one small, one
#: deep-and-narrow, one depthwise network, each seconds at batch 128 on 2 cores. LeNet-5's fully
#: connected layers fix its input at 32x32, so it has a batch series only.
WORK_PLAN = {"lenet5": (32,), "resnet20": INPUT_SIZES, "mobilenet_v1_cifar": MOBILENET_INPUT_SIZES}
#: How each point's step is timed: the training step, timed until 0.3 s of steps (at least 3).
#: source: our choice; the batch-128 steps take tenths of a second on 2 cores, the small ones ms.
WORK_STEP = StepOptions(mode=Mode.TRAIN, warmup=DEFAULT_WARMUP, steps=3, budget_s=0.3)
SEED = 0  # source: our choice; the network is built from the same seeded initialisation at each size


@dataclass(frozen=True)
class WorkGrid:
    """The steps of a cost-vs-work series: every batch size of ``batch_sizes`` at input
    ``input_at_batch``, and every input size of ``input_sizes`` at batch ``batch_at_input``."""

    batch_sizes: tuple[int, ...] = BATCH_SIZES
    input_sizes: tuple[int, ...] = INPUT_SIZES
    batch_at_input: int = 32  # source: the study's default batch size
    input_at_batch: int = 32  # source: the CIFAR input side, every zoo network's smallest

    @property
    def points(self) -> tuple[tuple[int, int], ...]:
        """Every distinct (batch size, input size) of the grid, batch series first."""
        return tuple(dict.fromkeys([(b, self.input_at_batch) for b in self.batch_sizes]
                                   + [(self.batch_at_input, s) for s in self.input_sizes]))


class WorkAxis(str, Enum):
    """What grows the work in a series: the batch size or the input's side length."""

    BATCH = "batch size"
    INPUT = "input size"


@dataclass(frozen=True)
class WorkPoint:
    """One measured step: network, batch size, input side (pixels), median step time (seconds)
    and the counted FLOPs of that step."""

    network: str
    batch_size: int
    input_size: int
    step_s: float
    flops: float

    @property
    def per_sample_s(self) -> float:
        return self.step_s / self.batch_size

    @property
    def flops_per_s(self) -> float:
        return self.flops / self.step_s if self.step_s > 0 else math.nan


@dataclass(frozen=True)
class WorkSeries:
    """One network's steps along one axis, the other held at ``held`` (input size for a batch
    series, batch size for an input series), fewest FLOPs first.

    ``fixed_s`` and ``s_per_flop`` are the weighted least-squares line time = fixed + s_per_flop x
    FLOPs with their 95% t intervals; ``linear_from_flops`` is the smallest step (in FLOPs) from which
    on the fixed part is at most FIXED_SHARE_MAX of every step's fitted time (None: not reached in
    the range measured)."""

    network: str
    axis: WorkAxis
    held: int
    points: tuple[WorkPoint, ...]
    fixed_s: float
    fixed_ci: tuple[float, float]
    s_per_flop: float
    s_per_flop_ci: tuple[float, float]
    r_squared: float

    @property
    def marginal_flops_per_s(self) -> float:
        """The speed of the part of the step that grows with work: 1 / s_per_flop."""
        return 1.0 / self.s_per_flop if self.s_per_flop > 0 else math.nan

    def fixed_share(self, point: WorkPoint) -> float:
        """The fitted fixed part's share of the fitted time of ``point``'s step."""
        fitted = self.fixed_s + self.s_per_flop * point.flops
        return max(self.fixed_s, 0.0) / fitted if fitted > 0 else math.nan

    def local_slopes(self) -> tuple[float, ...]:
        """d log(time) / d log(FLOPs) between each point and the previous one (NaN for the first)."""
        out = [math.nan]
        for a, b in zip(self.points, self.points[1:], strict=False):
            out.append(math.log(b.step_s / a.step_s) / math.log(b.flops / a.flops)
                       if b.flops != a.flops and a.step_s > 0 and b.step_s > 0 else math.nan)
        return tuple(out)

    @property
    def linear_from_flops(self) -> float | None:
        shares = [self.fixed_share(p) for p in self.points]
        for i, p in enumerate(self.points):
            if all(s <= FIXED_SHARE_MAX for s in shares[i:]):
                return p.flops
        return None

    def rows(self) -> list[dict[str, Any]]:
        """One table row per point."""
        return [{"network": self.network, "axis": self.axis.value, "batch_size": p.batch_size,
                 "input_size": p.input_size, "flops": p.flops, "step_ms": p.step_s * 1e3,
                 "ms_per_sample": p.per_sample_s * 1e3, "gflops_per_s": p.flops_per_s / 1e9,
                 "fixed_share": self.fixed_share(p), "local_slope": slope}
                for p, slope in zip(self.points, self.local_slopes(), strict=True)]

    def to_dict(self) -> dict[str, object]:
        return {"network": self.network, "axis": self.axis.value, "held": self.held,
                "fixed_ms": self.fixed_s * 1e3, "fixed_ms_ci": [v * 1e3 for v in self.fixed_ci],
                "marginal_gflops_per_s": self.marginal_flops_per_s / 1e9,
                "s_per_flop_ci": list(self.s_per_flop_ci), "r_squared": self.r_squared,
                "linear_from_flops": self.linear_from_flops, "points": self.rows()}

    @property
    def summary(self) -> str:
        """One sentence: the fixed cost, the marginal speed and where time turns linear."""
        first, last = self.points[0], self.points[-1]
        held = (f"input {self.held}x{self.held}" if self.axis is WorkAxis.BATCH
                else f"batch {self.held}")
        linear = self.linear_from_flops
        where = ("the fixed part stays above "
                 f"{FIXED_SHARE_MAX:.0%} of the step throughout" if linear is None else
                 "time is linear in work (fixed part <= "
                 f"{FIXED_SHARE_MAX:.0%}) from {_at(self, linear)} on")
        return (f"{self.network}, {self.axis.value} {_value(first, self.axis)} to "
                f"{_value(last, self.axis)} at {held}: time ≈ {self.fixed_s * 1e3:.3g} ms "
                f"({_ci(self.fixed_ci, 1e3)}) + FLOPs / {self.marginal_flops_per_s / 1e9:.3g} "
                f"GFLOP/s (R² {self.r_squared:.3f}); {where}; time per sample goes from "
                f"{first.per_sample_s * 1e3:.3g} to {last.per_sample_s * 1e3:.3g} ms and achieved "
                f"speed from {first.flops_per_s / 1e9:.3g} to {last.flops_per_s / 1e9:.3g} GFLOP/s.")


def _value(point: WorkPoint, axis: WorkAxis) -> int:
    return point.batch_size if axis is WorkAxis.BATCH else point.input_size


def _at(series: WorkSeries, flops: float) -> str:
    point = next(p for p in series.points if p.flops == flops)
    return f"{series.axis.value} {_value(point, series.axis)}"


def _ci(ci: tuple[float, float], scale: float = 1.0) -> str:
    if not all(math.isfinite(v) for v in ci):
        return "interval n/a"
    return f"95% interval {ci[0] * scale:.3g} to {ci[1] * scale:.3g}"


def _affine(flops: np.ndarray, times: np.ndarray) -> tuple[float, tuple[float, float], float,
                                                             tuple[float, float], float]:
    """(fixed, its CI, s per FLOP, its CI, R^2) of time = fixed + k x FLOPs by least squares
    weighted by 1/time (rows divided by time: relative residuals), with t intervals on n - 2
    degrees of freedom (NaN with two points)."""
    from scipy import stats

    design = np.column_stack([np.ones_like(flops), flops]) / times[:, None]
    target = np.ones_like(times)  # times / times
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    fitted = coef[0] + coef[1] * flops
    total = float(((times - times.mean()) ** 2).sum())
    r2 = 1.0 - float(((times - fitted) ** 2).sum()) / total if total > 0 else math.nan
    dof = len(times) - 2
    if dof < 1:
        nan = (math.nan, math.nan)
        return float(coef[0]), nan, float(coef[1]), nan, r2
    residual = target - design @ coef
    sigma2 = float(residual @ residual) / dof
    cov = sigma2 * np.linalg.inv(design.T @ design)
    t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof))
    half = t * np.sqrt(np.diag(cov))
    return (float(coef[0]), (float(coef[0] - half[0]), float(coef[0] + half[0])),
            float(coef[1]), (float(coef[1] - half[1]), float(coef[1] + half[1])), r2)


def _series(network: str, axis: WorkAxis, held: int, points: Sequence[WorkPoint]) -> WorkSeries:
    ordered = tuple(sorted(points, key=lambda p: p.flops))
    flops = np.array([p.flops for p in ordered], dtype=float)
    times = np.array([p.step_s for p in ordered], dtype=float)
    fixed, fixed_ci, k, k_ci, r2 = _affine(flops, times)
    return WorkSeries(network=network, axis=axis, held=held, points=ordered, fixed_s=fixed,
                      fixed_ci=fixed_ci, s_per_flop=k, s_per_flop_ci=k_ci, r_squared=r2)


def cost_vs_work(points: Sequence[WorkPoint]) -> list[WorkSeries]:
    """Every series in ``points``: per network, each input size measured at two or more batch sizes
    (a batch series) and each batch size measured at two or more input sizes (an input series).
    Points with no positive time or FLOPs are left out."""
    usable = [p for p in points if p.step_s > 0 and p.flops > 0]
    out = []
    for network in dict.fromkeys(p.network for p in usable):
        mine = [p for p in usable if p.network == network]
        for size in sorted({p.input_size for p in mine}):
            row = [p for p in mine if p.input_size == size]
            if len({p.batch_size for p in row}) >= 2:
                out.append(_series(network, WorkAxis.BATCH, size, row))
        for batch in sorted({p.batch_size for p in mine}):
            row = [p for p in mine if p.batch_size == batch]
            if len({p.input_size for p in row}) >= 2:
                out.append(_series(network, WorkAxis.INPUT, batch, row))
    return out


def measure_work(name: str, *, grid: WorkGrid = WorkGrid(), options: StepOptions = WORK_STEP,
                 seed: int = SEED) -> list[WorkPoint]:
    """Time (as ``options`` says; its batch size is the grid's) and count network ``name``'s step
    at every point of ``grid``: one WorkPoint per distinct (batch, input). The network is built once
    per input size, seeded with ``seed``."""
    loaded = load_model(name)
    channels = tuple(loaded.input_shape)[0]
    points = grid.points
    out = []
    for size in dict.fromkeys(s for _, s in points):
        torch.manual_seed(seed)
        model = loaded.build("cpu")
        shape = (channels, size, size)
        for batch in (b for b, s in points if s == size):
            flops = count(loaded.build("meta"), input_shape=shape, batch_size=batch, mode=options.mode,
                          optimizer=options.optimizer.value, name=loaded.name).total().flops
            timing = time_model(model, shape, options.replace(batch_size=batch), name=loaded.name,
                                count_flops=False,
                                probe=False)  # the study probes the machine once, not per point
            out.append(WorkPoint(loaded.name, batch, size, timing.measurement.median, float(flops)))
    return out


__all__ = ["BATCH_SIZES", "FIXED_SHARE_MAX", "INPUT_SIZES", "MOBILENET_INPUT_SIZES", "WORK_PLAN",
           "WORK_STEP", "WorkAxis", "WorkGrid", "WorkPoint", "WorkSeries", "cost_vs_work", "measure_work"]
