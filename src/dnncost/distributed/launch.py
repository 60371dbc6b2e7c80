"""Launching data-parallel workers: the backend and the number of workers checked against the
machine, dnncost's own rendezvous and process group, and the worker processes -- spawned by
:func:`spawn`, or started by ``torchrun`` (:func:`launch_environment`).

Workers never outlive the process that started them: on Linux each asks the kernel to kill it
when its parent dies (``prctl(PR_SET_PDEATHSIG)``, dnncost.distributed.orphans, before it imports
torch), so even a SIGKILLed parent leaves none behind;
a SIGTERM/SIGHUP to the parent stops the workers before it exits, and so does Ctrl-C, which only the
parent acts on (the workers ignore SIGINT, which a terminal sends them too). Results travel back over a pipe,
so no temporary folder is left either. The rendezvous is dnncost's own: every worker checks in
within ``rendezvous_timeout_s`` (a busy port, a missing address or a peer that never comes is one
clear error, and Ctrl-C is honoured while waiting) before the process group is built.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from dnncost.core.errors import DeviceError, DnncostError, InputSpecError
from dnncost.core.kinds import Backend
from dnncost.distributed.orphans import run_guarded

LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # source: torchrun's documented worker environment
RENDEZVOUS_ENV = ("MASTER_ADDR", "MASTER_PORT")  # source: torch.distributed env:// initialisation
LOCALHOST = "127.0.0.1"  # spawned workers all run on this machine
JOIN_POLL_S = 0.5  # how often the parent checks on its workers
GRACE_S = 5.0  # how long a terminated worker may take to exit before it is killed
RENDEZVOUS_TIMEOUT_S = 60.0  # source: our choice; spawned workers import torch and check in within
#   seconds even on a busy 2-core machine, and a peer that never comes should not hold a user long
RENDEZVOUS_POLL_S = 0.2  # how often a waiting worker looks again (and Ctrl-C gets its chance)
STEP_TIMEOUT_S = 600.0  # source: our choice; a collective may wait this long for a slow peer
TERMINATING_SIGNALS = ("SIGTERM", "SIGHUP")  # turned into a clean exit while workers run
_CALLS = itertools.count()  # rendezvous keys of successive calls in one process stay apart


class DistributedSetupError(DeviceError):
    """The machine cannot run the requested workers: a busy port, a backend it does not have."""


class DistributedWorkerError(DnncostError):
    """A worker process failed; the others were stopped."""



@dataclass(frozen=True)
class GroupOptions:
    """How the workers meet: the torch.distributed ``backend`` (None: the one that goes with the
    step's device, :func:`backend_for_device`), how long each collective may wait for a slow peer
    (``timeout_s``) and how long every worker has to check in (``rendezvous_timeout_s``)."""

    backend: str | None = None
    timeout_s: float = STEP_TIMEOUT_S
    rendezvous_timeout_s: float = RENDEZVOUS_TIMEOUT_S

    def __post_init__(self) -> None:
        if not self.rendezvous_timeout_s > 0 or not self.timeout_s > 0:
            raise InputSpecError(f"timeouts must be positive, got rendezvous {self.rendezvous_timeout_s} s "
                                 f"and step {self.timeout_s} s")


R = TypeVar("R")


# -- checking the request against the machine ------------------------------------------------------
def launched_by_torchrun() -> bool:
    """True when this process is one of the workers torchrun (or torch.distributed.run) started."""
    return all(name in os.environ for name in LAUNCH_ENV)


def check_backend(backend: Backend | str) -> Backend:
    """The backend, checked to exist in this torch build; DistributedSetupError otherwise."""
    try:
        backend = Backend(backend)
    except ValueError:
        raise InputSpecError(f"unknown backend '{backend}': choose gloo (CPU) or nccl (GPU)") from None
    if not dist.is_available():
        raise DistributedSetupError("torch.distributed is not available in this torch build "
                                    f"({torch.__version__}); install a build with distributed support")
    available = {Backend.GLOO: dist.is_gloo_available, Backend.NCCL: dist.is_nccl_available}
    if not available[backend]():
        have = [b.value for b, ok in available.items() if ok()]
        raise DistributedSetupError(
            f"backend '{backend.value}' is not available in this torch build ({torch.__version__}); "
            f"available: {', '.join(have) or 'none'}")
    return backend


def backend_for_device(device: str, backend: Backend | str | None = None) -> Backend:
    """The backend that goes with ``device`` -- gloo for CPU workers, nccl for one GPU per worker --
    checked against ``backend`` when one is asked for; InputSpecError when they disagree."""
    wanted = Backend.NCCL if str(device).split(":")[0] == "cuda" else Backend.GLOO
    if backend is None:
        return wanted
    chosen = check_backend(backend)
    if chosen is not wanted:
        raise InputSpecError(f"backend {chosen.value} does not go with device {device}: gloo runs "
                             "CPU workers (device cpu), nccl one GPU per worker (device cuda)")
    return chosen


def check_world_size(nproc: int, backend: Backend) -> None:
    """DeviceError when this machine cannot run ``nproc`` workers on ``backend``."""
    if nproc < 1:
        raise InputSpecError(f"the number of workers must be a positive integer, got {nproc}")
    if backend is Backend.NCCL:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus == 0:
            raise DeviceError("nccl needs CUDA GPUs and this machine has none; use backend gloo "
                              "(CPU workers)")
        if nproc > gpus:
            raise DeviceError(f"nccl runs one worker per GPU: {nproc} workers requested but this "
                              f"machine has {gpus} CUDA device(s); use {gpus} workers or fewer")
    else:
        cores = os.cpu_count() or 1
        if nproc > cores:
            raise DeviceError(f"{nproc} gloo workers requested but this machine has {cores} CPU "
                              f"core(s); use {cores} workers or fewer")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it: bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def check_port(port: int) -> int:
    """``port`` if it can be bound on 127.0.0.1; DistributedSetupError naming the problem otherwise."""
    if not 0 < port < 65536:
        raise InputSpecError(f"port must be between 1 and 65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOCALHOST, port))
        except OSError as exc:
            raise DistributedSetupError(
                f"port {port} on {LOCALHOST} is busy or not allowed ({exc.strerror}); give another "
                "rendezvous port, or none to let dnncost pick a free one") from None
    return port


# -- the process group ----------------------------------------------------------------------------
@contextlib.contextmanager
def process_group(group: GroupOptions, *, rank: int, world_size: int, addr: str,
                  port: int) -> Iterator[None]:
    """Meet the other workers at ``addr:port`` (:func:`_rendezvous`), then join (and afterwards
    leave) the process group; a group someone else already initialised is used and left alone."""
    if dist.is_initialized():
        yield
        return
    store = _rendezvous(rank, world_size, addr=addr, port=port, timeout_s=group.rendezvous_timeout_s)
    store.set_timeout(timedelta(seconds=group.timeout_s))
    dist.init_process_group(group.backend, store=store, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=group.timeout_s))
    try:
        yield
    finally:
        dist.destroy_process_group()


def _rendezvous(rank: int, world_size: int, *, addr: str, port: int,
                timeout_s: float) -> dist.TCPStore:
    """The store every worker shares, once all ``world_size`` of them have checked in.

    Rank 0 serves the store at ``addr:port`` (torchrun's agent serves it when it says so with
    TORCHELASTIC_USE_AGENT_STORE); everyone waits in short steps, so Ctrl-C is honoured, and a
    peer that does not come within ``timeout_s`` is a DistributedSetupError naming how many came."""
    serve = rank == 0 and not (os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
                               and os.environ.get("MASTER_ADDR") == addr
                               and os.environ.get("MASTER_PORT") == str(port))
    deadline = time.monotonic() + timeout_s
    poll = timedelta(seconds=max(RENDEZVOUS_POLL_S, 1.0))
    while True:
        try:
            store = dist.TCPStore(addr, port, world_size, serve, timeout=poll,
                                  wait_for_workers=False, multi_tenant=serve)
            break
        except RuntimeError as exc:  # torch's DistNetworkError and DistStoreError are RuntimeErrors
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if serve:  # the address cannot be served: a busy port, an address not on this machine
                raise DistributedSetupError(
                    f"cannot serve the rendezvous at {addr}:{port} ({reason[:160]}); choose a free "
                    "port (MASTER_PORT under torchrun) or an address of this machine") from None
            if time.monotonic() > deadline:
                raise DistributedSetupError(
                    f"worker {rank} of {world_size} found no rendezvous at {addr}:{port} within "
                    f"{timeout_s:.0f} s ({reason[:160]}); is rank 0 running?") from None
    key = f"dnncost/rendezvous/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{next(_CALLS)}"
    arrived = store.add(key, 1)
    while arrived < world_size:
        if time.monotonic() > deadline:
            raise DistributedSetupError(
                f"only {arrived} of {world_size} workers reached the rendezvous at {addr}:{port} "
                f"within {timeout_s:.0f} s; start the others (e.g. torchrun --nproc-per-node "
                f"{world_size}), or unset RANK and WORLD_SIZE to time one process")
        time.sleep(RENDEZVOUS_POLL_S)
        arrived = store.add(key, 0)
    return store


# -- spawned workers -------------------------------------------------------------------------------
def _spawned_worker(rank: int, world_size: int, port: int, work: Callable[[int, int, int], Any],
                    group: GroupOptions, results: Any) -> None:
    """A spawned worker (started by dnncost.distributed.orphans.run_guarded): ``work(rank,
    world_size, local_rank)`` inside the process group; rank 0 sends the result, a failing rank
    its typed error or a one-line summary of an unexpected one, over ``results`` (the sending end
    of a pipe of its own: nothing is written to disk)."""
    os.environ.update(MASTER_ADDR=LOCALHOST, MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size))
    try:
        with process_group(group, rank=rank, world_size=world_size, addr=LOCALHOST, port=port):
            result = work(rank, world_size, rank)
    except DnncostError as exc:
        results.send(("error", rank, exc))
        os._exit(1)
    except Exception as exc:  # not ours to word: the parent reports it as this worker's failure
        text = str(exc).strip()
        results.send(("crash", rank, f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"))
        os._exit(1)
    if rank == 0:
        results.send(("result", rank, result))
    # Everything is sent and the process group is gone; skip the interpreter's teardown, which
    # takes seconds once DDP has imported torch._dynamo.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn(work: Callable[[int, int, int], R], group: GroupOptions, *, nproc: int, port: int) -> R:
    """Start ``nproc`` workers that meet at 127.0.0.1:``port`` and each run ``work(rank,
    world_size, local_rank)`` in the process group (``work`` is pickled: a module-level function
    or a functools.partial of one), wait for them, and return rank 0's result. Workers are never left
    running: on a failure, an interrupt or a SIGTERM/SIGHUP the survivors are terminated, then
    killed; should this process be killed outright, the kernel kills them
    (dnncost.distributed.orphans, in effect before a worker imports torch). Each worker answers
    over a pipe of its own, one writer each, so no lock is needed: a multiprocessing queue's locks
    are named semaphores, which the resource tracker reports as leaked ("There appear to be 2
    leaked semaphore objects") when this process is killed outright."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe(duplex=False) for _ in range(nproc)]  # (receiving, sending) end
    readers = [receiving for receiving, _ in pipes]
    processes = [context.Process(
        target=run_guarded, name=f"dnncost-ddp-{rank}",
        args=(os.getpid(), pickle.dumps((_spawned_worker, (rank, nproc, port, work, group))), sending))
        for rank, (_, sending) in enumerate(pipes)]
    messages: list[tuple[str, int, Any]] = []
    with _terminating_signals_exit():
        try:
            with _ctrl_c_left_to_this_process():
                for process in processes:
                    process.start()
            for _, sending in pipes:  # the workers hold theirs: a dead worker's pipe reads as ended
                sending.close()
            while _still_running(processes, readers, messages):
                pass
        finally:
            _stop(processes)
        _drain(readers, messages)
        for receiving in readers:
            receiving.close()
    failed = {rank: p.exitcode for rank, p in enumerate(processes) if p.exitcode != 0}
    if failed:
        raise _failure(messages, failed, nproc=nproc)
    for kind, _, payload in messages:
        if kind == "result":
            return payload
    raise DistributedWorkerError(f"the {nproc} workers finished without a result")


def _still_running(processes: Sequence[Any], readers: Sequence[Any],
                   messages: list[tuple[str, int, Any]]) -> bool:
    """Wait up to JOIN_POLL_S for a worker to end or send; False once all have ended or one has
    failed."""
    from multiprocessing.connection import wait

    wait([p.sentinel for p in processes] + [r for r in readers if not r.closed], timeout=JOIN_POLL_S)
    _drain(readers, messages)
    codes = [p.exitcode for p in processes]
    return not any(code not in (None, 0) for code in codes) and any(c is None for c in codes)


def _failure(messages: list[tuple[str, int, Any]], failed: dict[int, int | None], *,
             nproc: int) -> DnncostError:
    """The error to raise for failed workers: a worker's own typed error first, then the first
    unexpected one, then the exit status of the first worker that failed."""
    for wanted in ("error", "crash"):
        for kind, rank, payload in sorted(messages, key=lambda m: m[1]):
            if kind == wanted == "error":
                return payload
            if kind == wanted:
                return DistributedWorkerError(f"worker {rank} of {nproc} failed ({payload}); the "
                                              "other workers were stopped")
    rank, code = min(failed.items())
    return DistributedWorkerError(f"worker {rank} of {nproc} ended with exit status {code}; the "
                                  "other workers were stopped")


def _drain(readers: Sequence[Any], into: list[tuple[str, int, Any]]) -> None:
    """Move what the workers have sent so far into ``into`` (a worker blocks on a full pipe); a
    pipe whose worker has ended and which holds nothing more is closed."""
    for reader in readers:
        try:
            while not reader.closed and reader.poll():
                into.append(reader.recv())
        except EOFError:  # its worker has ended and everything it sent is read
            reader.close()


@contextlib.contextmanager
def _ctrl_c_left_to_this_process() -> Iterator[None]:
    """Workers started inside the block ignore SIGINT all their life (an ignored signal stays
    ignored across exec, and Python leaves it so). A terminal's Ctrl-C signals the whole foreground
    process group: this process acts on it by stopping the workers, rather than every worker
    printing a KeyboardInterrupt traceback of its own. A Ctrl-C in the block itself (starting the
    workers: milliseconds) is ignored. Only in the main thread, where Python handles signals, and
    over a handler Python can put back."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _terminating_signals_exit() -> Iterator[None]:
    """While workers run, SIGTERM/SIGHUP raise SystemExit(128 + signal) in this process, so its
    cleanup (stopping the workers) runs before it exits as the signal asked; only in the main
    thread, where Python delivers signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_cleanly(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    wanted = [getattr(signal, name) for name in TERMINATING_SIGNALS if hasattr(signal, name)]
    previous = {sig: signal.signal(sig, exit_cleanly) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(processes: Sequence[Any]) -> None:
    """Terminate (then kill) every process still alive, and reap them all."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + GRACE_S
    for process in processes:
        if process.pid is None:  # never started
            continue
        process.join(timeout=max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def launch_environment() -> tuple[int, int, int, str, int]:
    """(rank, world size, local rank, address, port) of a torchrun-style launch, from RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; InputSpecError naming what is missing
    or malformed."""
    missing = [name for name in RENDEZVOUS_ENV if not os.environ.get(name)]
    if missing:
        raise InputSpecError(
            f"RANK, WORLD_SIZE and LOCAL_RANK are set (a torchrun-style launch) but "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not; launch with "
            "torchrun, set both, or unset RANK/WORLD_SIZE/LOCAL_RANK to time one process")
    values: dict[str, int] = {}
    for name in (*LAUNCH_ENV, "MASTER_PORT"):
        text = os.environ[name]
        if not text.strip().isdigit():
            raise InputSpecError(f"environment variable {name}={text!r} is not a non-negative "
                                 "integer")
        values[name] = int(text)
    rank, world_size, local_rank = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if world_size < 1 or rank >= world_size:
        raise InputSpecError(f"RANK={rank} and WORLD_SIZE={world_size} do not make a worker "
                             "(need 0 <= RANK < WORLD_SIZE)")
    port = values["MASTER_PORT"]
    if not 0 < port < 65536:
        raise InputSpecError(f"MASTER_PORT must be between 1 and 65535, got {port}")
    return rank, world_size, local_rank, os.environ["MASTER_ADDR"], port


__all__ = ["Backend", "DistributedSetupError", "DistributedWorkerError", "GroupOptions", "backend_for_device",
           "check_backend", "check_port", "check_world_size", "free_port", "launch_environment",
           "launched_by_torchrun", "process_group", "spawn"]
