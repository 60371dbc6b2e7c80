"""Measure how long one training or validation step of a network takes on this machine.

A number is only useful if it is honest: warmed up, repeated, synchronised with the device inside the
timer, kept as raw samples with their spread, and stamped with the thread count and the machine.
:func:`time_model` does that and returns a :class:`StepTiming`; :class:`Measurement` holds the raw
samples and their statistics (median, IQR, coefficient of variation, 95% interval of the median).
Each run is bracketed by the reference probe (:mod:`dnncost.measuring.probe`: the machine's speed
just then, against its quiet-machine reference) and records how busy the machine was
(:class:`dnncost.core.environment.MachineLoad`); a run on a slowed or busy machine warns
(:class:`BusyMachineWarning`) even when its own samples agree.
"""
from __future__ import annotations

import contextlib
import dataclasses
import resource
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dnncost.core.device import (
    StepClock,
    check_memory_fits,
    out_of_memory_as_error,
    resolve_device,
    synchronize,
    using_threads,
)
from dnncost.core.environment import (
    Environment,
    MachineLoad,
    cpu_times,
    current_environment,
    machine_load,
)
from dnncost.core.errors import InputSpecError, TrainingDivergedError
from dnncost.core.failure import named_model_failure
from dnncost.core.inputs import InputSpec, TensorInput, make_inputs, parse_dtype
from dnncost.core.kinds import DEFAULT_WARMUP
from dnncost.core.options import with_overrides
from dnncost.core.step import (
    DEFAULT_LR,
    Mode,
    OptimizerKind,
    Part,
    build_step,
    make_optimizer,
    trainable_parameters,
)
from dnncost.core.workload import Workload
from dnncost.counting.cost import CostReport
from dnncost.counting.counter import META_HINT, count
from dnncost.measuring.calibrate import cached_calibration
from dnncost.measuring.measurement import (
    MIN_SAMPLES_FOR_CI,
    NOISE_THRESHOLD,
    SHIFT_THRESHOLD,
    STUDY_ESTIMATOR,
    Measurement,
    NoisyMeasurementWarning,
    estimate,
)
from dnncost.measuring.probe import Probe, ProbeReading, record_probe
from dnncost.models.loading import parse_inputs


class BusyMachineWarning(NoisyMeasurementWarning):
    """A run timed while the machine was slowed (the reference probe drifted beyond
    SHIFT_THRESHOLD against the fastest on record) or busy (MachineLoad.busy): its figure may be
    shifted as a whole."""


@dataclass(frozen=True)
class StepOptions:
    """How a step is run and timed: the one option set every timing entry point takes
    (:func:`time_model`, the profiler breakdown, data-parallel timing, the study)."""

    batch_size: int = 1
    mode: Mode = Mode.TRAIN
    device: str = "cpu"
    threads: int | None = None  # None: torch's current intra-op thread count
    warmup: int = DEFAULT_WARMUP  # untimed steps first (oneDNN/cuDNN build kernels on the first calls)
    steps: int = 10  # timed steps of the one run (ignored when budget_s is set)
    budget_s: float | None = None  # time steps until their total reaches this (>= MIN_SAMPLES_FOR_CI)
    optimizer: OptimizerKind = OptimizerKind.SGD
    lr: float = DEFAULT_LR
    dtype: str | None = None  # cast parameters and floating inputs (bfloat16, float16); None: as built
    autocast: str | None = None  # run the forward under torch.autocast to this dtype
    channels_last: bool = False  # channels_last memory format for the model and 4-d inputs

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode(self.mode))
        for precision in (self.dtype, self.autocast):
            if precision is not None:
                parse_dtype(precision)  # a clear error for an unknown dtype name
        try:
            object.__setattr__(self, "optimizer", OptimizerKind(self.optimizer))
        except ValueError:
            raise InputSpecError(f"unknown optimizer '{self.optimizer}'; choose one of "
                                 f"{', '.join(k.value for k in OptimizerKind)}") from None
        object.__setattr__(self, "device", str(self.device))
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size <= 0:
            raise InputSpecError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if self.warmup < 0 or self.steps < 1 or (self.budget_s is not None and self.budget_s <= 0):
            raise InputSpecError(f"need warmup >= 0, steps >= 1 and a positive budget; got "
                                 f"warmup={self.warmup}, steps={self.steps}, "
                                 f"budget_s={self.budget_s}")
        if not self.lr > 0:
            raise InputSpecError(f"learning rate must be positive, got {self.lr}")

    def replace(self, **changes: Any) -> StepOptions:
        """A copy with ``changes`` (field names of StepOptions)."""
        return dataclasses.replace(self, **changes)


def step_options(options: StepOptions | None, overrides: dict[str, Any]) -> StepOptions:
    """``options`` (default StepOptions()) with keyword ``overrides``; a clear error on a misspelt one."""
    return with_overrides(options or StepOptions(), overrides)


@dataclass(frozen=True)
class StepTiming(Workload):
    """One model's timed step (its :class:`Workload`): the measurement and everything needed to
    compare it later."""

    device: str
    threads: int
    dtype: str
    optimizer: str | None
    measurement: Measurement
    peak_memory_bytes: int | None
    peak_memory_source: str
    environment: Environment
    flops: int | None = None  # counted FLOPs of one step (dnncost.counting.counter), None when not counted
    peak_flops_per_s: float | None = None  # this machine's calibrated peak for dtype and threads
    probe: ProbeReading | None = None  # the reference probe around the run; None when not probed
    load: MachineLoad | None = None  # how busy the machine was during the timed steps
    cost: CostReport | None = field(default=None, repr=False, compare=False)  # the counted step

    @property
    def shifted(self) -> bool:
        """The reference probe ran more than SHIFT_THRESHOLD slower than the fastest on record for
        this machine: the whole run may be slowed, however well its samples agree."""
        return self.probe is not None and self.probe.drift > SHIFT_THRESHOLD

    @property
    def step_s(self) -> float:
        """The network's measured step: STUDY_ESTIMATOR over the timed steps -- one definition
        everywhere (the study, its report, ``predict``'s calibration and the evaluations)."""
        return estimate([self.measurement.samples], STUDY_ESTIMATOR)

    @property
    def samples_per_s(self) -> float:
        return self.batch_size / self.measurement.median

    @property
    def achieved_flops_per_s(self) -> float | None:
        return self.flops / self.measurement.median if self.flops is not None else None

    @property
    def efficiency(self) -> float | None:
        """Achieved / calibrated peak FLOP/s; None without a count or a calibration."""
        achieved = self.achieved_flops_per_s
        if achieved is None or not self.peak_flops_per_s:
            return None
        return achieved / self.peak_flops_per_s

    def to_row(self) -> dict[str, object]:
        """One flat row for a table or CSV (times in milliseconds)."""
        m = self.measurement
        low, high = m.ci95
        return {
            "model": self.model, "mode": self.mode.value, "batch": self.batch_size,
            "device": self.device, "threads": self.threads, "step_ms": self.step_s * 1e3,
            "median_ms": m.median * 1e3,
            "iqr_ms": m.iqr * 1e3, "cv": m.cv, "ci95_low_ms": low * 1e3, "ci95_high_ms": high * 1e3,
            "n": m.n, "samples_per_s": self.samples_per_s, "flops": self.flops,
            "achieved_gflops_per_s": _scaled(self.achieved_flops_per_s, 1e-9),
            "efficiency": self.efficiency, "peak_memory_bytes": self.peak_memory_bytes,
            "noisy": m.noisy,
            "probe_drift": self.probe.drift if self.probe is not None else None,
            "busy": self.load.busy if self.load is not None else None,
        }

    def to_dict(self) -> dict[str, object]:
        """Everything as JSON-ready data, raw samples and environment included."""
        return {
            "model": self.model, "mode": self.mode.value, "input_shape": list(self.input_shape),
            "batch_size": self.batch_size, "device": self.device, "threads": self.threads,
            "dtype": self.dtype, "optimizer": self.optimizer,
            "step_s": self.step_s, "measurement": self.measurement.to_dict(),
            "peak_memory_bytes": self.peak_memory_bytes,
            "peak_memory_source": self.peak_memory_source,
            "flops": self.flops, "achieved_flops_per_s": self.achieved_flops_per_s,
            "peak_flops_per_s": self.peak_flops_per_s, "efficiency": self.efficiency,
            "samples_per_s": self.samples_per_s, "environment": self.environment.to_dict(),
            "probe": self.probe.to_dict() if self.probe is not None else None,
            "load": self.load.to_dict() if self.load is not None else None,
        }


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Leave ``model`` as it was found: weights, buffers, device, train/eval flag, no grads."""
    tensors = [*model.parameters(), *model.buffers()]
    home = tensors[0].device if tensors else torch.device("cpu")
    dtypes = [t.dtype for t in tensors]  # a step in another dtype casts them
    was_training = model.training
    saved = model.state_dict()  # an OrderedDict whose _metadata (versions) some loaders need
    for key, value in saved.items():
        saved[key] = value.detach().to("cpu", copy=True)
    try:
        yield
    finally:
        model.to(home)
        for tensor, dtype in zip(tensors, dtypes, strict=True):
            if tensor.dtype != dtype:
                tensor.data = tensor.data.to(dtype)
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def _max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB, macOS bytes


# -- the public entry point ------------------------------------------------------------------------
def time_model(model: nn.Module, input_shape: Sequence[int] | InputSpec | str,
               options: StepOptions | None = None, *,
               name: str | None = None, count_flops: bool = True, probe: bool | Probe = True,
               **overrides: Any) -> StepTiming:
    """Time one training or validation step of ``model`` on a fixed random batch of
    ``input_shape`` (one sample's shape, or an input spec such as '16:int64'; see
    dnncost.core.inputs).

    ``options`` (or keyword ``overrides`` of its fields: ``batch_size=32, mode="eval"``) says which
    step and how: ``warmup`` untimed steps, then ``steps`` timed steps -- or, with ``budget_s``,
    timed steps until their total reaches the budget (at least MIN_SAMPLES_FOR_CI). Each sample is
    one step with the device synchronised inside the timer. The model is left as found.
    ``count_flops`` counts the same step (dnncost.counting) for achieved FLOP/s and efficiency.
    ``probe`` (True, or a :class:`Probe` to reuse) times the reference workload before the warm-up
    and after the timed steps, at the same thread count, against this machine's fastest probe on
    record; a drift beyond SHIFT_THRESHOLD, or a busy machine, warns (:class:`BusyMachineWarning`).
    """
    opts = step_options(options, overrides)
    dev = resolve_device(opts.device)
    spec = _input_spec(input_shape)
    shape = spec.sample_shape
    name = name or type(model).__name__
    dtype = parse_dtype(opts.dtype) if opts.dtype is not None else \
        next(iter(model.parameters()), torch.empty(0)).dtype
    report = None
    if count_flops:  # first: a model that cannot take the input fails here, named, before any timing
        try:
            report = count(model, spec, mode=opts.mode.value, batch_size=opts.batch_size,
                           optimizer=opts.optimizer.value, name=name, dtype=opts.dtype,
                           channels_last=opts.channels_last)
        except InputSpecError as exc:  # the meta device's limit (no meta kernel, .item()): count
            if META_HINT not in str(exc):  # on the timing device, as the step will run there
                raise
            with preserved(model):
                report = count(model, spec, mode=opts.mode.value, batch_size=opts.batch_size,
                               optimizer=opts.optimizer.value, name=name, dtype=opts.dtype,
                               channels_last=opts.channels_last, device=dev)
        check_memory_fits(report.peak_bytes, device=dev, batch_size=opts.batch_size)

    with using_threads(opts.threads) as n_threads, preserved(model):
        rss_before = _max_rss_bytes()
        prober = (probe if isinstance(probe, Probe) else Probe(dev)) if probe else None
        before_s = prober.run() if prober is not None else None
        ticks_before = cpu_times()
        with named_model_failure(model, name=name, shape="x".join(map(str, (opts.batch_size, *shape)))):
            measurement = _run_steps(model, spec, opts, dev, dtype, threads=n_threads)
        load = machine_load(ticks_before, cpu_times(), threads=n_threads)
        reading = None
        if prober is not None and before_s is not None:
            after_s = prober.run()
            reference = record_probe(min(before_s, after_s), dev, threads=n_threads)
            reading = ProbeReading(before_s=before_s, after_s=after_s, reference_s=reference)
        if dev.type == "cuda":
            peak_memory: int | None = torch.cuda.max_memory_allocated(dev)
            memory_source = "torch.cuda.max_memory_allocated (the whole run, model included)"
        else:
            peak_memory = max(0, _max_rss_bytes() - rss_before)
            memory_source = ("growth of the process's peak RSS during the run (a lower bound: 0 "
                             "when an earlier peak was higher)")
        environment = current_environment(dev, threads=n_threads)

    if measurement.noisy:
        warnings.warn(
            f"{name} {opts.mode.value} step timing is noisy: IQR is {measurement.relative_iqr:.0%} "
            f"of the median (threshold {NOISE_THRESHOLD:.0%}); the machine may be busy",
            NoisyMeasurementWarning, stacklevel=2)
    if reading is not None and reading.drift > SHIFT_THRESHOLD:
        warnings.warn(
            f"{name} {opts.mode.value} step: the machine ran slow during this run (the reference "
            f"probe took {reading.drift:+.0%} longer than the fastest on record, threshold "
            f"{SHIFT_THRESHOLD:.0%}); the whole figure may be shifted, however little its steps vary",
            BusyMachineWarning, stacklevel=2)
    if load.busy:
        warnings.warn(f"{name} {opts.mode.value} step: the machine was busy during this run "
                      f"({'; '.join(load.reasons)}); the figure may be slower than this machine's "
                      "best", BusyMachineWarning, stacklevel=2)

    flops = None
    if report is not None:
        flops = report.total().flops
        if dev.type == "cpu":
            peak_memory, memory_source = report.peak_bytes, "dnncost.counting estimate (peak_bytes)"
    calibration = cached_calibration(dev, threads=n_threads)  # unreadable: a warning, no share of peak
    peak = calibration.peak_flops_per_s(str(dtype).removeprefix("torch.")) if calibration else None
    return StepTiming(
        model=name, mode=opts.mode, input_shape=shape, batch_size=opts.batch_size, device=str(dev),
        threads=n_threads, dtype=str(dtype).removeprefix("torch."),
        optimizer=opts.optimizer.value if opts.mode is Mode.TRAIN else None,
        measurement=measurement, peak_memory_bytes=peak_memory, peak_memory_source=memory_source,
        environment=environment, flops=flops, peak_flops_per_s=peak, probe=reading, load=load,
        cost=report,
    )


def prepare_step(model: nn.Module, input_shape: Sequence[int] | InputSpec | str, opts: StepOptions,
                 device: torch.device, *, part: Any = None) -> Any:
    """Move ``model`` to ``device`` (in ``opts.dtype``, channels_last when asked) and build its step
    (dnncost.core.step) on a fixed batch of ``input_shape`` (a shape or an input spec); the
    forward runs under autocast when ``opts.autocast`` is set."""
    model.to(device)
    if opts.dtype is not None:
        model.to(parse_dtype(opts.dtype))
    if opts.channels_last:
        model.to(memory_format=torch.channels_last)
    dtype = next(iter(model.parameters()), torch.empty(0)).dtype
    inputs = make_inputs(_input_spec(input_shape), batch_size=opts.batch_size, device=device,
                         dtype=dtype if dtype.is_floating_point else None,
                         channels_last=opts.channels_last)  # (B, *shape) each
    optimizer = None
    if opts.mode is Mode.TRAIN and trainable_parameters(model):
        optimizer = make_optimizer(opts.optimizer, trainable_parameters(model), lr=opts.lr)
    if opts.autocast is not None:
        part = _autocast_forward(part, device, parse_dtype(opts.autocast))
    return build_step(model, inputs.args, kwargs=inputs.kwargs, mode=opts.mode, optimizer=optimizer,
                      part=part)


def _input_spec(value: Sequence[int] | InputSpec | str) -> InputSpec:
    """An input spec from a spec, its text, or one sample's shape."""
    if isinstance(value, InputSpec):
        return value
    if isinstance(value, str):
        return parse_inputs(value)
    shape = tuple(int(s) for s in value)
    if not shape or any(s <= 0 for s in shape):
        raise InputSpecError(f"input shape must be positive integers (one sample), got {shape}")
    return InputSpec((TensorInput(shape),))


def _autocast_forward(part: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """``part`` (build_step's hook) with the forward also under ``torch.autocast(dtype)``."""
    @contextlib.contextmanager
    def hook(p: Part) -> Iterator[None]:
        with (part(p) if part is not None else contextlib.nullcontext()), \
                (torch.autocast(device.type, dtype=dtype) if p is Part.FORWARD
                 else contextlib.nullcontext()):
            yield
    return hook


def _run_steps(model: nn.Module, shape: InputSpec, opts: StepOptions, device: torch.device,
               dtype: torch.dtype, *, threads: int = 1) -> Measurement:
    """Warm up, then time steps: one wall-clock sample (seconds) per timed step, and on a CPU
    device the process's CPU time of each step divided by ``threads``."""
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with out_of_memory_as_error(batch_size=opts.batch_size, device=device), on_device:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        step = prepare_step(model, shape, opts, device)
        clock = StepClock(device)
        for i in range(opts.warmup):
            _check_loss(step(), i, warmup=True)
        synchronize(device)
        samples: list[float] = []
        cpu: list[float] = []
        while True:
            cpu_start = time.process_time()
            clock.start()
            loss = step()
            samples.append(clock.stop())
            cpu.append((time.process_time() - cpu_start) / threads)
            _check_loss(loss, len(samples) - 1, warmup=False)
            if opts.budget_s is None:
                if len(samples) >= opts.steps:
                    break
            elif sum(samples) >= opts.budget_s and len(samples) >= MIN_SAMPLES_FOR_CI:
                break
    return Measurement(tuple(samples), cpu_samples=tuple(cpu) if device.type == "cpu" else ())


def _check_loss(loss: torch.Tensor | None, step: int, *, warmup: bool) -> None:
    if loss is not None and not torch.isfinite(loss.detach()).all():
        phase = "warm-up" if warmup else "timed"
        raise TrainingDivergedError(
            f"loss became {loss.item()} at {phase} step {step}: the model's output is not finite "
            "on random inputs; lower the learning rate or check the model")


__all__ = ["BusyMachineWarning", "StepOptions", "StepTiming", "prepare_step", "preserved",
           "step_options", "time_model"]
