"""Where the time of a step goes: measured time per module, layer type and operator (torch.profiler).

Every module's forward runs inside a profiler range (forward pre/post hooks); an operator called
directly inside a module's range is that module's forward time. Backward work is attributed
through autograd's sequence numbers: the profiler tags each backward node
('autograd::engine::evaluate_function: ConvolutionBackward0') with the sequence number of the forward
operator that created it, whose module is known. The loss and the optimizer (zero_grad + step) have
their own ranges. The parts are then reconciled with the profiled step's wall time; the gap is time
spent between operators (Python, module dispatch, hooks, profiler bookkeeping) and is stated, not hidden.
On a GPU, operator times are their kernels' device time, so the gap also holds the GPU's idle time.

The profiler's own library (libkineto) writes lines such as ``USDT: ... profiler_start`` and, on a
machine without a GPU, ``ERROR: ... gpuGetDeviceCount failed`` to stderr; unless the user has set
``KINETO_LOG_LEVEL`` (libkineto's log level, read when it initialises: the knob PyTorch's own tests
and torchtitan use to quiet the profiler), it is set so that libkineto prints nothing.
"""
from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from dnncost.core.device import out_of_memory_as_error, resolve_device, synchronize, using_threads
from dnncost.core.errors import InputSpecError
from dnncost.core.step import LOSS_MODULE, OPTIMIZER_MODULE, Part
from dnncost.core.workload import Workload
from dnncost.counting.cost import CostReport
from dnncost.measuring.timing import StepOptions, prepare_step, preserved, step_options

MODULE_RANGE = "dnncost.module::"  # prefix of the profiler range around each module's forward
STEP_RANGE = "dnncost.step"
BACKWARD_NODE = "autograd::engine::evaluate_function: "  # source: torch/csrc/autograd/engine.cpp
ACCUMULATE_GRAD = "(gradient accumulation)"  # AccumulateGrad nodes: no forward op, no module
BACKWARD_ENGINE = "(backward engine)"  # work in loss.backward() outside any node (seeding the grad)
US = 1e-6  # the profiler reports microseconds
KINETO_LOG_LEVEL = "KINETO_LOG_LEVEL"  # source: libkineto's init.cpp reads it when the profiler starts
KINETO_SILENT = "6"  # source: libkineto's Logger.h, VERBOSE 0, INFO 1, WARNING 2, STAGE 3, ERROR 4,
# USDT 5: a message prints when its level is at least the set one, so 6 prints none (torch 2.14)


@dataclass(frozen=True)
class BreakdownRow:
    """Measured seconds per step of one module, layer type or operator, and its counted FLOPs."""

    name: str
    forward_s: float = 0.0  # forward (and loss) time
    backward_s: float = 0.0
    other_s: float = 0.0  # optimizer: zero_grad + step
    flops: int | None = None  # counted FLOPs of one step (None: no count for this key)

    @property
    def total_s(self) -> float:
        return self.forward_s + self.backward_s + self.other_s


@dataclass(frozen=True)
class Breakdown(Workload):
    """Measured step time (of its :class:`Workload`) split by module type, module and operator,
    reconciled with the step."""

    device: str
    threads: int
    steps: int  # profiled steps the per-step figures average over
    step_time_s: float  # mean wall time of a profiled step
    by_module_type: tuple[BreakdownRow, ...]
    by_module: tuple[BreakdownRow, ...]
    by_operator: tuple[BreakdownRow, ...]
    total_flops: int | None = None
    unprofiled_step_s: float | None = None  # a plain timing's median, to show profiler overhead

    @property
    def attributed_s(self) -> float:
        """Time per step inside some operator (identical whichever grouping is summed)."""
        return sum(r.total_s for r in self.by_module_type)

    @property
    def gap_s(self) -> float:
        """Step time no operator accounts for (between-operator overhead)."""
        return self.step_time_s - self.attributed_s

    def rows(self, by: str = "module_type") -> list[dict[str, object]]:
        """Table rows for one grouping ('module_type', 'module', 'operator'), largest time first,
        each with its share of the step's time beside its share of the step's FLOPs."""
        groups = {"module_type": self.by_module_type, "module": self.by_module,
                  "operator": self.by_operator}[by]
        out = []
        for r in sorted(groups, key=lambda r: -r.total_s):
            flops_share = (r.flops / self.total_flops
                           if r.flops is not None and self.total_flops else None)
            out.append({by: r.name or "(model)", "forward_ms": r.forward_s * 1e3,
                        "backward_ms": r.backward_s * 1e3, "optimizer_ms": r.other_s * 1e3,
                        "total_ms": r.total_s * 1e3, "time_share": r.total_s / self.step_time_s,
                        "flops": r.flops, "flops_share": flops_share})
        return out

    def reconciliation(self) -> dict[str, float | None]:
        """The parts against the whole: step = attributed + gap; profiling overhead if known."""
        overhead = (self.step_time_s / self.unprofiled_step_s - 1
                    if self.unprofiled_step_s else None)
        return {"step_ms": self.step_time_s * 1e3, "attributed_ms": self.attributed_s * 1e3,
                "gap_ms": self.gap_s * 1e3, "gap_share": self.gap_s / self.step_time_s,
                "unprofiled_step_ms": (self.unprofiled_step_s * 1e3
                                       if self.unprofiled_step_s else None),
                "profiler_overhead": overhead}

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "mode": self.mode.value, "batch_size": self.batch_size,
                "device": self.device, "threads": self.threads, "steps": self.steps,
                "reconciliation": self.reconciliation(), "total_flops": self.total_flops,
                "by_module_type": self.rows("module_type"), "by_module": self.rows("module"),
                "by_operator": self.rows("operator")}


# -- profiling ------------------------------------------------------------------------------------
def _module_ranges(model: nn.Module) -> list[RemovableHandle]:
    """Hook every module's forward into a profiler range 'dnncost.module::<path>'; returns the
    hook handles (remove them when done)."""
    from torch.profiler import record_function

    open_ranges: dict[int, list[record_function]] = defaultdict(list)
    handles = []

    def make_pre(path: str):
        def pre(module: nn.Module, args: object) -> None:
            rf = record_function(MODULE_RANGE + path)
            rf.__enter__()
            open_ranges[id(module)].append(rf)
        return pre

    def post(module: nn.Module, args: object, output: object) -> None:
        if open_ranges[id(module)]:
            open_ranges[id(module)].pop().__exit__(None, None, None)

    for path, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(make_pre(path)))
        handles.append(module.register_forward_hook(post, always_call=True))
    return handles


PHASE_RANGES = {p.value: f"dnncost.{p.value}" for p in Part}  # profiler range around each part


@contextlib.contextmanager
def _annotate(part: Part) -> Iterator[None]:
    """The step's part hook: a named profiler range around each part."""
    from torch.profiler import record_function

    with record_function(PHASE_RANGES[part.value]):
        yield


def profile_breakdown(model: nn.Module, input_shape: Sequence[int], options: StepOptions | None = None,
                      *, steps: int = 5, name: str | None = None, report: CostReport | None = None,
                      unprofiled_step_s: float | None = None, **overrides: Any) -> Breakdown:
    """Profile ``steps`` steps and attribute their time to modules, layer types and operators.

    ``options`` (or keyword overrides of its fields) is the step, as :func:`time_model` takes it.
    ``report`` (the counter's CostReport of the same step) supplies FLOPs per layer type and module;
    ``unprofiled_step_s`` (a plain timing's median) lets the result state the profiler's overhead.
    The model is left as found.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    opts = step_options(options, overrides)
    dev = resolve_device(opts.device)
    if steps < 1:
        raise InputSpecError(f"need at least one profiled step, got {steps}")
    shape = tuple(int(s) for s in input_shape)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    types = {path: type(m).__name__ for path, m in model.named_modules()}
    with using_threads(opts.threads) as n_threads, preserved(model), \
            out_of_memory_as_error(batch_size=opts.batch_size, device=dev):
        handles = _module_ranges(model)
        try:
            step = prepare_step(model, shape, opts, dev, part=_annotate)
            for _ in range(opts.warmup):
                step()
            synchronize(dev)
            with _quiet_profiler(), profile(activities=activities) as prof:
                for _ in range(steps):
                    with record_function(STEP_RANGE):
                        step()
                        synchronize(dev)
        finally:
            for handle in handles:
                handle.remove()

    events = [e for e in prof.events() if e.device_type == DeviceType.CPU]  # host-side ranges and ops
    workload = Workload(name or type(model).__name__, opts.mode, tuple(input_shape), opts.batch_size)
    return _attribute(events, types, workload=workload, device=dev, threads=n_threads, steps=steps,
                      report=report, unprofiled_step_s=unprofiled_step_s)


@contextlib.contextmanager
def _quiet_profiler() -> Iterator[None]:
    """Inside the block, KINETO_LOG_LEVEL is KINETO_SILENT unless the user set it: libkineto, which
    reads it once when the first profile of the process starts, then writes nothing to stderr."""
    if KINETO_LOG_LEVEL in os.environ:
        yield
        return
    os.environ[KINETO_LOG_LEVEL] = KINETO_SILENT
    try:
        yield
    finally:
        os.environ.pop(KINETO_LOG_LEVEL, None)


# -- attribution ----------------------------------------------------------------------------------
class _Acc:
    """Accumulates microseconds per (key, column) for one grouping."""

    def __init__(self) -> None:
        self.us: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])

    def add(self, key: str, column: int, us: float) -> None:
        self.us[key][column] += us

    def rows(self, steps: int, flops: dict[str, int] | None) -> tuple[BreakdownRow, ...]:
        keys = list(self.us) + [k for k in (flops or {}) if k not in self.us]
        rows = []
        for k in keys:
            fwd, bwd, other = (v * US / steps for v in self.us.get(k, [0.0, 0.0, 0.0]))
            rows.append(BreakdownRow(k, forward_s=fwd, backward_s=bwd, other_s=other,
                                     flops=flops.get(k) if flops is not None else None))
        return tuple(rows)


FORWARD, BACKWARD, OTHER = 0, 1, 2  # columns of _Acc


def _attribute(events: list, types: dict[str, str], *, workload: Workload, device: torch.device,
               threads: int, steps: int, report: CostReport | None,
               unprofiled_step_s: float | None) -> Breakdown:
    """Turn profiler events into per-step rows; see the module docstring for the rules."""
    on_gpu = device.type == "cuda"

    def duration(e) -> float:  # microseconds of work: kernel time on a GPU, else CPU wall time
        return e.device_time_total if on_gpu else e.cpu_time_total

    def owner(e) -> str | None:
        """Module path of the innermost module range around ``e``; LOSS_MODULE inside the loss."""
        p = e.cpu_parent
        while p is not None:
            if p.name.startswith(MODULE_RANGE):
                return p.name[len(MODULE_RANGE):]
            if p.name == PHASE_RANGES["loss"]:
                return LOSS_MODULE
            p = p.cpu_parent
        return None

    by_type, by_module, by_op = _Acc(), _Acc(), _Acc()

    def add(module: str, op: str, column: int, us: float) -> None:
        by_type.add(types.get(module, module), column, us)
        by_module.add(module, column, us)
        by_op.add(op, column, us)

    step_us = [e.cpu_time_total for e in events if e.name == STEP_RANGE]
    seq_owner: dict[tuple[int, int], str] = {}  # (forward thread, sequence nr) -> module path
    for e in events:
        if e.sequence_nr is not None and e.sequence_nr >= 0 and not e.name.startswith(BACKWARD_NODE):
            module = owner(e)
            if module is not None:
                seq_owner.setdefault((e.thread, e.sequence_nr), module)
    for e in events:
        parent = e.cpu_parent.name if e.cpu_parent is not None else ""
        if e.name.startswith(MODULE_RANGE) or e.name.startswith("dnncost."):
            if e.name in (PHASE_RANGES["zero_grad"], PHASE_RANGES["optimizer"]):
                add(OPTIMIZER_MODULE, OPTIMIZER_MODULE, OTHER, duration(e))
            continue
        if parent.startswith(MODULE_RANGE):  # an operator called directly in a module's forward
            add(parent[len(MODULE_RANGE):], e.name, FORWARD, duration(e))
        elif parent == PHASE_RANGES["loss"]:
            add(LOSS_MODULE, e.name, FORWARD, duration(e))
        elif e.name.startswith(BACKWARD_NODE):
            node = e.name[len(BACKWARD_NODE):]
            if "AccumulateGrad" in node:
                add(ACCUMULATE_GRAD, node, BACKWARD, duration(e))
            else:
                module = seq_owner.get((e.fwd_thread, e.sequence_nr), BACKWARD_ENGINE)
                add(module, node, BACKWARD, duration(e))
        elif parent == PHASE_RANGES["backward"]:  # e.g. aten::ones_like seeding the gradient
            add(BACKWARD_ENGINE, e.name, BACKWARD, duration(e))
        elif parent == PHASE_RANGES["forward"]:  # an operator outside every module (none usually)
            add("", e.name, FORWARD, duration(e))

    type_flops = module_flops = None
    total_flops = None
    if report is not None:
        type_flops = {k: c.flops for k, c in report.by_module_type().items()}
        module_flops = {k: c.flops for k, c in report.by_module(depth=-1).items()}
        total_flops = report.total().flops
    if not step_us:
        raise RuntimeError("the profiler recorded no step: was the profiler disabled?")
    return Breakdown(
        **vars(workload), device=str(device), threads=threads,
        steps=len(step_us), step_time_s=sum(step_us) * US / len(step_us),
        by_module_type=by_type.rows(steps, type_flops), by_module=by_module.rows(steps, module_flops),
        by_operator=by_op.rows(steps, None), total_flops=total_flops,
        unprofiled_step_s=unprofiled_step_s)


__all__ = ["Breakdown", "BreakdownRow", "profile_breakdown"]
