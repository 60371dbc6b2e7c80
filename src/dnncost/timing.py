"""Measure how long one training or validation step of a network takes on this machine.

A number is only useful if it is honest: warmed up, repeated, synchronised with the device inside the
timer, kept as raw samples with their spread, and stamped with the thread count and the machine.
:func:`time_model` does that and returns a :class:`StepTiming`; :class:`Measurement` holds the raw
samples and their statistics (median, IQR, coefficient of variation, 95% interval of the median).
"""
from __future__ import annotations

import contextlib
import math
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dnncost.environment import Environment, current_environment
from dnncost.errors import DeviceError, InputSpecError, TrainingDivergedError, suggest

NOISE_THRESHOLD = 0.10  # source: torch.utils.benchmark.utils.common._IQR_WARN_THRESHOLD (IQR/median)
MIN_SAMPLES_FOR_CI = 6  # source: order statistics; the (min, max) interval covers the median with
#                         probability 1 - 2 * 0.5**n, which first reaches 95% at n = 6
SUPPORTED_DEVICES = ("cpu", "cuda")  # the device types dnncost can time (and synchronise)


class Mode(str, Enum):
    """What one timed step is."""

    TRAIN = "train"  # zero_grad + forward + loss + backward + optimizer step
    EVAL = "eval"  # model.eval() + forward under no_grad


class OptimizerKind(str, Enum):
    """The optimizer a training step uses (built by dnncost.counter.make_optimizer, so the timed
    step and the counted step are the same step)."""

    SGD = "sgd"  # momentum 0.9
    ADAM = "adam"
    ADAMW = "adamw"


class NoisyMeasurementWarning(UserWarning):
    """A measurement whose IQR exceeds NOISE_THRESHOLD of its median: the machine was busy."""


class BatchTooLargeError(InputSpecError):
    """A batch that does not fit in the device's memory."""


# -- the statistics of a set of timed samples ----------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    """Raw timed samples (seconds, one per step) and the statistics of them."""

    samples: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a Measurement needs at least one sample")

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples))

    @property
    def min(self) -> float:
        return float(np.min(self.samples))

    @property
    def iqr(self) -> float:
        """Interquartile range (75th - 25th percentile), in seconds."""
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float(q3 - q1)

    @property
    def relative_iqr(self) -> float:
        """IQR / median: the noise figure torch.utils.benchmark warns on."""
        return self.iqr / self.median if self.median > 0 else math.inf

    @property
    def cv(self) -> float:
        """Coefficient of variation, sample standard deviation / mean (0 for a single sample)."""
        if self.n < 2 or self.mean <= 0:
            return 0.0
        return float(np.std(self.samples, ddof=1) / self.mean)

    @property
    def ci95(self) -> tuple[float, float]:
        """Distribution-free 95% confidence interval of the median (binomial order statistics,
        scipy.stats.quantile_test); (nan, nan) with fewer than MIN_SAMPLES_FOR_CI samples."""
        if self.n < MIN_SAMPLES_FOR_CI:
            return (math.nan, math.nan)
        from scipy.stats import quantile_test

        ci = quantile_test(np.asarray(self.samples), q=self.median, p=0.5).confidence_interval(0.95)
        return (float(ci.low), float(ci.high))

    @property
    def noisy(self) -> bool:
        """True when IQR / median exceeds NOISE_THRESHOLD."""
        return self.relative_iqr > NOISE_THRESHOLD

    def to_dict(self) -> dict[str, object]:
        low, high = self.ci95
        return {"n": self.n, "median_s": self.median, "mean_s": self.mean, "min_s": self.min,
                "iqr_s": self.iqr, "cv": self.cv, "ci95_low_s": low, "ci95_high_s": high,
                "noisy": self.noisy, "samples_s": list(self.samples)}


@dataclass(frozen=True)
class StepTiming:
    """One model's timed step: the measurement and everything needed to compare it later."""

    model: str
    mode: Mode
    input_shape: tuple[int, ...]
    batch_size: int
    device: str
    threads: int
    dtype: str
    optimizer: str | None
    measurement: Measurement
    peak_memory_bytes: int | None
    peak_memory_source: str
    environment: Environment
    flops: int | None = None  # counted FLOPs of one step (dnncost.counter), None when not counted
    peak_flops_per_s: float | None = None  # this machine's calibrated peak for dtype and threads

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
            "device": self.device, "threads": self.threads, "median_ms": m.median * 1e3,
            "iqr_ms": m.iqr * 1e3, "cv": m.cv, "ci95_low_ms": low * 1e3, "ci95_high_ms": high * 1e3,
            "n": m.n, "samples_per_s": self.samples_per_s, "flops": self.flops,
            "achieved_gflops_per_s": _scaled(self.achieved_flops_per_s, 1e-9),
            "efficiency": self.efficiency, "peak_memory_bytes": self.peak_memory_bytes,
            "noisy": m.noisy,
        }

    def to_dict(self) -> dict[str, object]:
        """Everything as JSON-ready data, raw samples and environment included."""
        return {
            "model": self.model, "mode": self.mode.value, "input_shape": list(self.input_shape),
            "batch_size": self.batch_size, "device": self.device, "threads": self.threads,
            "dtype": self.dtype, "optimizer": self.optimizer,
            "measurement": self.measurement.to_dict(),
            "peak_memory_bytes": self.peak_memory_bytes,
            "peak_memory_source": self.peak_memory_source,
            "flops": self.flops, "achieved_flops_per_s": self.achieved_flops_per_s,
            "peak_flops_per_s": self.peak_flops_per_s, "efficiency": self.efficiency,
            "samples_per_s": self.samples_per_s, "environment": self.environment.to_dict(),
        }


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


# -- devices, threads, synchronisation ------------------------------------------------------------
def resolve_device(device: str | torch.device) -> torch.device:
    """Parse ``device`` and check this machine has it; DeviceError naming what exists otherwise."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(
            f"unknown device '{device}'.{suggest(str(device), SUPPORTED_DEVICES)} "
            f"Expected one of: {', '.join(SUPPORTED_DEVICES)} (or cuda:N)") from exc
    if parsed.type not in SUPPORTED_DEVICES:
        raise DeviceError(f"cannot time on device '{device}': expected cpu or cuda[:N]")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
            raise DeviceError(
                f"device '{device}' was requested but CUDA is not available on this machine "
                f"(torch {torch.__version__}, built for {build}, sees no GPU); use --device cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise DeviceError(f"device '{device}' does not exist: this machine has {count} CUDA "
                              f"device(s), cuda:0..cuda:{count - 1}")
        if parsed.index is None:
            parsed = torch.device("cuda", torch.cuda.current_device())
    return parsed


def synchronize(device: torch.device) -> None:
    """Wait for all work queued on ``device`` (a no-op on CPU, whose ops run synchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def using_threads(threads: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count for the block (restoring it after); yields the count."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise DeviceError(f"threads must be a positive integer, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


class StepClock:
    """Times one step: CUDA events on a GPU (synchronised on the end event), else perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cuda = device.type == "cuda"
        if self._cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
        self._t0 = 0.0

    def start(self) -> None:
        if self._cuda:
            self._start.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> float:
        """Seconds since start(), after the device has finished the work."""
        if self._cuda:
            self._end.record()
            self._end.synchronize()
            return self._start.elapsed_time(self._end) / 1e3  # elapsed_time is in milliseconds
        return time.perf_counter() - self._t0


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text
                                               or "can't allocate memory" in text)


@contextlib.contextmanager
def out_of_memory_as_error(*, batch_size: int, device: torch.device) -> Iterator[None]:
    """Turn a device out-of-memory failure into a BatchTooLargeError naming batch size and device."""
    try:
        yield
    except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not _is_out_of_memory(exc):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BatchTooLargeError(
            f"batch size {batch_size} does not fit in the memory of {device} ({first_line[:160]}); "
            "try a smaller --batch-size") from exc


# -- building a step -------------------------------------------------------------------------------
def primary_output(output: object) -> torch.Tensor:
    """The logits of a model's output: the tensor itself, the first of a tuple, or dict['out']."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        return primary_output(output["out"] if "out" in output else next(iter(output.values())))
    if isinstance(output, Sequence) and output:
        return primary_output(output[0])
    raise InputSpecError(f"cannot find the logits in a model output of type {type(output).__name__}")


def random_targets(logits: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random class labels for cross-entropy against ``logits`` (classes along dim 1)."""
    if logits.dim() < 2:
        raise InputSpecError(f"expected logits of shape (batch, classes, ...), got {tuple(logits.shape)}")
    shape = (logits.shape[0], *logits.shape[2:])  # (B, C, *spatial) -> labels (B, *spatial)
    labels = torch.randint(logits.shape[1], shape, generator=generator)
    return labels.to(logits.device)


def make_optimizer(kind: OptimizerKind | str, params: Iterable[nn.Parameter], *,
                   lr: float) -> torch.optim.Optimizer:
    """The optimizer the counter counts (SGD with momentum 0.9, Adam or AdamW) at rate ``lr``."""
    from dnncost.counter import make_optimizer as counted_optimizer

    return counted_optimizer(OptimizerKind(kind).value, list(params), lr=lr)


PHASE_RANGES = {  # profiler range names build_step(annotate=True) puts around each part of a step
    "zero_grad": "dnncost.zero_grad", "forward": "dnncost.forward", "loss": "dnncost.loss",
    "backward": "dnncost.backward", "optimizer": "dnncost.optimizer",
}


def build_step(model: nn.Module, input_shape: Sequence[int], *, batch_size: int, mode: Mode,
               device: torch.device, optimizer: OptimizerKind = OptimizerKind.SGD, lr: float = 0.01,
               annotate: bool = False) -> Callable[[], torch.Tensor | None]:
    """Move ``model`` to ``device``, make a fixed random batch and return one step as a closure.

    Train: zero_grad + forward + cross-entropy against fixed random labels + backward + optimizer
    step, returning the loss. Eval: forward under no_grad. ``annotate`` wraps each part in a
    torch.profiler range named in PHASE_RANGES (for the breakdown; off when timing).
    """
    model.to(device)
    model.train(mode is Mode.TRAIN)
    dtype = next(iter(model.parameters()), torch.empty(0)).dtype
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *input_shape, generator=generator, dtype=dtype).to(device)  # (B, *shape)
    if mode is Mode.EVAL:
        def eval_step() -> None:
            with torch.no_grad(), _range(annotate, "forward"):
                model(x)
        return eval_step

    with torch.no_grad():
        y = random_targets(primary_output(model(x)), generator=generator)  # (B,) class labels
    opt = make_optimizer(optimizer, model.parameters(), lr=lr)
    if not annotate:
        def train_step() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(primary_output(model(x)), y)
            loss.backward()
            opt.step()
            return loss
        return train_step

    def annotated_train_step() -> torch.Tensor:
        with _range(True, "zero_grad"):
            opt.zero_grad(set_to_none=True)
        with _range(True, "forward"):
            out = model(x)
        with _range(True, "loss"):
            loss = F.cross_entropy(primary_output(out), y)
        with _range(True, "backward"):
            loss.backward()
        with _range(True, "optimizer"):
            opt.step()
        return loss
    return annotated_train_step


def _range(annotate: bool, part: str) -> contextlib.AbstractContextManager:
    if not annotate:
        return contextlib.nullcontext()
    from torch.profiler import record_function

    return record_function(PHASE_RANGES[part])


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Leave ``model`` as it was found: weights, buffers, device, train/eval flag, no grads."""
    tensors = [*model.parameters(), *model.buffers()]
    home = tensors[0].device if tensors else torch.device("cpu")
    was_training = model.training
    saved = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    try:
        yield
    finally:
        model.to(home)
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def _max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB, macOS bytes


# -- the public entry point ------------------------------------------------------------------------
def time_model(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_size: int,
    mode: Mode | str = Mode.TRAIN,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 10,
    budget_s: float | None = None,
    optimizer: OptimizerKind | str = OptimizerKind.SGD,
    lr: float = 0.01,
    name: str | None = None,
    count_flops: bool = True,
) -> StepTiming:
    """Time one training or validation step of ``model`` on random data.

    ``warmup`` untimed steps, then ``repeats`` timed steps -- or, with ``budget_s``, timed steps
    until their total reaches the budget (at least MIN_SAMPLES_FOR_CI). Each sample is one step with
    the device synchronised inside the timer. The model is left as found (weights restored).
    ``count_flops`` counts the step with dnncost.counter for achieved FLOP/s and efficiency.
    """
    mode = Mode(mode)
    optimizer = OptimizerKind(optimizer)
    dev = resolve_device(device)
    shape = tuple(int(s) for s in input_shape)
    if batch_size <= 0:
        raise InputSpecError(f"batch size must be a positive integer, got {batch_size}")
    if not shape or any(s <= 0 for s in shape):
        raise InputSpecError(f"input shape must be positive integers (one sample), got {shape}")
    if warmup < 0 or repeats < 1 or (budget_s is not None and budget_s <= 0):
        raise InputSpecError(f"need warmup >= 0, repeats >= 1 and a positive budget; got "
                             f"warmup={warmup}, repeats={repeats}, budget_s={budget_s}")
    name = name or type(model).__name__
    dtype = next(iter(model.parameters()), torch.empty(0)).dtype

    with using_threads(threads) as n_threads, preserved(model):
        rss_before = _max_rss_bytes()
        samples = _run_steps(model, shape, batch_size=batch_size, mode=mode, device=dev,
                             warmup=warmup, repeats=repeats, budget_s=budget_s,
                             optimizer=optimizer, lr=lr)
        if dev.type == "cuda":
            peak_memory: int | None = torch.cuda.max_memory_allocated(dev)
            memory_source = "torch.cuda.max_memory_allocated (the whole run, model included)"
        else:
            peak_memory = max(0, _max_rss_bytes() - rss_before)
            memory_source = ("growth of the process's peak RSS during the run (a lower bound: 0 "
                             "when an earlier peak was higher)")
        environment = current_environment(dev, threads=n_threads)

    measurement = Measurement(tuple(samples))
    if measurement.noisy:
        warnings.warn(
            f"{name} {mode.value} step timing is noisy: IQR is {measurement.relative_iqr:.0%} of the "
            f"median (threshold {NOISE_THRESHOLD:.0%}); the machine may be busy",
            NoisyMeasurementWarning, stacklevel=2)

    flops = None
    if count_flops:
        report = _count(model, shape, batch_size=batch_size, mode=mode, optimizer=optimizer, name=name)
        flops = report.total().flops
        if dev.type == "cpu":
            peak_memory, memory_source = report.peak_bytes, "dnncost.counter estimate (peak_bytes)"

    from dnncost.calibrate import load_calibration

    calibration = load_calibration(dev, threads=n_threads)
    peak = calibration.peak_flops_per_s(str(dtype).removeprefix("torch.")) if calibration else None
    return StepTiming(
        model=name, mode=mode, input_shape=shape, batch_size=batch_size, device=str(dev),
        threads=n_threads, dtype=str(dtype).removeprefix("torch."),
        optimizer=optimizer.value if mode is Mode.TRAIN else None, measurement=measurement,
        peak_memory_bytes=peak_memory, peak_memory_source=memory_source, environment=environment,
        flops=flops, peak_flops_per_s=peak,
    )


def _count(model: nn.Module, shape: tuple[int, ...], *, batch_size: int, mode: Mode,
           optimizer: OptimizerKind, name: str):
    from dnncost.counter import count  # imported here: counting is optional for timing (and
    #                                     works on a meta copy, never touching ``model``)

    return count(model, mode=mode.value, batch_size=batch_size, input_shape=shape,
                 optimizer=optimizer.value, name=name)


def _run_steps(model: nn.Module, shape: tuple[int, ...], *, batch_size: int, mode: Mode,
               device: torch.device, warmup: int, repeats: int, budget_s: float | None,
               optimizer: OptimizerKind, lr: float) -> list[float]:
    """Warm up, then time steps; returns one sample (seconds) per timed step."""
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with out_of_memory_as_error(batch_size=batch_size, device=device), on_device:  # events on its stream
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        step = build_step(model, shape, batch_size=batch_size, mode=mode, device=device,
                          optimizer=optimizer, lr=lr)
        clock = StepClock(device)
        for i in range(warmup):
            _check_loss(step(), i, warmup=True)
        synchronize(device)
        samples: list[float] = []
        while True:
            clock.start()
            loss = step()
            samples.append(clock.stop())
            _check_loss(loss, len(samples) - 1, warmup=False)
            if budget_s is None:
                if len(samples) >= repeats:
                    break
            elif sum(samples) >= budget_s and len(samples) >= MIN_SAMPLES_FOR_CI:
                break
    return samples


def _check_loss(loss: torch.Tensor | None, step: int, *, warmup: bool) -> None:
    if loss is not None and not torch.isfinite(loss.detach()).all():
        phase = "warm-up" if warmup else "timed"
        raise TrainingDivergedError(
            f"loss became {loss.item()} at {phase} step {step}: the model's output is not finite "
            "on random inputs; lower the learning rate or check the model")


__all__ = [
    "BatchTooLargeError", "Measurement", "Mode", "NoisyMeasurementWarning", "OptimizerKind",
    "StepClock", "StepTiming", "build_step", "make_optimizer", "out_of_memory_as_error",
    "preserved", "primary_output", "random_targets", "resolve_device", "synchronize", "time_model",
    "using_threads",
]
