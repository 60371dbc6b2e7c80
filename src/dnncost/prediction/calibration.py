"""Calibrate the per-kernel time model on random networks, and measure its error on networks it did not
fit: held-out random ones and the transfer set of standard networks.

``calibrate_operators`` draws random networks (:mod:`dnncost.prediction.sampling`; never a published
one), shrinks each one's batch until its training step is at most MAX_TRAIN_FLOPS, and times every
kernel inside its training and validation steps (:mod:`dnncost.prediction.kernels`) and the steps
themselves, in PASSES passes: the first draws and times networks while one more network, the passes
to come (each as long as its timing) and the fit are expected to fit in the budget -- a bound on the
whole call, on a busy machine too --, the others time the same networks again in the same order, so
that each network's passes lie a minute or more apart; a network's step is then read as every
measured step is (STUDY_ESTIMATOR over the plain steps of all its passes, its kernels likewise;
:func:`pooled`), each pass's own figure kept (their spread is the machine's pass-to-pass noise). On
a shared 2-core VM one pass of a network's step lands 11-13% (MAPE) from another, the fastest of 3
passes 4-8% from the fastest of 3 others (``benchmarks/noise_floor.py``, two runs): a slow stretch
of the machine mostly lasts seconds, not minutes. A network timed while other processes kept the
machine busy is timed again within its pass (not when the budget has no room for it; the fastest
attempt kept); the networks busy in every pass are counted in the model. Every HOLD_OUT-th network
(of fewer, the last) is held out: the model is fitted on the others, and its step-time error on the
held-out ones is stored with it. Before the random networks, pass 1 times the transfer set
(:mod:`dnncost.prediction.transfer`: hand-written standard networks, each at the largest batch under
the same FLOPs cap), and every later pass times it again first: the same protocol, inside the same
budget, never fitted on; its error is stored beside the held-out one. A calibration without a focus
also times kernel probes (sampling.kernel_probes: one-convolution networks on oneDNN's padded slow
path, wide 1x1, strided 1x1 and 3x3 convolutions on tiny maps, per-sample convolutions -- kernels
random networks draw too rarely) and fits its kernel regressors on them (not its step weights: a
probe's step is one kernel). A network or probe is counted once, before its first timing; every
pass times it against that count, and what pass 1 spent timing (not counting) is what each later
pass is expected to take (counting the 156 probes took 8.4 s of each 27-33 s pass on a 2-core
EPYC without AVX-512, whose calibration had room for 12 random networks when it counted in every
pass). The probes are timed in every pass, as the networks are:
timed in pass 1 only, three runs back to back, a slow stretch of that machine took them all (the
112x112-map probes 2-4x their time in another calibration, and the model's 224x224 validation steps
of MobileNet-like networks 1.3-1.9x). A full calibration draws every ANCHOR_EVERY-th random network
at one of the ANCHORS (224x224 at batch 8, the first stage of a 224x224 network at batch 8, 32x32 at
batch 32) instead of over the whole range; a quick one without a focus draws all of its few at the
anchors in turn, at full size, so that it meets the kernels of the networks it will predict
(:func:`anchor_of`). The residuals on both and the pass spreads make the interval of every
prediction (:mod:`dnncost.prediction.interval`). The baselines the evaluation compares against are
fitted here too, on the fitted random networks (not the probes): one scale factor per mode for
FLOPs, for parameters and for a plain roofline (peak FLOP/s and bytes/s the best any timed kernel
reached). After each network (not each kernel probe) the reference probe
(:mod:`dnncost.measuring.probe`, ``Probe.steady``) is timed; its median is stored with the model as
the machine's speed while it was calibrated, which ``dnncost predict`` and ``dnncost evaluate
--unseen`` set the machine's speed then against.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from dnncost.core.device import using_threads
from dnncost.core.environment import cpu_times, machine_load
from dnncost.core.errors import DnncostError
from dnncost.core.kinds import Mode
from dnncost.counting.cost import CostReport
from dnncost.counting.counter import count
from dnncost.counting.formulas import OpKind
from dnncost.measuring.measurement import STUDY_ESTIMATOR, estimate
from dnncost.measuring.probe import Probe
from dnncost.prediction.evaluation import mape, roofline_seconds, share_within
from dnncost.prediction.features import op_kind
from dnncost.prediction.fitting import NetworkSample, fit_operator_model
from dnncost.prediction.interval import IntervalModel, pass_spread
from dnncost.prediction.kernels import AlignmentError, count_step, module_counts, time_kernels
from dnncost.prediction.model import OperatorModel
from dnncost.prediction.predict import predict_report
from dnncost.prediction.samples import StoredSamples
from dnncost.prediction.sampling import (
    BATCHES,
    KernelProbe,
    RandomNet,
    is_probe,
    is_retired_probe,
    kernel_probes,
    random_network,
)
from dnncost.prediction.transfer import TransferNet, transfer_networks

MAX_TRAIN_FLOPS = 4e9  # source: our choice; a training step of ~0.1-0.3 s on 2 cores
BUDGET_S = 285.0  # source: issue 12, calibration <= 5 minutes on 2 cores: 4.75 min for the whole
# call (3.5 before the pointwise probes and ConvNeXt blocks, which left 23 random networks where 34
# had been; 4 before the probes at 64-384 channels, 36 s over 3 passes, which left 23 where 31 had
# been: such a call took 215 s wall; 4.5 before the large-map probes, ~17 s over 3 passes: calls
# took 231.5 and 244.6 s wall, 2-core Xeon)
QUICK_BUDGET_S = 25.0  # source: our choice, a rough model in well under a minute; it is also the
# study's own quick model, within the study's 8-minute budget (issue 24; 60 s before)
QUICK_PROBE_S = 18.0  # source: measured, the 156 kernel probes' one pass: 15.7-17.2 s for the 149
# before the per-sample ones, which add 0.9 s (2-core Xeon):
# a quick calibration without a focus times them on top of QUICK_BUDGET_S, not instead of one of its
# random networks (with them inside it, 3 were drawn and its transfer-set error went 18% -> 43%)
MIN_NETWORKS = 8  # source: our choice; at least 6 to fit on and 2 held out, whatever the budget
HOLD_OUT = 4  # source: our choice; every 4th network (a quarter) is held out
QUICK_MIN_NETWORKS = 3  # source: measured; the fewest that give a model of two networks and its
# held-out error (one), so that a quick calibration keeps close to its budget on a busy machine,
# where one small network took 26-50 s to time (2-core VM, another process on both cores): with 2,
# a quick calibration on a slow machine, its networks drawn at batch 32, fitted one and was off by
# 76.5% on the study's training steps (13.3% on its validation steps)
FIT_THREADS = 1  # source: measured, refitting a quick calibration's 3,299 kernels on this 2-core VM
# while another process kept both cores busy took 13 s on 1 thread and 333 s on 2 (463 kernels: 4.7 s
# and 85 s): gradient boosting on a few thousand rows is many short parallel regions, each waiting
# at its barrier for a thread the other process holds
FIT_S_PER_KERNEL = 1.5e-3  # source: measured, the same 3,299-kernel refit on 1 thread took 2.4-4.4 s
# (0.7-1.3 ms a kernel) with other processes running, 13 s (4 ms) with both cores taken: the time
# reserved in the budget for the fit, per timed kernel
PASSES = 3  # source: benchmarks/noise_floor.py (a 2-core VM, two runs): the fastest of 3
# passes of a network's step agreed with the fastest of 3 other passes within 4-8% (MAPE), one pass
# with another within 11-13%
QUICK_PASSES = 1  # source: our choice; a quick model is rough anyway, it keeps more networks
STEP_REPEATS = 2  # source: our choice; 2 plain timed steps a pass (the figure: over 6, from 3 passes)
KERNEL_RUNS = 1  # source: our choice; 1 timed run of every kernel a pass (lower quartile of 3 passes)
WARMUP = 1  # source: our choice; one step (allocations, optimizer state) before the timed ones
BUSY_RETRIES = 2  # source: our choice; on a shared 2-core machine under another process's load,
# steps timed while it ran came out 2-10x slower than their kernels: time again, twice
Network = RandomNet | TransferNet | KernelProbe  # what the calibration times: name, module,
# input_shape, batch_size


@dataclass(frozen=True)
class Calibrated:
    """The fitted model and the timed networks behind it (fitting, held out, transfer set)."""

    model: OperatorModel
    fitted: tuple[NetworkSample, ...]
    held_out: tuple[NetworkSample, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)  # the model's identifying fields
    transfer: tuple[NetworkSample, ...] = ()


def largest_batch(net: Network, *, max_train_flops: float) -> int | None:
    """The largest batch of BATCHES, at most ``net``'s own, whose training step is at most
    ``max_train_flops`` (counted on the meta device); None when even batch 1 is larger. A step's
    FLOPs are a line in the batch -- the optimizer's per step, the rest per sample -- read from
    two counts (at the network's batch and half of it)."""
    def flops(batch: int) -> float:
        return float(count(net.module, mode="train", batch_size=batch,
                           input_shape=net.input_shape).total().flops)

    full = flops(net.batch_size)
    if net.batch_size > 1:
        half = net.batch_size // 2
        per_sample = (full - flops(half)) / (net.batch_size - half)
        per_step = max(0.0, full - per_sample * net.batch_size)
    else:
        per_sample, per_step = full, 0.0
    fits = [b for b in sorted(set(BATCHES))
            if b <= net.batch_size and per_step + b * per_sample <= max_train_flops]
    if not fits:
        return None
    batch = max(fits)
    if batch not in (net.batch_size, net.batch_size // 2):  # not counted above
        try:  # the step runs at that batch (batch norm needs two values per channel: not at
            flops(batch)  # batch 1 on a 1x1 map)
        except DnncostError:
            return None
    return batch


@dataclass(frozen=True)
class Focus:
    """One input configuration a calibration is drawn around (the study's: 3x32x32 at batch 32)
    instead of the sampler's whole range: every random network takes this input side and starts
    from this batch, at full size (MAX_TRAIN_FLOPS), so that a short calibration meets the kernels
    of the networks it will predict instead of extrapolating from small ones."""

    input_shape: tuple[int, ...]
    batch_size: int
    stages: int | None = None  # at most this many stages of each network (sampling.random_network)

    @property
    def text(self) -> str:
        """'32x3x32x32': the batch and one sample's shape (' (first 2 stages)' when cut)."""
        cut = "" if self.stages is None else " (first stage)" if self.stages == 1 else \
            f" (first {self.stages} stages)"
        return "x".join(map(str, (self.batch_size, *self.input_shape))) + cut


QUICK_ANCHORS = (Focus((3, 224, 224), 8), Focus((3, 32, 32), 32))
"""source: the two configurations networks are most often timed at -- ImageNet-sized at batch 8 and
CIFAR-sized at batch 32 (the study's; both issue 12's unseen protocol's). Drawn under the FLOPs cap
alone, a random network at 224x224 runs at batch 1-2, so the kernels of a batch of 8 -- tensors of
tens of MiB, which caches and the allocator (benchmarks/page_faults.py) treat otherwise -- were
extrapolated from smaller ones: a real network's kernels there ran ~10% slower than predicted.
A quick calibration draws at these in turn."""
MAP_ANCHOR = Focus((3, 224, 224), 8, stages=1)
"""source: measured, development networks (2-core Xeon): whole random networks at 224x224, batch
8, under the FLOPs cap are narrow where their maps are large -- one calibration's validation steps
wrote no output of 16 MiB or more, where 12 timm networks' 224x224 validation steps wrote 274 --
and a model fitted on them alone put those 224x224 steps at a median 0.83 of their time (the time
missing 22-103 us a MiB of output of 4 MiB or more: fresh pages). A stem and one stage of an
ImageNet network at full width (sampling.random_network's ``stages``) meets such maps in a step a
calibration can pay for. Fitted with the large-map probes of the time (since removed,
sampling.kernel_probes), a calibration without such networks put the 12 networks' 224x224 rows at
14.4% / 11.4% MAPE (training / validation, 50% / 33% within +-10%), one drawing one random network
in six here at 8.7% / 8.2% (67% / 58%), their 32x32 rows at 9.2% / 10.8% and 9.8% / 9.1% (one
calibration each: a row moves by a few points between calibrations)."""
ANCHORS = (QUICK_ANCHORS[0], MAP_ANCHOR, QUICK_ANCHORS[1], MAP_ANCHOR)
"""The configurations a full calibration draws its anchored networks at, in turn: the first stages
of ImageNet networks every other time."""
ANCHOR_EVERY = 3  # source: our choice; every third random network of a full calibration is drawn
# at an anchor (alternating), the others over the sampler's whole range
ANCHOR_FLOPS_FACTOR = 3.0  # source: our choice; an anchored network may take 3x the FLOPs cap,
# so that most keep their batch of 8 at 224x224 (a step of ~0.3-0.6 s on 2 cores)


def anchor_of(seed: int, *, quick: bool = False) -> Focus | None:
    """The anchor random network ``seed`` is drawn at, or None (the sampler's whole range): in a
    full calibration every ANCHOR_EVERY-th network; in a quick one (without a focus) every network,
    the anchors in turn. Drawn under a tenth of the FLOPs cap from inputs of 64x64 or less, a quick
    model (source: measured, one draw each, the development set) was 15.9% / 17.4% (train / eval
    MAPE) off on the zoo's networks, nearly all too slow; drawn at the anchors, 9.6% / 6.6% (on
    torchvision's networks 11.3% / 7.3% before, 13.5% / 8.5% after)."""
    if quick:
        return QUICK_ANCHORS[seed % len(QUICK_ANCHORS)]
    if seed % ANCHOR_EVERY != ANCHOR_EVERY - 1:
        return None
    return ANCHORS[(seed // ANCHOR_EVERY) % len(ANCHORS)]


def sized_network(seed: int, *, max_train_flops: float, focus: Focus | None = None
                  ) -> RandomNet | None:
    """Random network ``seed`` (at ``focus``'s input side and batch, when given) at its
    :func:`largest_batch`; None when even batch 1 is larger."""
    net = random_network(seed, side=focus.input_shape[-1] if focus is not None else None,
                         batch=focus.batch_size if focus is not None else None,
                         stages=focus.stages if focus is not None else None)
    batch = largest_batch(net, max_train_flops=max_train_flops)
    return replace(net, batch_size=batch) if batch else None


QUICK_TRANSFER = ("plain", "bottleneck", "inverted_residual", "attention")
"""source: measured, one study run each (2-core Xeon): with all six designs in its 20 s the study's
quick calibration drew 4 random networks and its model was off by 18.0% / 21.9% (train / eval) on
the study's networks; with these four it had drawn 6 and was off by 13.6% / 14.9%. A quick
calibration times these; a full one all of transfer.NETWORKS."""


def sized_transfer_set(*, max_train_flops: float, larger: bool,
                       designs: Collection[str] | None = None) -> list[TransferNet]:
    """The transfer set (the larger input too when ``larger``; only ``designs`` when given), each
    network at its :func:`largest_batch`; a network above the cap even at batch 1 is left out."""
    out = []
    for net in transfer_networks(larger=larger, designs=designs):
        batch = largest_batch(net, max_train_flops=max_train_flops)
        if batch:
            out.append(replace(net, batch_size=batch))
    return out


def count_network(net: Network) -> dict[tuple[str, str], CostReport]:
    """``net``'s step counted in both modes, keyed by (name, mode) as :func:`measure_network`'s
    ``counted``."""
    return {(net.name, mode.value): count_step(net.module, net.input_shape,
                                               batch_size=net.batch_size, mode=mode.value)
            for mode in Mode}


def measure_network(net: Network, *,
                    counted: dict[tuple[str, str], CostReport] | None = None) -> list[NetworkSample]:
    """Time ``net``'s kernels and steps in both modes (one NetworkSample per mode). ``counted``
    keeps each network's count per mode between calls (:func:`count_network`): the same step's
    count does not change, so a network timed again is not counted again."""
    modules, params = module_counts(net.module)
    out = []
    for mode in Mode:
        key = (net.name, mode.value)
        timed = time_kernels(net.module, net.input_shape, batch_size=net.batch_size, mode=mode.value,
                             runs=KERNEL_RUNS, warmup=WARMUP, step_repeats=STEP_REPEATS,
                             report=None if counted is None else counted.get(key))
        if counted is not None:
            counted[key] = timed.report
        out.append(NetworkSample(net.name, timed.report, timed.kernel_s, modules, params,
                                 timed.step_s, step_samples=(timed.step_samples,)))
    return out


def fastest(attempts: Sequence[NetworkSample]) -> NetworkSample:
    """One pass's timed step from its attempts (a network timed again while the machine was busy):
    the attempt whose step was fastest, whole -- its kernels with it."""
    return min(attempts, key=lambda a: a.step_s)


def pooled(passes: Sequence[NetworkSample]) -> NetworkSample:
    """One network's timed step from its passes, read as every measured step is read: the step is
    STUDY_ESTIMATOR over the plain steps of every pass pooled (``dnncost time``, the study and the
    evaluations read a network's time the same way, so the model is fitted on the figure it is
    judged against), each kernel the lower quartile of its passes' times (the same quantile; the
    fastest pass's kernels where the passes counted different calls), and each pass's own figure
    kept in ``pass_steps`` (their spread is the machine's pass-to-pass noise)."""
    first = passes[0]
    steps = tuple(s for p in passes for s in p.step_samples)
    if len({len(p.kernel_s) for p in passes}) == 1:
        kernels = tuple(float(k) for k in np.percentile(np.array([p.kernel_s for p in passes]), 25,
                                                        axis=0)) if first.kernel_s else ()
    else:
        kernels = fastest(passes).kernel_s
    return replace(first, kernel_s=kernels, step_samples=steps,
                   step_s=estimate(steps, STUDY_ESTIMATOR) if steps else fastest(passes).step_s,
                   pass_steps=tuple(p.step_s for p in passes))


def measure_quietly(net: Network, *, threads: int, retries: int = BUSY_RETRIES,
                    until: float | None = None,
                    measure: Callable[[Network], list[NetworkSample]] = measure_network
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


def _measured_and_predicted(model: OperatorModel, samples: Sequence[NetworkSample]
                            ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per mode: the measured and the predicted step seconds of ``samples``."""
    out = {}
    for mode in (m.value for m in Mode):
        chosen = [s for s in samples if s.report.mode == mode]
        if chosen:
            out[mode] = (np.array([s.step_s for s in chosen]),
                         np.array([predict_report(s.report, model, modules=s.modules,
                                                  param_tensors=s.param_tensors, strict=False).step_s
                                   for s in chosen]))
    return out


def step_errors(model: OperatorModel, samples: Sequence[NetworkSample]) -> dict[str, dict[str, float]]:
    """Per mode: the count, MAPE, share within +-10% and share predicted too fast (below the
    measured time) of the model's step predictions on ``samples``."""
    return {mode: {"n": float(len(measured)), "mape": mape(predicted.tolist(), measured.tolist()),
                   "within_10pct": share_within(predicted.tolist(), measured.tolist()),
                   "too_fast": float(np.mean(predicted < measured))}
            for mode, (measured, predicted) in _measured_and_predicted(model, samples).items()}


def interval_model(model: OperatorModel, unseen: Sequence[NetworkSample],
                   timed: Sequence[NetworkSample]) -> IntervalModel:
    """The interval's ingredients (:mod:`dnncost.prediction.interval`): per mode, the residuals
    log(measured / predicted) on ``unseen`` (networks not fitted on) and the pass spreads of every
    network of ``timed`` timed in two passes or more."""
    residuals = {mode: tuple(float(math.log(m / p)) for m, p in zip(measured, predicted, strict=True)
                             if m > 0 and p > 0)
                 for mode, (measured, predicted) in _measured_and_predicted(model, unseen).items()}
    spreads = {mode: tuple(v for s in timed if s.report.mode == mode
                           and (v := pass_spread(s.pass_steps)) is not None)
               for mode in (m.value for m in Mode)}
    return IntervalModel({m: r for m, r in residuals.items() if r},
                         {m: v for m, v in spreads.items() if v})


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
    for mode in (m.value for m in Mode):
        chosen = [s for s in samples if s.report.mode == mode]
        for name in ("flops", "params", "roofline"):
            ratios = [s.step_s / v for s in chosen
                      if (v := baseline_inputs(s.report, out)[name]) > 0]
            out[f"{name}_{mode}"] = float(np.exp(np.mean(np.log(ratios)))) if ratios else 0.0
    return out


# -- the whole calibration -----------------------------------------------------------------------
def calibrate_operators(*, threads: int | None = None, quick: bool = False,
                        budget_s: float | None = None, min_networks: int | None = None,
                        passes: int | None = None, focus: Focus | None = None,
                        progress: Callable[[str], None] | None = None) -> Calibrated:
    """Draw, time and fit (see the module docstring) within ``budget_s`` for the whole call --
    drawing, timing, every pass and the fit (default: BUDGET_S; when ``quick``, QUICK_BUDGET_S and
    without a focus QUICK_PROBE_S more for the kernel probes) --
    over ``passes`` passes (default: PASSES, QUICK_PASSES when ``quick``). A network is drawn, or
    timed again on a busy machine, only while its expected time fits in what is left; at least
    ``min_networks`` networks (default: MIN_NETWORKS, QUICK_MIN_NETWORKS when ``quick``) are timed
    whatever the budget, so the budget is exceeded only when even they take longer. ``focus``
    draws every network at one input configuration, full size (:class:`Focus`)."""
    import torch

    from dnncost.core.environment import machine_fingerprint

    budget = budget_s if budget_s is not None else BUDGET_S if not quick else \
        QUICK_BUDGET_S + (QUICK_PROBE_S if focus is None else 0.0)
    passes = passes if passes is not None else QUICK_PASSES if quick else PASSES
    floor = min_networks if min_networks is not None else QUICK_MIN_NETWORKS if quick else MIN_NETWORKS
    if passes < 1:
        raise ValueError(f"passes must be a positive integer, got {passes}")
    whole_range = not quick and focus is None  # a full calibration over the sampler's whole range:
    # the larger transfer inputs
    nets: list[RandomNet] = []
    transfer: list[TransferNet] = []
    timed: dict[str, list[list[NetworkSample]]] = {}  # name -> each pass's samples (one per mode)
    busy_passes: dict[str, int] = {}
    measured = 0.0  # seconds pass 1 spent timing (not drawing, counting or failing): what each
    # later pass spends again
    measured_random = 0.0  # of which on random networks
    counting_random = 0.0  # seconds counting random networks (once each)
    kernels = 0  # kernel calls timed in pass 1: what the fit will take
    probe_s: list[float] = []  # the reference probe after each network: the machine's speed
    counted: dict[tuple[str, str], CostReport] = {}  # each network's count, made once
    start = time.perf_counter()

    def spent() -> float:
        return time.perf_counter() - start

    def reserved() -> float:
        """Seconds the passes to come of the networks timed so far and their fit will take."""
        return (passes - 1) * measured + kernels * FIT_S_PER_KERNEL

    def per_network() -> float:
        """What one more random network is expected to take over all its passes (0 before the
        first)."""
        return (passes * measured_random + counting_random) / len(nets) if nets else 0.0

    def measure(net: Network) -> None:
        nonlocal measured, measured_random, kernels, counting_random
        if (net.name, Mode.TRAIN.value) not in counted:  # counted once, before its timing: what a
            # later pass spends is its timing alone
            began = time.perf_counter()
            counted.update(count_network(net))
            counting_random += time.perf_counter() - began if isinstance(net, RandomNet) else 0.0
        began = time.perf_counter()
        samples, still_busy = measure_quietly(net, threads=n_threads,
                                              until=start + budget - reserved(),
                                              measure=partial(measure_network, counted=counted))
        if not isinstance(net, KernelProbe):
            probe_s.append(reference.steady())
        timed.setdefault(net.name, []).append(samples)
        busy_passes[net.name] = busy_passes.get(net.name, 0) + still_busy
        if len(timed[net.name]) == 1:
            took = time.perf_counter() - began
            measured += took
            measured_random += took if isinstance(net, RandomNet) else 0.0
            kernels += sum(len(s.kernel_s) for s in samples)

    with using_threads(threads) as n_threads:
        reference = Probe("cpu")
        # pass 1 times the transfer set, then draws and times random networks while one more, the
        # passes to come and the fit are expected to fit in the budget
        for standard in sized_transfer_set(max_train_flops=MAX_TRAIN_FLOPS,
                                           larger=whole_range,
                                           designs=QUICK_TRANSFER if quick else None):
            try:
                measure(standard)
            except (AlignmentError, DnncostError, RuntimeError):  # cannot be timed here: left out
                continue
            transfer.append(standard)
            _report(progress, standard, 1, passes, spent())
        probes: list[KernelProbe] = []
        for probe in kernel_probes() if focus is None else ():  # a focused calibration spends
            # its seconds on networks at its focus (source: measured, one study run each: with the
            # probes, 4 s of its 19 s, 3 random networks and a model 40% / 54% too slow on the
            # study's networks, none of which runs a padded kernel; without, 6 networks and
            # 14% / 27%, and 10% / 9% in an earlier run)
            try:  # the slow kernels random networks draw too rarely, fitted on, never held out
                measure(probe)
            except (AlignmentError, DnncostError, RuntimeError):
                continue
            probes.append(probe)
        if probes:
            _report(progress, probes[-1], 1, passes, spent())
        seed = 0
        while len(nets) < floor or spent() + per_network() + reserved() < budget:
            seed += 1
            anchor = anchor_of(seed - 1, quick=quick) if focus is None else None
            try:  # a full calibration's anchored networks may be larger, a quick one's may not
                net = sized_network(seed - 1, focus=focus or anchor, max_train_flops=MAX_TRAIN_FLOPS
                                    * (ANCHOR_FLOPS_FACTOR if anchor is not None and not quick
                                       else 1.0))
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
        order: list[Network] = [*transfer, *probes, *nets]
        for pass_ in range(2, passes + 1):  # the same networks again, in the same order
            for again in order:
                try:
                    measure(again)
                except (AlignmentError, DnncostError, RuntimeError):  # ran once: keep its passes
                    continue
                _report(progress, again, pass_, passes, spent())
        fingerprint = machine_fingerprint("cpu", threads=n_threads)

    def kept(net: Network) -> list[NetworkSample]:
        """Per mode the passes pooled (:func:`pooled`)."""
        return [pooled(attempts) for attempts in zip(*timed[net.name], strict=True)]

    fitted: list[NetworkSample] = []
    held: list[NetworkSample] = []
    for i, net in enumerate(nets):
        (held if is_held_out(i, len(nets)) else fitted).extend(kept(net))
    for probe in probes:
        fitted.extend(kept(probe))
    busy = sum(busy_passes[net.name] == len(timed[net.name]) for net in nets)
    meta = {"fingerprint": fingerprint, "threads": n_threads, "torch_version": str(torch.__version__),
            "quick": quick, "busy_networks": busy, "passes": passes,
            "focus": "" if focus is None else focus.text,
            "probe_s": float(np.median(probe_s)) if probe_s else 0.0}
    return refit(StoredSamples(tuple(fitted), tuple(held), meta,
                               tuple(s for net in transfer for s in kept(net))))


def is_held_out(index: int, networks: int) -> bool:
    """Whether network ``index`` (from 0) of ``networks`` is held out: every HOLD_OUT-th, and with
    fewer networks than HOLD_OUT the last, so that two or more always leave one to check on."""
    return index % HOLD_OUT == HOLD_OUT - 1 or (networks < HOLD_OUT and 0 < index == networks - 1)


def _report(progress: Callable[[str], None] | None, net: Network, pass_: int, passes: int,
            elapsed: float) -> None:
    if progress is not None:
        blocks = f", {len(net.blocks)} blocks" if isinstance(net, RandomNet) else \
            " (kernel probes)" if isinstance(net, KernelProbe) else " (transfer set)"
        progress(f"pass {pass_}/{passes} {net.name}: {net.batch_size}x"
                 f"{'x'.join(map(str, net.input_shape))}{blocks}, {elapsed:.0f} s")


def refit(stored: StoredSamples) -> Calibrated:
    """Fit the model on ``stored``'s fitting networks; its error on the held-out networks and on the
    transfer set, the interval made of both, and the baselines: what a calibration does after
    timing, so stored samples refit to the same model. The kernel probes are fitted on, but no
    baseline or pass-to-pass noise is read from them: a one-convolution step of a millisecond on
    oneDNN's slowest path would set the FLOPs line's scale and the noise. Probes an older
    calibration timed that the model no longer uses (sampling.is_retired_probe) are dropped, so
    that its samples refit to the model a calibration made now would give. The fit runs on
    FIT_THREADS threads (OpenMP and BLAS alike), whatever torch's setting."""
    fitted = tuple(s for s in stored.fitted if not is_retired_probe(s.name))
    with threadpool_limits(limits=FIT_THREADS):
        unseen = [*stored.held_out, *stored.transfer]
        fit = fit_operator_model(fitted, **dict(stored.meta))
        networks = [s for s in fitted if not is_probe(s.name)]
        model = replace(fit, held_out=step_errors(fit, stored.held_out),
                        transfer=step_errors(fit, stored.transfer),
                        interval=interval_model(fit, unseen, [*networks, *unseen]),
                        baselines=fit_baselines(networks))
    return Calibrated(model, fitted, tuple(stored.held_out), dict(stored.meta), tuple(stored.transfer))


def stored_samples(done: Calibrated) -> StoredSamples:
    """What to keep of a calibration so that :func:`refit` can fit it again."""
    return StoredSamples(done.fitted, done.held_out, done.meta, done.transfer)


__all__ = ["ANCHORS", "ANCHOR_EVERY", "ANCHOR_FLOPS_FACTOR", "BUDGET_S", "Calibrated", "FIT_THREADS",
           "Focus", "MAP_ANCHOR", "MAX_TRAIN_FLOPS", "Network", "QUICK_ANCHORS", "QUICK_BUDGET_S",
           "QUICK_TRANSFER",
           "anchor_of", "baseline_seconds", "calibrate_operators", "fastest", "fit_baselines",
           "interval_model", "is_held_out", "largest_batch", "measure_network", "measure_quietly", "pooled",
           "refit", "sized_network", "sized_transfer_set", "step_errors", "stored_samples"]
