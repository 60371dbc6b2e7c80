"""Cost records: what one operator call, one module or one whole step costs.

:class:`Cost` is a frozen, summable value (``sum(costs, Cost())``); :class:`OpRecord` is one operator
call attributed to a module and a phase; :class:`CostReport` is the counter's answer for a model.
The counting convention behind every figure is :data:`dnncost.counting.conventions.CONVENTION`.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum


class Phase(str, Enum):
    """The part of a training step an operator call belongs to."""

    FORWARD = "forward"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"


@dataclass(frozen=True)
class Cost:
    """Computation and memory traffic of some work.

    macs: multiply-accumulates of conv/linear/matmul/attention (the papers' and torchvision's figure);
    flops: 2 x macs + every other arithmetic operation; bytes_read / bytes_written: memory traffic.
    """

    macs: int = 0
    flops: int = 0
    bytes_read: int = 0
    bytes_written: int = 0

    @property
    def bytes(self) -> int:
        """Total memory traffic, read + written."""
        return self.bytes_read + self.bytes_written

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per byte moved (the roofline's x axis); 0 when nothing moves."""
        return self.flops / self.bytes if self.bytes else 0.0

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(self.macs + other.macs, self.flops + other.flops,
                    self.bytes_read + other.bytes_read, self.bytes_written + other.bytes_written)

    def __radd__(self, other: object) -> Cost:
        if other == 0:  # so that plain sum(costs) works too
            return self
        return NotImplemented

    def scaled(self, factor: int) -> Cost:
        """This cost ``factor`` times over (e.g. per step -> per epoch)."""
        return Cost(self.macs * factor, self.flops * factor,
                    self.bytes_read * factor, self.bytes_written * factor)

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "bytes": self.bytes}


@dataclass(frozen=True)
class OpRecord:
    """One aten operator call: its cost, the module it ran in and the phase of the step.

    ``module`` is the dotted path of the innermost module ('' for the model itself);
    ``module_type`` that module's class name; ``shapes`` the input shapes, for per-op models.
    """

    op: str
    phase: Phase
    module: str
    module_type: str
    cost: Cost
    shapes: tuple[tuple[int, ...], ...] = ()


def _truncate(path: str, depth: int) -> str:
    if depth < 0:
        return path
    return ".".join(path.split(".")[:depth]) if path else ""


@dataclass(frozen=True)
class CostReport:
    """The counter's answer for one model, input and mode. Compute-only: it never prints."""

    model: str
    mode: str
    input_shape: tuple[int, ...]
    batch_size: int
    records: tuple[OpRecord, ...]
    params: int
    trainable_params: int
    param_bytes: int
    activation_bytes: int
    peak_bytes: int
    unsupported_ops: tuple[tuple[str, int], ...] = ()
    counted_on: str = "meta"
    extra: dict[str, object] = field(default_factory=dict)

    # -- aggregation -------------------------------------------------------------------------
    def total(self, phase: Phase | str | None = None) -> Cost:
        """Sum over every call, or over one phase."""
        phase = Phase(phase) if phase is not None else None
        return sum((r.cost for r in self.records if phase is None or r.phase is phase), Cost())

    def by_phase(self) -> dict[Phase, Cost]:
        """Cost per phase, in step order (only phases that ran)."""
        out: dict[Phase, Cost] = {}
        for phase in Phase:
            if any(r.phase is phase for r in self.records):
                out[phase] = self.total(phase)
        return out

    def by_operator(self, phase: Phase | str | None = None) -> dict[str, Cost]:
        """Cost per aten operator (overload packet, e.g. 'aten.convolution'), largest FLOPs first."""
        return self._group(lambda r: r.op, phase)

    def by_module(self, depth: int = 1, phase: Phase | str | None = None) -> dict[str, Cost]:
        """Cost per module path truncated to ``depth`` levels (-1: innermost); '' is the model itself."""
        return self._group(lambda r: _truncate(r.module, depth), phase, sort=False)

    def by_module_type(self, phase: Phase | str | None = None) -> dict[str, Cost]:
        """Cost per layer type (innermost module's class: 'Conv2d', 'BatchNorm2d', ...)."""
        return self._group(lambda r: r.module_type, phase)

    def call_counts(self) -> dict[str, int]:
        """How many times each operator was called."""
        counts: dict[str, int] = defaultdict(int)
        for r in self.records:
            counts[r.op] += 1
        return dict(counts)

    def unsupported(self) -> dict[str, int]:
        """Operators that ran but have no formula (their cost is unknown, not zero), with call counts."""
        return dict(self.unsupported_ops)

    @property
    def gradient_bytes(self) -> int:
        """Bytes of gradients a data-parallel step all-reduces: one per trainable parameter element."""
        return int(self.extra.get("gradient_bytes", 0))

    def _group(self, key, phase: Phase | str | None, *, sort: bool = True) -> dict[str, Cost]:
        phase = Phase(phase) if phase is not None else None
        groups: dict[str, Cost] = {}
        for r in self.records:
            if phase is None or r.phase is phase:
                k = key(r)
                groups[k] = groups.get(k, Cost()) + r.cost
        if sort:
            return dict(sorted(groups.items(), key=lambda kv: -kv[1].flops))
        return groups

    # -- export ------------------------------------------------------------------------------
    def summary(self) -> dict[str, object]:
        """Whole-model figures as one flat dict (JSON/CSV friendly)."""
        total = self.total()
        out: dict[str, object] = {
            "model": self.model, "mode": self.mode,
            "input_shape": "x".join(map(str, self.input_shape)), "batch_size": self.batch_size,
            "params": self.params, "trainable_params": self.trainable_params,
            **total.to_dict(),
            "activation_bytes": self.activation_bytes, "peak_bytes": self.peak_bytes,
            "counted_on": self.counted_on,
        }
        for phase, cost in self.by_phase().items():
            out[f"{phase.value}_macs"] = cost.macs
            out[f"{phase.value}_flops"] = cost.flops
            out[f"{phase.value}_bytes"] = cost.bytes
        return out

    def to_rows(self, by: str = "module", *, depth: int = 1) -> list[dict[str, object]]:
        """Rows for a table/CSV: one per module (at ``depth``) or per operator, per phase."""
        rows: list[dict[str, object]] = []
        for phase in self.by_phase():
            groups = (self.by_module(depth, phase) if by == "module" else self.by_operator(phase))
            for name, cost in groups.items():
                row: dict[str, object] = {"phase": phase.value, by: name or "(model)"}
                if by == "operator":
                    row["calls"] = sum(1 for r in self.records if r.op == name and r.phase is phase)
                row.update(cost.to_dict())
                rows.append(row)
        return rows

    def to_dict(self, *, by: str = "module", depth: int = 1) -> dict[str, object]:
        """Everything as JSON-ready data: summary, per-phase totals, rows, unsupported operators."""
        from dnncost.counting.conventions import CONVENTION

        return {
            "summary": self.summary(),
            "by_phase": {p.value: c.to_dict() for p, c in self.by_phase().items()},
            f"by_{by}": self.to_rows(by, depth=depth),
            "unsupported": self.unsupported(),
            "convention": CONVENTION,
        }


def merge_records(records: Iterable[OpRecord]) -> Cost:
    """Sum the cost of any iterable of records."""
    return sum((r.cost for r in records), Cost())
