"""What a result is about, named once: :class:`Workload` -- which network, which step, on what input,
at which batch size. Every result record of a step is a Workload with its own figures after it:
the counter's CostReport, the timer's StepTiming, the profiler's Breakdown, the data-parallel
DistributedTiming, a cost-vs-work point. A record elsewhere (a prediction, a what-if result)
adopts it the same way: ``@dataclass(frozen=True) class R(Workload): ...``, its own fields after
the four shared ones.
"""
from __future__ import annotations

from dataclasses import dataclass

from dnncost.core.kinds import Mode


@dataclass(frozen=True)
class Workload:
    """The header every result record of one step shares: the network's name, the step's mode,
    one sample's input shape (e.g. ``(3, 32, 32)``) and the batch size. ``mode`` may be given as
    its name; it is kept as a :class:`Mode`."""

    model: str
    mode: Mode
    input_shape: tuple[int, ...]
    batch_size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode(self.mode))
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))

    @property
    def workload(self) -> Workload:
        """The header alone (of a record that extends it)."""
        return Workload(self.model, self.mode, self.input_shape, self.batch_size)

    @property
    def shape_text(self) -> str:
        """Batch and sample shape as a text, '8x3x32x32'."""
        return "x".join(map(str, (self.batch_size, *self.input_shape)))


__all__ = ["Workload"]
