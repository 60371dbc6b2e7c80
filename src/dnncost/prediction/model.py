"""The per-kernel time model of one machine: what it is, and its plain-data form.

The model (after nn-Meter, Habitat and PALEO): a step's time is the sum of its aten kernels' times
plus what is not a kernel,

    step = sum over calls of kernel_s(call) + w . [train, eval, forward calls (train), backward
           calls, module calls, parameter tensors (train)]

``kernel_s`` is a regressor per kernel kind (:class:`~dnncost.counting.formulas.OpKind`, which the
formula registry states for every operator; a convolution whose output lies within its padding has
its own, :func:`~dnncost.prediction.features.regressor_key`): a non-negative line ``a + b * FLOPs +
c * bytes`` (fitted on relative error) times a gradient-boosted correction learned on log time from
the call's shape features (FLOPs, bytes, channels, groups, kernel, stride, spatial size, batch, the
operator, its phase). The line carries the regressor beyond the sampled sizes, the trees learn what
it misses. Both are fitted on kernels timed inside the steps of random networks
(:mod:`dnncost.prediction.sampling`, :mod:`dnncost.prediction.kernels`); ``w`` is fitted on the same
networks' measured steps minus their measured kernels, with a robust loss (a step another process
slowed weighs in little). A quarter of the random networks is held out of both fits, and the model's
error on them is stored with it, beside its error on a transfer set of standard networks it never
fitted on (:mod:`dnncost.prediction.transfer`); the residuals on both and the machine's pass-to-pass
noise make the interval of every prediction (:mod:`dnncost.prediction.interval`).

The model is a frozen record of plain numbers (the trees as :class:`~dnncost.prediction.trees.
TreeEnsemble` arrays); :meth:`OperatorModel.to_dict` and :meth:`OperatorModel.from_dict` are its one
stored form, read back by strict readers (:mod:`dnncost.prediction.reading`): nothing stored is ever
executed. :mod:`dnncost.prediction.fitting` fits it, :mod:`dnncost.prediction.storage` keeps it in
the calibration file, :mod:`dnncost.prediction.predict` predicts with it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum

import numpy as np

from dnncost.core.kinds import Mode
from dnncost.counting.cost import CostReport, OpRecord
from dnncost.prediction import reading
from dnncost.prediction.errors import ModelFormatError, OldModelFormatError
from dnncost.prediction.features import (
    N_FEATURES,
    REGRESSOR_KEYS,
    features,
    key_kind,
    regressor_key,
    with_kind,
)
from dnncost.prediction.interval import IntervalModel
from dnncost.prediction.kernels import STEP_FEATURES, step_features
from dnncost.prediction.trees import TreeEnsemble

STALE_AFTER_S = 86400.0  # source: issue 12, "older than a day"
BUSY_SHARE = 0.1  # source: our choice; a tenth of the networks slowed can bias the fit visibly


class Freshness(str, Enum):
    """Why a calibration's figures may be rough for this prediction."""

    QUICK = "quick"  # fitted on the quick sample: a rough figure
    STALE = "stale"  # older than a day
    OTHER_TORCH = "other_torch"  # fitted under another torch version
    OTHER_THREADS = "other_threads"  # fitted for another thread count
    OTHER_MACHINE = "other_machine"  # fitted on another machine
    BUSY = "busy"  # over BUSY_SHARE of its networks timed while other processes kept the CPU busy
    SPEED = "speed"  # the machine runs faster or slower now than while it was calibrated


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


@dataclass(frozen=True)
class OperatorModel:
    """The fitted per-kernel time model of one machine (device + thread count)."""

    kinds: Mapping[str, KindRegressor]  # features.regressor_key -> its regressor
    fallback: KindRegressor  # for a kind no sampled network had: all kernels, one regressor
    step_weights: tuple[float, ...]  # seconds per unit of each of kernels.STEP_FEATURES
    fingerprint: str = ""
    threads: int = 0
    torch_version: str = ""
    created: str = ""
    quick: bool = False
    networks: int = 0  # random networks fitted on (kernel probes apart)
    kernels: int = 0  # timed kernels fitted on
    busy_networks: int = 0  # random networks still timed on a busy machine after re-timing
    passes: int = 1  # times each random network was timed, passes apart (pooled)
    focus: str = ""  # the one configuration the random networks were drawn at ('32x3x32x32'), or ''
    # when drawn over the sampler's whole range (dnncost.prediction.calibration.Focus)
    held_out: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # mode -> metrics
    baselines: Mapping[str, float] = field(default_factory=dict)  # name -> fitted constant
    transfer: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # mode -> metrics on
    # the transfer set (dnncost.prediction.transfer)
    interval: IntervalModel = field(default_factory=IntervalModel)  # empty: no interval
    probe_s: float = 0.0  # the reference probe's median time while the calibration timed its
    # networks (dnncost.measuring.probe), the machine's speed then; 0: not recorded
    level: Mapping[str, float] = field(default_factory=dict)  # mode -> the machine's speed at the
    # last recheck against the calibration's (time now / time then, dnncost.prediction.recheck),
    # every prediction's factor; empty: never rechecked (1)
    level_checked: str = ""  # when that recheck ran (ISO 8601); '': never

    def kernel_seconds(self, records: Sequence[OpRecord], mode: str) -> np.ndarray:
        """Predicted seconds of each call."""
        out = np.zeros(len(records))
        if not records:
            return out
        x = np.array([features(r, mode) for r in records])
        x[:, 0] = np.maximum(x[:, 0], 0)
        flops = np.array([r.cost.flops for r in records], dtype=float)
        nbytes = np.array([r.cost.bytes for r in records], dtype=float)
        self._fill(out, x, flops, nbytes, [regressor_key(r) for r in records])
        return out

    def _fill(self, out: np.ndarray, x: np.ndarray, flops: np.ndarray, nbytes: np.ndarray,
              keys: Sequence[str | None]) -> None:
        """Each call's seconds from its regressor: its key's; a padded convolution's kind's when
        no padded one was fitted; else the fallback (with the kind in place of the operator)."""
        for key in set(keys):
            idx = np.array([i for i, k in enumerate(keys) if k == key])
            kind = key_kind(key) if key is not None else None
            reg = self.kinds.get(key) or self.kinds.get(kind.value) \
                if key is not None and kind is not None else None
            if reg is None:
                out[idx] = self.fallback.seconds(with_kind(x[idx], kind), flops[idx], nbytes[idx])
            else:
                out[idx] = reg.seconds(x[idx], flops[idx], nbytes[idx])

    def overhead_seconds(self, report: CostReport, modules: int, param_tensors: int,
                         kernel_s: float) -> float:
        """What the step costs beyond its kernels, which take ``kernel_s``."""
        return float(np.dot(self.step_weights,
                            step_features(report, modules, param_tensors, kernel_s)))

    def summary(self) -> dict[str, object]:
        return {"fingerprint": self.fingerprint, "threads": self.threads,
                "torch_version": self.torch_version, "created": self.created, "quick": self.quick,
                "networks": self.networks, "kernels": self.kernels,
                "busy_networks": self.busy_networks, "passes": self.passes, "focus": self.focus,
                "step_weights_us": {f: w * 1e6 for f, w in zip(STEP_FEATURES, self.step_weights,
                                                                strict=True)},
                "held_out": {m: dict(v) for m, v in self.held_out.items()},
                "transfer": {m: dict(v) for m, v in self.transfer.items()},
                "interval": self.interval.summary(), "probe_ms": self.probe_s * 1e3,
                "level": dict(self.level), "level_checked": self.level_checked,
                "baselines": dict(self.baselines),
                "kinds": {k: r.samples for k, r in self.kinds.items()}}

    def to_dict(self) -> dict[str, object]:
        """JSON-ready plain data (numbers, strings, lists, dicts; the trees as arrays): what a
        calibration file and a study database keep, read back by :meth:`from_dict` alone."""
        return {"format": MODEL_FORMAT, "version": MODEL_VERSION, "fingerprint": self.fingerprint,
                "threads": self.threads, "torch_version": self.torch_version,
                "created": self.created, "quick": self.quick, "networks": self.networks,
                "kernels": self.kernels, "busy_networks": self.busy_networks, "passes": self.passes,
                "focus": self.focus, "held_out": {m: dict(v) for m, v in self.held_out.items()},
                "transfer": {m: dict(v) for m, v in self.transfer.items()},
                "interval": self.interval.to_dict(), "probe_s": self.probe_s,
                "level": dict(self.level), "level_checked": self.level_checked,
                "baselines": dict(self.baselines), "step_weights": list(self.step_weights),
                "kinds": {k: r.to_dict() for k, r in self.kinds.items()},
                "fallback": self.fallback.to_dict()}

    @classmethod
    def from_dict(cls, data: object) -> OperatorModel:
        """The model :meth:`to_dict` stored. Only types and values are read -- nothing is called or
        imported -- and each is checked: ModelFormatError names the first field that is wrong;
        OldModelFormatError says the data is an older model: pickled (never unpickled), or of
        an earlier version, whose calls had other features (refit it from its kept samples)."""
        d = reading.mapping(data, "model")
        if "regressors" in d and "format" not in d:
            raise OldModelFormatError("the per-kernel model is stored in an old format (a pickle, "
                                      "which dnncost no longer loads: loading one could run code)")
        d = reading.mapping(data, "model", required=_MODEL_FIELDS,
                            optional=("probe_s", "level", "level_checked"))
        if d["format"] == MODEL_FORMAT and isinstance(d["version"], int) and \
                not isinstance(d["version"], bool) and d["version"] < MODEL_VERSION:
            raise OldModelFormatError(f"the per-kernel model is stored as version {d['version']}; "
                                      f"this dnncost reads version {MODEL_VERSION}, whose calls "
                                      "have other features")
        if d["format"] != MODEL_FORMAT or d["version"] != MODEL_VERSION:
            raise ModelFormatError(f"the per-kernel model is stored as {d['format']!r} version "
                                   f"{d['version']!r}; this dnncost reads {MODEL_FORMAT!r} version "
                                   f"{MODEL_VERSION}")
        weights = reading.numbers(d["step_weights"], "model.step_weights", length=len(STEP_FEATURES))
        kinds = reading.mapping(d["kinds"], "model.kinds", optional=list(REGRESSOR_KEYS))
        return cls(kinds={k: KindRegressor.from_dict(v, f"model.kinds.{k}")
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
                   focus=reading.text(d["focus"], "model.focus"),
                   held_out=_metrics(d["held_out"], "model.held_out"),
                   baselines=_numbers_by_name(d["baselines"], "model.baselines"),
                   transfer=_metrics(d["transfer"], "model.transfer"),
                   interval=IntervalModel.from_dict(d["interval"], "model.interval"),
                   probe_s=_probe_seconds(d.get("probe_s", 0.0)),
                   level=_level(d.get("level", {})),
                   level_checked=reading.text(d.get("level_checked", ""), "model.level_checked"))

    def level_text(self) -> str:
        """The last recheck's level as 'x0.96 (train), x1.00 (eval)'; '' without one."""
        return ", ".join(f"x{v:.2f} ({m})" for m, v in self.level.items())

    def level_of(self, mode: str) -> float:
        """The factor a ``mode`` step's prediction is scaled by: the last recheck's level, 1
        without one."""
        return float(self.level.get(mode, 1.0))

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
MODEL_VERSION = 10  # source: our choice; 1 was the pickled regressors of older files, never loaded;
# 2 was fitted on each network's fastest pass, 3 on its pooled passes read by STUDY_ESTIMATOR, 4
# adds the kernels' seconds to what the step costs beyond them (kernels.STEP_FEATURES), 5 a
# convolution's output area to each call's features (features.conv_geometry), 6 its GEMM rows
# (batch x output area), 7 each call's layout (channels-last or not), 8 its channels modulo the
# vector width (features.channel_remainders), 9 a thin 3x3 backward on a 2x2 output in the padded
# regressor (features.SLOW_BACKWARD_AREA), 10 no longer fitted on the large-map probes, nor
# storing the choice between fits with and without them
_MODEL_FIELDS = ("format", "version", "fingerprint", "threads", "torch_version", "created", "quick",
                 "networks", "kernels", "busy_networks", "passes", "focus", "held_out", "baselines",
                 "transfer", "interval", "step_weights", "kinds", "fallback")


def _probe_seconds(data: object) -> float:
    """The stored reference-probe time: a number of seconds, 0 or more (0: not recorded; a model
    stored before it was kept has none)."""
    value = reading.number(data, "model.probe_s")
    if value < 0:
        raise ModelFormatError(f"model.probe_s must be 0 or more seconds, got {value}")
    return value


def _level(data: object) -> dict[str, float]:
    """The stored level per mode: positive factors (a model stored before rechecks has none)."""
    level = {k: reading.number(v, f"model.level.{k}")
             for k, v in reading.mapping(data, "model.level", optional=[m.value for m in Mode]).items()}
    for mode, value in level.items():
        if value <= 0:
            raise ModelFormatError(f"model.level.{mode} must be a positive factor, got {value}")
    return level


def _numbers_by_name(data: object, where: str) -> dict[str, float]:
    return {k: reading.number(v, f"{where}.{k}", finite=False)
            for k, v in reading.mapping(data, where).items()}


def _metrics(data: object, where: str) -> dict[str, dict[str, float]]:
    """mode -> metric -> value (held-out and transfer errors)."""
    return {m: _numbers_by_name(v, f"{where}.{m}") for m, v in reading.mapping(data, where).items()}


__all__ = ["BUSY_SHARE", "Freshness", "KindRegressor", "MODEL_FORMAT", "MODEL_VERSION",
           "OperatorModel", "STALE_AFTER_S"]
