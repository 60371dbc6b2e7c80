"""The machine over a study's timing: how fast the reference probe ran and how busy the machine was
at every stored repeat (schema 7's :class:`~dnncost.study.store.RepeatConditions`), so the report
can show the drift over the run, how many repeats were flagged and re-measured, and warn when the
machine was busy.

The probe's speed is the group's reference (the run's quiet level, the lower quartile of its
probes: :func:`dnncost.study.points.group_reference`) over the probe around the repeat: 1.0 at the
run's usual speed, 0.5 when the probe took twice as long. The reference itself is set against the
fastest probe on record for the machine, to see a whole run that was slow (``shift``). A repeat is
*flagged* when its probe drifted beyond DRIFT_THRESHOLD (the analysis leaves it out); *busy* when
:class:`dnncost.core.environment.MachineLoad` says so for the load stored beside it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from dnncost.core.environment import MachineLoad
from dnncost.core.kinds import MODES
from dnncost.measuring.measurement import DRIFT_THRESHOLD, SHIFT_THRESHOLD, probe_drift
from dnncost.study.points import group_record, group_reference
from dnncost.study.store import NetworkResult, TimingRow


@dataclass(frozen=True)
class DriftPoint:
    """One stored repeat of a step timing, with the machine around it."""

    elapsed_s: float  # since the group's first timed repeat (stored time stamps, to the
    # second); NaN where a time stamp is unreadable
    network: str
    mode: str
    drift: float  # the probe's slowdown against the group's reference; NaN when not probed
    remeasure: bool  # taken beyond the planned repeats because one drifted
    busy: bool
    reasons: tuple[str, ...] = ()  # why the machine counts as busy (MachineLoad.reasons)

    @property
    def flagged(self) -> bool:
        """The probe drifted beyond DRIFT_THRESHOLD: the repeat ran on a slowed machine."""
        return self.drift > DRIFT_THRESHOLD

    @property
    def speed(self) -> float:
        """The probe's speed against the reference: 1 / (1 + drift)."""
        return 1 / (1 + self.drift) if math.isfinite(self.drift) else math.nan


@dataclass(frozen=True)
class StudyDrift:
    """Every single-process repeat of a group's step timings, oldest first, and the reference."""

    points: tuple[DriftPoint, ...]
    reference_s: float | None  # the run's quiet level (group_reference)
    record_s: float | None = None  # the fastest probe on record for the machine (group_record)

    @property
    def shift(self) -> float:
        """How much slower the run's quiet level was than the best on record (0.2: 20%); beyond
        SHIFT_THRESHOLD the whole run may be shifted. NaN when either is unknown."""
        return probe_drift(self.reference_s, self.record_s) if self.reference_s else math.nan

    @property
    def probed(self) -> tuple[DriftPoint, ...]:
        return tuple(p for p in self.points if math.isfinite(p.drift))

    @property
    def median_drift(self) -> float:
        drifts = [p.drift for p in self.probed]
        return float(np.median(drifts)) if drifts else math.nan

    @property
    def max_drift(self) -> float:
        drifts = [p.drift for p in self.probed]
        return max(drifts) if drifts else math.nan

    @property
    def flagged(self) -> int:
        """Repeats whose probe drifted beyond DRIFT_THRESHOLD."""
        return sum(p.flagged for p in self.points)

    @property
    def remeasured(self) -> int:
        """Repeats taken again because a repeat's probe drifted."""
        return sum(p.remeasure for p in self.points)

    @property
    def busy(self) -> tuple[DriftPoint, ...]:
        """The repeats timed while the machine was busy."""
        return tuple(p for p in self.points if p.busy)

    def to_dict(self) -> dict[str, object]:
        return {"reference_s": self.reference_s, "record_s": self.record_s, "shift": self.shift,
                "shift_threshold": SHIFT_THRESHOLD, "repeats": len(self.points),
                "probed": len(self.probed), "median_drift": self.median_drift,
                "max_drift": self.max_drift, "flagged": self.flagged,
                "remeasured": self.remeasured, "busy": len(self.busy),
                "drift_threshold": DRIFT_THRESHOLD,
                "points": [{"elapsed_s": p.elapsed_s, "network": p.network, "mode": p.mode,
                            "drift": p.drift, "remeasure": p.remeasure, "busy": p.busy}
                           for p in self.points]}


def study_drift(networks: Sequence[NetworkResult], *, cores: int) -> StudyDrift:
    """The drift and load over a group's single-process step timings (``cores``: the machine's,
    from its environment, for the busy rule)."""
    reference = group_reference(networks)
    rows = sorted(((t, net.name) for net in networks
                   for mode in MODES for t in net.steps(mode, world_size=1)),
                  key=lambda tn: tn[0].measured)
    start = _when(rows[0][0]) if rows else None
    points = []
    for row, name in rows:
        c = row.conditions
        load = MachineLoad(load_average=c.load_average, steal_share=c.steal_share,
                           others_share=c.others_share, cpu_mhz=c.cpu_mhz, cores=cores,
                           threads=row.threads)
        probe = c.probe_s
        points.append(DriftPoint(
            elapsed_s=_seconds(_when(row), start),
            network=name, mode=row.mode,
            drift=probe_drift(probe, reference) if probe is not None else math.nan,
            remeasure=c.remeasure, busy=load.busy, reasons=load.reasons))
    return StudyDrift(tuple(points), reference, group_record(networks))


def _when(row: TimingRow) -> datetime | None:
    try:
        return datetime.fromisoformat(row.measured)
    except ValueError:  # not a time stamp this store writes
        return None


def _seconds(at: datetime | None, start: datetime | None) -> float:
    return (at - start).total_seconds() if at is not None and start is not None else math.nan


__all__ = ["DriftPoint", "StudyDrift", "study_drift"]
