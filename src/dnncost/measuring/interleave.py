"""Time several networks' repeats round-robin (A B C A B C ...), with the reference probe between them.

On a shared machine the speed drifts by 10-20% over minutes. Timing each network's repeats in one
block puts that drift between the networks -- into the very comparison a study makes. Taking the
repeats round-robin lets a slow spell hit every network alike; the reference probe
(:mod:`dnncost.measuring.probe`) timed around every repeat says which repeats ran on a slowed
machine; those are re-measured, round-robin again, while the re-measure budget lasts. Every repeat
is kept (raw samples, probe, machine load); the estimate (:data:`STUDY_ESTIMATOR` unless asked
otherwise) is taken over the repeats that were not shifted, or over all when every one was.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from torch import nn

from dnncost.core.device import resolve_device
from dnncost.core.errors import InputSpecError
from dnncost.measuring import timing as timing_module
from dnncost.measuring.measurement import (
    DRIFT_THRESHOLD,
    STUDY_ESTIMATOR,
    Estimator,
    NoisyMeasurementWarning,
    Repeats,
    probe_drift,
    run_reference,
)
from dnncost.measuring.probe import Probe, ProbeReading
from dnncost.measuring.timing import StepOptions, StepTiming

REMEASURE_SHARE = 0.2  # source: measured; at 0.5 a default study on a slow machine spent 60 s of its
# 10 min re-measuring (73 of 180 repeats flagged), over the 10-minute budget of issue
# 13. A fifth -- one extra repeat per 5 -- bounds a busy machine's run at 1.2x the timing, while
# the study's estimator (a lower quartile over the kept repeats) already sets slowed steps aside


@dataclass(frozen=True)
class TimingJob:
    """One network to time: a name (unique in the run), the model -- or a function that builds it
    afresh for each repeat, so that only one of many large networks is in memory at a time --, one
    sample's input shape, and the step options (batch, mode, threads, warm-up, steps or budget per
    repeat)."""

    name: str
    model: nn.Module | Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    options: StepOptions = field(default_factory=StepOptions)


@dataclass(frozen=True)
class StoredRepeats:
    """What an interrupted run already measured of one job (e.g. read back from a store): how
    many of its planned repeats and how many re-measures, and the probe around each stored repeat
    (None where it was not probed; repeats without an entry count as not shifted)."""

    planned: int
    remeasured: int = 0
    probes: tuple[ProbeReading | None, ...] = ()


@dataclass(frozen=True)
class ProbePoint:
    """The reference probe at one moment of the run (for the drift over the run)."""

    elapsed_s: float  # since the run started
    job: str
    repeat: int  # the job's repeat the probe bracketed (0-based)
    probe_s: float
    drift: float  # against the run's reference


@dataclass(frozen=True)
class InterleavedTiming:
    """One job's repeats, in the order they ran (re-measured ones after), each with its probe."""

    name: str
    timings: tuple[StepTiming, ...]
    reference_s: float | None

    @property
    def repeats(self) -> Repeats:
        """Every repeat, with its probe time against the run's reference."""
        probes = tuple(t.probe.probe_s for t in self.timings if t.probe is not None)
        return Repeats(tuple(t.measurement for t in self.timings),
                       probe_s=probes if len(probes) == len(self.timings) else (),
                       reference_s=self.reference_s)

    @property
    def shifted(self) -> tuple[bool, ...]:
        return self.repeats.shifted

    @property
    def kept(self) -> Repeats:
        """The repeats whose probe did not drift beyond the threshold (all, when every one did)."""
        return self.repeats.kept

    def estimate(self, estimator: Estimator | str = STUDY_ESTIMATOR) -> float:
        """The job's figure (seconds per step) by ``estimator`` over the kept repeats."""
        return self.kept.estimate(estimator)


@dataclass(frozen=True)
class InterleavedRun:
    """What :func:`time_interleaved` measured: each job's repeats and the probe over the run."""

    jobs: Mapping[str, InterleavedTiming]
    drift: tuple[ProbePoint, ...]
    reference_s: float | None  # the run's quiet level (run_reference of its probes)
    remeasured: int  # repeats run again because their probe drifted
    record_s: float | None = None  # the fastest probe on record for the machine when the run began

    @property
    def shift(self) -> float:
        """How much slower the run's quiet level was than the machine's best on record (0.2: 20%);
        beyond SHIFT_THRESHOLD the whole run may be shifted. NaN when either is unknown."""
        return probe_drift(self.reference_s, self.record_s) if self.reference_s else math.nan

    @property
    def max_drift(self) -> float:
        """The largest probe drift over the run (NaN when nothing was probed)."""
        values = [p.drift for p in self.drift if math.isfinite(p.drift)]
        return max(values) if values else math.nan

    def drift_rows(self) -> list[dict[str, object]]:
        """The probe over the run, one row per probe (for a report table or plot): seconds since
        the start, the job and repeat it bracketed, the probe in ms and its drift."""
        return [{"elapsed_s": p.elapsed_s, "job": p.job, "repeat": p.repeat,
                 "probe_ms": p.probe_s * 1e3, "drift": p.drift} for p in self.drift]

    def to_dict(self) -> dict[str, object]:
        return {"reference_s": self.reference_s, "record_s": self.record_s, "shift": self.shift,
                "remeasured": self.remeasured,
                "max_drift": self.max_drift,
                "drift": self.drift_rows(),
                "jobs": {name: {"repeats": job.repeats.to_dict(),
                                "estimate_s": job.estimate()} for name, job in self.jobs.items()}}


def time_interleaved(jobs: Sequence[TimingJob], *, repeats: int = 5, remeasure: int | None = None,
                     count_flops: bool = False, probe: bool = True,
                     already: Mapping[str, int | StoredRepeats] | None = None,
                     on_repeat: Callable[[str, int, StepTiming], None] | None = None,
                     on_error: Callable[[str, Exception], None] | None = None) -> InterleavedRun:
    """Time every job ``repeats`` times, round-robin (repeat 1 of each job, then repeat 2, ...).

    Each repeat is one :func:`dnncost.measuring.timing.time_model` call (its own warm-up and timed
    steps), bracketed by the reference probe. Then, while a job has fewer than ``repeats`` repeats
    whose probe stayed within DRIFT_THRESHOLD, at least one that drifted beyond it, and budget left
    (``remeasure`` extra repeats per job; default REMEASURE_SHARE of ``repeats``), those jobs are
    timed once more each, round-robin. ``on_repeat`` is called with (job name, repeat index,
    timing) as each repeat finishes (to store it at once); planned repeats have indices 0 to
    ``repeats`` - 1, re-measures ``repeats`` on. ``already`` (job name -> repeats an interrupted run
    stored: a count of planned ones, or :class:`StoredRepeats` with their probes) makes a job join
    at that round and run only the rest, and counts the stored repeats and re-measures in the
    re-measuring (a stored drifted repeat may be re-measured, a spent budget stays spent). With
    ``on_error``, a job whose repeat raises is reported to it and dropped, and the others go on;
    without, the error propagates. The result holds this call's repeats only; jobs that ran none
    are absent. Per-repeat noise warnings are not raised: the result holds the drift and the load.
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise InputSpecError(f"job names must be unique, got {names}")
    if repeats < 1:
        raise InputSpecError(f"repeats must be a positive integer, got {repeats}")
    budget = _budget(repeats, remeasure)
    probes: dict[str, Probe] = {}
    done: dict[str, list[StepTiming]] = {name: [] for name in names}
    index: dict[str, list[int]] = {name: [] for name in names}
    elapsed: dict[str, list[float]] = {name: [] for name in names}
    flops: dict[str, tuple[int | None, float | None]] = {}
    stored = {name: _stored((already or {}).get(name, 0)) for name in names}
    spent = {name: stored[name].remeasured for name in names}
    failed: set[str] = set()
    start = time.perf_counter()

    def run_one(job: TimingJob, at: int) -> None:
        if job.name in failed:
            return
        try:
            prober: Probe | bool = False
            if probe:
                dev = resolve_device(job.options.device)
                prober = probes.setdefault(str(dev), Probe(dev))
            model = job.model if isinstance(job.model, nn.Module) else job.model()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NoisyMeasurementWarning)  # kept in the result
                timing = timing_module.time_model(  # looked up at call time: tests may stand in
                    model, job.input_shape, job.options, name=job.name,
                    count_flops=count_flops and job.name not in flops, probe=prober)
        except Exception as exc:
            if on_error is None:
                raise
            failed.add(job.name)
            on_error(job.name, exc)
            return
        if count_flops:
            flops.setdefault(job.name, (timing.flops, timing.peak_flops_per_s))
            timing = replace(timing, flops=flops[job.name][0], peak_flops_per_s=flops[job.name][1])
        done[job.name].append(timing)
        index[job.name].append(at)
        elapsed[job.name].append(time.perf_counter() - start)
        if on_repeat is not None:
            on_repeat(job.name, at, timing)

    for round_ in range(repeats):
        for job in jobs:
            if round_ >= stored[job.name].planned:
                run_one(job, round_)
    remeasured = 0
    while True:
        reference = _reference(done, stored)
        again = [job for job in jobs if job.name not in failed and spent[job.name] < budget
                 and _wants_another(done[job.name], stored[job.name], repeats, reference)]
        if not again:
            break
        for job in again:
            run_one(job, repeats + spent[job.name])
            spent[job.name] += 1
            remeasured += 1

    reference = _reference(done, stored)
    records = [p.reference_s for p in _readings(done, stored) if p.reference_s is not None]
    results, points = {}, []
    for name in (n for n in names if done[n]):
        timings = tuple(_against(t, reference) for t in done[name])
        results[name] = InterleavedTiming(name, timings, reference)
        points += [ProbePoint(elapsed_s=at, job=name, repeat=i, probe_s=t.probe.probe_s,
                              drift=t.probe.drift)
                   for t, at, i in zip(timings, elapsed[name], index[name], strict=True)
                   if t.probe is not None]
    points.sort(key=lambda p: p.elapsed_s)
    return InterleavedRun(jobs=results, drift=tuple(points), reference_s=reference,
                          remeasured=remeasured, record_s=min(records) if records else None)


def stored_wanting_remeasure(stored: Mapping[str, StoredRepeats], *, repeats: int,
                             remeasure: int | None = None) -> list[str]:
    """The jobs whose stored repeats alone call for a re-measure by :func:`time_interleaved`'s
    rule (against the stored probes' reference, with the budget left): the finished jobs a resumed
    run must hand to it again."""
    budget, reference = _budget(repeats, remeasure), _reference({}, stored)
    return [name for name, s in stored.items()
            if s.remeasured < budget and _wants_another((), s, repeats, reference)]


def _budget(repeats: int, remeasure: int | None) -> int:
    """Re-measures allowed per job: ``remeasure``, or REMEASURE_SHARE of ``repeats`` (rounded up)."""
    budget = math.ceil(REMEASURE_SHARE * repeats) if remeasure is None else remeasure
    if budget < 0:
        raise InputSpecError(f"the re-measure budget must be >= 0 repeats, got {budget}")
    return budget


def _stored(value: int | StoredRepeats) -> StoredRepeats:
    return value if isinstance(value, StoredRepeats) else StoredRepeats(planned=int(value))


def _wants_another(timings: Sequence[StepTiming], stored: StoredRepeats, repeats: int,
                   reference: float | None) -> bool:
    """A job needs a re-measure: fewer than ``repeats`` of its repeats (stored and new) stayed
    within DRIFT_THRESHOLD, and at least one drifted beyond it."""
    drifts = [_drift(t.probe, reference) for t in timings]
    drifts += [_drift(p, reference) for p in stored.probes]
    unprobed = stored.planned + stored.remeasured - len(stored.probes)  # stored, probe unknown
    unshifted = unprobed + sum(1 for d in drifts if not d > DRIFT_THRESHOLD)
    return unshifted < repeats and any(d > DRIFT_THRESHOLD for d in drifts)


def _readings(done: Mapping[str, Sequence[StepTiming]],
              stored: Mapping[str, StoredRepeats]) -> list[ProbeReading]:
    """Every probe reading of the run: this call's repeats' and the stored repeats'."""
    readings = [t.probe for ts in done.values() for t in ts]
    readings += [p for s in stored.values() for p in s.probes]
    return [p for p in readings if p is not None]


def _reference(done: Mapping[str, Sequence[StepTiming]],
               stored: Mapping[str, StoredRepeats]) -> float | None:
    """The run's reference probe (:func:`~dnncost.measuring.measurement.run_reference` of its
    readings): each repeat is set against the run's quiet level."""
    return run_reference([p.probe_s for p in _readings(done, stored)])


def _drift(reading: ProbeReading | None, reference: float | None) -> float:
    return probe_drift(reading.probe_s, reference) if reading is not None else math.nan


def _against(timing: StepTiming, reference: float | None) -> StepTiming:
    """``timing`` with its probe set against the run's final ``reference``."""
    if timing.probe is None:
        return timing
    return replace(timing, probe=ProbeReading(before_s=timing.probe.before_s,
                                              after_s=timing.probe.after_s, reference_s=reference))


__all__ = ["REMEASURE_SHARE", "InterleavedRun", "InterleavedTiming", "ProbePoint", "StoredRepeats",
           "TimingJob", "stored_wanting_remeasure", "time_interleaved"]
