"""Predict a network's training and validation step time on this machine from its structure alone.

The per-kernel model (after nn-Meter, Habitat and PALEO): a step's time is the sum of its aten
kernels' times plus what is not a kernel,

    step = sum over calls of kernel_s(call) + w . [train, eval, forward calls (train), backward
           calls, module calls, parameter tensors (train)]

``kernel_s`` is a regressor per kernel kind (:class:`~dnncost.counting.formulas.OpKind`, which the
formula registry states for every operator): a non-negative line ``a + b * FLOPs + c * bytes``
(fitted on relative error) times a gradient-boosted correction learned on log time from the call's
shape features (FLOPs, bytes, channels, groups, kernel, stride, spatial size, batch, the operator,
its phase). The line carries the regressor beyond the sampled sizes, the trees learn what it
misses. Both are fitted on kernels timed inside the steps of random networks
(:mod:`dnncost.prediction.sampling`, :mod:`dnncost.prediction.kernels`); ``w`` is fitted on the
same networks' measured steps minus their measured kernels, with a robust loss (a step another
process slowed weighs in little). A quarter of the random networks is
held out of both fits, and the model's error on them is stored with it.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

from dnncost.core.errors import DnncostError, InputSpecError
from dnncost.core.inputs import InputSpec
from dnncost.counting.cost import CostReport, OpRecord, Phase
from dnncost.counting.formulas import KINDS, OpKind, kind_of
from dnncost.prediction import reading
from dnncost.prediction.errors import (
    CALIBRATE_COMMAND,
    REFIT_COMMAND,
    ModelFormatError,
    OldModelFormatError,
)
from dnncost.prediction.kernels import STEP_FEATURES, step_features
from dnncost.prediction.trees import TreeEnsemble

if TYPE_CHECKING:
    from dnncost.measuring.calibrate import Calibration

SECTION = "kernels"  # the calibration section holding the fitted per-kernel model
MIN_KIND_SAMPLES = 30  # source: our choice; fewer kernels of a kind: its line only, no trees
STALE_AFTER_S = 86400.0  # source: issue 12, "older than a day"
BUSY_SHARE = 0.1  # source: our choice; a tenth of the networks slowed can bias the fit visibly
OP_CODES = {name: i for i, name in enumerate(sorted(KINDS))}
"""Each operator's code for the regressors: its index among the registry's operator names."""


class UncoveredOperatorError(DnncostError):
    """A network uses operators the time model cannot time (no cost formula: kind unknown)."""


class NotCalibratedError(DnncostError):
    """This machine has no per-kernel calibration yet."""


class Freshness(str, Enum):
    """Why a calibration's figures may be rough for this prediction."""

    QUICK = "quick"  # fitted on the quick sample: a rough figure
    STALE = "stale"  # older than a day
    OTHER_TORCH = "other_torch"  # fitted under another torch version
    OTHER_THREADS = "other_threads"  # fitted for another thread count
    OTHER_MACHINE = "other_machine"  # fitted on another machine
    BUSY = "busy"  # over BUSY_SHARE of its networks timed while other processes kept the CPU busy


def op_kind(record: OpRecord) -> OpKind | None:
    """The kernel kind of one operator call (the formula registry's), None without a formula."""
    if record.phase is Phase.OPTIMIZER:
        return OpKind.OPTIMIZER
    return kind_of(record.op)


def conv_geometry(record: OpRecord) -> tuple[int, int, int, int]:
    """(groups, input channels per group, kernel area, stride) of a convolution or
    convolution_backward call, from the shapes the counter keeps: (input, weight, ...) forward,
    (grad_output, input, weight) backward; the stride is the ratio of input to output side."""
    if "backward" in record.op and len(record.shapes) >= 3:
        out, x, w = record.shapes[0], record.shapes[1], record.shapes[2]
    else:
        x, w = record.shapes[0], record.shapes[1]
        out = ()
    per_group = w[1] if len(w) > 1 else 1
    groups = max(1, x[1] // per_group) if len(x) > 1 else 1
    area = int(np.prod(w[2:])) if len(w) > 2 else 1
    stride = max(1, round(x[-1] / out[-1])) if out and len(x) > 2 and out[-1] else 0
    return groups, per_group, area, stride


N_SHAPES = 3  # source: our choice; conv backward's (grad_output, input, weight) is the most any kind needs
N_DIMS = 4  # source: NCHW
N_FEATURES = 8 + N_SHAPES * (N_DIMS + 1) + 4  # what features() lists: 8 of the call, each shape's
# N_DIMS sides and size, 4 of a convolution's geometry


def features(record: OpRecord, mode: str) -> np.ndarray:
    """The shape features of one call: operator code, phase, training flag, log2 of FLOPs, MACs,
    bytes read and written, tensor count, each of the first N_SHAPES input shapes' last N_DIMS
    dimensions and element count (log2), and for convolutions groups, channels per group, kernel
    area and stride."""
    c = record.cost
    head = [OP_CODES.get(record.op, -1), list(Phase).index(record.phase), float(mode == "train"),
            math.log2(1 + c.flops), math.log2(1 + c.macs), math.log2(1 + c.bytes_read),
            math.log2(1 + c.bytes_written), float(len(record.shapes))]
    dims: list[float] = []
    for shape in list(record.shapes[:N_SHAPES]) + [()] * (N_SHAPES - len(record.shapes[:N_SHAPES])):
        last = list(shape[-N_DIMS:])
        last = [0] * (N_DIMS - len(last)) + last
        dims += [math.log2(1 + d) for d in last] + [math.log2(1 + float(np.prod(shape))) if shape else 0.0]
    conv = [0.0, 0.0, 0.0, 0.0]
    if op_kind(record) in (OpKind.CONV, OpKind.CONV_BACKWARD) and len(record.shapes) >= 2:
        g, per_group, area, stride = conv_geometry(record)
        conv = [math.log2(g), math.log2(per_group), float(area), float(stride)]
    return np.array(head + dims + conv, dtype=float)


# -- one kind's regressor ------------------------------------------------------------------------
@dataclass(frozen=True)
class KindRegressor:
    """seconds = (a + b * FLOPs + c * bytes) * exp(trees(features)); trees None: the line alone."""

    line: tuple[float, float, float]
    trees: TreeEnsemble | None = None  # fitted on log(seconds / line), as plain numbers
    samples: int = 0

    def base(self, flops: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        a, b, c = self.line
        return a + b * flops + c * nbytes

    def seconds(self, x: np.ndarray, flops: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        base = self.base(flops, nbytes)
        if self.trees is None or len(x) == 0:
            return base
        return base * np.exp(self.trees.predict(x))

    def to_dict(self) -> dict[str, object]:
        return {"line": list(self.line), "samples": self.samples,
                "trees": self.trees.to_dict() if self.trees is not None else None}

    @classmethod
    def from_dict(cls, data: object, where: str) -> KindRegressor:
        d = reading.mapping(data, where, required=("line", "samples", "trees"))
        a, b, c = (float(v) for v in reading.numbers(d["line"], f"{where}.line", length=3))
        trees = TreeEnsemble.from_dict(d["trees"], f"{where}.trees") if d["trees"] is not None else None
        if trees is not None and trees.n_features != N_FEATURES:
            raise ModelFormatError(f"{where}.trees take {trees.n_features} features, the model's "
                                   f"calls have {N_FEATURES}")
        return cls((a, b, c), trees, reading.integer(d["samples"], f"{where}.samples", low=0))


def fit_line(flops: np.ndarray, nbytes: np.ndarray, seconds: np.ndarray) -> tuple[float, float, float]:
    """Non-negative a, b, c of seconds ~ a + b * FLOPs + c * bytes, least squares on relative error."""
    from scipy.optimize import lsq_linear

    x = np.column_stack([np.ones_like(seconds), flops, nbytes]) / seconds[:, None]
    scale = np.linalg.norm(x, axis=0)
    scale[scale == 0] = 1.0
    coef = lsq_linear(x / scale, np.ones(len(seconds)), bounds=(0, np.inf), method="bvls").x / scale
    if not np.any(coef > 0):
        coef[0] = float(np.median(seconds))
    return float(coef[0]), float(coef[1]), float(coef[2])


STEP_LOSS_SCALE = 0.05  # source: our choice, about the step-to-step noise of a quiet machine: a
# network whose rest is off by more than 5% of its step weighs in linearly, not squared


def fit_step_weights(features: np.ndarray, rest: np.ndarray, steps: np.ndarray, *,
                     lower: np.ndarray) -> np.ndarray:
    """Weights w >= ``lower`` of rest ~ features . w (one row per timed step), fitted on the error
    relative to each step with a robust (soft L1) loss: a step slowed by another process (only
    ever more time, and far more than noise) pulls the weights far less than under least squares."""
    from scipy.optimize import least_squares, lsq_linear

    a = features / steps[:, None]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    lo = lower * scale
    start = lsq_linear(a / scale, rest / steps, bounds=(lo, np.inf), method="bvls").x
    start = np.maximum(start, lo)
    robust = least_squares(lambda w: (a / scale) @ w - rest / steps, start, bounds=(lo, np.inf),
                           loss="soft_l1", f_scale=STEP_LOSS_SCALE)
    return np.asarray(robust.x / scale, dtype=float)


TREE_PARAMS: dict[str, Any] = {"max_iter": 200, "learning_rate": 0.1, "max_leaf_nodes": 31,
                               "min_samples_leaf": 10, "l2_regularization": 1.0,
                               "random_state": 0}
"""source: scikit-learn's defaults (max_iter 100 raised to 200, min_samples_leaf 20 lowered to 10
for kinds with few samples, a little L2) -- chosen before any evaluation, not tuned on one."""


def fit_kind(x: np.ndarray, flops: np.ndarray, nbytes: np.ndarray, seconds: np.ndarray
             ) -> KindRegressor:
    """Fit one kind's regressor on its timed kernels."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    line = fit_line(flops, nbytes, seconds)
    reg = KindRegressor(line, None, len(seconds))
    if len(seconds) < MIN_KIND_SAMPLES:
        return reg
    target = np.log(seconds) - np.log(np.maximum(reg.base(flops, nbytes), 1e-12))
    trees = HistGradientBoostingRegressor(categorical_features=[0], **TREE_PARAMS)
    x = x.copy()
    x[:, 0] = np.maximum(x[:, 0], 0)  # unknown operators share code 0's category
    trees.fit(x, target)
    return replace(reg, trees=TreeEnsemble.from_sklearn(trees))


# -- the model -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OperatorModel:
    """The fitted per-kernel time model of one machine (device + thread count)."""

    kinds: Mapping[OpKind, KindRegressor]
    fallback: KindRegressor  # for a kind no sampled network had: all kernels, one regressor
    step_weights: tuple[float, ...]  # seconds per unit of each of kernels.STEP_FEATURES
    fingerprint: str = ""
    threads: int = 0
    torch_version: str = ""
    created: str = ""
    quick: bool = False
    networks: int = 0  # random networks fitted on
    kernels: int = 0  # timed kernels fitted on
    busy_networks: int = 0  # random networks still timed on a busy machine after re-timing
    passes: int = 1  # times each random network was timed, passes apart (its fastest kept)
    held_out: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # mode -> metrics
    baselines: Mapping[str, float] = field(default_factory=dict)  # name -> fitted constant

    def kernel_seconds(self, records: Sequence[OpRecord], mode: str) -> np.ndarray:
        """Predicted seconds of each call."""
        out = np.zeros(len(records))
        if not records:
            return out
        x = np.array([features(r, mode) for r in records])
        x[:, 0] = np.maximum(x[:, 0], 0)
        flops = np.array([r.cost.flops for r in records], dtype=float)
        nbytes = np.array([r.cost.bytes for r in records], dtype=float)
        self._fill(out, x, flops, nbytes, [op_kind(r) for r in records])
        return out

    def _fill(self, out: np.ndarray, x: np.ndarray, flops: np.ndarray, nbytes: np.ndarray,
              kinds: Sequence[OpKind | None]) -> None:
        for kind in set(kinds):
            idx = np.array([i for i, k in enumerate(kinds) if k is kind])
            reg = self.kinds.get(kind, self.fallback) if kind is not None else self.fallback
            xi = x[idx] if reg is not self.fallback else _with_kind(x[idx], kind)
            out[idx] = reg.seconds(xi, flops[idx], nbytes[idx])

    def overhead_seconds(self, report: CostReport, modules: int, param_tensors: int) -> float:
        """What the step costs beyond its kernels."""
        return float(np.dot(self.step_weights, step_features(report, modules, param_tensors)))

    def summary(self) -> dict[str, object]:
        return {"fingerprint": self.fingerprint, "threads": self.threads,
                "torch_version": self.torch_version, "created": self.created, "quick": self.quick,
                "networks": self.networks, "kernels": self.kernels,
                "busy_networks": self.busy_networks, "passes": self.passes,
                "step_weights_us": {f: w * 1e6 for f, w in zip(STEP_FEATURES, self.step_weights,
                                                                strict=True)},
                "held_out": {m: dict(v) for m, v in self.held_out.items()},
                "baselines": dict(self.baselines),
                "kinds": {k.value: r.samples for k, r in self.kinds.items()}}

    def to_dict(self) -> dict[str, object]:
        """JSON-ready plain data (numbers, strings, lists, dicts; the trees as arrays): what a
        calibration file and a study database keep, read back by :meth:`from_dict` alone."""
        return {"format": MODEL_FORMAT, "version": MODEL_VERSION, "fingerprint": self.fingerprint,
                "threads": self.threads, "torch_version": self.torch_version,
                "created": self.created, "quick": self.quick, "networks": self.networks,
                "kernels": self.kernels, "busy_networks": self.busy_networks, "passes": self.passes,
                "held_out": {m: dict(v) for m, v in self.held_out.items()},
                "baselines": dict(self.baselines), "step_weights": list(self.step_weights),
                "kinds": {k.value: r.to_dict() for k, r in self.kinds.items()},
                "fallback": self.fallback.to_dict()}

    @classmethod
    def from_dict(cls, data: object) -> OperatorModel:
        """The model :meth:`to_dict` stored. Only types and values are read -- nothing is called or
        imported -- and each is checked: ModelFormatError names the first field that is wrong;
        OldModelFormatError says the data is an older, pickled model (never unpickled)."""
        d = reading.mapping(data, "model")
        if "regressors" in d and "format" not in d:
            raise OldModelFormatError("the per-kernel model is stored in an old format (a pickle, "
                                      "which dnncost no longer loads: loading one could run code)")
        d = reading.mapping(data, "model", required=_MODEL_FIELDS)
        if d["format"] != MODEL_FORMAT or d["version"] != MODEL_VERSION:
            raise ModelFormatError(f"the per-kernel model is stored as {d['format']!r} version "
                                   f"{d['version']!r}; this dnncost reads {MODEL_FORMAT!r} version "
                                   f"{MODEL_VERSION}")
        weights = reading.numbers(d["step_weights"], "model.step_weights", length=len(STEP_FEATURES))
        kinds = reading.mapping(d["kinds"], "model.kinds", optional=[k.value for k in OpKind])
        return cls(kinds={OpKind(k): KindRegressor.from_dict(v, f"model.kinds.{k}")
                          for k, v in kinds.items()},
                   fallback=KindRegressor.from_dict(d["fallback"], "model.fallback"),
                   step_weights=tuple(float(w) for w in weights),
                   fingerprint=reading.text(d["fingerprint"], "model.fingerprint"),
                   threads=reading.integer(d["threads"], "model.threads", low=0),
                   torch_version=reading.text(d["torch_version"], "model.torch_version"),
                   created=reading.text(d["created"], "model.created"),
                   quick=reading.boolean(d["quick"], "model.quick"),
                   networks=reading.integer(d["networks"], "model.networks", low=0),
                   kernels=reading.integer(d["kernels"], "model.kernels", low=0),
                   busy_networks=reading.integer(d["busy_networks"], "model.busy_networks", low=0),
                   passes=reading.integer(d["passes"], "model.passes", low=1),
                   held_out=_metrics(d["held_out"], "model.held_out"),
                   baselines=_numbers_by_name(d["baselines"], "model.baselines"))

    def freshness(self, *, fingerprint: str, threads: int, torch_version: str,
                  now: datetime | None = None) -> list[Freshness]:
        """Every reason this model's figures may be rough here (empty: none)."""
        out = []
        if self.quick:
            out.append(Freshness.QUICK)
        try:
            age = ((now or datetime.now(timezone.utc)) - datetime.fromisoformat(self.created))
            if age.total_seconds() > STALE_AFTER_S:
                out.append(Freshness.STALE)
        except (ValueError, TypeError):
            out.append(Freshness.STALE)
        if self.torch_version != torch_version:
            out.append(Freshness.OTHER_TORCH)
        if self.threads != threads:
            out.append(Freshness.OTHER_THREADS)
        if self.fingerprint != fingerprint and not (set(out) & {Freshness.OTHER_TORCH,
                                                                 Freshness.OTHER_THREADS}):
            out.append(Freshness.OTHER_MACHINE)
        if self.busy_networks > BUSY_SHARE * max(self.networks, 1):
            out.append(Freshness.BUSY)
        return out


MODEL_FORMAT = "dnncost-operator-model"  # source: our choice, names what the data is
MODEL_VERSION = 2  # source: our choice; 1 was the pickled regressors of older files, never loaded
_MODEL_FIELDS = ("format", "version", "fingerprint", "threads", "torch_version", "created", "quick",
                 "networks", "kernels", "busy_networks", "passes", "held_out", "baselines",
                 "step_weights", "kinds", "fallback")


def _numbers_by_name(data: object, where: str) -> dict[str, float]:
    return {k: reading.number(v, f"{where}.{k}", finite=False)
            for k, v in reading.mapping(data, where).items()}


def _metrics(data: object, where: str) -> dict[str, dict[str, float]]:
    """mode -> metric -> value (held-out and transfer errors)."""
    return {m: _numbers_by_name(v, f"{where}.{m}") for m, v in reading.mapping(data, where).items()}


def _with_kind(x: np.ndarray, kind: OpKind | None) -> np.ndarray:
    """The fallback regressor's features: the kind's index in place of the operator code."""
    x = x.copy()
    x[:, 0] = list(OpKind).index(kind) if kind is not None else 0
    return x


# -- fitting -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NetworkSample:
    """One random network's timed step: its counted calls, each call's kernel seconds, its
    module and parameter-tensor counts, and the measured step seconds."""

    name: str
    report: CostReport
    kernel_s: tuple[float, ...]
    modules: int
    param_tensors: int
    step_s: float


def fit_operator_model(samples: Sequence[NetworkSample], **meta: Any) -> OperatorModel:
    """Fit the kernel regressors and the step weights on ``samples`` (``meta``: OperatorModel's
    identifying fields: fingerprint, threads, torch_version, quick, busy_networks, passes,
    held_out)."""
    if not samples:
        raise ValueError("no timed networks to fit the time model on")
    records = [(r, s.report.mode, t) for s in samples
               for r, t in zip(s.report.records, s.kernel_s, strict=True) if t > 0]
    x = np.array([features(r, m) for r, m, _ in records])
    flops = np.array([r.cost.flops for r, _, _ in records], dtype=float)
    nbytes = np.array([r.cost.bytes for r, _, _ in records], dtype=float)
    secs = np.array([t for _, _, t in records])
    kinds = np.array([list(OpKind).index(k) if (k := op_kind(r)) is not None else -1
                      for r, _, _ in records])
    fitted = {}
    for i, kind in enumerate(OpKind):
        idx = kinds == i
        if idx.any():
            fitted[kind] = fit_kind(x[idx], flops[idx], nbytes[idx], secs[idx])
    xf = x.copy()
    xf[:, 0] = np.maximum(kinds, 0)
    fallback = fit_kind(xf, flops, nbytes, secs)
    # what the steps cost beyond their kernels
    feats = np.array([step_features(s.report, s.modules, s.param_tensors) for s in samples])
    rest = np.array([s.step_s - sum(s.kernel_s) for s in samples])
    steps = np.array([s.step_s for s in samples])
    # a call's correction (the clock's own cost) cannot exceed the fastest kernel timed: a step
    # never costs less than nothing
    lower = np.where(np.array(STEP_FEATURES) == "kernel_calls", -float(secs.min()), 0.0)
    weights = fit_step_weights(feats, rest, steps, lower=lower)
    return OperatorModel(kinds=fitted, fallback=fallback, step_weights=tuple(float(w) for w in weights),
                         created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         networks=len({s.name for s in samples}), kernels=len(records), **meta)


# -- predicting ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpTime:
    """One operator call and its predicted seconds."""

    record: OpRecord
    kind: OpKind | None
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
    caveats: tuple[Freshness, ...] = ()  # why the calibration may be rough here

    @property
    def step_s(self) -> float:
        """Predicted seconds of one step."""
        return sum(c.seconds for c in self.calls) + self.step_overhead_s

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
        return {"model": self.model, "mode": self.mode, "batch_size": self.batch_size,
                "input_shape": "x".join(map(str, self.input_shape)),
                "predicted_step_ms": self.step_s * 1e3,
                "samples_per_s": self.batch_size / self.step_s if self.step_s else math.nan,
                "dataset_size": self.dataset_size,
                "predicted_epoch_s": self.epoch_s, "gflops": self.flops / 1e9,
                "calls": len(self.calls), "uncovered": dict(self.uncovered),
                "caveats": [c.value for c in self.caveats]}


def _module_key(path: str, depth: int) -> str:
    key = ".".join(path.split(".")[:depth]) if depth >= 0 and path else path
    return key or "(model)"


def predict_report(report: CostReport, model: OperatorModel, *, modules: int = 0,
                   param_tensors: int = 0, strict: bool = True) -> Prediction:
    """Predict the step whose operator calls ``report`` lists (its mode and batch size);
    ``modules`` and ``param_tensors`` are the network's counts (kernels.module_counts)."""
    unsupported = dict(report.unsupported())
    if unsupported and strict:
        listed = ", ".join(f"{op} ({n} call{'s' if n > 1 else ''})" for op, n in unsupported.items())
        raise UncoveredOperatorError(
            f"{report.model} uses operators with no cost formula, so no time either: {listed}; "
            "allow uncovered operators (strict=False) to predict without them, counted as zero time")
    seconds = model.kernel_seconds(report.records, report.mode)
    calls = tuple(OpTime(r, op_kind(r), float(s)) for r, s in zip(report.records, seconds, strict=False))
    return Prediction(model=report.model, mode=report.mode, batch_size=report.batch_size,
                      input_shape=tuple(report.input_shape), calls=calls,
                      step_overhead_s=model.overhead_seconds(report, modules, param_tensors),
                      flops=report.total().flops, uncovered=unsupported)


def predict_time(model_or_spec: Any, *, input_shape: Sequence[int] | InputSpec | str | None = None,
                 batch_size: int = 1, mode: str = "train", calibration: OperatorModel | None = None,
                 threads: int | None = None,
                 dataset_size: int | None = None, optimizer: str = "sgd", name: str | None = None,
                 strict: bool = True) -> Prediction:
    """Predicted step time (and epoch time over ``dataset_size`` samples) of a network.

    ``model_or_spec``: an nn.Module or a spec dnncost.models.loading resolves. ``calibration``: the
    fitted model (default: this machine's stored one for ``threads``, read after the network is
    counted; NotCalibratedError when there is none).
    Counting happens on the meta device, so a prediction takes a fraction of one real step.
    """
    from torch import nn

    from dnncost.counting.counter import count
    from dnncost.prediction.kernels import module_counts

    if mode not in ("train", "eval"):
        raise InputSpecError(f"mode must be 'train' or 'eval', got '{mode}'")
    if dataset_size is not None and dataset_size < 1:
        raise InputSpecError(f"dataset size must be a positive integer, got {dataset_size}")
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
                              strict=strict)

    prediction = step(batch_size)
    if dataset_size is None:
        return prediction
    full, rest = divmod(dataset_size, batch_size)
    epoch = full * prediction.step_s + (step(rest).step_s if rest else 0.0)
    return replace(prediction, epoch_s=epoch, dataset_size=dataset_size)


# -- the stored calibration ----------------------------------------------------------------------
def save_operator_model(model: OperatorModel) -> str:
    """Store ``model`` in this machine's calibration file (its fingerprint's)."""
    from dnncost.core.environment import current_environment
    from dnncost.measuring.calibrate import Calibration, save_calibration

    env = current_environment("cpu", threads=model.threads)
    base = Calibration(fingerprint=model.fingerprint, device="cpu", threads=model.threads,
                       created=model.created, environment=env.to_dict())
    return str(save_calibration(base.with_section(SECTION, {"model": model.to_dict()})))


def model_in(calibration: Calibration) -> OperatorModel | None:
    """The per-kernel model a calibration file holds (its kernel section): the one reader of that
    section. None when the calibration has none; NotCalibratedError naming the command that makes
    a readable one when the section is malformed or in the old pickled format."""
    section = calibration.sections.get(SECTION)
    if section is None:
        return None
    try:
        return OperatorModel.from_dict(reading.mapping(section, SECTION, required=("model",))["model"])
    except OldModelFormatError as exc:
        raise NotCalibratedError(f"{exc}; run `{REFIT_COMMAND}` to refit it in the new format from "
                                 f"the samples the calibration kept, or `{CALIBRATE_COMMAND}` where "
                                 "there are none") from None
    except ModelFormatError as exc:
        raise NotCalibratedError(f"the stored per-kernel model is unreadable ({exc}); run "
                                 f"`{CALIBRATE_COMMAND}` again") from None


def read_operator_model(path: str) -> OperatorModel:
    """The per-kernel model stored in the calibration file at ``path`` (any machine's)."""
    from pathlib import Path

    from dnncost.core.errors import CalibrationError
    from dnncost.measuring.calibrate import read_calibration

    if not Path(path).is_file():
        raise NotCalibratedError(f"no calibration file at '{path}'")
    try:
        model = model_in(read_calibration(Path(path)))
    except CalibrationError as exc:
        raise NotCalibratedError(str(exc)) from None
    except NotCalibratedError as exc:
        raise NotCalibratedError(f"'{path}': {exc}") from None
    if model is None:
        raise NotCalibratedError(f"'{path}' holds no per-kernel model; run `{CALIBRATE_COMMAND}`")
    return model


def load_operator_model(device: str = "cpu", *, threads: int | None = None) -> OperatorModel:
    """This machine's fitted model; NotCalibratedError (naming the command to run) when absent."""
    from dnncost.measuring.calibrate import calibration_path, load_calibration

    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise InputSpecError(f"thread count must be a positive integer, got {threads}")
    cal = load_calibration(device, threads=threads)
    model = model_in(cal) if cal is not None else None
    if model is None:
        raise NotCalibratedError(
            f"this machine has no per-kernel calibration ({calibration_path(device, threads=threads)} "
            f"{'has none' if cal is not None else 'does not exist'}): run `{CALIBRATE_COMMAND}` "
            "first (about 5 minutes on 2 cores; --quick for a rough one in about a minute)")
    return model


def caveats_here(model: OperatorModel, *, threads: int) -> list[Freshness]:
    """Why ``model`` may be rough for a prediction on this machine at ``threads`` threads."""
    import torch

    from dnncost.core.environment import machine_fingerprint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fingerprint = machine_fingerprint("cpu", threads=threads)
    return model.freshness(fingerprint=fingerprint, threads=threads,
                           torch_version=str(torch.__version__))


__all__ = ["Freshness", "KindRegressor", "NetworkSample", "NotCalibratedError",
           "OpTime", "OperatorModel", "Prediction", "SECTION", "UncoveredOperatorError",
           "caveats_here", "conv_geometry", "features", "fit_kind", "fit_line", "fit_step_weights",
           "fit_operator_model", "load_operator_model", "op_kind", "predict_report",
           "model_in", "predict_time", "read_operator_model", "save_operator_model"]
