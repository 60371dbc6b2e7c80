"""Calibrate the per-kernel time model on random networks, and measure its held-out error.

``calibrate_operators`` draws random networks (:mod:`dnncost.prediction.sampling`; never a
published one), shrinks each one's batch until its training step is at most MAX_TRAIN_FLOPS, and
times every kernel inside its training and validation steps (:mod:`dnncost.prediction.kernels`) and
the steps themselves, in PASSES passes: the first draws and times networks while one more network,
the passes to come (each as long as its timing) and the fit are expected to fit in the budget -- a
bound on the whole call, on a busy machine too --, the others time the same networks again in the
same order, so that each network's passes lie a minute or more apart; each network's fastest
pass is kept, whole. On a shared 2-core VM one pass of a network's step lands 11-13% (MAPE) from
another, the fastest of 3 passes 4-8% from the fastest of 3 others (``benchmarks/noise_floor.py``,
two runs): a slow stretch of the machine mostly lasts seconds, not minutes. A network timed while
other processes kept the machine busy is timed again within its pass (not when the budget has no
room for it; the fastest attempt kept); the networks busy in every pass are counted in the model.
Every HOLD_OUT-th network (of fewer, the last) is held out: the model is fitted on the others,
and its step-time error on the held-out ones is stored with it. The baselines the evaluation
compares against are fitted here too, on the same fitting networks: one scale factor per mode for
FLOPs, for parameters and for a plain roofline (peak FLOP/s and bytes/s the best any timed kernel
reached).
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from dnncost.core.device import using_threads
from dnncost.core.environment import cpu_times, machine_load
from dnncost.core.errors import DnncostError
from dnncost.counting.cost import CostReport
from dnncost.counting.counter import count
from dnncost.counting.formulas import OpKind
from dnncost.prediction.evaluation import roofline_seconds
from dnncost.prediction.kernels import AlignmentError, module_counts, time_kernels
from dnncost.prediction.predict import (
    NetworkSample,
    OperatorModel,
    fit_operator_model,
    op_kind,
    predict_report,
)
from dnncost.prediction.samples import StoredSamples
from dnncost.prediction.sampling import BATCHES, RandomNet, random_network

MAX_TRAIN_FLOPS = 4e9  # source: our choice; a training step of ~0.1-0.3 s on 2 cores
QUICK_MAX_TRAIN_FLOPS = 4e8  # source: our choice, ten times smaller
BUDGET_S = 210.0  # source: issue 12, calibration <= 5 minutes on 2 cores: 3.5 min of sampling
QUICK_BUDGET_S = 25.0  # source: our choice, a rough model in well under a minute
MIN_NETWORKS = 8  # source: our choice; at least 6 to fit on and 2 held out, whatever the budget
HOLD_OUT = 4  # source: our choice; every 4th network (a quarter) is held out
QUICK_MIN_NETWORKS = 2  # source: our choice; the fewest that give a model and its held-out error
# (one each), so that a quick calibration keeps close to its budget on a busy machine, where one
# small network took 26-50 s to time (measured on this 2-core VM, another process on both cores)
FIT_THREADS = 1  # source: measured, refitting a quick calibration's 3,299 kernels on this 2-core VM
# while another process kept both cores busy took 13 s on 1 thread and 333 s on 2 (463 kernels: 4.7 s
# and 85 s): gradient boosting on a few thousand rows is many short parallel regions, each waiting
# at its barrier for a thread the other process holds
FIT_S_PER_KERNEL = 1.5e-3  # source: measured, the same 3,299-kernel refit on 1 thread took 2.4-4.4 s
# (0.7-1.3 ms a kernel) with other processes running, 13 s (4 ms) with both cores taken: the time
# reserved in the budget for the fit, per timed kernel
PASSES = 3  # source: benchmarks/noise_floor.py (2026-12-02, a 2-core VM, two runs): the fastest of 3
# passes of a network's step agreed with the fastest of 3 other passes within 4-8% (MAPE), one pass
# with another within 11-13%
QUICK_PASSES = 1  # source: our choice; a quick model is rough anyway, it keeps more networks
STEP_REPEATS = 2  # source: our choice; 2 plain timed steps a pass (the fastest of 6 over 3 passes)
KERNEL_RUNS = 1  # source: our choice; 1 timed run of every kernel a pass (the fastest of 3 passes)
WARMUP = 1  # source: our choice; one step (allocations, optimizer state) before the timed ones
BUSY_RETRIES = 2  # source: our choice; on a shared 2-core machine under another process's load,
# steps timed while it ran came out 2-10x slower than their kernels (2026-12-02): time again, twice
MODES = ("train", "eval")


@dataclass(frozen=True)
class Calibrated:
    """The fitted model and the timed networks behind it (fitting and held out)."""

    model: OperatorModel
    fitted: tuple[NetworkSample, ...]
    held_out: tuple[NetworkSample, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)  # the model's identifying fields


def sized_network(seed: int, *, max_train_flops: float, max_side: int = 224) -> RandomNet | None:
    """Random network ``seed`` with the largest drawn-or-smaller batch whose training step is at
    most ``max_train_flops`` (counted on the meta device); None when even batch 1 is larger."""
    net = random_network(seed, max_side=max_side)
    report = count(net.module, mode="train", batch_size=net.batch_size, input_shape=net.input_shape)
    per_sample = report.total().flops / net.batch_size
    fits = [b for b in sorted(set(BATCHES)) if b <= net.batch_size and b * per_sample <= max_train_flops]
    return replace(net, batch_size=max(fits)) if fits else None


def measure_network(net: RandomNet) -> list[NetworkSample]:
    """Time ``net``'s kernels and steps in both modes (one NetworkSample per mode)."""
    modules, params = module_counts(net.module)
    out = []
    for mode in MODES:
        timed = time_kernels(net.module, net.input_shape, batch_size=net.batch_size, mode=mode,
                             runs=KERNEL_RUNS, warmup=WARMUP, step_repeats=STEP_REPEATS)
        out.append(NetworkSample(net.name, timed.report, timed.kernel_s, modules, params,
                                 timed.step_s))
    return out


def fastest(attempts: Sequence[NetworkSample]) -> NetworkSample:
    """One network's timed step from several attempts (passes, busy re-timings): the attempt whose
    step was fastest, whole -- its kernels with it. Not each kernel's fastest: a sum of minima over
    attempts is below every step that ran (each kernel's noise is cut separately)."""
    return min(attempts, key=lambda a: a.step_s)


def measure_quietly(net: RandomNet, *, threads: int, retries: int = BUSY_RETRIES,
                    until: float | None = None,
                    measure: Callable[[RandomNet], list[NetworkSample]] = measure_network
                    ) -> tuple[list[NetworkSample], bool]:
    """``measure`` ``net``; while other processes kept the machine busy (MachineLoad.busy) time it
    again, up to ``retries`` times -- each only when, as long as the attempt before, it ends by
    ``until`` (a time.perf_counter() reading; None: no limit) -- and keep the :func:`fastest` of
    the attempts. Also returns whether the last attempt was still busy."""
    attempts: list[list[NetworkSample]] = []
    busy = False
    for _ in range(1 + retries):
        began = time.perf_counter()
        before = cpu_times()
        attempts.append(measure(net))
        busy = machine_load(before, cpu_times(), threads=threads).busy
        now = time.perf_counter()
        if not busy or (until is not None and now + (now - began) > until):
            break
    return [fastest(per_mode) for per_mode in zip(*attempts, strict=True)], busy


def step_errors(model: OperatorModel, samples: Sequence[NetworkSample]) -> dict[str, dict[str, float]]:
    """Per mode: MAPE and share within +-10% of the model's step predictions on ``samples``."""
    out = {}
    for mode in MODES:
        rel = [predict_report(s.report, model, modules=s.modules, param_tensors=s.param_tensors,
                              strict=False).step_s / s.step_s - 1
               for s in samples if s.report.mode == mode]
        if rel:
            r = np.abs(np.array(rel))
            out[mode] = {"n": float(len(r)), "mape": float(r.mean()),
                         "within_10pct": float(np.mean(r <= 0.10))}
    return out


# -- the baselines -------------------------------------------------------------------------------
def baseline_inputs(report: CostReport, baselines: dict[str, float]) -> dict[str, float]:
    """The quantity each baseline scales: FLOPs, parameters, roofline seconds."""
    return {"flops": float(report.total().flops), "params": float(report.params),
            "roofline": roofline_seconds(report, peak_flops_per_s=baselines["peak_flops_per_s"],
                                         bytes_per_s=baselines["bytes_per_s"])}


def baseline_seconds(report: CostReport, baselines: dict[str, float]) -> dict[str, float]:
    """Each baseline's predicted step seconds: its fitted scale times its quantity."""
    return {name: baselines[f"{name}_{report.mode}"] * value
            for name, value in baseline_inputs(report, baselines).items()}


def fit_baselines(samples: Sequence[NetworkSample]) -> dict[str, float]:
    """Peak FLOP/s (best conv or matmul kernel) and bytes/s (best copy or elementwise kernel)
    the timed kernels reached, and per mode one scale factor per baseline: the geometric mean
    of measured step / quantity over ``samples``."""
    peak, bandwidth = 1.0, 1.0
    for s in samples:
        for r, t in zip(s.report.records, s.kernel_s, strict=False):
            if t <= 0:
                continue
            if op_kind(r) in (OpKind.CONV, OpKind.CONV_BACKWARD, OpKind.MATMUL):
                peak = max(peak, r.cost.flops / t)
            elif op_kind(r) in (OpKind.COPY, OpKind.ELEMENTWISE):
                bandwidth = max(bandwidth, r.cost.bytes / t)
    out = {"peak_flops_per_s": peak, "bytes_per_s": bandwidth}
    for mode in MODES:
        chosen = [s for s in samples if s.report.mode == mode]
        for name in ("flops", "params", "roofline"):
            ratios = [s.step_s / v for s in chosen
                      if (v := baseline_inputs(s.report, out)[name]) > 0]
            out[f"{name}_{mode}"] = float(np.exp(np.mean(np.log(ratios)))) if ratios else 0.0
    return out


# -- the whole calibration -----------------------------------------------------------------------
def calibrate_operators(*, threads: int | None = None, quick: bool = False,
                        budget_s: float | None = None, min_networks: int | None = None,
                        passes: int | None = None,
                        progress: Callable[[str], None] | None = None) -> Calibrated:
    """Draw, time and fit (see the module docstring) within ``budget_s`` for the whole call --
    drawing, timing, every pass and the fit (default: BUDGET_S, QUICK_BUDGET_S when ``quick``) --
    over ``passes`` passes (default: PASSES, QUICK_PASSES when ``quick``). A network is drawn, or
    timed again on a busy machine, only while its expected time fits in what is left; at least
    ``min_networks`` networks (default: MIN_NETWORKS, QUICK_MIN_NETWORKS when ``quick``) are timed
    whatever the budget, so the budget is exceeded only when even they take longer."""
    import torch

    from dnncost.core.environment import machine_fingerprint

    budget = budget_s if budget_s is not None else QUICK_BUDGET_S if quick else BUDGET_S
    passes = passes if passes is not None else QUICK_PASSES if quick else PASSES
    floor = min_networks if min_networks is not None else QUICK_MIN_NETWORKS if quick else MIN_NETWORKS
    if passes < 1:
        raise ValueError(f"passes must be a positive integer, got {passes}")
    max_flops = QUICK_MAX_TRAIN_FLOPS if quick else MAX_TRAIN_FLOPS
    nets: list[RandomNet] = []
    timed: dict[int, list[list[NetworkSample]]] = {}  # seed -> each pass's samples (one per mode)
    busy_passes: dict[int, int] = {}
    measured = 0.0  # seconds pass 1 spent timing (not drawing, counting or failing): what each
    # later pass spends again
    kernels = 0  # kernel calls timed in pass 1: what the fit will take
    start = time.perf_counter()

    def spent() -> float:
        return time.perf_counter() - start

    def reserved() -> float:
        """Seconds the passes to come of the networks timed so far and their fit will take."""
        return (passes - 1) * measured + kernels * FIT_S_PER_KERNEL

    def per_network() -> float:
        """What one more network is expected to take over all its passes (0 before the first)."""
        return passes * measured / len(nets) if nets else 0.0

    def measure(net: RandomNet) -> None:
        nonlocal measured, kernels
        began = time.perf_counter()
        samples, still_busy = measure_quietly(net, threads=n_threads,
                                              until=start + budget - reserved())
        timed.setdefault(net.seed, []).append(samples)
        busy_passes[net.seed] = busy_passes.get(net.seed, 0) + still_busy
        if len(timed[net.seed]) == 1:
            measured += time.perf_counter() - began
            kernels += sum(len(s.kernel_s) for s in samples)

    with using_threads(threads) as n_threads:
        seed = 0
        # pass 1 draws and times networks while one more, the passes to come and the fit are
        # expected to fit in the budget
        while len(nets) < floor or spent() + per_network() + reserved() < budget:
            seed += 1
            try:
                net = sized_network(seed - 1, max_train_flops=max_flops,
                                    max_side=64 if quick else 224)
                if net is None:
                    continue
                measure(net)
            except AlignmentError:  # the CPU ran other kernels than counted: not a clean sample
                continue
            except (DnncostError, RuntimeError):  # a drawn network this build cannot count or run
                continue  # (batch norm over one value per channel, an in-place op autograd
                # needs): draw again
            nets.append(net)
            _report(progress, net, 1, passes, spent())
        for pass_ in range(2, passes + 1):  # the same networks again, in the same order
            for net in nets:
                try:
                    measure(net)
                except (AlignmentError, DnncostError, RuntimeError):  # ran once: keep its passes
                    continue
                _report(progress, net, pass_, passes, spent())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fingerprint = machine_fingerprint("cpu", threads=n_threads)
    fitted: list[NetworkSample] = []
    held: list[NetworkSample] = []
    for i, net in enumerate(nets):
        per_mode = [fastest(attempts) for attempts in zip(*timed[net.seed], strict=True)]
        (held if is_held_out(i, len(nets)) else fitted).extend(per_mode)
    busy = sum(busy_passes[net.seed] == len(timed[net.seed]) for net in nets)
    meta = {"fingerprint": fingerprint, "threads": n_threads, "torch_version": str(torch.__version__),
            "quick": quick, "busy_networks": busy, "passes": passes}
    return refit(StoredSamples(tuple(fitted), tuple(held), meta))


def is_held_out(index: int, networks: int) -> bool:
    """Whether network ``index`` (from 0) of ``networks`` is held out: every HOLD_OUT-th, and with
    fewer networks than HOLD_OUT the last, so that two or more always leave one to check on."""
    return index % HOLD_OUT == HOLD_OUT - 1 or (networks < HOLD_OUT and 0 < index == networks - 1)


def _report(progress: Callable[[str], None] | None, net: RandomNet, pass_: int, passes: int,
            elapsed: float) -> None:
    if progress is not None:
        progress(f"pass {pass_}/{passes} {net.name}: {net.batch_size}x"
                 f"{'x'.join(map(str, net.input_shape))}, {len(net.blocks)} blocks, {elapsed:.0f} s")


def refit(stored: StoredSamples) -> Calibrated:
    """Fit the model on ``stored``'s fitting networks, its held-out error on the others and the
    baselines: what a calibration does after timing, so stored samples refit to the same model.
    The fit runs on FIT_THREADS threads (OpenMP and BLAS alike), whatever torch's setting."""
    with threadpool_limits(limits=FIT_THREADS):
        model = fit_operator_model(stored.fitted, **dict(stored.meta))
        model = replace(model, held_out=step_errors(model, stored.held_out),
                        baselines=fit_baselines(stored.fitted))
    return Calibrated(model, tuple(stored.fitted), tuple(stored.held_out), dict(stored.meta))


def stored_samples(done: Calibrated) -> StoredSamples:
    """What to keep of a calibration so that :func:`refit` can fit it again."""
    return StoredSamples(done.fitted, done.held_out, done.meta)


__all__ = ["BUDGET_S", "FIT_THREADS", "Calibrated", "MAX_TRAIN_FLOPS", "QUICK_BUDGET_S",
           "baseline_seconds", "calibrate_operators", "fastest", "fit_baselines", "is_held_out",
           "measure_network", "measure_quietly", "refit", "sized_network", "step_errors",
           "stored_samples"]
