"""The one device layer: which device, how many threads, when the device has finished, how long a
step took, and what running out of memory means -- shared by counting, timing, training and the
micro-benchmarks, so each is checked and worded the same way everywhere."""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator

import torch

from dnncost.core.errors import DeviceError, InputSpecError, suggest

SUPPORTED_DEVICES = ("cpu", "cuda")  # the device types dnncost can time (and synchronise)
PROC_MEMINFO = "/proc/meminfo"  # source: proc(5), MemAvailable since Linux 3.14
CGROUP_MEMORY_MAX = "/sys/fs/cgroup/memory.max"  # source: Linux cgroup v2 docs, memory interface
CGROUP_MEMORY_CURRENT = "/sys/fs/cgroup/memory.current"  # source: idem
GIB = 1024**3  # bytes in a GiB


class BatchTooLargeError(InputSpecError):
    """A batch that does not fit in the device's memory."""


def quiet_cpp_extension_notice() -> None:
    """Importing torch.utils.benchmark (calibration) or torch.compile's inductor imports
    torch.utils.cpp_extension, which logs a warning ("No CUDA runtime is found, using
    CUDA_HOME=...") on a machine with a CUDA build of torch and no GPU -- noise in every study's
    output that says nothing about timing. Raised to ERROR only while the user has not set that
    logger's level."""
    log = logging.getLogger("torch.utils.cpp_extension")
    if log.level == logging.NOTSET:
        log.setLevel(logging.ERROR)


def resolve_device(device: str | torch.device, *, allow_meta: bool = False) -> torch.device:
    """Parse ``device`` and check this machine has it; DeviceError naming what exists otherwise.

    ``allow_meta`` admits the meta device (counting without arithmetic)."""
    if allow_meta and str(device) == "meta":
        return torch.device("meta")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(
            f"unknown device '{device}'.{suggest(str(device), SUPPORTED_DEVICES)} "
            f"Expected one of: {', '.join(SUPPORTED_DEVICES)} (or cuda:N)") from exc
    if parsed.type not in SUPPORTED_DEVICES:
        raise DeviceError(f"cannot run on device '{device}': expected cpu or cuda[:N]"
                          + (" (or meta to count without arithmetic)" if allow_meta else ""))
    if parsed.type == "cpu" and parsed.index not in (None, 0):
        raise DeviceError(f"device '{device}' does not exist: the CPU is one device, 'cpu'")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
            raise DeviceError(
                f"device '{device}' was requested but CUDA is not available on this machine "
                f"(torch {torch.__version__}, built for {build}, sees no GPU); use device 'cpu'")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise DeviceError(f"device '{device}' does not exist: this machine has {count} CUDA "
                              f"device(s), cuda:0..cuda:{count - 1}")
        if parsed.index is None:
            parsed = torch.device("cuda", torch.cuda.current_device())
    return parsed


def synchronize(device: torch.device) -> None:
    """Wait for all work queued on ``device`` (a no-op on CPU, whose ops run synchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_threads(threads: int) -> int:
    """``threads`` if it is a thread count this machine can honour; DeviceError otherwise.

    More threads than logical CPUs is refused rather than warned about: the threads would take
    turns on the cores, so a timing would measure the oversubscription, not the network, and the
    thread count stamped on the result would describe a machine that does not exist."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise DeviceError(f"threads must be a positive integer, got {threads!r}")
    cores = os.cpu_count() or 1
    if threads > cores:
        raise DeviceError(f"{threads} threads requested but this machine has {cores} logical "
                          f"CPU(s); use {cores} or fewer")
    return threads


@contextlib.contextmanager
def using_threads(threads: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count for the block (restoring it after); yields the count."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(check_threads(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


class StepClock:
    """Times one step: CUDA events on a GPU (synchronised on the end event), else perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cuda = device.type == "cuda"
        if self._cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
        self._t0 = 0.0

    def start(self) -> None:
        if self._cuda:
            self._start.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> float:
        """Seconds since start(), after the device has finished the work."""
        if self._cuda:
            self._end.record()
            self._end.synchronize()
            return self._start.elapsed_time(self._end) / 1e3  # elapsed_time is in milliseconds
        return time.perf_counter() - self._t0


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device or host allocation failure (torch.OutOfMemoryError or its CPU wording)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text
                                               or "can't allocate memory" in text)


@contextlib.contextmanager
def out_of_memory_as_error(*, batch_size: int, device: torch.device) -> Iterator[None]:
    """Turn a device out-of-memory failure into a BatchTooLargeError naming batch size and device."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not (isinstance(exc, MemoryError) or is_out_of_memory(exc)):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BatchTooLargeError(
            f"batch size {batch_size} with this input does not fit in the memory of {device} "
            f"({first_line[:160]}); try a smaller batch size or input") from exc


def available_memory_bytes(device: torch.device) -> int | None:
    """Bytes ``device`` can still allocate now, or None where this cannot be read.

    CPU: MemAvailable of /proc/meminfo (Linux), lowered to what the process's cgroup v2 memory
    limit still allows; CUDA: the free memory the driver reports."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    available = _meminfo_bytes("MemAvailable")
    limit, used = _read_int(CGROUP_MEMORY_MAX), _read_int(CGROUP_MEMORY_CURRENT)
    if limit is not None and used is not None:
        available = max(0, limit - used) if available is None else min(available, max(0, limit - used))
    return available


def _meminfo_bytes(key: str) -> int | None:
    try:
        with open(PROC_MEMINFO) as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name == key:
                    return int(rest.split()[0]) * 1024  # /proc/meminfo gives kB (KiB)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())  # "max" (no limit) is not an int
    except (OSError, ValueError):
        return None


def check_memory_fits(needed_bytes: int, *, device: torch.device, batch_size: int,
                      estimate: str = "counted peak estimate") -> None:
    """BatchTooLargeError before anything is allocated when a step's counted peak memory
    (dnncost.counting's ``peak_bytes``, a lower bound: no allocator overhead, no fragmentation)
    -- or another lower bound, named by ``estimate`` -- is more than ``device`` has available;
    nothing when it fits or cannot be known."""
    available = available_memory_bytes(device)
    if available is not None and needed_bytes > available:
        raise BatchTooLargeError(
            f"a step at batch size {batch_size} needs at least {needed_bytes / GIB:.2f} GiB of "
            f"memory ({estimate}) but {device} has {available / GIB:.2f} GiB available; "
            "try a smaller batch size or input")


__all__ = ["SUPPORTED_DEVICES", "BatchTooLargeError", "StepClock", "available_memory_bytes",
           "check_memory_fits", "check_threads", "is_out_of_memory", "out_of_memory_as_error",
           "quiet_cpp_extension_notice", "resolve_device", "synchronize", "using_threads"]
