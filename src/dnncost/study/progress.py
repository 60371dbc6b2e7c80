"""The study's one progress bar, its units weighted by the seconds each piece of work is expected
to take, so that the estimate of the time left is honest across stages as unlike as counting a
network and training it.

The sweep (:mod:`dnncost.study.sweep`) gives every unit of a study's work (a network's count, one
step's timed repeats, a training run, a cost-vs-work series, the calibrations, ...) its expected
seconds, from the stage's planned work and a prior per piece (the constants below, each from a
measured run of the default study). Once the steps are timed, each training run is planned again
from its network's measured steps (:func:`training_seconds`): its cap's steps and validation
passes. :class:`Progress` keeps
the bar's total the sum of the plan: a unit found stored (a resumed run) leaves it, a run that
stops at its target early gives back the rest of its cap, and one that takes longer grows it. The
bar shows the share done and tqdm's estimate of the time left from the average rate so far.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dnncost.study.stages import Stage

# Priors, seconds on 2 CPU cores. source: issue 24's default study on an Intel Xeon (2 cores): 165 s
# of step timings over 12 networks x 5 repeats x 2 steps at a 0.5 s budget; 361 s over the 39
# epochs of training; the rest (breakdown, cost vs work, counting) about 120 s.
REPEAT_OVERHEAD_S = 0.9  # per timed repeat beyond its budget: warm-up steps, the probe, the set-up
UNBUDGETED_REPEAT_S = 0.5  # a repeat of a fixed number of steps (no budget): our choice, small nets
COUNT_S = 2.0  # counting a network's forward and training step on the meta device
BREAKDOWN_S = 2.5  # profiling a network's training steps by layer type
EPOCH_S = 9.0  # one epoch of training before the steps are timed: 361 s / 39 epochs
WORK_POINT_S = 2.3  # one cost-vs-work point (count, build, time)
DISTRIBUTED_S = 15.0  # spawning the data-parallel workers and timing their steps
WHATIF_S = 20.0  # one network's what-if transformations
CALIBRATE_S = 6.0  # the peak and bandwidth calibration when none is cached: measured, 2 cores
PREDICT_S = 2.0  # predicting every network's steps from the per-operator model
FIT_OVERHEAD = 1.15  # a quick per-operator calibration takes its sampling budget and ~15% to fit
TARGET_SHARE_OF_CAP = 2 / 3  # the share of its cap a run to 90% on digits takes: measured,
# benchmarks/tta_seeds.py seed 0, the default networks reached 0.9 after 0.5 to 0.75 of their
# recipe epochs (0.5 to 0.83 placed to half an epoch; median 2/3)
EPOCH_OVERHEAD = 1.1  # an epoch of training takes ~10% beyond its timed steps: data, the optimizer's
# first steps, the bookkeeping (source: measured, issue 13's epochs against the study's step times)


@dataclass(frozen=True)
class Unit:
    """One unit of a study's work: its stage, its network (None for the study's own calibration
    and predictions), which part (a step's mode, a seed; '' for the whole) and the seconds it is
    expected to take."""

    stage: Stage
    network: str | None
    part: str = ""
    seconds: float = 0.0

    @property
    def key(self) -> Key:
        return (self.stage, self.network, self.part)


Key = tuple[Stage, "str | None", str]


def repeat_seconds(step_budget_s: float | None) -> float:
    """The expected seconds of one timed repeat of a step."""
    return UNBUDGETED_REPEAT_S if step_budget_s is None else step_budget_s + REPEAT_OVERHEAD_S


def training_seconds(*, cap_epochs: int, steps_per_epoch: int, val_batches: int,
                     validations_per_epoch: int, train_step_s: float, eval_step_s: float) -> float:
    """The expected seconds of a training run of ``cap_epochs`` epochs from its measured steps:
    the training steps and the validation passes, with EPOCH_OVERHEAD; EPOCH_S a epoch when a step
    time is unknown (NaN)."""
    epoch = (steps_per_epoch * train_step_s
             + validations_per_epoch * val_batches * eval_step_s) * EPOCH_OVERHEAD
    return cap_epochs * (epoch if math.isfinite(epoch) and epoch > 0 else EPOCH_S)


class Progress:
    """A progress bar (tqdm's interface: ``total``, ``n``, ``update``, ``refresh``,
    ``set_description_str``, ``close``) driven by planned units of expected seconds, each named
    by its :attr:`Unit.key`."""

    def __init__(self, bar: Any, units: Sequence[Unit]) -> None:
        self.bar = bar
        self.planned: dict[Key, float] = {u.key: u.seconds for u in units}
        self.credited: dict[Key, float] = {}
        self.bar.total = sum(self.planned.values())
        self.bar.refresh()

    @property
    def total(self) -> float:
        return float(self.bar.total)

    def describe(self, text: str) -> None:
        self.bar.set_description_str(text)

    def plan(self, key: Key, seconds: float) -> None:
        """Expect ``seconds`` for the unit (planned before or not; what is credited stays)."""
        seconds = max(seconds, self.credited.get(key, 0.0))
        self._retotal(seconds - self.planned.get(key, 0.0))
        self.planned[key] = seconds

    def reach(self, key: Key, seconds: float) -> None:
        """The unit's work done so far is worth ``seconds`` of its plan (cumulative); beyond the
        plan, the plan grows."""
        if seconds > self.planned.get(key, 0.0):
            self.plan(key, seconds)
        delta = seconds - self.credited.get(key, 0.0)
        if delta > 0:
            self.credited[key] = seconds
            if self.bar.n + delta > self.bar.total:  # rounding in the sums: never past the end
                self.bar.total = self.bar.n + delta
            self.bar.update(delta)

    def finish(self, key: Key, *, worth: float | None = None) -> None:
        """The unit is done: credit the rest of its plan, or (``worth``) count it as worth that
        many seconds and give back the rest of its plan (a run that stopped at its target early)."""
        if worth is None:
            self.reach(key, self.planned.get(key, 0.0))
            return
        self.reach(key, worth)
        self.plan(key, worth)

    def skip(self, key: Key) -> None:
        """The unit will not run (stored by an earlier run, or its network failed): it leaves the
        plan, so that it does not make the rate look faster than the machine works."""
        self.plan(key, self.credited.get(key, 0.0))

    def skip_network(self, name: str) -> None:
        """Every unit of network ``name`` not yet done leaves the plan (the network failed)."""
        for key in list(self.planned):
            if key[1] == name:
                self.skip(key)

    def close(self) -> None:
        self.bar.close()

    def _retotal(self, delta: float) -> None:
        if delta:
            self.bar.total = max(self.bar.total + delta, self.bar.n)
            self.bar.refresh()


class NullBar:
    """The progress bar's interface, doing nothing (progress off)."""

    total: float = 0.0
    n: float = 0.0

    def update(self, n: float = 1) -> None:
        self.n += n

    def refresh(self) -> None: ...
    def set_description_str(self, text: str, refresh: bool = True) -> None: ...
    def close(self) -> None: ...


BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"  # source: our choice;
# the units are expected seconds, so a count of them would read as a false clock


def make_bar(enabled: bool) -> Any:
    """The study's tqdm bar (a NullBar when ``enabled`` is False). smoothing=0: the estimate of the
    time left uses the average rate since the start, not the last stretch of one stage."""
    if not enabled:
        return NullBar()
    from tqdm.auto import tqdm

    return tqdm(total=1.0, desc="study", dynamic_ncols=True, smoothing=0, bar_format=BAR_FORMAT)


def describe_plan(units: Sequence[Unit]) -> Mapping[Stage, float]:
    """The plan's expected seconds per stage (for tests and the plan's sanity)."""
    out: dict[Stage, float] = {}
    for unit in units:
        out[unit.stage] = out.get(unit.stage, 0.0) + unit.seconds
    return out


__all__ = ["BAR_FORMAT", "TARGET_SHARE_OF_CAP", "Key", "NullBar", "Progress", "Unit", "describe_plan",
           "make_bar", "repeat_seconds", "training_seconds"]
