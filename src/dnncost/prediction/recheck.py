"""The machine's speed now against its calibration's, read on the calibration's own networks.

A calibration fits the speed the machine had while it ran. On a shared VM that speed moves by
10-15% within an hour, every network alike, and the reference probe (a matmul and a copy,
:mod:`dnncost.measuring.probe`) does not follow it: twenty minutes after one calibration its
held-out and transfer networks ran a median 6% / 9% faster (train / eval; 15 and 17 of 19 faster)
while the probe had read the machine within 2% of its calibration on three rows of four, and the
unseen networks it was judged on came out 9-13% too slow; rechecked, 12 development networks'
median predicted / measured went from 1.12-1.20 to 1.02-1.09 per row (source: measured, 2-core
Xeon VM, torch 2.14, docs/results.md, set K and the recheck's section). :func:`recheck` times
again, as ``dnncost time`` does, the networks
the calibration timed but did not fit on -- its held-out random networks and its transfer set, at
the batch it used -- and gives per mode the median of their time now over their time then: the
machine's level, by which every prediction is scaled (``OperatorModel.level``) until the next
recheck or calibration. It costs about a minute where a calibration costs five.

Each step is rechecked in a fresh process, as ``dnncost time`` runs: the calibration times every
step in one process for minutes, and right after it that process ran its held-out and transfer
networks 1.16x (training, 21 of 22) and 1.25x (validation, 22 of 22) slower than a fresh one did
(``benchmarks/calibration_process.py``). So the level carries that difference as well as the
machine's drift, and a rechecked model predicts steps as a user's process meets them.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from torch import nn

from dnncost.core.errors import DnncostError
from dnncost.core.kinds import Mode
from dnncost.measuring.measurement import STUDY_ESTIMATOR, estimate
from dnncost.measuring.timing import StepOptions
from dnncost.prediction.fitting import NetworkSample
from dnncost.prediction.fresh_process import FreshJob, Repeat, time_round_robin
from dnncost.prediction.model import OperatorModel
from dnncost.prediction.samples import StoredSamples
from dnncost.prediction.sampling import random_network
from dnncost.prediction.transfer import transfer_network

RECHECK_ROUNDS = 2  # source: our choice; round-robin rounds per network, a median over ~20
# networks of two rounds each (each round's own noise ~4-7%, benchmarks/protocol_identity.py)


class RecheckError(DnncostError):
    """The calibration's networks cannot be timed again (none stored, or none rebuilt)."""


def rebuild_network(name: str, side: int) -> nn.Module:
    """A calibration network by its sample's name: a random one by its seed at the ``side`` it
    was timed at (drawn as the calibration drew it, or at an anchor: calibration.anchor_of), or a
    transfer one (its name holds its side)."""
    if name.startswith("random"):
        return random_network(int(name.removeprefix("random")), side=side).module
    net = transfer_network(name)
    if net is not None:
        return net.module
    raise RecheckError(f"cannot rebuild the calibration's network '{name}'")


@dataclass(frozen=True)
class Recheck:
    """Per mode: the level (median of time now / time at calibration), each network's ratio, and
    the noise floor of the same run (median spread of a network's rounds)."""

    level: dict[str, float]
    ratios: dict[str, dict[str, float]]
    noise: dict[str, float]
    seconds: float


def recheck_networks(stored: StoredSamples, mode: Mode | str, *, networks: int = 0
                     ) -> dict[str, NetworkSample]:
    """The ``mode`` samples a recheck times again, by name: the networks ``stored`` holds but the
    model was not fitted on (held-out, then transfer; the first ``networks`` of them when given)."""
    unseen = [*stored.held_out, *stored.transfer]
    names = list(dict.fromkeys(s.name for s in unseen))[:networks or None]
    return {s.name: s for s in unseen if s.report.mode == Mode(mode).value and s.name in names}


def recheck_jobs(calibrated: Mapping[str, NetworkSample], *, threads: int | None = None
                 ) -> list[FreshJob]:
    """One timing job per network of :func:`recheck_networks`: its step timed as ``dnncost time``
    times it, at the batch and input the calibration timed it at, each repeat on a fresh build."""
    return [FreshJob(n, f"{__name__}:rebuild_network",
                     (s.name, int(s.report.input_shape[-1])), tuple(s.report.input_shape),
                     StepOptions(batch_size=s.report.batch_size, mode=Mode(s.report.mode),
                                 threads=threads))
            for n, s in calibrated.items()]


def ratios(calibrated: Mapping[str, NetworkSample], timings: Mapping[str, Sequence[Repeat]]
           ) -> dict[str, float]:
    """Each network's time now (STUDY_ESTIMATOR over every timed step of its repeats) over its
    time at calibration; a network without a timing is left out."""
    return {name: estimate([t.measurement.samples for t in ts], STUDY_ESTIMATOR)
            / calibrated[name].step_s for name, ts in timings.items() if ts and name in calibrated}


def level_from(ratios: Mapping[str, float]) -> float:
    """The machine's level: the median over networks of time now / time at calibration."""
    return statistics.median(ratios.values())


def recheck(stored: StoredSamples, *, rounds: int = RECHECK_ROUNDS, networks: int = 0,
            progress: Callable[[str], None] | None = None) -> Recheck:
    """Time the networks ``stored`` holds but the model was not fitted on (held-out, transfer; at
    most ``networks`` of them when given) ``rounds`` times each, round-robin, per mode, as
    ``dnncost time`` does, against their calibration figures."""
    if rounds < 1:
        raise RecheckError(f"a recheck needs at least one round, got {rounds}")
    if not any(recheck_networks(stored, mode, networks=networks) for mode in Mode):
        raise RecheckError("the stored calibration kept no held-out or transfer networks to time "
                           "again: run `dnncost calibrate --ops`")
    started = time.perf_counter()
    level: dict[str, float] = {}
    measured: dict[str, dict[str, float]] = {}
    noise: dict[str, float] = {}
    for mode in Mode:
        calibrated = recheck_networks(stored, mode, networks=networks)
        timings = _time_as_a_user(calibrated, mode, rounds=rounds, progress=progress)
        measured[mode.value] = ratios(calibrated, timings)
        if measured[mode.value]:
            level[mode.value] = level_from(measured[mode.value])
        spread = [max(f) / min(f) - 1 for f in ([t.step_s for t in ts] for ts in timings.values())
                  if len(f) > 1]
        if spread:
            noise[mode.value] = statistics.median(spread)
    if not level:
        names = {n for mode in Mode for n in recheck_networks(stored, mode, networks=networks)}
        raise RecheckError(f"none of the calibration's {len(names)} held-out and transfer networks "
                           "ran again here: run `dnncost calibrate --ops`")
    return Recheck(level, measured, noise, time.perf_counter() - started)


def _time_as_a_user(calibrated: dict[str, NetworkSample], mode: Mode, *, rounds: int,
                    progress: Callable[[str], None] | None) -> dict[str, list[Repeat]]:
    """Each network's ``mode`` step timed as ``dnncost time`` times it, ``rounds`` times,
    round-robin, in a fresh process (:mod:`dnncost.prediction.fresh_process`); a network that
    fails to run is left out."""
    timings: dict[str, list[Repeat]] = {n: [] for n in calibrated}

    def done(name: str, index: int, timing: Repeat) -> None:
        timings[name].append(timing)
        if progress is not None:
            progress(f"{mode.value} round {index + 1}/{rounds}: {name} {timing.step_s * 1e3:.1f} ms")

    time_round_robin(recheck_jobs(calibrated), repeats=rounds, on_repeat=done,
                     on_error=lambda name, exc: None)
    return timings


def with_level(model: OperatorModel, result: Recheck, *, now: datetime | None = None
               ) -> OperatorModel:
    """``model`` with the recheck's level: its predictions scaled by it from now on."""
    when = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    return replace(model, level=dict(result.level), level_checked=when)


__all__ = ["RECHECK_ROUNDS", "Recheck", "RecheckError", "level_from", "ratios", "rebuild_network",
           "recheck", "recheck_jobs", "recheck_networks", "with_level"]
