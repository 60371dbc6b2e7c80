"""The analysis's data: one :class:`NetworkPoint` per network -- its measured times (a step by
:data:`STUDY_ESTIMATOR`: the lower quartile of every timed step, pooled over the repeats whose
reference probe did not drift; dnncost.measuring.measurement says why; an epoch by the median over
epochs; the time to the target accuracy by the median over the seeds it was trained from) and the
computation each time covers -- with the bootstrap over its repeats, and the one definition of a
network's measured step (:func:`measured_step_s`) that the study, its report, ``evaluate`` and the
predictor's comparisons use.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache

import numpy as np

from dnncost.core.kinds import MODES, Mode
from dnncost.measuring.measurement import (
    STUDY_ESTIMATOR,
    Estimator,
    Measurement,
    Repeats,
    bootstrap_estimates,
    estimate,
    run_reference,
)
from dnncost.study.config import SEED
from dnncost.study.store import CountRow, NetworkResult, TimingRow, TrainingRow
from dnncost.training.records import TimeToTarget

CONFIDENCE = 0.95  # source: the conventional 95% interval
MIN_POINTS = 3  # source: a line through two points always fits; a fit needs at least three
BOOTSTRAP_SAMPLES = 2000  # source: Efron & Tibshirani (1993) ch. 13, >= 1000 for percentile intervals
NAN2 = (math.nan, math.nan)


class TimeMetric(str, Enum):
    """The times a study measures, per network.

    An epoch's time is its training scaled to the whole training set (the last epoch of a run
    stopped at its target is partial); a validation epoch is one pass over the validation split.
    TOTAL is the whole run of the fixed-epoch protocol; TIME_TO_TARGET the run to the target
    accuracy, training and validation together (time-to-accuracy, as MLPerf Training and DAWNBench
    count it), set against the work to the target: each measure of one training step times the
    steps to the target (FLOPs to the target), or against the FLOPs of one step (STEP_FLOPS).
    """

    TRAIN_STEP = "train_step"
    EVAL_STEP = "eval_step"
    TRAIN_EPOCH = "train_epoch"
    VAL_EPOCH = "val_epoch"
    TOTAL = "total"
    TIME_TO_TARGET = "time_to_target"

    @property
    def label(self) -> str:
        return {"train_step": "training step", "eval_step": "validation step",
                "train_epoch": "training epoch", "val_epoch": "validation epoch",
                "total": "total training + validation",
                "time_to_target": "time-to-accuracy"}[self.value]

    @property
    def time_label(self) -> str:
        """The time in words, e.g. 'training step time', 'time-to-accuracy'."""
        return self.label if self is TimeMetric.TIME_TO_TARGET else f"{self.label} time"

    @property
    def repeats_label(self) -> str:
        """What this time's repeated values are: the seeds of a time to the target, repeated
        measurements otherwise."""
        return "seeds" if self is TimeMetric.TIME_TO_TARGET else "repeated measurements"

    def work_label(self, cost: CostMetric) -> str:
        """What measure ``cost`` of this time's work is called: 'FLOPs to the target' for the time
        to the target, the measure's own label otherwise."""
        if self is TimeMetric.TIME_TO_TARGET and cost not in (CostMetric.PARAMS, CostMetric.STEP_FLOPS):
            return f"{cost.label} to the target"
        return cost.label


class CostMetric(str, Enum):
    """The measures of computation a time is set against."""

    FLOPS = "flops"
    MACS = "macs"
    PARAMS = "params"
    BYTES = "bytes"
    OPS = "op_count"
    STEP_FLOPS = "step_flops"  # the FLOPs of one training step, whatever the time covers

    @property
    def label(self) -> str:
        return {"flops": "FLOPs", "macs": "MACs", "params": "parameters", "bytes": "bytes moved",
                "op_count": "operator calls", "step_flops": "FLOPs per step"}[self.value]

    @property
    def is_work(self) -> bool:
        """True for a count of the work the time covers (time / it is a speed); False for a size
        of the network (parameters, the FLOPs of one step set against a whole run)."""
        return self not in (CostMetric.PARAMS, CostMetric.STEP_FLOPS)



# -- the data: one point per network -------------------------------------------------------------------
STEP_METRICS = (TimeMetric.TRAIN_STEP, TimeMetric.EVAL_STEP)
"""The times read from timed repeats (by STUDY_ESTIMATOR); the others are epochs (their median)."""
STEP_MODES: Mapping[TimeMetric, Mode] = {TimeMetric.TRAIN_STEP: Mode.TRAIN, TimeMetric.EVAL_STEP: Mode.EVAL}
"""The step each step metric times."""


def estimator_of(metric: TimeMetric) -> Estimator:
    """How the repeated values of ``metric`` become one figure: STUDY_ESTIMATOR for a step, the
    median for the epoch times (each epoch is one value)."""
    return STUDY_ESTIMATOR if metric in STEP_METRICS else Estimator.MEDIAN


@dataclass(frozen=True)
class NetworkPoint:
    """One network's measured times and the computation of the work each time covers.

    ``times[m]`` holds the repeated values of time ``m`` in seconds (one per repeat of a step -- its
    median --, one per epoch for the epoch times, one per seed for the time to the target);
    ``samples[m]`` the raw timed steps of each of those repeats (step times; without them each
    value stands for its repeat); ``costs[m][c]`` is measure ``c`` of the work timed by ``m`` (e.g.
    the FLOPs of one training step, of one whole training epoch, or of the steps to the target).
    ``targets`` holds the time to the target of each seed's run, seed 0's (the study's) first;
    ``val_accuracy`` is the validation accuracy at the end of seed 0's run (at the crossing, for a
    run to a target).
    """

    name: str
    family: str
    times: Mapping[TimeMetric, tuple[float, ...]]
    costs: Mapping[TimeMetric, Mapping[CostMetric, float]]
    val_accuracy: float | None = None
    samples: Mapping[TimeMetric, tuple[tuple[float, ...], ...]] = field(default_factory=dict)
    targets: tuple[tuple[int, TimeToTarget], ...] = ()  # (seed, its time to the target)

    @property
    def time_to_target(self) -> TimeToTarget | None:
        """The time to the target of the study's run (the first seed's), None without one."""
        return self.targets[0][1] if self.targets else None

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
        return percentile_interval(self.replicates(metric, seed=seed))

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


def measured_step_s(net: NetworkResult, mode: Mode | str, *, reference_s: float | None) -> float:
    """A network's measured step of ``mode`` -- the one figure the study, its report, ``evaluate``
    and the predictor's comparisons use: STUDY_ESTIMATOR over every timed step of the repeats kept
    against ``reference_s`` (:func:`kept_repeats`); NaN when the step was not timed."""
    rows = kept_repeats(net.steps(Mode(mode).value, world_size=1), reference_s=reference_s)
    if not rows:
        return math.nan
    return _estimate(tuple(r.samples or (r.median_s,) for r in rows), STUDY_ESTIMATOR)


def group_reference(networks: Sequence[NetworkResult]) -> float | None:
    """The reference probe of a group's step timings: the run's quiet level
    (:func:`~dnncost.measuring.measurement.run_reference` of every stored probe; None when none
    was probed), what each repeat's drift is set against."""
    return run_reference([p for net in networks for mode in MODES for t in net.steps(mode, world_size=1)
                          if (p := t.conditions.probe_s) is not None])


def group_record(networks: Sequence[NetworkResult]) -> float | None:
    """The fastest probe on record for the machine when a group's step timings ran (None when none
    was probed): what the group's reference is set against to see a whole-run shift."""
    refs = [t.conditions.probe_reference_s for net in networks for mode in MODES
            for t in net.steps(mode, world_size=1) if t.conditions.probe_reference_s is not None]
    return min(refs) if refs else None


def _cost_of(count: CountRow, scale: float = 1.0) -> dict[CostMetric, float]:
    return {CostMetric.FLOPS: count.flops * scale, CostMetric.MACS: count.macs * scale,
            CostMetric.PARAMS: float(count.params), CostMetric.BYTES: count.bytes * scale,
            CostMetric.OPS: count.op_count * scale}


_Times = dict[TimeMetric, tuple[float, ...]]
_Costs = dict[TimeMetric, dict[CostMetric, float]]


def _training_times(training: TrainingRow, *, batch_size: int, train: CountRow,
                    evals: CountRow) -> tuple[_Times, _Costs]:
    """The epoch times of one training run and the work they cover. Each epoch's training time is
    scaled to the whole training set (the training-set size is samples / epochs at a validation,
    or the largest epoch's samples), each epoch's validation time divided by the passes it made
    (its validations; one for a run stored before validations were); the whole run (TOTAL) only
    for the fixed-epoch protocol (a run to a target is its time to the target)."""
    epochs = [e for e in training.epochs if e.train_samples > 0]
    if not epochs:
        return {}, {}
    sizes = [v.samples / v.epochs for v in training.validations if v.epochs > 0]
    train_size = sizes[0] if sizes else max(e.train_samples for e in epochs)
    passes = {e.epoch: sum(1 for v in training.validations if v.epoch == e.epoch) or 1 for e in epochs}
    val_size = epochs[0].val_samples / passes[epochs[0].epoch]
    times = {TimeMetric.TRAIN_EPOCH: tuple(e.train_time_s * train_size / e.train_samples for e in epochs),
             TimeMetric.VAL_EPOCH: tuple(e.val_time_s / passes[e.epoch] for e in epochs)}
    costs = {TimeMetric.TRAIN_EPOCH: _cost_of(train, train_size / batch_size),
             TimeMetric.VAL_EPOCH: _cost_of(evals, val_size / batch_size)}
    if training.time_to_target is None:
        trained = sum(e.train_samples for e in training.epochs) / batch_size
        validated = sum(e.val_samples for e in training.epochs) / batch_size
        times[TimeMetric.TOTAL] = (sum(e.train_time_s + e.val_time_s for e in training.epochs),)
        costs[TimeMetric.TOTAL] = {
            c: v + _cost_of(evals, validated)[c] if c is not CostMetric.PARAMS else v
            for c, v in _cost_of(train, trained).items()}
    return times, costs


def _to_target(net: NetworkResult, train: CountRow,
               ) -> tuple[tuple[tuple[int, TimeToTarget], ...], tuple[float, ...], dict[CostMetric, float]]:
    """The time to the target of each seed's latest complete run (seed order), the times of the
    TIME_TO_TARGET metric -- one per seed, only when every seed reached the target -- and its
    work: one training step's measures times the median steps to the target."""
    targets = tuple((t.seed, t.time_to_target) for t in net.seed_trainings()
                    if t.time_to_target is not None)
    if not targets or not all(t.reached for _, t in targets):
        return targets, (), {}
    steps = float(np.median([t.steps for _, t in targets]))
    costs = {**_cost_of(train, steps), CostMetric.STEP_FLOPS: float(train.flops)}
    return targets, tuple(t.total_time_s for _, t in targets), costs


def points_from_results(networks: Sequence[NetworkResult]) -> tuple[list[NetworkPoint], dict[str, str]]:
    """Study results -> (points, {network: why left out}). Step times are the repeats whose
    reference probe did not drift (:func:`kept_repeats`, against the group's reference), with their
    raw samples; epoch costs scale the counted step by samples / batch size; the epoch times come
    from the latest complete training run."""
    points, skipped = [], {}
    reference = group_reference(networks)
    for net in networks:
        if not set(MODES) <= set(net.counts):
            skipped[net.name] = ("failed: " + net.errors[-1].message) if net.errors else "not counted"
            continue
        train, evals = net.counts[Mode.TRAIN.value], net.counts[Mode.EVAL.value]
        kept = {metric: kept_repeats(net.steps(STEP_MODES[metric].value, world_size=1), reference_s=reference)
                for metric in STEP_METRICS}
        times: dict[TimeMetric, tuple[float, ...]] = {
            m: tuple(t.median_s for t in rows) for m, rows in kept.items()}
        samples = {m: tuple(t.samples for t in rows) for m, rows in kept.items() if rows}
        costs = {TimeMetric.TRAIN_STEP: _cost_of(train), TimeMetric.EVAL_STEP: _cost_of(evals)}
        accuracy = None
        done = net.completed_trainings
        study_run = net.training(SEED) or (done[-1] if done else None)  # the first seed's
        if study_run is not None and study_run.epochs:
            epoch_times, epoch_costs = _training_times(study_run, batch_size=net.batch_size,
                                                       train=train, evals=evals)
            times.update(epoch_times)
            costs.update(epoch_costs)
            accuracy = study_run.epochs[-1].val_accuracy
        targets, to_target, target_costs = _to_target(net, train)
        if to_target:
            times[TimeMetric.TIME_TO_TARGET] = to_target
            costs[TimeMetric.TIME_TO_TARGET] = target_costs
        times = {m: v for m, v in times.items() if v}
        if not times:
            skipped[net.name] = ("failed: " + net.errors[-1].message) if net.errors else "not timed"
            continue
        points.append(NetworkPoint(net.name, net.family, times, costs, accuracy, samples=samples,
                                   targets=targets))
    return points, skipped



def percentile_interval(values: np.ndarray) -> tuple[float, float]:
    """The central CONFIDENCE interval of the finite ``values``; NaN when there are none."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return (math.nan, math.nan)
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return (float(lo), float(hi))



__all__ = ["BOOTSTRAP_SAMPLES", "CONFIDENCE", "MIN_POINTS", "NAN2", "STEP_METRICS", "CostMetric",
           "NetworkPoint", "TimeMetric", "estimator_of", "group_record", "group_reference",
           "STEP_MODES", "kept_repeats", "measured_step_s", "percentile_interval", "points_from_results"]
