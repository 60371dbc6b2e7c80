"""Worker processes that die with the process that started them.

A spawned worker spends its first seconds importing torch; a parent killed outright (SIGKILL) in that
time must not leave it behind. :func:`run_guarded` is therefore the worker's entry point and lives in
this module, which imports nothing heavy: it asks the kernel to kill the worker when its parent dies
(Linux ``prctl(PR_SET_PDEATHSIG)``), checks the parent is still there, and only then unpickles and
runs the real work (which imports torch).
"""
from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
from typing import Any

PR_SET_PDEATHSIG = 1  # source: linux/prctl.h
ORPHANED_EXIT = 1  # exit status of a worker that finds its parent already gone


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux), and exit at once if the
    parent ``parent_pid`` is already gone; elsewhere the parent's own cleanup is all there is."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(ORPHANED_EXIT)


def run_guarded(parent_pid: int, payload: bytes, *extra: Any) -> None:
    """A spawned worker's entry point: :func:`die_with_parent`, then ``fn(*args, *extra)`` where
    ``payload`` is ``pickle.dumps((fn, args))`` (``extra``: what only the spawn machinery can
    hand over, such as a multiprocessing queue)."""
    die_with_parent(parent_pid)
    fn, args = pickle.loads(payload)
    fn(*args, *extra)


__all__ = ["die_with_parent", "run_guarded"]
