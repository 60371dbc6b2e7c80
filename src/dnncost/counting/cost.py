"""Cost records: what one operator call, one module or one whole step costs.

:class:`Cost` is a frozen, summable value (``sum(costs, Cost())``); :class:`OpRecord` is one operator
call attributed to a module and a phase; :class:`CostReport` is the counter's answer for a model.
The counting convention behind every figure is :data:`dnncost.counting.conventions.CONVENTION`.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from enum import Enum

from dnncost.core.errors import InputSpecError
from dnncost.core.kinds import Mode
from dnncost.core.workload import Workload
from dnncost.counting.conventions import CONVENTION, CONVENTION_SHORT
from dnncost.counting.table import human, render_text_table, table_cells


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

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(self.macs + other.macs, self.flops + other.flops,
                    self.bytes_read + other.bytes_read, self.bytes_written + other.bytes_written)

    def __radd__(self, other: object) -> Cost:
        if other == 0:  # so that plain sum(costs) works too
            return self
        return NotImplemented

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "bytes": self.bytes}


@dataclass(frozen=True)
class OpRecord:
    """One aten operator call: its cost, the module it ran in and the phase of the step.

    ``module`` is the dotted path of the innermost module ('' for the model itself);
    ``module_type`` that module's class name; ``shapes`` the input shapes, ``channels_last``
    whether a 4-D input is stored channels-last (NHWC) rather than contiguous, and ``stride`` and
    ``padding`` a convolution's or pooling's own arguments (empty for other calls), for per-op
    models: oneDNN picks other kernels for them, and neither of the last two can be read from the
    shapes alone (a convolution on an input padded beforehand, as TensorFlow's "same" padding is
    ported, has padding 0 where its shapes look like a padded one's).
    """

    op: str
    phase: Phase
    module: str
    module_type: str
    cost: Cost
    shapes: tuple[tuple[int, ...], ...] = ()
    channels_last: bool = False
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()


class GroupBy(str, Enum):
    """How a report's rows are grouped."""

    MODULE = "module"  # the module tree, parents with their children's totals
    OPERATOR = "operator"  # aten operator, per phase
    MODULE_TYPE = "module_type"  # innermost module's class, per phase


def group_by(by: GroupBy | str) -> GroupBy:
    """``by`` as a GroupBy; a clear error naming the choices for anything else."""
    try:
        return GroupBy(by)
    except ValueError:
        raise InputSpecError(f"unknown grouping '{by}'; choose one of "
                             f"{', '.join(g.value for g in GroupBy)}") from None


@dataclass(frozen=True)
class ModuleInfo:
    """One module of the counted model: dotted path ('' for the model), class name, parameters
    (its own and its children's) and the shape of its first output in the forward pass."""

    path: str
    module_type: str
    params: int
    output_shape: str = ""

    @property
    def depth(self) -> int:
        return self.path.count(".") + 1 if self.path else 0


def _is_step_part(path: str) -> bool:
    """'(loss)' and '(optimizer)': the parts of a step outside the model's modules."""
    return path.startswith("(")


def _truncate(path: str, depth: int) -> str:
    if depth < 0:
        return path
    return ".".join(path.split(".")[:depth]) if path else ""


@dataclass(frozen=True)
class CostReport(Workload):
    """The counter's answer for one model, input and mode (its :class:`Workload`). Compute-only:
    it never prints."""

    records: tuple[OpRecord, ...]
    params: int
    trainable_params: int
    param_bytes: int
    activation_bytes: int
    peak_bytes: int
    unsupported_ops: tuple[tuple[str, int], ...] = ()
    counted_on: str = "meta"
    extra: dict[str, object] = field(default_factory=dict)
    modules: tuple[ModuleInfo, ...] = ()  # every module, in definition order (the model first)
    inputs: str = ""  # the inputs as called, batch first ('2x16:int64, attention_mask=2x16:int64')
    dtype: str = "float32"  # the parameters' dtype; '+autocast <dtype>' when counted under autocast

    @property
    def incomplete(self) -> bool:
        """True when an operator without a formula ran: every total is then a lower bound."""
        return bool(self.unsupported_ops)

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

    def unsupported(self) -> dict[str, int]:
        """Operators that ran but have no formula (their cost is unknown, not zero), with call counts."""
        return dict(self.unsupported_ops)

    @property
    def gradient_bytes(self) -> int:
        """Bytes of gradients a data-parallel step all-reduces: one per trainable parameter element."""
        value = self.extra.get("gradient_bytes", 0)
        return value if isinstance(value, int) else 0

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
            "counted_on": self.counted_on, "inputs": self.inputs, "dtype": self.dtype,
            "incomplete": self.incomplete,
        }
        for phase, cost in self.by_phase().items():
            out[f"{phase.value}_macs"] = cost.macs
            out[f"{phase.value}_flops"] = cost.flops
            out[f"{phase.value}_bytes"] = cost.bytes
        return out

    def module_rows(self, depth: int = 1, phase: Phase | str | None = None) -> list[dict[str, object]]:
        """The module tree down to ``depth`` levels (-1: all), in definition order: one row per
        module with its type, parameters, output shape and cost -- a parent's cost is its own
        operators plus its children's -- then the loss and the optimizer step when they ran."""
        phase = Phase(phase) if phase is not None else None
        totals: dict[str, Cost] = {}
        whole = Cost()
        for r in self.records:
            if phase is not None and r.phase is not phase:
                continue
            whole += r.cost
            parts = [] if _is_step_part(r.module) or not r.module else r.module.split(".")
            keys = [r.module] if _is_step_part(r.module) else \
                [".".join(parts[:i]) for i in range(len(parts) + 1)]  # the module and its ancestors
            for key in keys:
                totals[key] = totals.get(key, Cost()) + r.cost
        infos = self.modules or tuple(ModuleInfo(p, "", 0) for p in sorted(totals)
                                      if not _is_step_part(p))
        rows = [_module_row(m.path, m.module_type, m.params, m.output_shape,
                            totals.get(m.path, Cost()), whole)
                for m in infos if depth < 0 or m.depth <= depth]
        rows += [_module_row(p, p, 0, "", c, whole) for p, c in totals.items() if _is_step_part(p)]
        return rows

    def to_rows(self, by: GroupBy | str = GroupBy.MODULE, *, depth: int = 1) -> list[dict[str, object]]:
        """Rows for a table/CSV: the module tree (see :meth:`module_rows`), or one row per
        operator / module type per phase with its call count and shares of the phase's total."""
        by = group_by(by)
        if by is GroupBy.MODULE:
            return self.module_rows(depth)
        rows: list[dict[str, object]] = []
        for phase, phase_total in self.by_phase().items():
            calls: dict[str, int] = defaultdict(int)
            for r in self.records:
                if r.phase is phase:
                    calls[r.op if by is GroupBy.OPERATOR else r.module_type] += 1
            groups = self.by_operator(phase) if by is GroupBy.OPERATOR else self.by_module_type(phase)
            for name, cost in groups.items():
                rows.append({"phase": phase.value, by.value: name, "calls": calls[name],
                             **_cost_columns(cost, phase_total)})
        return rows

    def to_dict(self, *, by: GroupBy | str = GroupBy.MODULE, depth: int = 1) -> dict[str, object]:
        """Everything as JSON-ready data: summary (with ``incomplete``), per-phase totals, the rows
        grouped ``by`` module, operator or module_type, unsupported operators, the convention."""
        by = group_by(by)
        return {
            "summary": self.summary(),
            "by_phase": {p.value: c.to_dict() for p, c in self.by_phase().items()},
            f"by_{by.value}": self.to_rows(by, depth=depth),
            "unsupported": self.unsupported(),
            "incomplete": self.incomplete,
            "convention": CONVENTION,
        }

    def table(self, by: GroupBy | str = GroupBy.MODULE, *, depth: int = 1,
              full_convention: bool = False) -> str:
        """The human-facing table -- the module tree with parent totals, types, parameters, output
        shapes and share columns, or operators / module types per phase -- then the totals and the
        convention (one line, or the full text): what ``print(report)`` shows."""
        by = group_by(by)
        headers, cells = table_cells(self.to_rows(by, depth=depth), by.value)
        return render_text_table(headers, cells, title=self.title(by),
                                 footer=self.footer(full_convention=full_convention))

    def title(self, by: GroupBy | str = GroupBy.MODULE) -> str:
        """'resnet18: forward (eval), input 1x3x224x224, float32, counted on meta -- by module'."""
        step = "forward (eval)" if self.mode == Mode.EVAL.value else "training step (forward + loss + " \
            "backward + optimizer)"
        return (f"{self.model}: {step}, input {self.inputs or self._shape_text()}, {self.dtype}, "
                f"counted on {self.counted_on} -- by {group_by(by).value}")

    def footer(self, *, full_convention: bool = False) -> list[str]:
        """Totals ('>=' when an operator had no formula), memory, unsupported ops, convention."""
        total = self.total()
        at_least = ">= " if self.incomplete else ""
        lines = [
            f"total  params {self.params:,} ({self.trainable_params:,} trainable)  "
            f"MACs {at_least}{total.macs:,}  FLOPs {at_least}{total.flops:,}  "
            f"bytes {at_least}{total.bytes:,}",
            f"activation memory {human(self.activation_bytes, unit='B')}  "
            f"peak memory estimate {human(self.peak_bytes, unit='B')}",
        ]
        if self.mode == Mode.TRAIN.value:
            lines.append(f"data-parallel all-reduce volume per step (gradients): "
                         f"{human(self.gradient_bytes, unit='B')}")
        if self.incomplete:
            lines.append("INCOMPLETE: operators without a formula ran (cost unknown, not zero), so the "
                         "totals are lower bounds: "
                         + ", ".join(f"{op} x{n}" for op, n in self.unsupported_ops))
        lines.append(CONVENTION if full_convention else f"Convention: {CONVENTION_SHORT}")
        return lines

    def _shape_text(self) -> str:
        return f"{self.batch_size}x{'x'.join(map(str, self.input_shape))}"

    def __str__(self) -> str:
        return self.table()


def _share(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def _cost_columns(cost: Cost, whole: Cost) -> dict[str, object]:
    return {"macs": cost.macs, "macs_%": _share(cost.macs, whole.macs),
            "flops": cost.flops, "flops_%": _share(cost.flops, whole.flops),
            "bytes_read": cost.bytes_read, "bytes_written": cost.bytes_written,
            "bytes": cost.bytes, "bytes_%": _share(cost.bytes, whole.bytes)}


def _module_row(path: str, module_type: str, params: int, output_shape: str, cost: Cost,
                whole: Cost) -> dict[str, object]:
    return {"module": path or "(model)", "type": module_type, "params": params,
            "output_shape": output_shape, **_cost_columns(cost, whole)}
