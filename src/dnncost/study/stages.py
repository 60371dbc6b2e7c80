"""The stages of a study's run, and the clock that records the wall time each one takes.

A run of ``dnncost study`` loads and counts every network, times its steps, profiles where the
step time goes, trains it (to a target accuracy, or for fixed epochs), times cost vs work, and
ends with the machine's calibration, its per-operator time model and the predictions; the command
then writes the report. :class:`StageClock` adds up the wall time of each stage (a stage may run
in many pieces, one per network) so that the store keeps the split for every run (table
``stage_times``) and the report and the command's closing line can say where the time went. No
torch import: the command line and the report read it.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import Enum


class Stage(str, Enum):
    """The parts of a study's run, in order; errors are recorded against one of them."""

    LOAD = "load"
    COUNT = "count"
    TIME = "time"
    BREAKDOWN = "breakdown"
    TRAIN = "train"
    DISTRIBUTED = "distributed"
    WHATIF = "whatif"
    WORK = "work"
    CALIBRATE = "calibrate"
    OPERATOR_MODEL = "operator_model"
    PREDICT = "predict"
    REPORT = "report"  # written by the command after the run; not in the store

    @property
    def label(self) -> str:
        """The stage in words."""
        return _LABELS[self]


_LABELS = {
    Stage.LOAD: "loading the networks", Stage.COUNT: "counting", Stage.TIME: "step timings",
    Stage.BREAKDOWN: "per-layer-type breakdown", Stage.TRAIN: "training",
    Stage.DISTRIBUTED: "data-parallel steps", Stage.WHATIF: "what-if", Stage.WORK: "cost vs work",
    Stage.CALIBRATE: "peak calibration", Stage.OPERATOR_MODEL: "quick calibration (per-operator model)",
    Stage.PREDICT: "predictions", Stage.REPORT: "report",
}


class StageClock:
    """Wall seconds spent in each stage, added up over the pieces timed with :meth:`timing`."""

    def __init__(self) -> None:
        self.seconds: dict[Stage, float] = {}

    @contextmanager
    def timing(self, stage: Stage) -> Iterator[None]:
        """Add the wall time of the ``with`` block to ``stage`` (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def add(self, stage: Stage, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def by_name(self) -> dict[str, float]:
        """{stage value: seconds}, in stage order, as the store keeps them."""
        return {s.value: self.seconds[s] for s in Stage if s in self.seconds}


OTHER = "other"  # the part of a measured total that no stage accounts for (start-up, checks)


def describe_split(seconds: Mapping[str, float], *, total_s: float | None = None) -> str:
    """'452 s (7 min 32 s): step timings 160 s (35%), training 150 s (33%), ...' -- the stages in
    order, each with its share of ``total_s`` (default: their sum; the part of a larger total no
    stage accounts for is 'other'). Stages under half a second are left out."""
    order = {s.value: i for i, s in enumerate(Stage)}
    total = sum(seconds.values()) if total_s is None else total_s
    rest = total - sum(seconds.values())
    seconds = {**seconds, OTHER: rest} if rest >= 0.5 else dict(seconds)
    items = sorted(seconds.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    parts = [f"{Stage(name).label if name in order else name} {s:.0f} s"
             + (f" ({s / total:.0%})" if total > 0 else "") for name, s in items if s >= 0.5]
    return f"{_duration(total)}: " + ", ".join(parts)


def _duration(seconds: float) -> str:
    """'452 s (7 min 32 s)' above a minute, '41 s' below."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{seconds:.0f} s ({minutes} min {rest} s)"


__all__ = ["OTHER", "Stage", "StageClock", "describe_split"]
