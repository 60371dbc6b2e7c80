"""Predict a network's training and validation step time on this machine from its structure alone:
count its operator calls on the meta device and sum what the per-kernel model
(:mod:`dnncost.prediction.model`) says each costs, plus what the step costs beyond its kernels."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dnncost.core.environment import machine_fingerprint
from dnncost.core.errors import InputSpecError
from dnncost.core.inputs import InputSpec
from dnncost.core.kinds import Mode
from dnncost.counting.cost import CostReport, OpRecord
from dnncost.counting.formulas import OpKind
from dnncost.prediction.errors import UncoveredOperatorError
from dnncost.prediction.features import op_kind
from dnncost.prediction.interval import COVERAGE
from dnncost.prediction.model import Freshness, OperatorModel
from dnncost.prediction.storage import load_operator_model


@dataclass(frozen=True)
class OpTime:
    """One operator call and its predicted seconds."""

    record: OpRecord
    kind: OpKind | None
    seconds: float


@dataclass(frozen=True)
class Prediction:
    """Predicted time of one step (and epoch) of a network, with the calls it is the sum of, and
    its interval: where a measurement lands with probability ``coverage``, as factors of the
    prediction (dnncost.prediction.interval; None when the calibration holds no residuals)."""

    model: str
    mode: str
    batch_size: int
    input_shape: tuple[int, ...]
    calls: tuple[OpTime, ...]
    step_overhead_s: float
    flops: int
    epoch_s: float | None = None  # one pass over dataset_size samples, last batch partial
    dataset_size: int | None = None
    uncovered: Mapping[str, int] = field(default_factory=dict)  # op -> calls left out (strict=False)
    caveats: tuple[Freshness, ...] = ()  # why the calibration may be rough here
    interval: tuple[float, float] | None = None  # (low, high) factors of the predicted time
    coverage: float = COVERAGE

    @property
    def step_s(self) -> float:
        """Predicted seconds of one step."""
        return sum(c.seconds for c in self.calls) + self.step_overhead_s

    @property
    def step_interval_s(self) -> tuple[float, float] | None:
        """(low, high) seconds of one step at ``coverage``; None without an interval."""
        return _scaled(self.step_s, self.interval)

    @property
    def epoch_interval_s(self) -> tuple[float, float] | None:
        """(low, high) seconds of the epoch: the step's factors, every step of an epoch being
        predicted alike (their errors move together)."""
        return _scaled(self.epoch_s, self.interval)

    def by_module(self, depth: int = 1) -> dict[str, float]:
        """Seconds per module path truncated to ``depth`` ('(loss)', '(optimizer)' kept apart)."""
        out: dict[str, float] = {}
        for c in self.calls:
            key = _module_key(c.record.module, depth)
            out[key] = out.get(key, 0.0) + c.seconds
        return out

    def by_class(self) -> dict[str, float]:
        """Seconds per kernel kind, largest first."""
        out: dict[str, float] = {}
        for c in self.calls:
            key = c.kind.value if c.kind is not None else "unknown"
            out[key] = out.get(key, 0.0) + c.seconds
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def by_phase(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in self.calls:
            out[c.record.phase.value] = out.get(c.record.phase.value, 0.0) + c.seconds
        return out

    def layer_rows(self, depth: int = 1) -> list[dict[str, object]]:
        """Rows for a table: one per module at ``depth``, with its share of the step."""
        step = self.step_s
        flops: dict[str, int] = {}
        for c in self.calls:
            key = _module_key(c.record.module, depth)
            flops[key] = flops.get(key, 0) + c.record.cost.flops
        return [{"mode": self.mode, "module": name, "predicted_ms": s * 1e3,
                 "share": s / step if step else 0.0, "gflops": flops.get(name, 0) / 1e9}
                for name, s in self.by_module(depth).items()]

    def summary(self) -> dict[str, object]:
        step, epoch = self.step_interval_s, self.epoch_interval_s
        return {"model": self.model, "mode": self.mode, "batch_size": self.batch_size,
                "input_shape": "x".join(map(str, self.input_shape)),
                "predicted_step_ms": self.step_s * 1e3, "coverage": self.coverage,
                "low_ms": step[0] * 1e3 if step else None,
                "high_ms": step[1] * 1e3 if step else None,
                "samples_per_s": self.batch_size / self.step_s if self.step_s else math.nan,
                "dataset_size": self.dataset_size, "predicted_epoch_s": self.epoch_s,
                "epoch_low_s": epoch[0] if epoch else None,
                "epoch_high_s": epoch[1] if epoch else None, "gflops": self.flops / 1e9,
                "calls": len(self.calls), "uncovered": dict(self.uncovered),
                "caveats": [c.value for c in self.caveats]}


def _scaled(seconds: float | None, factors: tuple[float, float] | None) -> tuple[float, float] | None:
    if seconds is None or factors is None:
        return None
    return seconds * factors[0], seconds * factors[1]


def _module_key(path: str, depth: int) -> str:
    key = ".".join(path.split(".")[:depth]) if depth >= 0 and path else path
    return key or "(model)"


def predict_report(report: CostReport, model: OperatorModel, *, modules: int = 0,
                   param_tensors: int = 0, strict: bool = True,
                   coverage: float = COVERAGE) -> Prediction:
    """Predict the step whose operator calls ``report`` lists (its mode and batch size), with its
    interval at ``coverage``, at the machine's speed of the model's last recheck
    (:mod:`dnncost.prediction.recheck`); ``modules`` and ``param_tensors`` are the network's counts
    (kernels.module_counts)."""
    if not 0 < coverage < 1:
        raise InputSpecError(f"coverage must lie strictly between 0 and 1, got {coverage}")
    unsupported = dict(report.unsupported())
    if unsupported and strict:
        listed = ", ".join(f"{op} ({n} call{'s' if n > 1 else ''})" for op, n in unsupported.items())
        raise UncoveredOperatorError(
            f"{report.model} uses operators with no cost formula, so no time either: {listed}; "
            "allow uncovered operators (strict=False) to predict without them, counted as zero time")
    seconds = model.kernel_seconds(report.records, report.mode)
    level = model.level_of(report.mode)  # the machine's speed at the last recheck (1: none)
    calls = tuple(OpTime(r, op_kind(r), level * float(s))
                  for r, s in zip(report.records, seconds, strict=False))
    return Prediction(model=report.model, mode=report.mode, batch_size=report.batch_size,
                      input_shape=tuple(report.input_shape), calls=calls,
                      step_overhead_s=level * model.overhead_seconds(report, modules, param_tensors,
                                                                     float(seconds.sum())),
                      flops=report.total().flops, uncovered=unsupported,
                      interval=model.interval.factors(report.mode, coverage), coverage=coverage)


def predict_time(model_or_spec: Any, *, input_shape: Sequence[int] | InputSpec | str | None = None,
                 batch_size: int = 1, mode: str = "train", calibration: OperatorModel | None = None,
                 threads: int | None = None,
                 dataset_size: int | None = None, optimizer: str = "sgd", name: str | None = None,
                 strict: bool = True, coverage: float = COVERAGE) -> Prediction:
    """Predicted step time (and epoch time over ``dataset_size`` samples) of a network, with its
    interval at ``coverage`` (dnncost.prediction.interval).

    ``model_or_spec``: an nn.Module or a spec dnncost.models.loading resolves. ``calibration``: the
    fitted model (default: this machine's stored one for ``threads``, read after the network is
    counted; NotCalibratedError when there is none).
    Counting happens on the meta device, so a prediction takes a fraction of one real step.
    """
    from torch import nn

    from dnncost.counting.counter import count
    from dnncost.prediction.kernels import module_counts

    if mode not in {m.value for m in Mode}:
        raise InputSpecError(f"mode must be 'train' or 'eval', got '{mode}'")
    if dataset_size is not None and dataset_size < 1:
        raise InputSpecError(f"dataset size must be a positive integer, got {dataset_size}")
    if not 0 < coverage < 1:
        raise InputSpecError(f"coverage must lie strictly between 0 and 1, got {coverage}")
    loaded_model: list[OperatorModel] = [calibration] if calibration is not None else []
    spec = input_shape if isinstance(input_shape, (InputSpec, str)) else None  # '16:int64', ...
    shape = None if input_shape is None or isinstance(input_shape, (InputSpec, str)) \
        else tuple(int(s) for s in input_shape)
    counts = module_counts(model_or_spec) if isinstance(model_or_spec, nn.Module) else (0, 0)

    def step(batch: int) -> Prediction:
        report = count(model_or_spec, spec, mode=mode, batch_size=batch, input_shape=shape,
                       optimizer=optimizer, name=name)
        if not loaded_model:  # after counting: a network that cannot take its input says so first
            loaded_model.append(load_operator_model(threads=threads))
        return predict_report(report, loaded_model[0], modules=counts[0], param_tensors=counts[1],
                              strict=strict, coverage=coverage)

    prediction = step(batch_size)
    if dataset_size is None:
        return prediction
    full, rest = divmod(dataset_size, batch_size)
    epoch = full * prediction.step_s + (step(rest).step_s if rest else 0.0)
    return replace(prediction, epoch_s=epoch, dataset_size=dataset_size)


SPEED_TOLERANCE = 0.15  # source: our choice, about twice the pass-to-pass noise of a step on a
# shared 2-core VM (4-8%, benchmarks/noise_floor.py): a larger change of the reference probe since
# the calibration marks its figures


def calibrated_here(model: OperatorModel, *, threads: int) -> bool:
    """Whether ``model`` was calibrated on this machine at ``threads`` threads and kept its
    reference probe: only then is that probe's time this machine's speed to compare with."""
    return (model.probe_s > 0 and model.threads == threads
            and model.fingerprint == machine_fingerprint("cpu", threads=threads))


def speed_change(model: OperatorModel | None = None, *, threads: int | None = None) -> float | None:
    """How much slower this machine runs now than while ``model`` (default: this machine's stored
    one for ``threads``) was calibrated: the reference probe's steady reading
    (dnncost.measuring.probe.Probe.steady) now, on ``threads`` threads (default: torch's current
    count), against the median of those the calibration took, less 1 (0.3: 30% slower; negative:
    faster). None where the calibration stored none, or was made on another machine or thread
    count, whose probe timed another machine. The model's figures are the machine's as it ran
    then: a machine that slowed since (a neighbour, the host's clock) runs every step slower than
    predicted."""
    import torch

    from dnncost.core.device import using_threads
    from dnncost.measuring.measurement import probe_drift
    from dnncost.measuring.probe import Probe

    threads = threads if threads is not None else torch.get_num_threads()
    model = model if model is not None else load_operator_model(threads=threads)
    if not calibrated_here(model, threads=threads):
        return None
    with using_threads(threads):
        now = Probe("cpu").steady()
    return probe_drift(now, model.probe_s)


def caveats_here(model: OperatorModel, *, threads: int, speed: float | None = None
                 ) -> list[Freshness]:
    """Why ``model`` may be rough for a prediction on this machine at ``threads`` threads;
    ``speed``: :func:`speed_change`, marked beyond SPEED_TOLERANCE either way."""
    import torch

    out = model.freshness(fingerprint=machine_fingerprint("cpu", threads=threads), threads=threads,
                          torch_version=str(torch.__version__))
    if speed is not None and abs(speed) > SPEED_TOLERANCE:
        out.append(Freshness.SPEED)
    return out


__all__ = ["OpTime", "Prediction", "SPEED_TOLERANCE", "calibrated_here", "caveats_here", "predict_report",
           "predict_time", "speed_change"]
