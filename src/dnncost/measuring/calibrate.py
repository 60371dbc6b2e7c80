"""Calibrate this machine: peak FLOP/s per dtype and thread count, and memory bandwidth.

A measured step time means little on its own; set against what the machine can do at best it
becomes an efficiency (achieved / peak FLOP/s). The peak is the fastest of two benchmarks, large
square matmuls and large 3x3 convolutions, because the two kinds of kernel come from different
libraries that need not reach the same speed: on an AMD EPYC (AVX-512) with torch's MKL build,
``torch.mm`` peaked at ~92 GFLOP/s per thread while oneDNN's float32 convolution reached ~211, so
a matmul-only peak put VGG-16's training step at 146% of "peak" (issue 13). With the peak the best
the machine was seen to do on either, no benchmark of the calibration exceeds 100% of it.
Calibrations are stored as JSON, one file per machine
fingerprint (hardware + device + thread count + torch), in ``~/.cache/dnncost/calibration/`` (or
``$DNNCOST_CACHE_DIR/calibration/``). The file holds named sections ('matmul', 'bandwidth', ...);
sections this module does not know (e.g. per-operator micro-benchmarks added later) are kept
verbatim on load and save, so the format grows without breaking older files.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from dnncost.core.cache import CACHE_ENV, cache_dir, write_cache_file
from dnncost.core.device import quiet_cpp_extension_notice, resolve_device, using_threads
from dnncost.core.environment import current_environment, machine_fingerprint
from dnncost.core.errors import CalibrationError, InputSpecError
from dnncost.core.inputs import parse_dtype
from dnncost.measuring.measurement import Measurement

SCHEMA_VERSION = 1  # bump when a stored section changes meaning; older files are then refused
CALIBRATED_DTYPES = ("float32", "float64", "bfloat16", "float16")  # source: the floating types
# a matmul/convolution peak means something for (integer peaks are torch.ao's business)
MATMUL_SIZES = {  # square n x n matmuls tried; the fastest is the peak
    "cpu": (512, 1024, 2048),  # source: large enough to leave the cache-bound regime on desktop CPUs
    "cuda": (4096, 8192),  # source: cuBLAS reaches its plateau from n ~ 4096 on recent GPUs
}
QUICK_MATMUL_SIZES = (256, 512)  # source: a rough figure in well under a second on any CPU
BANDWIDTH_BYTES = 256 * 2**20  # source: STREAM's rule, arrays >= 4x the last-level cache (<= 64 MiB)
QUICK_BANDWIDTH_BYTES = 32 * 2**20  # source: still larger than the L2 of any current CPU core
CONV_SHAPES = {  # (batch, channels in = out, height = width) of the 3x3 convolutions tried
    "cpu": ((32, 128, 16), (32, 256, 8), (32, 256, 16)),  # source: measured, VGG-16's CIFAR-size
    # convolutions at batch 32 (stages 2 and 3), where the study's networks reach their highest FLOP/s
    "cuda": ((64, 256, 28), (64, 512, 14)),  # source: our choice, ResNet-50/VGG-16 stage shapes at
    # ImageNet size, tens of GFLOP a call
}
QUICK_CONV_SHAPES = ((8, 64, 16),)  # source: our choice, 0.15 GFLOP a call, a rough figure quickly
MIN_RUN_TIME_S = 0.2  # source: torch.utils.benchmark blocked_autorange's default
QUICK_MIN_RUN_TIME_S = 0.02  # source: enough for a handful of blocks at the quick sizes


@dataclass(frozen=True)
class MatmulPeak:
    """The fastest square matmul measured for one dtype."""

    dtype: str
    size: int
    flops_per_s: float
    measurement: Measurement

    def to_dict(self) -> dict[str, object]:
        return {"size": self.size, "flops_per_s": self.flops_per_s,
                "samples_s": list(self.measurement.samples)}

    @classmethod
    def from_dict(cls, dtype: str, data: Mapping[str, Any]) -> MatmulPeak:
        return cls(dtype, int(data["size"]), float(data["flops_per_s"]),
                   Measurement(tuple(float(s) for s in data["samples_s"])))


@dataclass(frozen=True)
class ConvPeak:
    """The fastest 3x3 convolution (stride 1, padding 1, as many output as input channels)
    measured for one dtype; ``shape`` is (batch, channels, height = width)."""

    dtype: str
    shape: tuple[int, int, int]
    flops_per_s: float
    measurement: Measurement

    def to_dict(self) -> dict[str, object]:
        return {"shape": list(self.shape), "flops_per_s": self.flops_per_s,
                "samples_s": list(self.measurement.samples)}

    @classmethod
    def from_dict(cls, dtype: str, data: Mapping[str, Any]) -> ConvPeak:
        n, c, h = (int(v) for v in data["shape"])
        return cls(dtype, (n, c, h), float(data["flops_per_s"]),
                   Measurement(tuple(float(s) for s in data["samples_s"])))


@dataclass(frozen=True)
class Bandwidth:
    """Memory bandwidth from copying one large tensor into another (bytes read + written / s)."""

    nbytes: int
    bytes_per_s: float
    measurement: Measurement

    def to_dict(self) -> dict[str, object]:
        return {"nbytes": self.nbytes, "bytes_per_s": self.bytes_per_s,
                "samples_s": list(self.measurement.samples)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Bandwidth:
        return cls(int(data["nbytes"]), float(data["bytes_per_s"]),
                   Measurement(tuple(float(s) for s in data["samples_s"])))


@dataclass(frozen=True)
class Calibration:
    """What this machine (device + thread count) does at best.

    ``sections`` holds stored sections this module does not interpret (e.g. per-operator
    micro-benchmarks); :meth:`with_section` adds one, and saving keeps them.
    """

    fingerprint: str
    device: str
    threads: int
    created: str
    environment: Mapping[str, object]
    matmul: Mapping[str, MatmulPeak] = field(default_factory=dict)
    bandwidth: Bandwidth | None = None
    sections: Mapping[str, object] = field(default_factory=dict)
    conv: Mapping[str, ConvPeak] = field(default_factory=dict)  # absent in files from before it

    def peak_flops_per_s(self, dtype: str = "float32") -> float | None:
        """Calibrated peak FLOP/s for ``dtype``: the fastest of its matmul and convolution
        benchmarks; None when that dtype was not measured."""
        rates = [p.flops_per_s for p in (self.matmul.get(dtype), self.conv.get(dtype)) if p]
        return max(rates) if rates else None

    def with_section(self, name: str, data: object) -> Calibration:
        """A copy with section ``name`` set to JSON-ready ``data``."""
        if name in _BUILT_IN or name in _HEADER_KEYS:
            raise ValueError(f"'{name}' is a built-in section of the calibration")
        return replace(self, sections={**self.sections, name: data})

    def merged_over(self, older: Calibration) -> Calibration:
        """This calibration, keeping what ``older`` measured that this one did not."""
        return replace(self, matmul={**older.matmul, **self.matmul},
                       conv={**older.conv, **self.conv},
                       bandwidth=self.bandwidth or older.bandwidth,
                       sections={**older.sections, **self.sections})

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "schema": SCHEMA_VERSION, "fingerprint": self.fingerprint, "device": self.device,
            "threads": self.threads, "created": self.created, "environment": dict(self.environment),
            "matmul": {dtype: peak.to_dict() for dtype, peak in self.matmul.items()},
        }
        if self.conv:
            out["conv"] = {dtype: peak.to_dict() for dtype, peak in self.conv.items()}
        if self.bandwidth is not None:
            out["bandwidth"] = self.bandwidth.to_dict()
        out.update(self.sections)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        known = {*_BUILT_IN, *_HEADER_KEYS}
        return cls(
            fingerprint=str(data["fingerprint"]), device=str(data["device"]),
            threads=int(data["threads"]), created=str(data["created"]),
            environment=dict(data.get("environment", {})),
            matmul={dtype: MatmulPeak.from_dict(dtype, peak)
                    for dtype, peak in dict(data.get("matmul", {})).items()},
            bandwidth=Bandwidth.from_dict(data["bandwidth"]) if data.get("bandwidth") else None,
            sections={k: v for k, v in data.items() if k not in known},
            conv={dtype: ConvPeak.from_dict(dtype, peak)
                  for dtype, peak in dict(data.get("conv", {})).items()},
        )


_HEADER_KEYS = ("schema", "fingerprint", "device", "threads", "created", "environment")
_BUILT_IN = ("matmul", "conv", "bandwidth")


# -- where calibrations live ------------------------------------------------------------------------
def calibration_path(device: str | torch.device = "cpu", *, threads: int | None = None) -> Path:
    """The file the calibration of this machine, ``device`` and thread count is stored in."""
    dev = resolve_device(device)
    return cache_dir() / "calibration" / f"{machine_fingerprint(dev, threads=threads)}.json"


class CalibrationWarning(UserWarning):
    """A cached calibration that cannot be read was ignored."""


def load_calibration(device: str | torch.device = "cpu", *,
                     threads: int | None = None) -> Calibration | None:
    """The stored calibration for this machine, ``device`` and thread count; None when absent,
    CalibrationError when the file is unreadable, malformed or of another schema."""
    path = calibration_path(device, threads=threads)
    return read_calibration(path) if path.is_file() else None


def cached_calibration(device: str | torch.device = "cpu", *,
                       threads: int | None = None) -> Calibration | None:
    """:func:`load_calibration` for callers to whom the calibration is optional (the efficiency
    beside a measured time, the study's peak): an unreadable file is a CalibrationWarning and
    None, so a measurement that already ran is never lost to it."""
    try:
        return load_calibration(device, threads=threads)
    except CalibrationError as exc:
        warnings.warn(f"{exc}; ignored, so the share of peak is left out", CalibrationWarning,
                      stacklevel=2)
        return None


def read_calibration(path: Path) -> Calibration:
    """The calibration stored at ``path`` (any machine's); CalibrationError when the file is
    unreadable, malformed or of another schema."""
    try:
        data = json.loads(path.read_text())
        schema = data.get("schema")
    except (OSError, ValueError, AttributeError) as exc:
        raise CalibrationError(f"calibration file '{path}' is unreadable ({type(exc).__name__}: {exc}); "
                         "delete it or rerun 'dnncost calibrate'") from exc
    if schema != SCHEMA_VERSION:
        raise CalibrationError(f"calibration file '{path}' has schema {schema}, this dnncost reads "
                         f"schema {SCHEMA_VERSION}; rerun 'dnncost calibrate'")
    try:
        return Calibration.from_dict(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CalibrationError(f"calibration file '{path}' is malformed ({type(exc).__name__}: {exc}); "
                         "delete it or rerun 'dnncost calibrate'") from exc


def save_calibration(calibration: Calibration) -> Path:
    """Store ``calibration``, merged over a readable stored one of the same fingerprint (whose
    other dtypes and sections are kept); an unreadable or older-schema file is replaced.
    OutputError, with nothing left behind, when the cache folder cannot take it."""
    path = cache_dir() / "calibration" / f"{calibration.fingerprint}.json"
    if path.is_file():
        try:
            calibration = calibration.merged_over(read_calibration(path))
        except CalibrationError:
            pass  # replaced by the new measurement below
    # compact: a per-kernel model section holds tens of thousands of numbers (its trees), which
    # indented one to a line made the file about three times larger and slower to read
    return write_cache_file(path, json.dumps(calibration.to_dict(), separators=(",", ":")).encode())


# -- measuring -------------------------------------------------------------------------------------
def _timer_samples(stmt: str, tensors: Mapping[str, object], *, threads: int,
                   min_run_time: float) -> Measurement:
    """Per-call times of ``stmt`` via torch.utils.benchmark (warm-up, blocks, accelerator sync)."""
    quiet_cpp_extension_notice()
    from torch.utils.benchmark import Timer

    timer = Timer(stmt=stmt, globals=dict(tensors), num_threads=threads)
    return Measurement(tuple(timer.blocked_autorange(min_run_time=min_run_time).times))


def calibration_dtype(name: str) -> str:
    """The canonical name of a dtype calibration measures ('fp16' -> 'float16', the key results
    are stored under); InputSpecError for an unknown or non-floating one."""
    canonical = str(parse_dtype(name)).removeprefix("torch.")
    if canonical not in CALIBRATED_DTYPES:
        raise InputSpecError(f"calibration measures floating dtypes only ({', '.join(CALIBRATED_DTYPES)}), "
                             f"got '{name}'")
    return canonical


def measure_matmul(dtype: str, *, device: torch.device, threads: int, sizes: Sequence[int],
                   min_run_time: float = MIN_RUN_TIME_S) -> MatmulPeak:
    """Peak FLOP/s of n x n @ n x n matmuls (2 n^3 FLOPs each) over ``sizes``, from the fastest
    timed block of each size: the fastest wins."""
    torch_dtype = parse_dtype(dtype)
    best: MatmulPeak | None = None
    for n in sizes:
        a = torch.randn(n, n, device=device).to(torch_dtype)
        b = torch.randn(n, n, device=device).to(torch_dtype)
        m = _timer_samples("torch.mm(a, b)", {"a": a, "b": b, "torch": torch}, threads=threads,
                           min_run_time=min_run_time)
        # a peak is the best the machine does: the fastest block, since another process on a
        # shared machine only ever adds time (the median of a busy run sat below what networks
        # then achieved); n^2 outputs, n multiply-adds each, 1 MAC = 2 FLOPs
        flops_per_s = 2 * n**3 / m.min
        if best is None or flops_per_s > best.flops_per_s:
            best = MatmulPeak(dtype.strip().removeprefix("torch."), n, flops_per_s, m)
    assert best is not None, "sizes must not be empty"
    return best


def measure_conv(dtype: str, *, device: torch.device, threads: int,
                 shapes: Sequence[tuple[int, int, int]],
                 min_run_time: float = MIN_RUN_TIME_S) -> ConvPeak:
    """Peak FLOP/s of 3x3 convolutions (stride 1, padding 1, C -> C channels, no bias) over
    ``shapes`` (batch N, channels C, size H = W), from the fastest timed block of each: the
    fastest shape wins. 2 * N * C * C * 9 * H * W FLOPs a call (N*H*W outputs per channel, C*9
    multiply-adds each, 1 MAC = 2 FLOPs), the counter's convention for a convolution."""
    torch_dtype = parse_dtype(dtype)
    best: ConvPeak | None = None
    for n, c, h in shapes:
        x = torch.randn(n, c, h, h, device=device).to(torch_dtype)  # (N, C, H, W)
        w = torch.randn(c, c, 3, 3, device=device).to(torch_dtype)  # (C out, C in, 3, 3)
        m = _timer_samples("F.conv2d(x, w, padding=1)",
                           {"x": x, "w": w, "F": torch.nn.functional}, threads=threads,
                           min_run_time=min_run_time)
        flops_per_s = 2 * n * c * c * 9 * h * h / m.min  # the fastest block, as for the matmul
        if best is None or flops_per_s > best.flops_per_s:
            best = ConvPeak(dtype.strip().removeprefix("torch."), (n, c, h), flops_per_s, m)
    assert best is not None, "shapes must not be empty"
    return best


def measure_bandwidth(*, device: torch.device, threads: int, nbytes: int = BANDWIDTH_BYTES,
                      min_run_time: float = MIN_RUN_TIME_S) -> Bandwidth:
    """Bytes moved per second copying an ``nbytes`` tensor into another (read + write = 2 x nbytes)."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)  # 4 bytes per float32
    dst = torch.empty_like(src)
    m = _timer_samples("dst.copy_(src)", {"src": src, "dst": dst}, threads=threads,
                       min_run_time=min_run_time)
    nbytes = src.numel() * src.element_size()
    return Bandwidth(nbytes, 2 * nbytes / m.min, m)  # the fastest block, as for the matmul peak


def calibrate(device: str | torch.device = "cpu", *, threads: int | None = None,
              dtypes: Sequence[str] = ("float32",), quick: bool = False) -> Calibration:
    """Measure peak matmul and convolution FLOP/s for each dtype and the memory bandwidth (not
    stored; see save)."""
    dev = resolve_device(device)
    dtypes = [calibration_dtype(name) for name in dtypes]
    sizes = QUICK_MATMUL_SIZES if quick else MATMUL_SIZES[dev.type]
    shapes = QUICK_CONV_SHAPES if quick else CONV_SHAPES[dev.type]
    run_time = QUICK_MIN_RUN_TIME_S if quick else MIN_RUN_TIME_S
    with using_threads(threads) as n_threads:
        matmul = {name: measure_matmul(name, device=dev, threads=n_threads, sizes=sizes,
                                       min_run_time=run_time) for name in dtypes}
        conv = {name: measure_conv(name, device=dev, threads=n_threads, shapes=shapes,
                                   min_run_time=run_time) for name in dtypes}
        bandwidth = measure_bandwidth(device=dev, threads=n_threads, min_run_time=run_time,
                                      nbytes=QUICK_BANDWIDTH_BYTES if quick else BANDWIDTH_BYTES)
        env = current_environment(dev, threads=n_threads)
        fingerprint = machine_fingerprint(dev, threads=n_threads)
    return Calibration(
        fingerprint=fingerprint, device=str(dev), threads=n_threads,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        environment=env.to_dict(), matmul=matmul, bandwidth=bandwidth, conv=conv,
    )


__all__ = [
    "CACHE_ENV", "Bandwidth", "Calibration", "CalibrationWarning", "ConvPeak", "MatmulPeak", "cache_dir",
    "cached_calibration", "calibrate", "calibration_path", "load_calibration", "measure_bandwidth",
    "calibration_dtype", "measure_conv", "measure_matmul", "read_calibration", "save_calibration",
]
