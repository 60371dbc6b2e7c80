"""Predict a network's training and validation step time on this machine from its structure alone.

The per-operator model (after PALEO, nn-Meter and Habitat): every aten operator call the counter
lists belongs to a class (dense / grouped / depthwise convolution and their backward, matmul, batch
norm in training or evaluation and its backward, elementwise forward or backward, copies, pooling,
softmax and loss, reductions, random masks, optimizer updates) and takes

    time = max(FLOPs / (peak_c * (FLOPs / 1e9)^s_c), bytes / bandwidth_c) + overhead_c

seconds -- a roofline with the class's own attainable FLOP/s and bandwidth, plus a per-call cost
(dispatch, allocation, threading); the exponent s_c (0 to 0.5) lets a class's efficiency grow with
the work of a call, as blocked kernels' does. Forward calls of a training step pay ``autograd_s``
more each (the graph they record), and each step a fixed ``step_s`` (the Python around it). A step's
time is the sum over its calls. The parameters are fitted, by robust least squares on log time, to
micro-benchmarks of single operators (:mod:`dnncost.prediction.microbench`) -- never to the networks the model is
judged on -- and stored with this machine's calibration (:mod:`dnncost.measuring.calibrate`), keyed by its
fingerprint.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum

import numpy as np

from dnncost.counting.cost import CostReport, OpRecord, Phase
from dnncost.counting.formulas import POINTWISE_FLOPS
from dnncost.errors import DnncostError

SECTION = "operators"  # the calibration section holding the fitted model and its benchmarks
CALIBRATE_COMMAND = "dnncost calibrate --ops"


class UncoveredOperatorError(DnncostError):
    """A network uses operators the time model has no fitted class for."""


class NotCalibratedError(DnncostError):
    """This machine has no per-operator calibration yet."""


class OpClass(str, Enum):
    """Operator classes with their own roofline parameters."""

    CONV = "conv"  # dense, spatial kernel (3x3, 5x5, ...)
    CONV_BACKWARD = "conv_backward"
    GROUPED_CONV = "grouped_conv"
    GROUPED_CONV_BACKWARD = "grouped_conv_backward"
    DEPTHWISE_CONV = "depthwise_conv"
    DEPTHWISE_CONV_BACKWARD = "depthwise_conv_backward"
    MATMUL = "matmul"
    NORM = "norm"  # batch statistics (training) or layer/group norm
    NORM_EVAL = "norm_eval"  # running statistics
    NORM_BACKWARD = "norm_backward"
    MAX_POOL = "max_pool"
    MAX_POOL_BACKWARD = "max_pool_backward"
    AVG_POOL = "avg_pool"  # average pooling, adaptive included
    AVG_POOL_BACKWARD = "avg_pool_backward"
    ELEMENTWISE = "elementwise"  # arithmetic per element in the forward pass: activations, adds
    ELEMENTWISE_BACKWARD = "elementwise_backward"  # their gradients (threshold_backward, ...)
    COPY = "copy"  # data movement without arithmetic in the forward pass: cat, pad, clone, fills
    COPY_BACKWARD = "copy_backward"  # and in the backward pass (slice_backward, pad's gradient, ...)
    RANDOM = "random"  # random number generation (dropout masks)
    REDUCTION = "reduction"
    SOFTMAX = "softmax"  # softmax / log-softmax and their backward, the losses on them
    OPTIMIZER = "optimizer"  # every call of the optimizer step


_CONV_OPS = frozenset({"aten.convolution", "aten._convolution", "aten.mkldnn_convolution",
                       "aten._slow_conv2d_forward", "aten.convolution_overrideable"})
_BY_NAME: dict[str, OpClass] = {}
# Pointwise ops take their class from the formula registry's own table: arithmetic per element
# (elementwise) or none (copy).
for _flops, _ops in POINTWISE_FLOPS.items():
    for _op in _ops:
        _BY_NAME[str(_op).replace("aten::", "aten.")] = OpClass.ELEMENTWISE if _flops else OpClass.COPY
for _cls, _names in {
    OpClass.MATMUL: ("mm", "addmm", "bmm", "baddbmm", "dot", "vdot", "mv"),
    OpClass.NORM: ("native_batch_norm", "_native_batch_norm_legit",
                   "_native_batch_norm_legit_functional", "native_layer_norm", "native_group_norm"),
    OpClass.NORM_EVAL: ("_native_batch_norm_legit_no_training",),
    OpClass.NORM_BACKWARD: ("native_batch_norm_backward", "batch_norm_backward",
                            "native_layer_norm_backward", "native_group_norm_backward"),
    OpClass.MAX_POOL: ("max_pool2d_with_indices", "max_pool2d", "adaptive_max_pool2d",
                       "max_pool1d", "max_pool3d_with_indices"),
    OpClass.MAX_POOL_BACKWARD: ("max_pool2d_with_indices_backward", "adaptive_max_pool2d_backward",
                                "max_pool3d_with_indices_backward"),
    OpClass.AVG_POOL: ("avg_pool2d", "_adaptive_avg_pool2d", "avg_pool1d", "avg_pool3d",
                       "_adaptive_avg_pool3d"),
    OpClass.AVG_POOL_BACKWARD: ("avg_pool2d_backward", "_adaptive_avg_pool2d_backward",
                                "avg_pool3d_backward", "_adaptive_avg_pool3d_backward"),
    OpClass.ELEMENTWISE: ("index_add", "index_add_", "scatter_add", "scatter_add_"),
    OpClass.RANDOM: ("bernoulli_", "bernoulli", "native_dropout", "uniform_", "normal_", "random_"),
    OpClass.REDUCTION: ("sum", "mean", "amax", "amin", "max", "min", "argmax", "argmin", "var",
                        "std", "var_mean", "std_mean", "norm", "linalg_vector_norm", "logsumexp",
                        "prod", "any", "all", "cumsum"),
    OpClass.SOFTMAX: ("_softmax", "_log_softmax", "_safe_softmax", "_softmax_backward_data",
                      "_log_softmax_backward_data", "nll_loss_forward", "nll_loss_backward",
                      "nll_loss2d_forward", "nll_loss2d_backward"),
}.items():
    for _name in _names:
        _BY_NAME[f"aten.{_name}"] = _cls


def conv_groups(record: OpRecord) -> tuple[int, int]:
    """(groups, input channels per group) of a convolution or convolution_backward call, from the
    shapes the counter keeps: (input, weight, ...) forward, (grad_output, input, weight) backward."""
    x, w = (record.shapes[1], record.shapes[2]) if "backward" in record.op else record.shapes[:2]
    per_group = w[1]
    return max(1, x[1] // per_group), per_group


def classify(record: OpRecord, mode: str = "train") -> OpClass | None:
    """The class of one operator call of a ``mode`` step; None when the model has no class for it.
    (A normalisation's forward uses batch statistics in a training step, running ones otherwise.)"""
    if record.phase is Phase.OPTIMIZER:
        return OpClass.OPTIMIZER
    op = record.op
    if op in _CONV_OPS or op == "aten.convolution_backward":
        groups, per_group = conv_groups(record)
        backward = op == "aten.convolution_backward"
        if groups == 1:
            return OpClass.CONV_BACKWARD if backward else OpClass.CONV
        if per_group == 1:
            return OpClass.DEPTHWISE_CONV_BACKWARD if backward else OpClass.DEPTHWISE_CONV
        return OpClass.GROUPED_CONV_BACKWARD if backward else OpClass.GROUPED_CONV
    cls = _BY_NAME.get(op)
    if record.phase is Phase.BACKWARD:
        return _BACKWARD_OF.get(cls, cls)
    if cls is OpClass.NORM and mode == "eval":
        return OpClass.NORM_EVAL
    return cls


#: Classes whose gradient kernels are separate classes when the call is in the backward pass.
_BACKWARD_OF = {OpClass.ELEMENTWISE: OpClass.ELEMENTWISE_BACKWARD,
                OpClass.COPY: OpClass.COPY_BACKWARD}


# -- the model -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassParams:
    """One class's roofline: attainable FLOP/s (at FLOPS_REF FLOPs per call, scaling as
    (FLOPs / FLOPS_REF)^size_exponent: larger calls block and thread better), bytes/s, and seconds
    per call."""

    flops_per_s: float
    bytes_per_s: float
    overhead_s: float
    size_exponent: float = 0.0

    def seconds(self, flops: np.ndarray | float, nbytes: np.ndarray | float) -> np.ndarray | float:
        return np.maximum(_compute_s(np.asarray(flops, dtype=float), self.flops_per_s,
                                     self.size_exponent),
                          np.asarray(nbytes) / self.bytes_per_s) + self.overhead_s


FLOPS_REF = 1e9  # source: our choice, the FLOPs per call at which flops_per_s is quoted


def _compute_s(flops: np.ndarray, peak: np.ndarray | float, exponent: np.ndarray | float) -> np.ndarray:
    """flops / (peak * (flops / FLOPS_REF)^exponent), 0 for calls without arithmetic."""
    ratio = np.maximum(flops, 1.0) / FLOPS_REF
    return np.where(flops > 0, flops / (peak * ratio ** exponent), 0.0)


@dataclass(frozen=True)
class OperatorModel:
    """The fitted per-operator time model of one machine (device + thread count)."""

    classes: Mapping[OpClass, ClassParams]
    autograd_s: float  # extra seconds per forward call in a training step (graph recording)
    step_s: Mapping[str, float]  # fixed seconds per step, by mode ('train', 'eval')
    fingerprint: str = ""
    threads: int = 0
    created: str = ""
    benchmarks: int = 0  # benchmark timings it was fitted on
    fit_error: Mapping[str, float] = field(default_factory=dict)  # fit quality on the benchmarks

    def covers(self, cls: OpClass | None) -> bool:
        return cls is not None and cls in self.classes

    def call_seconds(self, record: OpRecord, *, mode: str) -> float:
        """Predicted seconds of one operator call in a ``mode`` step."""
        cls = classify(record, mode)
        if not self.covers(cls):
            raise UncoveredOperatorError(f"the time model has no class for {record.op}")
        t = float(self.classes[cls].seconds(record.cost.flops, record.cost.bytes))
        if mode == "train" and record.phase is Phase.FORWARD:
            t += self.autograd_s
        return t

    def rows(self) -> list[dict[str, object]]:
        """One row per class for a table: attainable GFLOP/s, GB/s, overhead in microseconds."""
        return [{"class": c.value, "gflops_per_s": p.flops_per_s / 1e9,
                 "gbytes_per_s": p.bytes_per_s / 1e9, "overhead_us": p.overhead_s * 1e6,
                 "size_exponent": p.size_exponent} for c, p in self.classes.items()]

    def to_dict(self) -> dict[str, object]:
        return {
            "classes": {c.value: {"flops_per_s": p.flops_per_s, "bytes_per_s": p.bytes_per_s,
                                  "overhead_s": p.overhead_s, "size_exponent": p.size_exponent}
                        for c, p in self.classes.items()},
            "autograd_s": self.autograd_s, "step_s": dict(self.step_s),
            "fingerprint": self.fingerprint, "threads": self.threads, "created": self.created,
            "benchmarks": self.benchmarks, "fit_error": dict(self.fit_error),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> OperatorModel:
        return cls(
            classes={OpClass(k): ClassParams(float(v["flops_per_s"]), float(v["bytes_per_s"]),
                                             float(v["overhead_s"]), float(v.get("size_exponent", 0)))
                     for k, v in dict(data["classes"]).items()},
            autograd_s=float(data["autograd_s"]),
            step_s={str(k): float(v) for k, v in dict(data["step_s"]).items()},
            fingerprint=str(data.get("fingerprint", "")), threads=int(data.get("threads", 0)),
            created=str(data.get("created", "")), benchmarks=int(data.get("benchmarks", 0)),
            fit_error={str(k): float(v) for k, v in dict(data.get("fit_error", {})).items()})


# -- fitting ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Observed:
    """One timed step to fit on: its operator calls, its mode and its measured seconds."""

    records: tuple[OpRecord, ...]
    mode: str
    seconds: float


class _Design:
    """The observations flattened into arrays: one row per operator call."""

    def __init__(self, observed: Sequence[Observed], classes: Sequence[OpClass]) -> None:
        index = {c: i for i, c in enumerate(classes)}
        rows = [(b, index[classify(r, o.mode)], r.cost.flops, r.cost.bytes,
                 o.mode == "train" and r.phase is Phase.FORWARD)
                for b, o in enumerate(observed) for r in o.records if classify(r, o.mode) in index]
        arr = np.array(rows, dtype=float).reshape(-1, 5)
        self.bench = arr[:, 0].astype(int)
        self.cls = arr[:, 1].astype(int)
        self.flops, self.bytes, self.autograd = arr[:, 2], arr[:, 3], arr[:, 4]
        self.train = np.array([o.mode == "train" for o in observed])
        self.seconds = np.array([o.seconds for o in observed])
        self.n = len(observed)


_PRIOR_WEIGHT = 0.001  # source: our choice; tiny against a benchmark's residual (1 per log unit),
#                       it only holds parameters the data cannot see (e.g. a memory-bound class's FLOP/s)
_ROBUST_SCALE = 0.1  # source: our choice; residuals beyond ~10% count linearly (soft L1), so a
#                      benchmark disturbed by another process cannot pull the fit far
_UNSEEN = 1e15  # source: our choice; the FLOP/s or bytes/s of a term the linear fit found no time
#                 for: large enough to contribute nothing, finite so that its log is a parameter
_MAX_SIZE_EXPONENT = 0.5  # source: our choice; efficiency at most ~3x higher per 10x more work
_FLOOR_S = 1e-9  # source: our choice; a per-call overhead the linear fit found no time for


def _linear_start(d: _Design, k: int) -> np.ndarray:
    """Convex first fit of the additive form sum(F / peak + B / bw + overhead), non-negative
    coefficients, least squares on relative error; its solution starts the roofline fit."""
    from scipy.optimize import lsq_linear

    x = np.zeros((d.n, 3 * k + 3))
    np.add.at(x, (d.bench, d.cls), d.flops)
    np.add.at(x, (d.bench, k + d.cls), d.bytes)
    np.add.at(x, (d.bench, 2 * k + d.cls), 1.0)
    np.add.at(x[:, 3 * k], d.bench, d.autograd)
    x[:, 3 * k + 1], x[:, 3 * k + 2] = d.train, ~d.train
    a = x / d.seconds[:, None]  # relative error: divide each row by its measured time
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    coef = lsq_linear(a / scale, np.ones(d.n), bounds=(0, np.inf), method="bvls").x / scale
    inverse = np.where(coef[:2 * k] > 0, 1 / np.maximum(coef[:2 * k], 1e-300), _UNSEEN)
    return np.log(np.concatenate([np.minimum(inverse, _UNSEEN),
                                  np.maximum(coef[2 * k:], _FLOOR_S)]))


def _unpack(theta: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """theta = log peak (k), log bandwidth (k), log overhead (k), log autograd, log step train,
    log step eval, then the size exponents (k)."""
    e = np.exp(theta[:3 * k + 3])
    return (e[:k], e[k:2 * k], e[2 * k:3 * k], e[3 * k], e[3 * k + 1], e[3 * k + 2],
            theta[3 * k + 3:])


def _predict_design(theta: np.ndarray, d: _Design, k: int) -> np.ndarray:
    peak, bw, over, autograd, step_train, step_eval, size = _unpack(theta, k)
    compute = _compute_s(d.flops, peak[d.cls], size[d.cls])
    t = np.maximum(compute, d.bytes / bw[d.cls]) + over[d.cls] + autograd * d.autograd
    total = np.bincount(d.bench, weights=t, minlength=d.n)
    return total + np.where(d.train, step_train, step_eval)


def fit_operator_model(observed: Sequence[Observed], *, fingerprint: str = "",
                       threads: int = 0) -> OperatorModel:
    """Fit every class seen in ``observed``: a convex linear fit of the additive form first, then
    the roofline (max) form from there, by robust least squares on log time."""
    from scipy.optimize import least_squares

    if not observed:
        raise ValueError("no benchmark timings to fit the time model on")
    classes = sorted({c for o in observed for r in o.records
                      if (c := classify(r, o.mode)) is not None},
                     key=list(OpClass).index)
    k = len(classes)
    d = _Design(observed, classes)
    start = np.concatenate([_linear_start(d, k), np.zeros(k)])
    upper = np.full(len(start), np.inf)
    upper[3 * k + 3:] = _MAX_SIZE_EXPONENT
    lower = np.where(np.arange(len(start)) >= 3 * k + 3, 0.0, -np.inf)
    log_measured = np.log(d.seconds)

    def residuals(theta: np.ndarray) -> np.ndarray:
        fit = np.log(_predict_design(theta, d, k)) - log_measured
        return np.concatenate([fit, _PRIOR_WEIGHT * (theta - start)])

    result = least_squares(residuals, start, bounds=(lower, upper), loss="soft_l1",
                           f_scale=_ROBUST_SCALE, method="trf", max_nfev=200 * len(start))
    peak, bw, over, autograd, step_train, step_eval, size = _unpack(result.x, k)
    rel = _predict_design(result.x, d, k) / d.seconds - 1
    error = {"median_abs_error": float(np.median(np.abs(rel))),
             "share_within_10pct": float(np.mean(np.abs(rel) <= 0.10))}
    return OperatorModel(
        classes={c: ClassParams(float(peak[i]), float(bw[i]), float(over[i]), float(size[i]))
                 for i, c in enumerate(classes)},
        autograd_s=float(autograd), step_s={"train": float(step_train), "eval": float(step_eval)},
        fingerprint=fingerprint, threads=threads,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        benchmarks=len(observed), fit_error=error)


# -- predicting ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpTime:
    """One operator call and its predicted seconds."""

    record: OpRecord
    op_class: OpClass
    seconds: float


@dataclass(frozen=True)
class Prediction:
    """Predicted time of one step (and epoch) of a network, with the calls it is the sum of."""

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

    @property
    def step_s(self) -> float:
        """Predicted seconds of one step."""
        return sum(c.seconds for c in self.calls) + self.step_overhead_s

    def by_module(self, depth: int = 1) -> dict[str, float]:
        """Seconds per module path truncated to ``depth`` ('(loss)', '(optimizer)' kept apart)."""
        out: dict[str, float] = {}
        for c in self.calls:
            path = c.record.module
            key = ".".join(path.split(".")[:depth]) if depth >= 0 and path else path
            out[key or "(model)"] = out.get(key or "(model)", 0.0) + c.seconds
        return out

    def by_class(self) -> dict[str, float]:
        """Seconds per operator class, largest first."""
        out: dict[str, float] = {}
        for c in self.calls:
            out[c.op_class.value] = out.get(c.op_class.value, 0.0) + c.seconds
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
            path = c.record.module
            key = (".".join(path.split(".")[:depth]) if depth >= 0 and path else path) or "(model)"
            flops[key] = flops.get(key, 0) + c.record.cost.flops
        return [{"mode": self.mode, "module": name, "predicted_ms": s * 1e3,
                 "share": s / step if step else 0.0, "gflops": flops.get(name, 0) / 1e9}
                for name, s in self.by_module(depth).items()]

    def summary(self) -> dict[str, object]:
        return {"model": self.model, "mode": self.mode, "batch_size": self.batch_size,
                "input_shape": "x".join(map(str, self.input_shape)),
                "predicted_step_ms": self.step_s * 1e3,
                "samples_per_s": self.batch_size / self.step_s if self.step_s else math.nan,
                "dataset_size": self.dataset_size,
                "predicted_epoch_s": self.epoch_s, "gflops": self.flops / 1e9,
                "calls": len(self.calls), "uncovered": dict(self.uncovered)}


def uncovered_operators(report: CostReport, model: OperatorModel) -> dict[str, tuple[int, int]]:
    """op -> (calls, FLOPs) of every call the model cannot time, including ops with no formula
    (their FLOPs are unknown: 0 here)."""
    out: dict[str, tuple[int, int]] = {op: (calls, 0) for op, calls in report.unsupported().items()}
    for r in report.records:
        if not model.covers(classify(r, report.mode)):
            calls, flops = out.get(r.op, (0, 0))
            out[r.op] = (calls + 1, flops + r.cost.flops)
    return out


def _uncovered_message(name: str, uncovered: Mapping[str, tuple[int, int]], total_flops: int,
                       unsupported: Mapping[str, int]) -> str:
    parts = []
    for op, (calls, flops) in sorted(uncovered.items(), key=lambda kv: -kv[1][1]):
        share = ("no cost formula, FLOPs unknown" if op in unsupported
                 else f"{flops / total_flops:.1%} of the step's FLOPs" if total_flops else "0 FLOPs")
        parts.append(f"{op} ({calls} call{'s' if calls > 1 else ''}, {share})")
    return (f"the time model of this machine does not cover {len(uncovered)} operator"
            f"{'s' if len(uncovered) > 1 else ''} of {name}: {'; '.join(parts)}. No micro-benchmark "
            "fits them; predict without them (counted as zero time) with --allow-uncovered")


def predict_report(report: CostReport, model: OperatorModel, *, strict: bool = True) -> Prediction:
    """Predict the step whose operator calls ``report`` lists (its mode and batch size)."""
    uncovered = uncovered_operators(report, model)
    if uncovered and strict:
        raise UncoveredOperatorError(_uncovered_message(report.model, uncovered,
                                                        report.total().flops, report.unsupported()))
    calls = tuple(OpTime(r, cls, model.call_seconds(r, mode=report.mode))
                  for r in report.records if model.covers(cls := classify(r, report.mode)))
    return Prediction(model=report.model, mode=report.mode, batch_size=report.batch_size,
                      input_shape=tuple(report.input_shape), calls=calls,
                      step_overhead_s=model.step_s.get(report.mode, 0.0),
                      flops=report.total().flops,
                      uncovered={op: calls for op, (calls, _) in uncovered.items()})


def predict_time(model_or_spec: object, *, input_shape: Sequence[int] | None = None,
                 batch_size: int = 1, mode: str = "train", calibration: OperatorModel | None = None,
                 dataset_size: int | None = None, optimizer: str = "sgd",
                 strict: bool = True) -> Prediction:
    """Predicted step time (and epoch time over ``dataset_size`` samples) of a network.

    ``model_or_spec``: an nn.Module or a spec dnncost.models.loading resolves. ``calibration``: the fitted
    model (default: this machine's stored one; NotCalibratedError when there is none). Counting
    happens on the meta device, so a prediction takes a fraction of one real step.
    """
    from dnncost.counting.counter import count
    from dnncost.errors import InputSpecError

    if mode not in ("train", "eval"):
        raise InputSpecError(f"mode must be 'train' or 'eval', got '{mode}'")
    if dataset_size is not None and dataset_size < 1:
        raise InputSpecError(f"dataset size must be a positive integer, got {dataset_size}")
    op_model = calibration if calibration is not None else load_operator_model()
    shape = tuple(input_shape) if input_shape is not None else None

    def step(batch: int) -> Prediction:
        report = count(model_or_spec, mode=mode, batch_size=batch, input_shape=shape,
                       optimizer=optimizer)
        return predict_report(report, op_model, strict=strict)

    prediction = step(batch_size)
    if dataset_size is None:
        return prediction
    full, rest = divmod(dataset_size, batch_size)
    epoch = full * prediction.step_s + (step(rest).step_s if rest else 0.0)
    from dataclasses import replace

    return replace(prediction, epoch_s=epoch, dataset_size=dataset_size)


# -- the stored calibration ------------------------------------------------------------------------
def observed_from_benchmarks(results: Iterable[object]) -> list[Observed]:
    """Micro-benchmark results (dnncost.prediction.microbench.BenchResult) as observations to fit on."""
    return [Observed(r.records, r.mode, r.seconds) for r in results]


def calibrate_operators(*, device: str = "cpu", threads: int | None = None, quick: bool = False,
                        progress: bool = False) -> tuple[OperatorModel, list[object]]:
    """Run the micro-benchmarks on this machine and fit the model: (model, benchmark results)."""
    from dnncost.errors import DeviceError
    from dnncost.measuring.environment import machine_fingerprint
    from dnncost.measuring.timing import using_threads
    from dnncost.prediction import microbench as opbench

    if device != "cpu":
        raise DeviceError(f"the per-operator time model is calibrated on the CPU only, not '{device}'")
    with using_threads(threads) as n_threads:
        results = opbench.run_suite(opbench.suite(quick=quick), threads=n_threads,
                                    budget_s=opbench.QUICK_BUDGET_S if quick else opbench.BUDGET_S,
                                    passes=1 if quick else opbench.PASSES,
                                    max_idle_wait_s=0.0 if quick else opbench.MAX_IDLE_WAIT_S,
                                    progress=progress)
        fingerprint = machine_fingerprint("cpu", threads=n_threads)
    model = fit_operator_model(observed_from_benchmarks(results), fingerprint=fingerprint,
                               threads=n_threads)
    return model, results


def save_operator_model(model: OperatorModel, results: Sequence[object] = (), *,
                        quick: bool = False) -> str:
    """Store ``model`` (and the benchmark timings behind it) in this machine's calibration file."""
    from dnncost.measuring.calibrate import Calibration, save_calibration
    from dnncost.measuring.environment import current_environment

    env = current_environment("cpu", threads=model.threads)
    base = Calibration(fingerprint=model.fingerprint, device="cpu", threads=model.threads,
                       created=model.created, environment=env.to_dict())
    section = {"model": model.to_dict(), "quick": quick,
               "benchmarks": [r.to_dict() for r in results]}
    return str(save_calibration(base.with_section(SECTION, section)))


def load_operator_model(device: str = "cpu", *, threads: int | None = None) -> OperatorModel:
    """This machine's fitted model; NotCalibratedError (naming the command to run) when absent."""
    from dnncost.measuring.calibrate import calibration_path, load_calibration

    cal = load_calibration(device, threads=threads)
    section = cal.sections.get(SECTION) if cal is not None else None
    if not section:
        raise NotCalibratedError(
            f"this machine has no per-operator calibration ({calibration_path(device, threads=threads)} "
            f"{'has none' if cal is not None else 'does not exist'}): run `{CALIBRATE_COMMAND}` "
            "first (about 3 minutes on 2 cores; --quick for a rough one in seconds)")
    return OperatorModel.from_dict(dict(section)["model"])


__all__ = ["CALIBRATE_COMMAND", "ClassParams", "NotCalibratedError", "OpClass", "OpTime",
           "Observed", "OperatorModel", "Prediction", "SECTION", "UncoveredOperatorError",
           "calibrate_operators", "classify", "conv_groups", "fit_operator_model",
           "load_operator_model", "observed_from_benchmarks", "predict_report", "predict_time",
           "save_operator_model", "uncovered_operators"]
