"""Data-parallel training time: N workers with torch.distributed and DistributedDataParallel.

Every data-parallel step also moves the gradients across workers, a volume set by the parameter count
rather than the FLOPs. :func:`measure_distributed` measures it the way users train: it starts
``nproc`` workers with Python's multiprocessing, spawned (or, launched under ``torchrun``, uses the workers
torchrun started), wraps the network in :class:`~torch.nn.parallel.DistributedDataParallel`, and times

- the step: zero_grad + forward + cross-entropy + backward (with DDP's bucketed all-reduce) +
  optimizer step, after warm-up, with a barrier before and a device sync inside each timed step;
  a step's time is that of the slowest worker;
- the all-reduce: a DDP communication hook wraps the default ``allreduce_hook``, timing each bucket
  from launch until its future completes and counting the bytes of each bucket's buffer. The
  all-reduce time of a step is the union of those intervals (time with an all-reduce in flight,
  overlapped with backward or not, waiting for a slower peer included), averaged over workers;
- scaling efficiency against one process, *weak scaling*: the same per-worker batch and threads per
  worker, ``efficiency = t1 / tN`` (1.0 = the N workers' steps take as long as one process alone).

Workers never outlive the process that started them: on Linux each asks the kernel to kill it
when its parent dies (``prctl(PR_SET_PDEATHSIG)``, dnncost.distributed.orphans, before it imports
torch), so even a SIGKILLed parent leaves none behind;
a SIGTERM/SIGHUP to the parent stops the workers before it exits, and so does Ctrl-C, which only the
parent acts on (the workers ignore SIGINT, which a terminal sends them too). Results travel back over a pipe,
so no temporary folder is left either. The rendezvous is dnncost's own: every worker checks in
within ``rendezvous_timeout_s`` (a busy port, a missing address or a peer that never comes is one
clear error, and Ctrl-C is honoured while waiting) before the process group is built.

``allreduce_bytes_per_step`` is what each worker hands to all-reduce (the gradients' size), not the
bytes on the wire (a ring all-reduce sends 2 (N - 1) / N of it per worker). The buffers (BatchNorm
statistics) DDP broadcasts at each forward are part of the step time, not of the all-reduce time.
"""
from __future__ import annotations

import contextlib
import copy
import io
import itertools
import os
import pickle
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dnncost.core.device import StepClock, check_threads, synchronize
from dnncost.core.environment import Environment, current_environment
from dnncost.core.errors import DeviceError, DnncostError, InputSpecError
from dnncost.core.failure import named_model_failure
from dnncost.core.step import Mode, primary_output
from dnncost.counting.counter import count
from dnncost.distributed.orphans import run_guarded
from dnncost.distributed.records import DataParallelStep
from dnncost.measuring.measurement import Measurement
from dnncost.measuring.timing import StepOptions, prepare_step, step_options
from dnncost.models.loading import load_model

SCALING = "weak"  # efficiency compares equal per-worker batches: t1 / tN
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


class Backend(str, Enum):
    """torch.distributed backends: gloo for CPU workers, nccl for one GPU per worker."""

    GLOO = "gloo"
    NCCL = "nccl"


class DistributedSetupError(DeviceError):
    """The machine cannot run the requested workers: a busy port, a backend it does not have."""


class DistributedWorkerError(DnncostError):
    """A worker process failed; the others were stopped."""


@dataclass(frozen=True)
class DistributedTiming:
    """A data-parallel training step of one network on ``world_size`` workers.

    ``step`` holds per-step seconds (slowest worker), ``allreduce`` the per-step seconds with a
    gradient all-reduce in flight (mean over workers), ``single_process`` the same step in one plain
    process (no DDP) with the same per-worker batch and threads (None when not measured).
    ``gradient_bytes`` is dnncost.counting.counter's figure (CostReport.gradient_bytes); ``flops`` the counted
    FLOPs of one worker's step.
    """

    model: str
    world_size: int
    backend: str
    device: str
    launcher: str  # "spawn" (dnncost started the workers) or "torchrun"
    input_shape: tuple[int, ...]
    batch_size: int  # per worker
    threads: int  # per worker
    optimizer: str
    step: Measurement
    allreduce: Measurement
    allreduce_bytes_per_step: int
    buckets_per_step: int
    gradient_bytes: int
    params: int
    trainable_params: int
    flops: int | None
    single_process: Measurement | None
    environment: Environment
    scaling: str = SCALING

    @property
    def allreduce_s_per_step(self) -> float:
        return self.allreduce.median

    @property
    def comm_share(self) -> float:
        """Median all-reduce time / median step time."""
        return self.allreduce.median / self.step.median

    @property
    def efficiency(self) -> float | None:
        """Weak-scaling efficiency t1 / tN (median step times); None without a single-process run."""
        if self.single_process is None:
            return None
        return self.single_process.median / self.step.median

    @property
    def samples_per_s(self) -> float:
        """Throughput of all workers together."""
        return self.world_size * self.batch_size / self.step.median

    def to_row(self) -> dict[str, object]:
        """One flat row for a table or CSV (times in milliseconds)."""
        base = self.single_process
        return {
            "model": self.model, "world_size": self.world_size, "backend": self.backend,
            "batch": self.batch_size, "threads": self.threads, "params": self.params,
            "flops": self.flops, "gradient_bytes": self.gradient_bytes,
            "allreduce_bytes": self.allreduce_bytes_per_step, "buckets": self.buckets_per_step,
            "step_ms": self.step.median * 1e3, "step_iqr_ms": self.step.iqr * 1e3,
            "allreduce_ms": self.allreduce.median * 1e3, "comm_share": self.comm_share,
            "single_ms": base.median * 1e3 if base is not None else None,
            "efficiency": self.efficiency, "samples_per_s": self.samples_per_s,
        }

    def as_record(self) -> DataParallelStep:
        """The step and its all-reduce as the study stores them (one 'train' step timing with its
        world size and backend)."""
        single = self.single_process
        return DataParallelStep(
            samples=self.step.samples, median_s=self.step.median, iqr_s=self.step.iqr,
            threads=self.threads, world_size=self.world_size, backend=self.backend,
            allreduce_samples=self.allreduce.samples, allreduce_s_per_step=self.allreduce_s_per_step,
            allreduce_bytes_per_step=self.allreduce_bytes_per_step,
            buckets_per_step=self.buckets_per_step, gradient_bytes=self.gradient_bytes,
            single_process_median_s=single.median if single is not None else None,
            efficiency=self.efficiency, launcher=self.launcher)

    def to_dict(self) -> dict[str, object]:
        """Everything as JSON-ready data, raw samples and environment included."""
        return {
            "model": self.model, "world_size": self.world_size, "backend": self.backend,
            "device": self.device, "launcher": self.launcher, "input_shape": list(self.input_shape),
            "batch_size": self.batch_size, "threads": self.threads, "optimizer": self.optimizer,
            "step": self.step.to_dict(), "allreduce": self.allreduce.to_dict(),
            "allreduce_s_per_step": self.allreduce_s_per_step,
            "allreduce_bytes_per_step": self.allreduce_bytes_per_step,
            "buckets_per_step": self.buckets_per_step, "gradient_bytes": self.gradient_bytes,
            "params": self.params, "trainable_params": self.trainable_params, "flops": self.flops,
            "comm_share": self.comm_share,
            "single_process": self.single_process.to_dict() if self.single_process else None,
            "efficiency": self.efficiency, "scaling": self.scaling,
            "samples_per_s": self.samples_per_s, "environment": self.environment.to_dict(),
        }


@dataclass(frozen=True)
class _Config:
    """What every worker needs to know; picklable, so that spawned workers receive it."""

    model: bytes | str  # torch.save'd module, or a model spec for dnncost.models.loading.load_model
    name: str
    input_shape: tuple[int, ...]
    options: StepOptions  # batch size and threads per worker, warm-up, repeats, optimizer
    backend: str
    baseline: bool
    timeout_s: float
    rendezvous_timeout_s: float


@dataclass(frozen=True)
class _Result:
    """What the workers measured, identical on every rank after the exchange."""

    world_size: int
    threads: int
    step_s: tuple[float, ...]
    allreduce_s: tuple[float, ...]
    allreduce_bytes: int
    buckets: int
    single_s: tuple[float, ...] | None


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


# -- measuring inside one worker -------------------------------------------------------------------
class _AllreduceRecorder:
    """DDP communication-hook state: intervals and bytes of each bucket's all-reduce in one step."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.intervals: list[tuple[Any, Any]] = []
        self.nbytes = 0
        self.buckets = 0
        self._origin: Any = None

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()  # on the current stream; in a callback, the one waiting on the all-reduce
            return event
        return time.perf_counter()

    def start_step(self) -> None:
        self.intervals, self.nbytes, self.buckets = [], 0, 0
        self._origin = self.mark()

    def finish_step(self) -> float:
        """Seconds with at least one all-reduce in flight (call after the device is synchronised)."""
        if self.cuda:  # elapsed_time gives milliseconds since the step's origin event
            spans = [(self._origin.elapsed_time(a) / 1e3, self._origin.elapsed_time(b) / 1e3)
                     for a, b in self.intervals]
        else:
            spans = list(self.intervals)
        return _union_length(spans)


def _union_length(spans: list[tuple[float, float]]) -> float:
    """Total length covered by possibly overlapping [start, end] intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        start = max(start, reach)
        if end > start:
            total += end - start
            reach = end
    return total


def _timed_allreduce_hook(state: _AllreduceRecorder,
                          bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP's default all-reduce (mean over workers), timed and its bytes counted."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    buffer = bucket.buffer()  # the bucket's gradients, flattened
    state.nbytes += buffer.numel() * buffer.element_size()
    state.buckets += 1
    start = state.mark()

    def done(fut: torch.futures.Future[torch.Tensor]) -> torch.Tensor:
        state.intervals.append((start, state.mark()))
        return fut.value()

    return allreduce_hook(None, bucket).then(done)  # type: ignore[arg-type]  # None: the world group


if dist.is_available():  # DDP checks the hook's annotations against the real classes, which
    _timed_allreduce_hook.__annotations__.update(  # postponed (string) annotations fail
        {"bucket": dist.GradBucket, "return": torch.futures.Future[torch.Tensor]})


def _load_module(source: bytes | str) -> nn.Module:
    if isinstance(source, str):
        return load_model(source).build("cpu")
    return torch.load(io.BytesIO(source), weights_only=False)


def _time_steps(net: nn.Module, cfg: _Config, *, device: torch.device,
                recorder: _AllreduceRecorder | None) -> tuple[list[float], list[float], int, int]:
    """Warm up, then time ``cfg.repeats`` training steps of ``net`` (dnncost.measuring.timing's step, the one
    ``dnncost time`` measures); with a recorder (DDP), a barrier starts every step together.
    Returns step seconds, all-reduce seconds, and the bytes and buckets all-reduced per step."""
    opts = cfg.options
    step = prepare_step(net, cfg.input_shape, opts, device)
    for _ in range(opts.warmup):
        step()
    synchronize(device)
    clock = StepClock(device)
    step_s: list[float] = []
    allreduce_s: list[float] = []
    nbytes = buckets = 0
    for _ in range(opts.repeats):
        if recorder is not None:
            _barrier(device)
            recorder.start_step()
        clock.start()
        step()
        step_s.append(clock.stop())  # stop() synchronises the device
        if recorder is not None:
            allreduce_s.append(recorder.finish_step())
            nbytes, buckets = recorder.nbytes, recorder.buckets
    return step_s, allreduce_s, nbytes, buckets


def _barrier(device: torch.device) -> None:
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def _unused_parameters(net: nn.Module, cfg: _Config, device: torch.device) -> bool:
    """True when some trainable parameter gets no gradient (DDP must then look for unused ones)."""
    x = torch.randn(cfg.options.batch_size, *cfg.input_shape, device=device)
    primary_output(net(x)).float().sum().backward()
    unused = any(p.grad is None for p in net.parameters() if p.requires_grad)
    net.zero_grad(set_to_none=True)
    return unused


def _measure_rank(rank: int, world_size: int, local_rank: int, cfg: _Config) -> _Result:
    """One worker's part, inside an initialised process group; returns the exchanged results."""
    nccl = cfg.backend == Backend.NCCL.value
    device = torch.device("cuda", local_rank) if nccl else torch.device("cpu")
    if nccl:
        torch.cuda.set_device(device)
    local_workers = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    threads = cfg.options.threads
    if threads is None:  # the cores shared among this machine's workers
        threads = max(1, (os.cpu_count() or 1) // local_workers)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = _load_module(cfg.model).to(device)
    batch = "x".join(map(str, (cfg.options.batch_size, *cfg.input_shape)))
    with named_model_failure(net, name=cfg.name, shape=batch):
        return _measure_net(net, rank, world_size, local_rank, cfg, device=device, threads=threads)


def _measure_net(net: nn.Module, rank: int, world_size: int, local_rank: int, cfg: _Config, *,
                 device: torch.device, threads: int) -> _Result:
    """:func:`_measure_rank` once the worker's network is on its device."""
    from torch.nn.parallel import DistributedDataParallel

    nccl = device.type == "cuda"

    single: list[float] | None = None
    if cfg.baseline:  # one process alone while the others wait: the weak-scaling reference
        if rank == 0:
            single = _time_steps(copy.deepcopy(net), cfg, device=device, recorder=None)[0]
        _barrier(device)
        holder: list[Any] = [single]
        dist.broadcast_object_list(holder, src=0)
        single = holder[0]

    ddp = DistributedDataParallel(net, device_ids=[local_rank] if nccl else None,
                                  find_unused_parameters=_unused_parameters(net, cfg, device))
    recorder = _AllreduceRecorder(device)
    ddp.register_comm_hook(recorder, _timed_allreduce_hook)
    step_s, allreduce_s, nbytes, buckets = _time_steps(ddp, cfg, device=device, recorder=recorder)
    # the slowest worker sets a step's time; all-reduce time is averaged over workers
    step_t = torch.tensor(step_s, dtype=torch.float64, device=device)
    comm_t = torch.tensor(allreduce_s, dtype=torch.float64, device=device)
    dist.all_reduce(step_t, op=dist.ReduceOp.MAX)
    dist.all_reduce(comm_t, op=dist.ReduceOp.SUM)
    return _Result(world_size=world_size, threads=threads, step_s=tuple(step_t.cpu().tolist()),
                   allreduce_s=tuple((comm_t / world_size).cpu().tolist()),
                   allreduce_bytes=nbytes, buckets=buckets,
                   single_s=tuple(single) if single is not None else None)


@contextlib.contextmanager
def _process_group(backend: str, *, rank: int, world_size: int, addr: str, port: int,
                   timeout_s: float, rendezvous_timeout_s: float) -> Iterator[None]:
    """Meet the other workers at ``addr:port`` (:func:`_rendezvous`), then join (and afterwards
    leave) the process group; a group someone else already initialised is used and left alone."""
    if dist.is_initialized():
        yield
        return
    store = _rendezvous(rank, world_size, addr=addr, port=port, timeout_s=rendezvous_timeout_s)
    store.set_timeout(timedelta(seconds=timeout_s))
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))
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


def _spawned_worker(rank: int, world_size: int, port: int, cfg: _Config, results: Any) -> None:
    """A spawned worker's work (started by dnncost.distributed.orphans.run_guarded): rank 0 sends
    the result, a failing rank its typed error or a one-line summary of an unexpected one, over
    ``results`` (the sending end of a pipe of its own: nothing is written to disk)."""
    os.environ.update(MASTER_ADDR=LOCALHOST, MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size))
    try:
        with _process_group(cfg.backend, rank=rank, world_size=world_size, addr=LOCALHOST,
                            port=port, timeout_s=cfg.timeout_s,
                            rendezvous_timeout_s=cfg.rendezvous_timeout_s):
            result = _measure_rank(rank, world_size, rank, cfg)
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


def _spawn(cfg: _Config, *, nproc: int, port: int) -> _Result:
    """Start ``nproc`` workers, wait for them, and return rank 0's result. Workers are never left
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
        args=(os.getpid(), pickle.dumps((_spawned_worker, (rank, nproc, port, cfg))), sending))
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


def _launch_environment() -> tuple[int, int, int, str, int]:
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


# -- the public entry point ------------------------------------------------------------------------
def measure_distributed(
    model: nn.Module | str,
    input_shape: Sequence[int] | None = None,
    *,
    options: StepOptions | None = None,
    nproc: int | None = None,
    backend: Backend | str | None = None,
    port: int | None = None,
    baseline: bool = True,
    name: str | None = None,
    timeout_s: float = STEP_TIMEOUT_S,
    rendezvous_timeout_s: float = RENDEZVOUS_TIMEOUT_S,
    **overrides: Any,
) -> DistributedTiming:
    """Time a data-parallel training step of ``model`` on ``nproc`` workers with DDP.

    ``model`` is an nn.Module (copied to each worker; it is not modified) or a model spec that each
    worker loads with dnncost.models.loading. ``options`` (or keyword ``overrides`` of its fields,
    as :func:`dnncost.measuring.timing.time_model` takes them) is the timed step: a training step,
    ``batch_size`` and ``threads`` per worker (threads default to the CPU cores divided among the
    workers), ``warmup`` (at least 1: DDP rebuilds its buckets after the first step), ``repeats``,
    ``optimizer``; its ``device`` picks the backend unless ``backend`` is given. ``port`` (default:
    a free one) is the rendezvous port on 127.0.0.1. Under torchrun the launched workers are used
    (``nproc`` must be None or the world size; ``port`` is ignored) and every worker returns the
    record. ``baseline`` also times one plain process for the weak-scaling efficiency.
    ``rendezvous_timeout_s`` bounds the wait for every worker to arrive, ``timeout_s`` each
    collective afterwards.
    """
    opts = step_options(options, overrides)
    if opts.mode is not Mode.TRAIN:
        raise InputSpecError("data-parallel timing needs a training step (mode 'train'): workers "
                             "only communicate when they train")
    if opts.budget_s is not None:
        raise InputSpecError("a time budget is not supported for data-parallel timing; give a "
                             "number of repeats instead")
    if opts.warmup < 1:
        raise InputSpecError(f"data-parallel timing needs at least 1 warm-up step (DDP rebuilds "
                             f"its buckets after the first step), got {opts.warmup}")
    if opts.threads is not None:
        check_threads(opts.threads)
    if not rendezvous_timeout_s > 0 or not timeout_s > 0:
        raise InputSpecError(f"timeouts must be positive, got rendezvous {rendezvous_timeout_s} s "
                             f"and step {timeout_s} s")
    backend = backend_for_device(opts.device, backend)

    if isinstance(model, str):
        loaded = load_model(model)
        module, name = loaded.build("meta"), name or loaded.name  # only counted here
        shape = tuple(input_shape) if input_shape is not None else loaded.input_shape
        source: bytes | str = model
    elif isinstance(model, nn.Module):
        if input_shape is None:
            raise InputSpecError("input_shape (one sample, e.g. (3, 32, 32)) is needed with a module")
        module, name, shape = model, name or type(model).__name__, tuple(input_shape)
        buffer = io.BytesIO()
        torch.save(model, buffer)
        source = buffer.getvalue()
    else:
        raise InputSpecError(f"expected an nn.Module or a model spec, got {type(model).__name__}")
    # counting first also checks, in this process, that the model takes the input
    report = count(module, mode="train", batch_size=opts.batch_size, input_shape=shape,
                   optimizer=opts.optimizer.value, name=name)
    cfg = _Config(model=source, name=name, input_shape=shape, options=opts, backend=backend.value,
                  baseline=baseline, timeout_s=timeout_s, rendezvous_timeout_s=rendezvous_timeout_s)

    if launched_by_torchrun():
        rank, world_size, local_rank, addr, master_port = _launch_environment()
        if nproc is not None and nproc != world_size:
            raise InputSpecError(f"{nproc} workers requested but torchrun's world size is "
                                 f"{world_size}; leave the number of workers out under torchrun")
        if backend is Backend.NCCL:
            check_world_size(local_rank + 1, backend)
        with _process_group(backend.value, rank=rank, world_size=world_size, addr=addr,
                            port=master_port, timeout_s=timeout_s,
                            rendezvous_timeout_s=rendezvous_timeout_s):
            result = _measure_rank(dist.get_rank(), dist.get_world_size(), local_rank, cfg)
        launcher = "torchrun"
    else:
        nproc = 1 if nproc is None else nproc
        check_world_size(nproc, backend)
        result = _spawn(cfg, nproc=nproc, port=check_port(port) if port is not None else free_port())
        launcher = "spawn"

    device = "cuda" if backend is Backend.NCCL else "cpu"
    return DistributedTiming(
        model=name, world_size=result.world_size, backend=backend.value, device=device,
        launcher=launcher, input_shape=shape, batch_size=opts.batch_size, threads=result.threads,
        optimizer=opts.optimizer.value, step=Measurement(result.step_s),
        allreduce=Measurement(result.allreduce_s), allreduce_bytes_per_step=result.allreduce_bytes,
        buckets_per_step=result.buckets, gradient_bytes=report.gradient_bytes, params=report.params,
        trainable_params=report.trainable_params, flops=report.total().flops,
        single_process=Measurement(result.single_s) if result.single_s else None,
        environment=current_environment(device, threads=result.threads))


__all__ = [
    "Backend", "DistributedSetupError", "DistributedTiming", "DistributedWorkerError",
    "backend_for_device", "check_backend", "check_port", "check_world_size",
    "free_port", "launched_by_torchrun", "measure_distributed",
]
