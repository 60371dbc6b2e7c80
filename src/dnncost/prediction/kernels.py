"""Time every kernel of a real step, in place: the per-operator samples the predictor learns from.

A :class:`KernelClock` is a dispatch mode pushed *outside* the counter's: the counter
(:func:`dnncost.counting.counter.count` on real CPU tensors) records each aten call's shapes and
cost, and as it runs the call, the clock below it times just that call (``perf_counter`` around the
kernel; CPU kernels are synchronous). So every :class:`~dnncost.counting.cost.OpRecord` gets the
seconds its kernel took inside a real training or validation step -- forward, input- and weight-
gradient, optimizer -- with the neighbours, caches and thread pool it has in a network, and the
records are exactly the ones ``predict`` sums over. A step's time minus its kernels' times is what
the operators do not explain (autograd's per-node work, Python per module, the optimizer's loop over
tensors): :func:`step_features` lists the counts that cost is fitted on.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from dnncost.core.step import Mode, OptimizerKind
from dnncost.counting.cost import CostReport, OpRecord, Phase
from dnncost.counting.counter import count
from dnncost.counting.formulas import formula_for, is_view, op_name
from dnncost.measuring.measurement import STUDY_ESTIMATOR, estimate
from dnncost.measuring.timing import StepOptions, prepare_step, preserved


class KernelClock(TorchDispatchMode):
    """Seconds of every costed (non-view, formula-bearing) aten call, in call order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, float]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        elapsed = time.perf_counter() - start
        if not is_view(func) and formula_for(func) is not None:
            self.calls.append((op_name(func), elapsed))
        return out


class AlignmentError(RuntimeError):
    """The clock's calls do not line up with the counter's records."""


def _align(records: Sequence[OpRecord], calls: Sequence[tuple[str, float]]) -> list[float]:
    """The seconds of each record: the counter's records are the clock's last calls (the clock
    also sees the calls that set the step up -- the batch, the optimizer state -- before them)."""
    tail = calls[len(calls) - len(records):] if len(calls) >= len(records) else ()
    if len(tail) != len(records) or any(r.op != name for r, (name, _) in zip(records, tail, strict=False)):
        raise AlignmentError(f"{len(calls)} timed calls do not end with the {len(records)} "
                             "counted ones")
    return [t for _, t in tail]


@dataclass(frozen=True)
class TimedStep:
    """One counted step with each record's kernel seconds (the fastest of the timed runs) and the
    step's own seconds without the clock: the network's measured time as dnncost defines it
    (STUDY_ESTIMATOR over ``step_samples``, as the study, ``dnncost time`` and the evaluations read
    a step)."""

    report: CostReport
    kernel_s: tuple[float, ...]
    step_s: float
    step_samples: tuple[float, ...]


def count_step(module: nn.Module, input_shape: Sequence[int], *, batch_size: int, mode: str,
               optimizer: str = "sgd") -> CostReport:
    """The count :func:`time_kernels` times a ``mode`` step against (meta device)."""
    return count(module, mode=mode, batch_size=batch_size,
                 input_shape=tuple(int(s) for s in input_shape), optimizer=optimizer)


def time_kernels(module: nn.Module, input_shape: Sequence[int], *, batch_size: int, mode: str,
                 runs: int = 3, warmup: int = 2, step_repeats: int = 5,
                 optimizer: str = "sgd", report: CostReport | None = None) -> TimedStep:
    """Count one ``mode`` step of ``module`` (meta device), then on the CPU run ``warmup`` steps,
    ``runs`` steps with every kernel timed and ``step_repeats`` plain timed steps, interleaved
    (clocked, plain, clocked, ...) so that drift in the machine's load hits both alike. Each
    kernel's figure is its fastest run (another process only ever adds time); the step's is
    STUDY_ESTIMATOR over the plain steps, the figure every measured step is. Where the CPU runs
    other kernels than the meta device shows (fused attention), the kernels are timed while
    counting on the CPU instead, so that each record still gets its own kernel's time. ``report``:
    this step's count when already made (the same module, input, batch, mode and optimizer; the
    returned one, which may be the CPU's), so that timing a network again does not count it again."""
    shape = tuple(int(s) for s in input_shape)
    if report is None:
        report = count_step(module, shape, batch_size=batch_size, mode=mode, optimizer=optimizer)
    opts = StepOptions(batch_size=batch_size, mode=Mode(mode), optimizer=OptimizerKind(optimizer))
    timings: list[list[float]] = []
    plain: list[float] = []
    with preserved(module):
        step = prepare_step(module, shape, opts, torch.device("cpu"))
        for _ in range(warmup):
            step()
        for i in range(max(runs, step_repeats)):
            if i < runs:
                clock = KernelClock()
                with clock:
                    step()
                try:
                    timings.append(_align(report.records, clock.calls))
                except AlignmentError:
                    report, timings = _counted_on_cpu(module, shape, mode=mode, batch_size=batch_size,
                                                      runs=runs, optimizer=optimizer)
                    runs = 0
            if i < step_repeats:
                start = time.perf_counter()
                step()
                plain.append(time.perf_counter() - start)
    kernel_s = np.min(np.array(timings), axis=0) if report.records else np.zeros(0)
    return TimedStep(report, tuple(float(t) for t in kernel_s), estimate([plain], STUDY_ESTIMATOR),
                     tuple(plain))


def _counted_on_cpu(module: nn.Module, shape: tuple[int, ...], *, mode: str, batch_size: int,
                    runs: int, optimizer: str) -> tuple[CostReport, list[list[float]]]:
    """The step counted on the CPU (the kernels it really runs), each kernel timed: one warm-up
    count, then ``runs`` timed ones."""
    report: CostReport | None = None
    timings = []
    for i in range(1 + runs):
        clock = KernelClock()
        with clock:
            report = count(module, mode=mode, batch_size=batch_size, input_shape=shape,
                           device="cpu", optimizer=optimizer)
        if i:
            timings.append(_align(report.records, clock.calls))
    assert report is not None
    return report, timings


STEP_FEATURES = ("train", "eval", "kernel_calls", "forward_calls", "backward_calls", "modules",
                 "param_tensors", "train_kernel_s", "eval_kernel_s")
"""What a step costs beyond its kernels is fitted as a linear function of these counts (the
weight of ``kernel_calls`` may be negative: the clock's own cost per call, counted in each kernel)
and of its kernels' seconds in each mode: a share of the kernels' time that the step spends between
them, which on the calibration's random networks and on real ones alike is a steady few percent of
the step, where no count tracks it (per kernel call it ranged from 2 to 12 microseconds)."""


def step_features(report: CostReport, modules: int, param_tensors: int,
                  kernel_s: float) -> np.ndarray:
    """[train, eval, kernel calls, forward calls (train: the graph each records), backward calls
    (the engine's per node), module calls (Python, both modes), parameter tensors (train:
    zero_grad and the optimizer's loop), the kernels' seconds in a train step, in an eval step]
    of one step whose kernels take ``kernel_s`` (measured when fitting, predicted when
    predicting)."""
    train = report.mode == "train"
    forward = sum(r.phase is Phase.FORWARD for r in report.records)
    backward = sum(r.phase is Phase.BACKWARD for r in report.records)
    return np.array([float(train), float(not train), float(len(report.records)), forward * train,
                     float(backward),
                     float(modules), param_tensors * float(train), kernel_s * train,
                     kernel_s * (not train)])


def module_counts(module: nn.Module) -> tuple[int, int]:
    """(modules, parameter tensors) of a network."""
    return sum(1 for _ in module.modules()), sum(1 for p in module.parameters() if p.requires_grad)


__all__ = ["AlignmentError", "KernelClock", "STEP_FEATURES", "TimedStep", "module_counts",
           "step_features", "time_kernels"]
