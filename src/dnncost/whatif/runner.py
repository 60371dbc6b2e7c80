"""Count and time each transformation side by side with the unmodified network.

For every transformation the original (A) and the transformed network (B) take turns -- A B, B A,
A B, ... -- so both see the same machine state and each pair gives one time ratio; the ratio's
median and its distribution-free 95% interval (order statistics, as for any
:class:`~dnncost.measuring.measurement.Measurement`) are reported with the counted ratios of FLOPs,
parameters, bytes and activation memory. Every ratio is per sample, so a batch-size change compares
throughput. Results are yielded one by one, so a caller keeps everything measured before a failure.

The network is called with an input spec as every command takes it (:mod:`dnncost.core.inputs`:
shapes with dtypes, several tensors, a factory of keyword tensors), in the step options' dtype,
autocast and memory format. The pairs are timed here rather than by
:func:`dnncost.measuring.interleave.time_interleaved`: that one times each network in repeats of
several steps, always in job order, each repeat rebuilding the step (an extra labelling forward,
which would compile outside the first step's time limit) and re-measuring a drifted repeat alone,
without its partner -- the A B / B A pairs, one ratio per adjacent pair, would be lost.

A variant whose kernels the device emulates (``Variant.emulated``: float16 on a CPU without native
float16) is timed with EMULATED_PAIRS pairs and no warm-up pairs beyond its first step, and its note
says so: each of its steps costs 10-35 of the original's, and a ratio that large needs no interval.
"""
from __future__ import annotations

import contextlib
import copy
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType

import torch
from torch import nn

from dnncost.core.device import (
    BatchTooLargeError,
    StepClock,
    check_memory_fits,
    out_of_memory_as_error,
    resolve_device,
    using_threads,
)
from dnncost.core.errors import DnncostError, InputSpecError
from dnncost.core.inputs import InputSpec, Precision, make_inputs, parse_dtype
from dnncost.core.kinds import Mode
from dnncost.core.step import (
    Part,
    PartHook,
    build_step,
    make_optimizer,
    primary_output,
    random_labels,
    step_loss,
    trainable_parameters,
)
from dnncost.counting.cost import CostReport
from dnncost.counting.counter import META_HINT, count
from dnncost.measuring.measurement import Measurement
from dnncost.measuring.timing import StepOptions
from dnncost.measuring.timing import _input_spec as input_spec
from dnncost.whatif.registry import (
    Context,
    NotApplicable,
    Spec,
    TransformationError,
    Variant,
    first_line,
)

EMULATED_PAIRS = 2  # source: our choice; an emulated step costs 10-35 float32 steps (README's whatif
# table: resnet20's fp16 training step 19.6x on a CPU without float16 kernels), and a ratio that
# large reads without an interval


@dataclass(frozen=True)
class WhatIfResult:
    """One transformation in one step mode: counted ratios, measured ratio, or why it does not apply.

    Ratios are transformed / original, per sample. ``time_ratio`` holds one ratio per A/B pair.
    The accuracies (validation, 0-1) are filled in by ``--train`` (dnncost.whatif.accuracy)."""

    model: str
    transformation: str
    mode: Mode
    applicable: bool
    note: str  # what was done, or the reason it does not apply
    count_note: str = ""
    flops_ratio: float | None = None  # executed (counted) FLOPs
    nominal_flops_ratio: float | None = None  # FLOPs a sparse kernel would do (pruned weights skipped)
    params_ratio: float | None = None
    bytes_ratio: float | None = None
    activation_ratio: float | None = None
    time_ratio: Measurement | None = None
    original: Measurement | None = None  # seconds per step
    transformed: Measurement | None = None
    original_flops: int | None = None  # per step
    flops: int | None = None
    batch_size: int | None = None
    threads: int | None = None
    first_call_s: float | None = None  # the transformed network's first step (compilation included)
    original_accuracy: float | None = None  # validation accuracy of the trained original
    accuracy: float | None = None  # of the transformed network (see accuracy_note for how)
    accuracy_note: str = ""  # how the accuracy was found, or why there is none
    emulated: str = ""  # why the device emulates the transformed network's kernels (fewer pairs)

    @property
    def time_ratio_ci95(self) -> tuple[float, float]:
        return self.time_ratio.ci95 if self.time_ratio else (math.nan, math.nan)

    @property
    def achieved_flops_per_s(self) -> float | None:
        if self.transformed is None or self.flops is None:
            return None
        return self.flops / self.transformed.median

    @property
    def original_achieved_flops_per_s(self) -> float | None:
        if self.original is None or self.original_flops is None:
            return None
        return self.original_flops / self.original.median

    def to_row(self) -> dict[str, object]:
        """One flat row for a table or CSV (times in milliseconds, rates in GFLOP/s)."""
        low, high = self.time_ratio_ci95
        return {
            "transformation": self.transformation, "mode": self.mode.value,
            "flops": self.flops_ratio, "nominal_flops": self.nominal_flops_ratio,
            "params": self.params_ratio, "bytes": self.bytes_ratio,
            "activations": self.activation_ratio,
            "time": self.time_ratio.median if self.time_ratio else None,
            "time_ci95_low": None if math.isnan(low) else low,
            "time_ci95_high": None if math.isnan(high) else high,
            "pairs": self.time_ratio.n if self.time_ratio else None,
            "original_ms": _ms(self.original), "transformed_ms": _ms(self.transformed),
            "original_gflops_per_s": _giga(self.original_achieved_flops_per_s),
            "gflops_per_s": _giga(self.achieved_flops_per_s),
            "noisy": self.time_ratio.noisy if self.time_ratio else None,
            "note": self.note if self.applicable else f"not applicable: {self.note}",
            "original_accuracy": self.original_accuracy, "accuracy": self.accuracy,
            "accuracy_change": (self.accuracy - self.original_accuracy
                                if self.accuracy is not None and self.original_accuracy is not None
                                else None),
            "accuracy_note": self.accuracy_note,
        }

    def to_dict(self) -> dict[str, object]:
        """Everything as JSON-ready data, raw samples included."""
        return {
            "model": self.model, "transformation": self.transformation, "mode": self.mode.value,
            "applicable": self.applicable, "note": self.note, "count_note": self.count_note,
            "flops_ratio": self.flops_ratio, "nominal_flops_ratio": self.nominal_flops_ratio,
            "params_ratio": self.params_ratio, "bytes_ratio": self.bytes_ratio,
            "activation_ratio": self.activation_ratio,
            "time_ratio": self.time_ratio.to_dict() if self.time_ratio else None,
            "original": self.original.to_dict() if self.original else None,
            "transformed": self.transformed.to_dict() if self.transformed else None,
            "original_flops": self.original_flops, "flops": self.flops,
            "batch_size": self.batch_size, "threads": self.threads,
            "achieved_flops_per_s": self.achieved_flops_per_s,
            "original_achieved_flops_per_s": self.original_achieved_flops_per_s,
            "first_call_s": self.first_call_s, "emulated": self.emulated,
            "original_accuracy": self.original_accuracy, "accuracy": self.accuracy,
            "accuracy_note": self.accuracy_note,
        }


def _ms(m: Measurement | None) -> float | None:
    return m.median * 1e3 if m else None


def _giga(value: float | None) -> float | None:
    return None if value is None else value * 1e-9


class FirstCallTimeout(Exception):  # noqa: N818 -- raised by the alarm, turned into NotApplicable
    """The first step of a transformed network did not finish within its limit."""


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise FirstCallTimeout in the block after ``seconds`` (main thread with SIGALRM only)."""
    usable = seconds is not None and hasattr(signal, "SIGALRM") \
        and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def alarm(signum: int, frame: FrameType | None) -> None:
        raise FirstCallTimeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)  # type: ignore[arg-type]
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class _Timed:
    """One network's step, run with its thread count, timed by the device's clock."""

    step: Callable[[], object]
    device: torch.device
    threads: int | None
    clock: StepClock = field(init=False)

    def __post_init__(self) -> None:
        self.clock = StepClock(self.device)

    def __call__(self) -> float:
        with using_threads(self.threads):
            self.clock.start()
            self.step()
            return self.clock.stop()


def _autocast_forward(precision: Precision, device: torch.device) -> PartHook | None:
    """build_step's hook that runs the forward under ``precision``'s autocast (as ``time`` does)."""
    if precision.autocast is None:
        return None

    @contextlib.contextmanager
    def hook(part: Part) -> Iterator[None]:
        with precision.forward_context(device) if part is Part.FORWARD else contextlib.nullcontext():
            yield
    return hook


def _build(module: nn.Module, context: Context, *, batch_size: int, opts: StepOptions,
           precision: Precision, output_shape: tuple[int, ...]) -> Callable[[], object]:
    """The step of :mod:`dnncost.core.step` for ``module`` in ``precision`` on a fixed batch;
    in training, labels drawn for ``output_shape`` (the original's logits) so no extra forward (or
    compile) runs."""
    module.to(context.device)
    precision.apply(module)
    dtype = parse_dtype(precision.dtype) if precision.dtype is not None else None
    inputs = make_inputs(context.inputs, batch_size=batch_size, device=context.device, dtype=dtype,
                         channels_last=precision.channels_last)  # (B, ...) each
    hook = _autocast_forward(precision, context.device)
    if opts.mode is Mode.EVAL:
        return build_step(module, inputs.args, kwargs=inputs.kwargs, mode=Mode.EVAL, part=hook)
    optimizer = make_optimizer(opts.optimizer, trainable_parameters(module), lr=opts.lr)
    labels = random_labels((batch_size, *output_shape[1:]), generator=torch.Generator().manual_seed(0),
                           device=context.device)
    return build_step(module, inputs.args, kwargs=inputs.kwargs, mode=Mode.TRAIN, optimizer=optimizer,
                      loss=lambda output: step_loss(output, labels), part=hook)


def _count(module: nn.Module, context: Context, *, batch_size: int, opts: StepOptions,
           dtype: torch.dtype | str | None, channels_last: bool, name: str) -> CostReport:
    """The counted step, on the meta device -- or on the run's device for a network that reads
    values or lacks a meta kernel (as ``time`` does)."""
    def on(device: torch.device | str) -> CostReport:
        return count(module, context.inputs, mode=opts.mode, batch_size=batch_size, device=device,
                     optimizer=opts.optimizer.value, name=name, dtype=dtype,
                     channels_last=channels_last)
    try:
        return on("meta")
    except InputSpecError as exc:
        if META_HINT not in str(exc):
            raise
        return on(context.device)


def count_original(model: nn.Module, *, context: Context, options: StepOptions,
                   name: str) -> CostReport:
    """The original's counted step in the run's precision, the base of every ratio (``model`` is
    left as found: the counter works on a copy)."""
    precision = context.precision
    return _count(model, context, batch_size=options.batch_size, opts=options,
                  dtype=precision.dtype, channels_last=precision.channels_last, name=name)


def _activation_bytes(report: CostReport) -> int:
    """Saved-for-backward bytes in training; peak live bytes beyond the weights in evaluation."""
    if report.mode == Mode.TRAIN.value:
        return report.activation_bytes
    return max(0, report.peak_bytes - report.param_bytes)


def _ratio(new: float, old: float) -> float | None:
    return new / old if old else None


def options_precision(options: StepOptions) -> Precision:
    """The precision the step options ask for (dtype, autocast, memory format)."""
    return Precision(dtype=options.dtype, autocast=options.autocast,
                     channels_last=options.channels_last)


def _in_dtype(model: nn.Module, precision: Precision) -> nn.Module:
    """A copy of ``model`` with its parameters in ``precision``'s dtype (what a transformation
    starts from; the memory format is the step's business)."""
    work = copy.deepcopy(model)
    if precision.dtype is not None:
        work.to(parse_dtype(precision.dtype))
    return work


def run_whatif(model: nn.Module, specs: Sequence[Spec], *,
               input_shape: Sequence[int] | InputSpec | str, options: StepOptions,
               name: str | None = None) -> Iterator[WhatIfResult]:
    """Yield one :class:`WhatIfResult` per spec, for the step ``options.mode``.

    ``input_shape``: one sample's shape, or an input spec ('16:int64', '3x32x32,4', a factory; see
    dnncost.core.inputs). ``options`` gives batch size, device, threads, optimizer, dtype,
    autocast and memory format of the original, warm-up steps (per network) and the number of A/B
    pairs (``repeats``). ``model`` is left as found. A transformation that breaks the network raises
    TransformationError naming it; everything yielded before is the caller's.
    """
    inputs = input_spec(input_shape)
    device = resolve_device(options.device)
    name = name or type(model).__name__
    precision = options_precision(options)
    with using_threads(options.threads) as threads:
        context = Context(inputs=inputs, batch_size=options.batch_size, mode=options.mode,
                          device=device, threads=threads, precision=precision)
    reference = _in_dtype(model, precision)
    base = _count(reference, context, batch_size=options.batch_size, opts=options,
                  dtype=precision.dtype, channels_last=precision.channels_last, name=name)
    check_memory_fits(base.peak_bytes, device=device, batch_size=options.batch_size)  # before
    # anything of the batch's size is allocated
    output_shape = _output_shape(reference, context)
    step_a = _Timed(_build(reference, context, batch_size=options.batch_size, opts=options,
                           precision=precision, output_shape=output_shape),
                    device, options.threads)
    for spec in specs:
        yield _one(spec, model, step_a, base, context=context, options=options, name=name,
                   output_shape=output_shape)


def _output_shape(module: nn.Module, context: Context) -> tuple[int, ...]:
    """The shape of ``module``'s logits for one sample: (1, classes, ...)."""
    one = context.make_inputs(1)
    module.to(context.device).eval()
    context.precision.apply(module)
    with torch.no_grad(), context.precision.forward_context(context.device):
        return tuple(primary_output(module(*one.args, **one.kwargs)).shape)


@dataclass(frozen=True)
class Counted:
    """A transformation applied and its step counted, before any timing."""

    variant: Variant
    batch_size: int  # the variant's batch size (the run's unless it changes it)
    precision: Precision  # the variant's dtype, autocast and memory format
    report: CostReport  # the variant's counted step at ``batch_size``

    def flops_ratio(self, base: CostReport, *, batch_size: int) -> float | None:
        """Counted FLOPs per sample against ``base`` (the original's step at ``batch_size``)."""
        return _ratio(self.report.total().flops / self.batch_size, base.total().flops / batch_size)

    def params_ratio(self, base: CostReport) -> float | None:
        return _ratio(self.report.params, base.params)


def apply_and_count(spec: Spec, model: nn.Module, *, context: Context, options: StepOptions,
                    name: str) -> Counted:
    """Apply ``spec`` to a copy of ``model`` (in the original's dtype; ``model`` is left as found)
    and count the variant's step, as :func:`run_whatif` does before timing it. NotApplicable when
    it does not apply -- to this network, this machine or the step mode -- with the reason."""
    transformation = spec.transformation
    if options.mode not in transformation.modes:
        steps = " and ".join(sorted(m.value for m in transformation.modes))
        raise NotApplicable(f"applies to the {steps} step only")
    original = context.precision
    variant = transformation.apply(_in_dtype(model, original), spec.value, context)
    batch = variant.batch_size or options.batch_size
    precision = Precision(
        dtype=original.dtype, channels_last=original.channels_last or variant.channels_last_input,
        autocast=str(variant.autocast).removeprefix("torch.") if variant.autocast is not None
        else original.autocast)
    report = _count(variant.count_module or variant.module, context, batch_size=batch,
                    opts=options, dtype=variant.count_dtype or original.dtype,
                    channels_last=precision.channels_last, name=name)
    return Counted(variant, batch, precision, report)


def _one(spec: Spec, model: nn.Module, step_a: _Timed, base: CostReport, *, context: Context,
         options: StepOptions, name: str, output_shape: tuple[int, ...]) -> WhatIfResult:
    """Apply, count and time one spec against the original's step ``step_a``."""
    try:
        counted = apply_and_count(spec, model, context=context, options=options, name=name)
        variant, batch = counted.variant, counted.batch_size
        try:  # before the transformed step allocates anything (a larger batch, wider dtype)
            check_memory_fits(counted.report.peak_bytes, device=context.device, batch_size=batch)
        except BatchTooLargeError as exc:
            raise NotApplicable(str(exc)) from None
        step_b = _Timed(_build(variant.module, context, batch_size=batch, opts=options,
                               precision=counted.precision, output_shape=output_shape),
                        context.device, variant.threads or options.threads)
        pairs, warmup = (min(options.steps, EMULATED_PAIRS), 0) if variant.emulated \
            else (options.steps, options.warmup)
        with out_of_memory_as_error(batch_size=batch, device=context.device):
            first_call_s = _first_call(step_b, variant)
            times_a, times_b = _interleave(step_a, step_b, warmup=warmup, repeats=pairs)
    except NotApplicable as reason:
        return WhatIfResult(model=name, transformation=spec.label, mode=options.mode,
                            applicable=False, note=str(reason))
    except (DnncostError, RuntimeError, ValueError, TypeError, IndexError, AssertionError,
            AttributeError, KeyError) as exc:
        raise TransformationError(f"transformation '{spec.label}' broke the network: "
                                  f"{first_line(exc)}") from exc

    per_a, per_b = options.batch_size, batch  # every ratio per sample
    report = counted.report
    total_a, total_b = base.total(), report.total()
    nominal = variant.nominal_flops(report) if variant.nominal_flops else None
    note = f"{variant.note}; {variant.emulated}: {pairs} pairs" if variant.emulated else variant.note
    return WhatIfResult(
        model=name, transformation=spec.label, mode=options.mode, applicable=True,
        note=note, count_note=variant.count_note,
        flops_ratio=counted.flops_ratio(base, batch_size=per_a),
        nominal_flops_ratio=None if nominal is None else _ratio(nominal / per_b, total_a.flops / per_a),
        params_ratio=counted.params_ratio(base),
        bytes_ratio=_ratio(total_b.bytes / per_b, total_a.bytes / per_a),
        activation_ratio=_ratio(_activation_bytes(report) / per_b, _activation_bytes(base) / per_a),
        time_ratio=Measurement(tuple((tb / per_b) / (ta / per_a)
                                     for ta, tb in zip(times_a, times_b, strict=True))),
        original=Measurement(tuple(times_a)), transformed=Measurement(tuple(times_b)),
        original_flops=total_a.flops, flops=total_b.flops, batch_size=batch,
        threads=variant.threads or context.threads, first_call_s=first_call_s,
        emulated=variant.emulated,
    )


def _first_call(step: _Timed, variant: Variant) -> float:
    """Run the transformed step once (compilation happens here), within its time limit. With a
    limit, or kernels the machine may lack, a failure is a verdict on this machine: NotApplicable."""
    start = time.perf_counter()
    if variant.first_call_limit_s is None and not variant.kernels_may_lack:
        step()
        return time.perf_counter() - start
    try:
        with _time_limit(variant.first_call_limit_s):
            step()
    except Exception as exc:  # noqa: BLE001 -- a compiler or kernel failure: a verdict on this machine
        if _timed_out(exc):  # the compiler may wrap our alarm in its own error
            raise NotApplicable(f"the first step (compilation) did not finish within "
                                f"{variant.first_call_limit_s:g} s on this machine") from None
        raise NotApplicable(f"the first step failed: {type(exc).__name__}: {first_line(exc)}") from exc
    return time.perf_counter() - start


def _timed_out(exc: BaseException | None) -> bool:
    """True when ``exc`` is, or was caused by, the first call's alarm."""
    seen = 0
    while exc is not None and seen < 20:  # source: our choice, a bound on the cause chain walked
        if isinstance(exc, FirstCallTimeout) or "FirstCallTimeout" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _interleave(a: _Timed, b: _Timed, *, warmup: int, repeats: int) -> tuple[list[float], list[float]]:
    """``warmup`` untimed A B pairs, then ``repeats`` timed pairs alternating A B / B A."""
    for _ in range(warmup):
        a()
        b()
    times_a: list[float] = []
    times_b: list[float] = []
    for i in range(repeats):
        if i % 2 == 0:
            times_a.append(a())
            times_b.append(b())
        else:
            times_b.append(b())
            times_a.append(a())
    return times_a, times_b


def measured(results: Iterable[WhatIfResult]) -> list[WhatIfResult]:
    """The results that were measured (applicable ones)."""
    return [r for r in results if r.applicable]


__all__ = ["EMULATED_PAIRS", "Counted", "FirstCallTimeout", "WhatIfResult", "apply_and_count",
           "count_original", "measured", "options_precision", "run_whatif"]
