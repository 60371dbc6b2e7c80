"""Time-to-accuracy across the networks of a study: the figures behind the report's section.

Per network (:class:`TargetRow`) the work and the time to the target accuracy of the study's run:
FLOPs per step, steps, epochs and FLOPs to the target, training and validation time apart and
together, and whether the target was reached within the cap. Across networks
(:func:`rank_agreement`) whether ranking the networks by their time to the target orders them as
their FLOPs per step, their measured step time and their FLOPs to the target do: Kendall's tau
and Spearman's rho with p-values, and the pairs the two rankings swap. Across seeds
(:func:`seed_spread`, when the study trained from several) how much the seed moves each network's
time and steps to the target, and whether the ranking holds from every seed. The fits of time to
the target against its work are those of :mod:`dnncost.study.fits` (TimeMetric.TIME_TO_TARGET).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from dnncost.study.fits import spearman_ci
from dnncost.study.points import MIN_POINTS, NAN2, CostMetric, NetworkPoint, TimeMetric

MAX_SWAPS = 5  # source: our choice; the clearest swapped pairs a sentence names (the rest counted)


@dataclass(frozen=True)
class TargetRow:
    """One network's run to the target (the study's, seed 0): its work and its time."""

    name: str
    family: str
    flops_per_step: float
    steps: int
    epochs: float
    flops_to_target: float  # flops_per_step x steps
    train_s: float
    val_s: float
    reached: bool  # False: the cap came first; the figures are lower bounds
    val_accuracy: float  # at the crossing (or the last validation)
    max_epochs: int
    target_accuracy: float
    validations_per_epoch: int

    @property
    def total_s(self) -> float:
        return self.train_s + self.val_s

    def to_row(self) -> dict[str, object]:
        return {"network": self.name, "family": self.family, "flops_per_step": self.flops_per_step,
                "steps_to_target": self.steps, "epochs_to_target": self.epochs,
                "flops_to_target": self.flops_to_target, "train_s": self.train_s,
                "val_s": self.val_s, "total_s": self.total_s, "reached": self.reached,
                "val_accuracy": self.val_accuracy, "max_epochs": self.max_epochs,
                "target_accuracy": self.target_accuracy,
                "validations_per_epoch": self.validations_per_epoch}


def target_rows(points: Sequence[NetworkPoint]) -> list[TargetRow]:
    """A row per network with a run to a target, fastest to the target first (those that did
    not reach it last)."""
    rows = []
    for p in points:
        t = p.time_to_target
        if t is None:
            continue
        per_step = p.cost(TimeMetric.TRAIN_STEP, CostMetric.FLOPS)
        rows.append(TargetRow(
            name=p.name, family=p.family, flops_per_step=per_step, steps=t.steps, epochs=t.epochs,
            flops_to_target=per_step * t.steps, train_s=t.train_time_s, val_s=t.val_time_s,
            reached=t.reached, val_accuracy=t.val_accuracy, max_epochs=t.max_epochs,
            target_accuracy=t.target_accuracy, validations_per_epoch=t.validations_per_epoch))
    return sorted(rows, key=lambda r: (not r.reached, r.total_s))


# -- rankings -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Swap:
    """Two networks the rankings order oppositely: ``first`` reaches the target sooner than
    ``second`` (``time_ratio`` = second's time / first's, > 1) but ranks after it by the other
    figure (``other_ratio`` = first's / second's, >= 1)."""

    first: str
    second: str
    time_ratio: float
    other_ratio: float


@dataclass(frozen=True)
class RankAgreement:
    """The ranking of networks by time to the target against their ranking by one other figure:
    Kendall's tau-b and Spearman's rho (NaN with fewer than MIN_POINTS networks), and every pair
    the two rankings swap, the clearest first (the largest ratio of times to the target)."""

    by: str  # the other figure, in words
    names: tuple[str, ...]  # fastest to the target first
    kendall_tau: float
    kendall_p: float
    spearman_rho: float
    spearman_p: float
    spearman_ci: tuple[float, float]
    swaps: tuple[Swap, ...]

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def pairs(self) -> int:
        return self.n * (self.n - 1) // 2

    @property
    def same(self) -> bool:
        """True when the two rankings agree on every pair (ties aside)."""
        return not self.swaps

    def to_dict(self) -> dict[str, object]:
        return {"by": self.by, "n": self.n, "kendall_tau": self.kendall_tau, "kendall_p": self.kendall_p,
                "spearman_rho": self.spearman_rho, "spearman_p": self.spearman_p,
                "spearman_ci": list(self.spearman_ci),
                "swapped_pairs": [[s.first, s.second, s.time_ratio, s.other_ratio] for s in self.swaps]}


def rank_agreement(points: Sequence[NetworkPoint], by: str,
                   other: Callable[[NetworkPoint], float]) -> RankAgreement:
    """Agreement of the ranking by time to the target (TimeMetric.TIME_TO_TARGET) with the ranking
    by ``other`` (a positive figure per network, e.g. its FLOPs per step), over the networks that
    have both."""
    from scipy import stats

    usable = [p for p in points if p.time(TimeMetric.TIME_TO_TARGET) > 0 and other(p) > 0]
    usable.sort(key=lambda p: p.time(TimeMetric.TIME_TO_TARGET))
    times = [p.time(TimeMetric.TIME_TO_TARGET) for p in usable]
    values = [other(p) for p in usable]
    swaps = []
    for i, a in enumerate(usable):
        for j in range(i + 1, len(usable)):  # times[i] <= times[j]
            if times[i] < times[j] and values[i] > values[j]:
                swaps.append(Swap(a.name, usable[j].name, times[j] / times[i], values[i] / values[j]))
    swaps.sort(key=lambda s: -s.time_ratio)
    names = tuple(p.name for p in usable)
    if len(usable) < MIN_POINTS or np.ptp(times) == 0 or np.ptp(values) == 0:
        return RankAgreement(by, names, math.nan, math.nan, math.nan, math.nan, NAN2, tuple(swaps))
    tau = stats.kendalltau(times, values)
    rho = stats.spearmanr(times, values)
    return RankAgreement(by=by, names=names, kendall_tau=float(tau.statistic),
                         kendall_p=float(tau.pvalue), spearman_rho=float(rho.statistic),
                         spearman_p=float(rho.pvalue),
                         spearman_ci=spearman_ci(float(rho.statistic), len(usable)), swaps=tuple(swaps))


def rankings(points: Sequence[NetworkPoint]) -> tuple[RankAgreement, ...]:
    """Time to the target ranked against FLOPs per step, measured training-step time and FLOPs to
    the target (empty when no network has a time to the target)."""
    if not any(p.time(TimeMetric.TIME_TO_TARGET) > 0 for p in points):
        return ()
    return (
        rank_agreement(points, CostMetric.STEP_FLOPS.label,
                       lambda p: p.cost(TimeMetric.TIME_TO_TARGET, CostMetric.STEP_FLOPS)),
        rank_agreement(points, "training-step time", lambda p: p.time(TimeMetric.TRAIN_STEP)),
        rank_agreement(points, TimeMetric.TIME_TO_TARGET.work_label(CostMetric.FLOPS),
                       lambda p: p.cost(TimeMetric.TIME_TO_TARGET, CostMetric.FLOPS)),
    )


# -- seeds ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeedSpread:
    """How much the seed moves one network's run to the target, over the seeds it was trained
    from: how many reached it, and over those the median, range and coefficient of variation
    (sample standard deviation / mean) of the time (training + validation) and of the steps."""

    name: str
    seeds: int
    reached: int
    median_s: float
    min_s: float
    max_s: float
    cv_time: float
    median_steps: float
    min_steps: int
    max_steps: int
    cv_steps: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class SeedRanking:
    """Whether the ranking of the networks by time to the target is the same from every seed:
    Kendall's tau of each seed's ranking against the ranking by the medians over seeds."""

    seeds: tuple[int, ...]
    taus: tuple[float, ...]  # one per seed
    stable: bool

    @property
    def lowest_tau(self) -> float:
        return min(self.taus) if self.taus else math.nan


def _cv(values: Sequence[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else math.nan


def seed_spread(points: Sequence[NetworkPoint]) -> tuple[tuple[SeedSpread, ...], SeedRanking | None]:
    """Per network trained from two or more seeds, the spread of its time and steps to the target
    over the seeds that reached it; and, when every such network was trained from the same seeds
    and reached the target from each, whether their ranking by time is the same from every seed
    (None otherwise). Empty when the study trained from one seed."""
    spreads = []
    for p in points:
        if len(p.targets) < 2:
            continue
        hit = [t for _, t in p.targets if t.reached]
        times = [t.total_time_s for t in hit]
        steps = [t.steps for t in hit]
        spreads.append(SeedSpread(
            name=p.name, seeds=len(p.targets), reached=len(hit),
            median_s=statistics.median(times) if times else math.nan,
            min_s=min(times, default=math.nan), max_s=max(times, default=math.nan), cv_time=_cv(times),
            median_steps=statistics.median(steps) if steps else math.nan,
            min_steps=min(steps, default=0), max_steps=max(steps, default=0),
            cv_steps=_cv([float(s) for s in steps])))
    return tuple(spreads), _seed_ranking([p for p in points if len(p.targets) >= 2])


def _seed_ranking(points: Sequence[NetworkPoint]) -> SeedRanking | None:
    from scipy import stats

    seeds = {tuple(s for s, _ in p.targets) for p in points}
    if len(points) < 2 or len(seeds) != 1 or not all(t.reached for p in points for _, t in p.targets):
        return None
    (order,) = seeds
    by_seed = {s: {p.name: dict(p.targets)[s].total_time_s for p in points} for s in order}
    medians = [statistics.median(by_seed[s][p.name] for s in order) for p in points]
    taus = tuple(float(stats.kendalltau(medians, [by_seed[s][p.name] for p in points]).statistic)
                 for s in order)
    by_median = [p.name for _, p in sorted(zip(medians, points, strict=True), key=lambda mp: mp[0])]
    ranked = [sorted(by_seed[s], key=by_seed[s].__getitem__) for s in order]
    return SeedRanking(seeds=order, taus=taus, stable=all(r == by_median for r in ranked))


__all__ = ["MAX_SWAPS", "RankAgreement", "SeedRanking", "SeedSpread", "Swap", "TargetRow",
           "rank_agreement", "rankings", "seed_spread", "target_rows"]
