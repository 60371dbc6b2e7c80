"""A time and memory budget for a computation that may blow up on some networks (torch-pruning's
index mapping grows without bound on Swin transformers: 6 GB in 100 s, until the machine runs out).

Every TICK_S a SIGALRM handler compares the elapsed time and the growth of this process's resident
memory with the budget; past either, :class:`OverBudget` is raised inside the block, whose Python
frames then unwind and free what they built. SIGALRM exists on POSIX and signals reach the main
thread only: elsewhere the block runs unbounded. Resident memory is read from /proc/self/statm
(Linux); where it cannot be read only the time is bounded."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

TICK_S = 0.5  # source: our choice; at the growth seen (~60 MB/s) a tick overshoots by ~30 MB


class OverBudget(Exception):  # noqa: N818 -- a verdict on the computation, reported by the caller
    """The block ran past its time or memory budget; ``str()`` says which."""


def resident_bytes() -> int | None:
    """This process's resident memory, or None where /proc/self/statm cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def budget(*, seconds: float, memory_bytes: int) -> Iterator[None]:
    """Raise OverBudget in the block once it has run ``seconds`` or grown the resident memory by
    ``memory_bytes`` (see the module docstring for where this applies)."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return
    start, base = time.monotonic(), resident_bytes()

    def check(signum: int, frame: FrameType | None) -> None:
        elapsed = time.monotonic() - start
        if elapsed > seconds:
            raise OverBudget(f"ran past {seconds:g} s")
        now = resident_bytes()
        if base is not None and now is not None and now - base > memory_bytes:
            raise OverBudget(f"grew past {memory_bytes / 2**30:.1f} GiB of memory")

    previous = signal.signal(signal.SIGALRM, check)
    signal.setitimer(signal.ITIMER_REAL, TICK_S, TICK_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


__all__ = ["OverBudget", "budget", "resident_bytes"]
