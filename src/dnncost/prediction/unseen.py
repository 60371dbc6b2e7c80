"""The honest protocol: predict step time on networks the predictor has never seen.

The networks are torchvision's classification networks that are not in dnncost's zoo, timm's
(``timm:NAME``, when timm is installed) or Hugging Face's built from a config (``hf:TYPE``):
calibration (:mod:`dnncost.prediction.calibration`) only ever builds random networks and its own
hand-written transfer set, so every one of them is unseen by construction (tests/test_leak.py
enforces it). For
each input configuration (3x32x32 at batch 32 and 3x224x224 at batch 8) and mode (training and
validation step), every network is timed in ``rounds`` round-robin passes (network 1, 2, ..., then
again: :func:`dnncost.measuring.interleave.time_interleaved`, the reference probe around each pass,
each network built afresh for each pass so only one is in memory, each configuration and mode in a
fresh process: :mod:`dnncost.prediction.fresh_process`), so that drift in the machine's
load hits all networks alike; its measured time is read as every measured step is (STUDY_ESTIMATOR
over the timed steps of all rounds: the figure the study, ``dnncost time`` and the calibration use),
and the spread between the rounds' medians is reported as run-to-run noise, the reference probe
after its rounds (``Probe.steady``, as the calibration read it) against the calibration's as the
machine's speed change since (a model fitted on a faster machine predicts every step fast, and no
model can tell). Each network is
predicted (meta device, nothing run) by the per-kernel model, with its interval
(dnncost.prediction.interval: the coverage reported is the share of networks measured inside
theirs), and by three baselines, each one scale factor per mode fitted on the calibration's random
networks -- never on the evaluated ones: FLOPs-only, params-only and a plain roofline (sum of
max(FLOPs / peak, bytes / bandwidth), peak and bandwidth the best kernels' of the calibration),
every method's prediction scaled by the machine's level (the model's last recheck, or one measured
alongside: :func:`evaluate_unseen`). Each
network's result is handed to ``on_result`` the moment it is complete (the command stores it:
dnncost.study.unseen), and results already stored are skipped (``done``).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from dnncost.core.errors import DnncostError, ModelNotFoundError, suggest
from dnncost.core.kinds import Mode
from dnncost.counting.counter import count
from dnncost.measuring.measurement import STUDY_ESTIMATOR, estimate, probe_drift
from dnncost.measuring.timing import StepOptions
from dnncost.models.loading import HF_PREFIX, TIMM_PREFIX, load_model
from dnncost.models.registry import list_models
from dnncost.prediction.calibration import baseline_seconds
from dnncost.prediction.evaluation import Metrics
from dnncost.prediction.fresh_process import FreshJob, Repeat, time_round_robin
from dnncost.prediction.interval import COVERAGE
from dnncost.prediction.kernels import module_counts
from dnncost.prediction.model import OperatorModel
from dnncost.prediction.predict import calibrated_here, predict_report
from dnncost.prediction.recheck import (
    RecheckError,
    level_from,
    ratios,
    recheck_jobs,
    recheck_networks,
)
from dnncost.prediction.samples import StoredSamples

CONFIGS: tuple[tuple[tuple[int, ...], int], ...] = (((3, 32, 32), 32), ((3, 224, 224), 8))
"""source: issue 12, 3x32x32 at batch 32 and 3x224x224 at batch 8."""
METHODS = ("per_kernel", "flops", "params", "roofline")
MAX_STEP_GFLOPS = 250.0  # source: our choice; ResNet-50's 224 training step at batch 8 (~200 GFLOPs)
#  is in, the giants (regnet_y_128gf, vit_h_14) that take minutes a step on 2 cores are not
QUICK_MODELS = ("mobilenet_v3_small", "shufflenet_v2_x0_5", "mnasnet0_5", "regnet_x_400mf",
                "efficientnet_b0", "squeezenet1_1")  # source: our choice, small and varied
# (squeezenet1_1 is in the zoo: the quick list filters it out below, kept as a check of the filter)
ROUNDS, REPEATS, WARMUP = 3, 3, 2  # round-robin passes, timed steps and untimed warm-up steps per
# network and pass. source: benchmarks/noise_floor.py (a 2-core VM, two runs): the fastest
# of 3 passes of a network's step agreed with the fastest of 3 other passes within 4-8% (MAPE), of 2
# within 6-7%, one pass with another only within 11-13% -- a ground truth noisier than the +-10%
# band it is judged by judges nothing
ESTIMATOR = STUDY_ESTIMATOR.value  # how measured_s comes from the samples: a network's measured time,
# one definition everywhere (dnncost.measuring.measurement)

Key = tuple[str, tuple[int, ...], int, str]
"""(network, one sample's input shape, batch size, mode): one result of the protocol."""


def unseen_network_names() -> list[str]:
    """torchvision's classification networks whose names are not in dnncost's zoo."""
    import torchvision.models as tvm

    zoo = set(list_models())
    return [n for n in tvm.list_models(module=tvm) if n not in zoo]


LIBRARY_PREFIXES = (TIMM_PREFIX, HF_PREFIX)  # networks from outside torchvision: never in the zoo


def _is_unseen(name: str, unseen: Collection[str]) -> bool:
    """Whether ``name`` is one of ``unseen`` (torchvision's networks not in the zoo), a timm one or
    a Hugging Face one."""
    return name in unseen or name.startswith(LIBRARY_PREFIXES)


def check_unseen_names(names: Sequence[str]) -> list[str]:
    """``names`` (each once) when every one is an unseen network (:func:`unseen_network_names`, or
    ``timm:NAME`` / ``hf:TYPE``); ModelNotFoundError naming each that is not -- in dnncost's
    zoo, or no torchvision classification network (with the closest unseen names) -- and listing
    the unseen ones; a ``timm:`` or ``hf:`` name its library does not know (or the library not
    installed) is dnncost.models.loading's one-line error."""
    unseen = unseen_network_names()
    zoo = set(list_models())
    for name in names:
        if name.startswith(LIBRARY_PREFIXES):
            load_model(name)  # resolves the name only: nothing is built
    wrong = [f"'{name}' (in dnncost's zoo)" if name in zoo else
             f"'{name}' ({hint.strip().lower()})" if (hint := suggest(name, unseen, n=3)) else
             f"'{name}' (no torchvision classification network)"
             for name in dict.fromkeys(names) if not _is_unseen(name, unseen)]
    if wrong:
        raise ModelNotFoundError(
            f"not unseen network{'s' if len(wrong) > 1 else ''}: {', '.join(wrong)}. The unseen "
            f"networks (torchvision's classification networks not in the zoo, timm:NAME or "
            f"hf:TYPE): "
            f"{', '.join(unseen)}")
    return list(dict.fromkeys(names))


def _spec(name: str) -> str:
    """The model spec of an unseen network's name (a torchvision name; timm:NAME and hf:TYPE as
    they are)."""
    return name if name.startswith(LIBRARY_PREFIXES) else f"torchvision:{name}"


@dataclass(frozen=True)
class UnseenPoint:
    """One network at one configuration and mode: measured seconds and every method's prediction."""

    name: str
    input_shape: tuple[int, ...]
    batch_size: int
    mode: str
    measured_s: float
    round_medians_s: tuple[float, ...]
    predicted_s: dict[str, float]
    gflops: float
    samples: tuple[float, ...] = ()  # every timed step of every round, seconds
    estimator: str = ESTIMATOR
    interval_s: tuple[float, float] | None = None  # of measured_s, when the timing gives one
    predicted_interval_s: tuple[float, float] | None = None  # the per-kernel prediction's
    interval_level: float | None = None  # its stated coverage, e.g. 0.8
    probe_s: float | None = None  # the reference probe's median after its rounds, seconds
    level: float | None = None  # the machine's level every prediction was scaled by (None: not
    # recorded, results stored before the level was)

    @property
    def key(self) -> Key:
        return (self.name, tuple(self.input_shape), self.batch_size, self.mode)


@dataclass(frozen=True)
class LeftOut:
    """A network left out at one configuration and mode, and why."""

    name: str
    input_shape: tuple[int, ...]
    batch_size: int
    mode: str
    reason: str


@dataclass(frozen=True)
class UnseenResult:
    """The whole run: points, networks left out (and why), the calibration used."""

    points: tuple[UnseenPoint, ...]
    skipped: dict[str, str] = field(default_factory=dict)  # "name config" -> reason
    calibration: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0

    def by_group(self) -> dict[tuple[str, str], list[UnseenPoint]]:
        """The points per (configuration, mode), in the order first measured."""
        out: dict[tuple[str, str], list[UnseenPoint]] = {}
        for p in self.points:
            out.setdefault((_config(p.input_shape, p.batch_size), p.mode), []).append(p)
        return out

    def rows(self) -> list[dict[str, object]]:
        """One row per configuration, mode and method: n, MAPE %, share within +-10 %, Spearman,
        the method's MAPE as a multiple of the per-kernel model's, the shares predicted too fast
        and too slow, and (per-kernel model, every point with an interval) the coverage %."""
        out = []
        for (config, mode), pts in self.by_group().items():
            measured = [p.measured_s for p in pts]
            ref = Metrics.of([p.predicted_s["per_kernel"] for p in pts], measured).mape
            intervals = [p.predicted_interval_s for p in pts if p.predicted_interval_s is not None]
            for method in METHODS:
                m = Metrics.of([p.predicted_s[method] for p in pts], measured,
                               intervals=intervals if method == "per_kernel"
                               and len(intervals) == len(pts) else None)
                out.append({"input": config, "step": mode, "method": method, "n": m.n,
                            "mape_pct": 100 * m.mape, "within_10pct": 100 * m.within,
                            "spearman": m.spearman,
                            "x_per_kernel_error": m.mape / ref if ref else math.nan,
                            "too_fast_pct": 100 * m.too_fast, "too_slow_pct": 100 * m.too_slow,
                            "coverage_pct": 100 * m.coverage})
        return out

    def interval_level(self) -> float | None:
        """The stated coverage of the points' intervals (None: none has one)."""
        levels = {p.interval_level for p in self.points if p.interval_level is not None}
        return max(levels) if levels else None

    def levels(self) -> dict[str, float]:
        """The machine's level the predictions were scaled by, per configuration and mode (the
        median over its networks; a group without one recorded is absent)."""
        out = {}
        for (config, mode), pts in self.by_group().items():
            levels = [p.level for p in pts if p.level is not None]
            if levels:
                out[f"{config} {mode}"] = float(np.median(levels))
        return out

    def at_level(self, level: Mapping[str, float]) -> UnseenResult:
        """The same results with every prediction scaled to ``level`` (per mode; 1 where absent)
        instead of the level it carries: what the predictions were at another level, e.g. the
        stored one against the one measured alongside. A point without a recorded level is kept
        as it is."""
        def moved(p: UnseenPoint) -> UnseenPoint:
            if p.level is None:
                return p
            seconds, interval = _scaled(p.predicted_s, p.predicted_interval_s,
                                        level.get(p.mode, 1.0) / p.level)
            return replace(p, predicted_s=seconds, predicted_interval_s=interval,
                           level=level.get(p.mode, 1.0))
        return replace(self, points=tuple(moved(p) for p in self.points))

    def noise(self) -> dict[str, float]:
        """Run-to-run noise per configuration and mode: the median over networks of
        (largest - smallest round median) / smallest (NaN with one round)."""
        out = {}
        for (config, mode), pts in self.by_group().items():
            spreads = [(max(p.round_medians_s) - min(p.round_medians_s)) / min(p.round_medians_s)
                       for p in pts if len(p.round_medians_s) > 1]
            out[f"{config} {mode}"] = float(np.median(spreads)) if spreads else math.nan
        return out

    def speed_change(self) -> dict[str, float]:
        """How much slower the machine ran per configuration and mode than while the model was
        calibrated: the median over networks of the reference probe after their rounds, against
        the calibration's (0.2: 20% slower); NaN where either was not recorded."""
        probe_ms = self.calibration.get("probe_ms")
        calibrated = float(probe_ms) / 1e3 if isinstance(probe_ms, (int, float)) else None
        out = {}
        for (config, mode), pts in self.by_group().items():
            probes = [p.probe_s for p in pts if p.probe_s is not None]
            out[f"{config} {mode}"] = probe_drift(float(np.median(probes)), calibrated) if probes \
                else math.nan
        return out

    def to_dict(self) -> dict[str, object]:
        return {"rows": self.rows(), "noise": self.noise(), "speed_change": self.speed_change(),
                "levels": self.levels(), "skipped": self.skipped,
                "calibration": self.calibration, "seconds": self.seconds,
                "points": [{"name": p.name, "input": _config(p.input_shape, p.batch_size),
                            "mode": p.mode, "measured_s": p.measured_s,
                            "round_medians_s": list(p.round_medians_s),
                            "predicted_s": p.predicted_s, "gflops": p.gflops,
                            "predicted_interval_s": list(p.predicted_interval_s)
                            if p.predicted_interval_s is not None else None,
                            "interval_level": p.interval_level, "probe_s": p.probe_s,
                            "level": p.level, "samples_s": list(p.samples), "estimator": p.estimator}
                           for p in self.points]}


def _config(shape: Sequence[int], batch: int) -> str:
    return f"{batch}x{'x'.join(map(str, shape))}"


@dataclass(frozen=True)
class _Predicted:
    """One network's predictions at one configuration and mode, before it is timed, at the
    calibration's speed (level 1: :meth:`at` scales them to the machine's level)."""

    seconds: dict[str, float]  # method -> predicted seconds
    gflops: float
    interval_s: tuple[float, float] | None  # the per-kernel prediction's, at COVERAGE

    def at(self, level: float) -> _Predicted:
        """Every prediction and the interval scaled by the machine's ``level``."""
        seconds, interval = _scaled(self.seconds, self.interval_s, level)
        return replace(self, seconds=seconds, interval_s=interval)


def _scaled(seconds: Mapping[str, float], interval: tuple[float, float] | None, factor: float
            ) -> tuple[dict[str, float], tuple[float, float] | None]:
    """Every method's predicted seconds and the interval, times ``factor``."""
    return ({m: factor * v for m, v in seconds.items()},
            (factor * interval[0], factor * interval[1]) if interval is not None else None)


def _predict(name: str, shape: tuple[int, ...], batch: int, mode: str, model: OperatorModel
             ) -> _Predicted:
    """Every method's predicted seconds of one step, the per-kernel interval and the GFLOPs, at
    the speed of ``model`` (its level, if it has one)."""
    module = load_model(_spec(name)).build("meta")
    modules, params = module_counts(module)
    report = count(module, mode=mode, batch_size=batch, input_shape=shape, name=name)
    per_kernel = predict_report(report, model, modules=modules, param_tensors=params, strict=False)
    return _Predicted({"per_kernel": per_kernel.step_s, **baseline_seconds(report, dict(model.baselines))},
                      report.total().flops / 1e9, per_kernel.step_interval_s)


def build_unseen(name: str) -> nn.Module:
    """A fresh CPU instance of the unseen network ``name`` (one repeat's model)."""
    return load_model(_spec(name)).build("cpu")


def evaluate_unseen(model: OperatorModel, *, names: Sequence[str] | None = None,
                    configs: Sequence[tuple[tuple[int, ...], int]] = CONFIGS,
                    modes: Sequence[str | Mode] = tuple(Mode), rounds: int = ROUNDS,
                    repeats: int = REPEATS,
                    warmup: int = WARMUP, threads: int | None = None,
                    max_step_gflops: float = MAX_STEP_GFLOPS,
                    progress: Callable[[str], None] | None = None, done: Collection[Key] = (),
                    on_result: Callable[[UnseenPoint | LeftOut], None] | None = None,
                    recheck: StoredSamples | None = None, fresh_process: bool | None = None
                    ) -> UnseenResult:
    """Time and predict every unseen network (``names``: a subset) at each configuration and mode
    (see the module docstring). A network that cannot take an input, or whose step is above
    ``max_step_gflops``, is left out and listed with the reason. ``done``: results (keys) already
    kept, not measured again. ``on_result`` gets each point as soon as its last round is timed,
    and each left-out network as it is left out.

    Every prediction is scaled by the machine's level: the model's stored one (its last recheck),
    or, given the calibration's timed networks (``recheck``), the level measured alongside -- each
    round of a configuration and mode first times the calibration's held-out and transfer networks
    again (:func:`dnncost.prediction.recheck.recheck_jobs`), then the unseen ones, and the median of
    their time now over their time at calibration scales that group's predictions. The machine
    drifts by 5-10% within minutes (docs/results.md, the recheck's section); measured in the same
    rounds, the level has no time to go stale.

    Each configuration and mode is timed in a fresh process of its own
    (:mod:`dnncost.prediction.fresh_process`; ``fresh_process``: default its FRESH), as
    ``dnncost time`` times a step: after training groups, one process reads validation steps
    slower."""
    started = time.perf_counter()
    steady_probe = calibrated_here(model, threads=threads or torch.get_num_threads())  # another
    # machine's probe (or none) is no speed of this one
    unseen = unseen_network_names()
    chosen = [n for n in (names or unseen) if _is_unseen(n, unseen)]
    skipped = {n: "in dnncost's zoo or not a torchvision classification network"
               for n in (names or ()) if n not in chosen}
    points = []
    done = set(done)
    at_calibration = replace(model, level={})  # scaled per group below

    def leave_out(name: str, shape: tuple[int, ...], batch: int, mode: str, reason: str) -> None:
        skipped[f"{name} {_config(shape, batch)} {mode}"] = reason
        if on_result is not None:
            on_result(LeftOut(name, tuple(shape), batch, mode, reason))

    def time_group(shape: tuple[int, ...], batch: int, mode: str,
                   predicted: dict[str, _Predicted]) -> None:
        """Time the ``predicted`` networks at one configuration and mode, round-robin."""
        samples: dict[str, list[float]] = {n: [] for n in predicted}
        medians: dict[str, list[float]] = {n: [] for n in predicted}
        probes: dict[str, list[float]] = {n: [] for n in predicted}
        calibrated = recheck_networks(recheck, mode) if recheck is not None else {}
        alongside: dict[str, list[Repeat]] = {n: [] for n in calibrated}

        def level() -> float:
            """The machine's level now: measured alongside, or the model's stored one."""
            if recheck is None:
                return model.level_of(mode)
            measured = ratios(calibrated, alongside)
            if not measured:
                raise RecheckError(f"none of the calibration's {len(calibrated)} held-out and "
                                   f"transfer networks ran alongside the {mode} steps: run "
                                   "`dnncost calibrate --ops`, or evaluate without --recheck")
            return level_from(measured)

        def on_repeat(name: str, index: int, timing: Repeat) -> None:
            if name in calibrated:  # the calibration's network: the level's, no point of its own
                alongside[name].append(timing)
                if progress is not None:
                    progress(f"{_config(shape, batch)} {mode} round {index + 1}/{rounds}: recheck "
                             f"{name} {timing.step_s * 1e3:.1f} ms")
                return
            samples[name] += list(timing.measurement.samples)
            medians[name].append(timing.measurement.median)
            if timing.steady_probe_s is not None:
                probes[name].append(timing.steady_probe_s)
            if progress is not None:
                drift = timing.probe.drift if timing.probe is not None else math.nan
                progress(f"{_config(shape, batch)} {mode} round {index + 1}/{rounds}: {name} "
                         f"{timing.measurement.median * 1e3:.1f} ms, reference probe {drift:+.0%} "
                         f"({time.perf_counter() - started:.0f} s)")
            if index == rounds - 1:  # complete: handed on at once (an interruption loses only
                # the earlier rounds of networks not yet timed in the last one); the
                # calibration's networks ran first in every round, so the level is whole
                now = level()
                scaled = predicted[name].at(now)
                point = UnseenPoint(name, tuple(shape), batch, mode,
                                    estimate([samples[name]], STUDY_ESTIMATOR),
                                    tuple(medians[name]), scaled.seconds,
                                    scaled.gflops, samples=tuple(samples[name]),
                                    predicted_interval_s=scaled.interval_s,
                                    interval_level=COVERAGE
                                    if scaled.interval_s is not None else None,
                                    probe_s=float(np.median(probes[name])) if probes[name]
                                    else None, level=now)
                points.append(point)
                if on_result is not None:
                    on_result(point)

        def on_error(name: str, exc: Exception) -> None:
            if name in calibrated:  # left out of the level; the others carry it
                return
            if not isinstance(exc, DnncostError):
                raise exc
            leave_out(name, shape, batch, mode, str(exc).splitlines()[0][:200])

        options = StepOptions(batch_size=batch, mode=Mode(mode), threads=threads, warmup=warmup,
                              steps=repeats)
        jobs = [*recheck_jobs(calibrated, threads=threads),  # first in every round
                *(FreshJob(name, f"{__name__}:build_unseen", (name,), tuple(shape), options)
                  for name in predicted)]
        # no re-measures: each point is handed on (kept) as its last round finishes; its figure
        # is a low quantile of all rounds' steps, which a slowed round moves little
        time_round_robin(jobs, repeats=rounds, on_repeat=on_repeat, on_error=on_error,
                         steady_probe=predicted if steady_probe else (), fresh=fresh_process)

    for shape, batch in configs:
        for mode in (Mode(m).value for m in modes):
            predicted: dict[str, _Predicted] = {}
            for name in chosen:
                if (name, tuple(shape), batch, mode) in done:
                    continue
                try:
                    predicted[name] = _predict(name, shape, batch, mode, at_calibration)
                except DnncostError as exc:
                    leave_out(name, shape, batch, mode, str(exc).splitlines()[0][:200])
                    continue
                if predicted[name].gflops > max_step_gflops:
                    leave_out(name, shape, batch, mode,
                              f"{predicted[name].gflops:.0f} GFLOPs a step, above {max_step_gflops:.0f}")
                    del predicted[name]
            if predicted:
                time_group(shape, batch, mode, predicted)
    return UnseenResult(tuple(points), skipped, model.summary(), time.perf_counter() - started)


__all__ = ["CONFIGS", "ESTIMATOR", "MAX_STEP_GFLOPS", "METHODS", "QUICK_MODELS", "REPEATS", "ROUNDS",
           "WARMUP", "Key", "LeftOut", "UnseenPoint", "UnseenResult", "check_unseen_names", "evaluate_unseen",
           "unseen_network_names"]
