"""The one device layer: which device, how many threads, when the device has finished, how long a
step took, and what running out of memory means -- shared by counting, timing, training and the
micro-benchmarks, so each is checked and worded the same way everywhere."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

from dnncost.errors import DeviceError, InputSpecError, suggest

SUPPORTED_DEVICES = ("cpu", "cuda")  # the device types dnncost can time (and synchronise)


class BatchTooLargeError(InputSpecError):
    """A batch that does not fit in the device's memory."""


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


@contextlib.contextmanager
def using_threads(threads: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count for the block (restoring it after); yields the count."""
    before = torch.get_num_threads()
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise DeviceError(f"threads must be a positive integer, got {threads!r}")
        torch.set_num_threads(threads)
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
            f"batch size {batch_size} does not fit in the memory of {device} ({first_line[:160]}); "
            "try a smaller batch size") from exc


__all__ = ["SUPPORTED_DEVICES", "BatchTooLargeError", "StepClock", "is_out_of_memory",
           "out_of_memory_as_error", "resolve_device", "synchronize", "using_threads"]
