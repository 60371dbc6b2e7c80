"""The reference workload: a short fixed probe timed between repeats, the noise floor of a run.

A step time alone cannot tell a slow network from a slow machine. The probe -- one square matmul
(compute-bound) and one copy of a few MiB (memory-bound), a few milliseconds in all -- does the same
work every time, so its time is the machine's speed at that moment: timed next to every repeat, at
the repeat's thread count and on its device, it shows when the machine slowed down (a neighbour,
frequency scaling, a noisy VM host), even when the run's own steps agree with each other.

The fastest probe seen on this machine, device and thread count is kept in the cache
(``~/.cache/dnncost/probe/<fingerprint>.json``, beside the calibration) as the quiet-machine
reference a single run is compared with; a session of interleaved runs also compares against its own
fastest probe (:func:`dnncost.measuring.measurement.probe_drift`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from dnncost.core.cache import cache_dir, write_cache_file
from dnncost.core.device import StepClock, synchronize
from dnncost.core.environment import machine_fingerprint
from dnncost.core.errors import OutputError
from dnncost.measuring.measurement import probe_drift

PROBE_MATMUL_SIZE = 256  # source: measured, 2*256^3 = 33.6 MFLOP took 0.4-0.7 ms on one core of
# this 2-core EPYC VM; its three 256 KiB matrices fit in a core's L2 (1 MiB), so it is compute-bound
PROBE_COPY_BYTES = 8 * 2**20  # source: measured, 8 MiB (8x a core's L2) copied in ~1-2 ms here:
# memory-bound, the resource a neighbour competes for
PROBE_REPS = 5  # source: our choice; 5 passes of ~1 ms span a scheduler time slice (CFS gives
# 3-4 ms slices with a few runnable threads per core), so the probe sees the machine's time-sharing
# as a network's step does, not only the slices it happened to fall inside


STEADY_WARMUP = 10  # source: measured (2-core Xeon VM): after ten passes the probe read 0.49-0.55
# ms, after a network's count and after a timed step alike
STEADY_READINGS = 5  # source: our choice, an odd count for a median


_WORKLOAD = f"mm{PROBE_MATMUL_SIZE}+copy{PROBE_COPY_BYTES}x{PROBE_REPS}:mean"  # what a record is of


@dataclass(frozen=True)
class ProbeReading:
    """The probe timed before and after one repeat, and the quiet-machine reference it is set against."""

    before_s: float
    after_s: float
    reference_s: float | None  # the fastest probe on record for this machine; None when unknown

    @property
    def probe_s(self) -> float:
        """The probe's time around the repeat: the mean of before and after."""
        return (self.before_s + self.after_s) / 2

    @property
    def drift(self) -> float:
        """Fractional slowdown of the probe against the reference (0.25: 25% slower); NaN without one."""
        return probe_drift(self.probe_s, self.reference_s)

    def to_dict(self) -> dict[str, object]:
        return {"before_s": self.before_s, "after_s": self.after_s, "probe_s": self.probe_s,
                "reference_s": self.reference_s, "drift": self.drift}


class Probe:
    """The reference workload on one device, its tensors allocated once."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        gen = torch.Generator().manual_seed(0)
        n = PROBE_MATMUL_SIZE
        self._a = torch.randn(n, n, generator=gen).to(self.device)  # (n, n)
        self._b = torch.randn(n, n, generator=gen).to(self.device)  # (n, n)
        self._out = torch.empty(n, n, device=self.device)  # (n, n)
        self._src = torch.ones(PROBE_COPY_BYTES // 4, device=self.device)  # float32 elements
        self._dst = torch.empty_like(self._src)
        self._clock = StepClock(self.device)
        self._once()  # first call: allocate workspaces, pick kernels

    def _once(self) -> None:
        torch.mm(self._a, self._b, out=self._out)
        self._dst.copy_(self._src)

    def run(self, *, reps: int = PROBE_REPS) -> float:
        """Seconds for one pass of the probe: the mean of ``reps`` passes back to back (a mean,
        not a median, so that time lost to other processes counts, as it does for a step)."""
        synchronize(self.device)
        self._clock.start()
        for _ in range(reps):
            self._once()
        return self._clock.stop() / reps

    def steady(self, *, warmup: int = STEADY_WARMUP, readings: int = STEADY_READINGS) -> float:
        """Seconds for one pass of the probe in a steady state: ``warmup`` passes first (its
        threads awake, its buffers in cache), then the median of ``readings`` passes. A single
        pass depends on what ran before it -- on a 2-core Xeon VM it read 2.1-3.1 ms after half a
        second idle, ~1.0 after counting a network, 0.73 after a timed step and 0.51 after ten
        passes (measured) -- so readings set against each other (a calibration's, a prediction's,
        an evaluation's) are taken so."""
        for _ in range(warmup):
            self.run()
        return float(sorted(self.run() for _ in range(readings))[readings // 2])


# -- the quiet-machine reference ------------------------------------------------------------------
def reference_path(device: torch.device | str = "cpu", *, threads: int) -> Path:
    """The file holding the fastest probe on record for this machine, device and thread count."""
    return cache_dir() / "probe" / f"{machine_fingerprint(device, threads=threads)}.json"


def load_reference(device: torch.device | str = "cpu", *, threads: int) -> float | None:
    """The fastest probe time (seconds) on record; None when none is, or the file is unreadable."""
    path = reference_path(device, threads=threads)
    try:
        data = json.loads(path.read_text())
        value = data["fastest_s"]
        if data.get("workload") != _WORKLOAD:
            return None  # recorded for another probe: not comparable
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def record_probe(seconds: float, device: torch.device | str = "cpu", *, threads: int) -> float:
    """Keep ``seconds`` as the reference if it is faster than the one on record; returns the
    reference now in force. A cache that cannot be written is not an error (the reference is
    then this run's own)."""
    best = load_reference(device, threads=threads)
    if best is not None and best <= seconds:
        return best
    path = reference_path(device, threads=threads)
    try:
        write_cache_file(path, json.dumps({"fastest_s": seconds, "workload": _WORKLOAD}).encode())
    except OutputError:
        pass  # nothing left behind
    return seconds


__all__ = ["PROBE_COPY_BYTES", "PROBE_MATMUL_SIZE", "PROBE_REPS", "Probe", "ProbeReading",
           "STEADY_READINGS", "STEADY_WARMUP",
           "load_reference", "record_probe", "reference_path"]
