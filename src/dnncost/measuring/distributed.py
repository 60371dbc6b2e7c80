"""Data-parallel training time: N workers with torch.distributed and DistributedDataParallel.

Every data-parallel step also moves the gradients across workers, a volume set by the parameter count
rather than the FLOPs. :func:`measure_distributed` measures it the way users train: it starts
``nproc`` workers with ``torch.multiprocessing`` (or, launched under ``torchrun``, uses the workers
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

``allreduce_bytes_per_step`` is what each worker hands to all-reduce (the gradients' size), not the
bytes on the wire (a ring all-reduce sends 2 (N - 1) / N of it per worker). The buffers (BatchNorm
statistics) DDP broadcasts at each forward are part of the step time, not of the all-reduce time.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import pickle
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from dnncost.errors import DeviceError, DnncostError, InputSpecError
from dnncost.measuring.device import StepClock, synchronize
from dnncost.measuring.environment import Environment, current_environment
from dnncost.measuring.measurement import Measurement
from dnncost.measuring.step import Mode, OptimizerKind, primary_output
from dnncost.measuring.timing import prepare_step, step_options

if TYPE_CHECKING:
    from dnncost.study.store import Store

SCALING = "weak"  # efficiency compares equal per-worker batches: t1 / tN
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # source: torchrun's documented worker environment
LOCALHOST = "127.0.0.1"  # spawned workers all run on this machine
JOIN_POLL_S = 0.5  # how often the parent checks on its workers
GRACE_S = 5.0  # how long a terminated worker may take to exit before it is killed


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
    input_shape: tuple[int, ...]
    batch_size: int
    warmup: int
    repeats: int
    threads: int | None
    optimizer: str
    backend: str
    baseline: bool
    timeout_s: float


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


def default_backend() -> Backend:
    """nccl when this machine has a CUDA GPU and torch was built with NCCL, else gloo."""
    if torch.cuda.is_available() and dist.is_available() and dist.is_nccl_available():
        return Backend.NCCL
    return Backend.GLOO


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


def check_world_size(nproc: int, backend: Backend) -> None:
    """DeviceError when this machine cannot run ``nproc`` workers on ``backend``."""
    if nproc < 1:
        raise InputSpecError(f"--nproc must be a positive integer, got {nproc}")
    if backend is Backend.NCCL:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus == 0:
            raise DeviceError("nccl needs CUDA GPUs and this machine has none; use --backend gloo "
                              "(CPU workers)")
        if nproc > gpus:
            raise DeviceError(f"nccl runs one worker per GPU: {nproc} workers requested but this "
                              f"machine has {gpus} CUDA device(s); use --nproc {gpus} or fewer")
    else:
        cores = os.cpu_count() or 1
        if nproc > cores:
            raise DeviceError(f"{nproc} gloo workers requested but this machine has {cores} CPU "
                              f"core(s); use --nproc {cores} or fewer")


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
                "--master-port, or leave it out to let dnncost pick a free one") from None
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

    return allreduce_hook(None, bucket).then(done)  # None: the default (world) process group


if dist.is_available():  # DDP checks the hook's annotations against the real classes, which
    _timed_allreduce_hook.__annotations__.update(  # postponed (string) annotations fail
        {"bucket": dist.GradBucket, "return": torch.futures.Future[torch.Tensor]})


def _load_module(source: bytes | str) -> nn.Module:
    if isinstance(source, str):
        from dnncost.models.loading import load_model

        return load_model(source).build("cpu")
    return torch.load(io.BytesIO(source), weights_only=False)


def _time_steps(net: nn.Module, cfg: _Config, *, device: torch.device,
                recorder: _AllreduceRecorder | None) -> tuple[list[float], list[float], int, int]:
    """Warm up, then time ``cfg.repeats`` training steps of ``net`` (dnncost.measuring.timing's step, the one
    ``dnncost time`` measures); with a recorder (DDP), a barrier starts every step together.
    Returns step seconds, all-reduce seconds, and the bytes and buckets all-reduced per step."""
    opts = step_options(None, {"batch_size": cfg.batch_size, "mode": Mode.TRAIN,
                               "optimizer": cfg.optimizer})
    step = prepare_step(net, cfg.input_shape, opts, device)
    for _ in range(cfg.warmup):
        step()
    synchronize(device)
    clock = StepClock(device)
    step_s: list[float] = []
    allreduce_s: list[float] = []
    nbytes = buckets = 0
    for _ in range(cfg.repeats):
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
    x = torch.randn(cfg.batch_size, *cfg.input_shape, device=device)
    primary_output(net(x)).float().sum().backward()
    unused = any(p.grad is None for p in net.parameters() if p.requires_grad)
    net.zero_grad(set_to_none=True)
    return unused


def _measure_rank(rank: int, world_size: int, local_rank: int, cfg: _Config) -> _Result:
    """One worker's part, inside an initialised process group; returns the exchanged results."""
    from torch.nn.parallel import DistributedDataParallel

    nccl = cfg.backend == Backend.NCCL.value
    device = torch.device("cuda", local_rank) if nccl else torch.device("cpu")
    if nccl:
        torch.cuda.set_device(device)
    local_workers = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // local_workers)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = _load_module(cfg.model).to(device)

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
def _process_group(backend: str, *, rank: int | None = None, world_size: int | None = None,
                   timeout_s: float) -> Iterator[None]:
    """Join (and afterwards leave) the process group the MASTER_ADDR/MASTER_PORT environment names;
    a group someone else already initialised is used and left alone."""
    if dist.is_initialized():
        yield
        return
    kwargs: dict[str, Any] = {} if rank is None else {"rank": rank, "world_size": world_size}
    dist.init_process_group(backend, init_method="env://", timeout=timedelta(seconds=timeout_s),
                            **kwargs)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _spawned_worker(rank: int, world_size: int, port: int, cfg: _Config, outdir: str) -> None:
    """Entry point of a spawned worker: rank 0 writes the result, a failing rank its typed error."""
    os.environ.update(MASTER_ADDR=LOCALHOST, MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size))
    try:
        with _process_group(cfg.backend, rank=rank, world_size=world_size, timeout_s=cfg.timeout_s):
            result = _measure_rank(rank, world_size, rank, cfg)
    except DnncostError as exc:
        Path(outdir, f"error-{rank}.pkl").write_bytes(pickle.dumps(exc))
        raise
    if rank == 0:
        Path(outdir, "result.pkl").write_bytes(pickle.dumps(result))
    # Everything is written and the process group is gone; skip the interpreter's teardown, which
    # takes seconds once DDP has imported torch._dynamo.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _spawn(cfg: _Config, *, nproc: int, port: int) -> _Result:
    """Start ``nproc`` workers, wait for them, and return rank 0's result. Workers are never left
    running: on any error (or an interrupt) the survivors are terminated, then killed."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    with tempfile.TemporaryDirectory(prefix="dnncost-ddp-") as outdir:
        context = mp.start_processes(_spawned_worker, args=(nproc, port, cfg, outdir), nprocs=nproc,
                                     join=False, start_method="spawn")
        try:
            while not context.join(timeout=JOIN_POLL_S):  # on a failure, stops the others
                pass
        except ProcessException as exc:
            for rank in range(nproc):
                error = Path(outdir, f"error-{rank}.pkl")
                if error.exists():
                    raise pickle.loads(error.read_bytes()) from None
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise DistributedWorkerError(
                f"worker {exc.error_index} of {nproc} failed ({last}); the other workers were "
                "stopped") from exc
        finally:
            _stop(context.processes)
        return pickle.loads(Path(outdir, "result.pkl").read_bytes())


def _stop(processes: Sequence[Any]) -> None:
    """Terminate (then kill) every process still alive, and reap them all."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + GRACE_S
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


# -- the public entry point ------------------------------------------------------------------------
def measure_distributed(
    model: nn.Module | str,
    input_shape: Sequence[int] | None = None,
    *,
    nproc: int | None = None,
    backend: Backend | str | None = None,
    batch_size: int = 32,
    warmup: int = 3,
    repeats: int = 10,
    threads: int | None = None,
    optimizer: OptimizerKind | str = OptimizerKind.SGD,
    port: int | None = None,
    baseline: bool = True,
    name: str | None = None,
    timeout_s: float = 600.0,
) -> DistributedTiming:
    """Time a data-parallel training step of ``model`` on ``nproc`` workers with DDP.

    ``model`` is an nn.Module (copied to each worker; it is not modified) or a model spec that each
    worker loads with dnncost.models.loading. ``batch_size`` is per worker; ``threads`` per worker defaults
    to the CPU cores divided among the workers. ``port`` (default: a free one) is the rendezvous
    port on 127.0.0.1. Under torchrun the launched workers are used (``nproc`` must be None or the
    world size; ``port`` is ignored) and every worker returns the record. ``baseline`` also times
    one plain process for the weak-scaling efficiency.
    """
    from dnncost.counting.counter import count

    if warmup < 1 or repeats < 1 or batch_size < 1:
        raise InputSpecError(f"need warmup >= 1 (DDP rebuilds its buckets after the first step), "
                             f"repeats >= 1 and batch_size >= 1; got warmup={warmup}, "
                             f"repeats={repeats}, batch_size={batch_size}")
    if threads is not None and threads < 1:
        raise DeviceError(f"threads must be a positive integer, got {threads}")
    optimizer = OptimizerKind(optimizer)
    backend = check_backend(backend if backend is not None else default_backend())

    if isinstance(model, str):
        from dnncost.models.loading import load_model

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
    report = count(module, mode="train", batch_size=batch_size, input_shape=shape,
                   optimizer=optimizer.value, name=name)
    cfg = _Config(model=source, input_shape=shape, batch_size=batch_size, warmup=warmup,
                  repeats=repeats, threads=threads, optimizer=optimizer.value, backend=backend.value,
                  baseline=baseline, timeout_s=timeout_s)

    if launched_by_torchrun():
        world_size = int(os.environ["WORLD_SIZE"])
        if nproc is not None and nproc != world_size:
            raise InputSpecError(f"--nproc {nproc} disagrees with torchrun's world size "
                                 f"{world_size}; leave --nproc out under torchrun")
        local_rank = int(os.environ["LOCAL_RANK"])
        if backend is Backend.NCCL:
            check_world_size(local_rank + 1, backend)
        with _process_group(backend.value, timeout_s=timeout_s):
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
        launcher=launcher, input_shape=shape, batch_size=batch_size, threads=result.threads,
        optimizer=optimizer.value, step=Measurement(result.step_s),
        allreduce=Measurement(result.allreduce_s), allreduce_bytes_per_step=result.allreduce_bytes,
        buckets_per_step=result.buckets, gradient_bytes=report.gradient_bytes, params=report.params,
        trainable_params=report.trainable_params, flops=report.total().flops,
        single_process=Measurement(result.single_s) if result.single_s else None,
        environment=current_environment(device, threads=result.threads))


def store_timing(store: Store, timing: DistributedTiming, *, network_id: int, run_uid: str) -> str:
    """Store the data-parallel step and its all-reduce (one transaction) as a 'train' step timing
    of ``network_id`` with its world size and backend; returns the timing's uid."""
    single = timing.single_process
    return store.add_data_parallel_timing(
        network_id, run_uid, samples=timing.step.samples, median_s=timing.step.median,
        iqr_s=timing.step.iqr, threads=timing.threads, world_size=timing.world_size,
        backend=timing.backend, allreduce_samples=timing.allreduce.samples,
        allreduce_s_per_step=timing.allreduce_s_per_step,
        allreduce_bytes_per_step=timing.allreduce_bytes_per_step,
        buckets_per_step=timing.buckets_per_step, gradient_bytes=timing.gradient_bytes,
        single_process_median_s=single.median if single is not None else None,
        efficiency=timing.efficiency, launcher=timing.launcher)


# -- command-line glue (wired into `dnncost time` and `dnncost study`) -----------------------------
def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """``--nproc N``, ``--backend gloo|nccl`` and ``--master-port PORT``."""
    parser.add_argument("--nproc", type=int, default=None, metavar="N",
                        help="train data-parallel on N workers with torch.distributed + DDP "
                             "(default: one plain process; under torchrun: its world size)")
    parser.add_argument("--backend", choices=[b.value for b in Backend], default=None,
                        help="torch.distributed backend: gloo (CPU workers) or nccl (one GPU per "
                             "worker); default nccl when CUDA is available, else gloo")
    parser.add_argument("--master-port", type=int, default=None, metavar="PORT",
                        help="rendezvous port on 127.0.0.1 (default: a free one)")


def wants_distributed(args: argparse.Namespace) -> bool:
    """True when the command line asked for data-parallel timing (or runs under torchrun)."""
    return getattr(args, "nproc", None) is not None or launched_by_torchrun()


def run_distributed_cli(args: argparse.Namespace, loaded_model: Any,
                        input_shape: Sequence[int]) -> int:
    """Measure as ``args`` asks and print a table, JSON or CSV (rank 0 only under torchrun).

    Reads ``nproc``, ``backend``, ``master_port``, ``batch_size``, ``format`` and, where the command
    has them, ``model`` (the spec, re-loaded in each worker), ``mode``, ``warmup``, ``repeats``,
    ``threads``, ``optimizer``.
    """
    from dnncost.reporting.formatting import human, render

    if getattr(args, "mode", "train") != "train":
        raise InputSpecError("--nproc needs --mode train: data-parallel workers only communicate "
                             "when they train")
    if getattr(args, "budget", None) is not None:
        raise InputSpecError("--budget is not supported with --nproc; give --repeats instead")
    device = str(getattr(args, "device", None) or "cpu")
    wanted = Backend.NCCL if device.split(":")[0] == "cuda" else Backend.GLOO
    backend = Backend(args.backend) if args.backend else wanted
    if backend is not wanted:
        raise InputSpecError(f"--backend {backend.value} does not go with --device {device}: gloo "
                             "runs CPU workers (--device cpu), nccl one GPU per worker (--device cuda)")
    spec = getattr(args, "model", None)
    timing = measure_distributed(
        spec if isinstance(spec, str) else loaded_model.module, input_shape,
        nproc=args.nproc, backend=backend, batch_size=args.batch_size,
        warmup=max(1, getattr(args, "warmup", None) or 3), repeats=getattr(args, "repeats", None) or 10,
        threads=getattr(args, "threads", None), optimizer=getattr(args, "optimizer", None) or "sgd",
        port=getattr(args, "master_port", None), name=loaded_model.name)
    if dist.is_available() and launched_by_torchrun() and int(os.environ["RANK"]) != 0:
        return 0
    footer = (f"{timing.world_size} {timing.backend} workers ({timing.launcher}), batch "
              f"{timing.batch_size} and {timing.threads} thread(s) per worker; step = slowest "
              f"worker's median; all-reduce = time with a gradient all-reduce in flight (DDP hook); "
              f"comm_share = all-reduce / step; efficiency = t1 / tN ({timing.scaling} scaling)")
    row = timing.to_row()
    if args.format == "table":
        for key in ("params", "flops", "gradient_bytes", "allreduce_bytes"):
            row[key] = human(row[key])
    print(render([row], args.format, title=f"{timing.model}: data-parallel training step",
                 footer=footer, json_payload=timing.to_dict()))
    return 0


__all__ = [
    "Backend", "DistributedSetupError", "DistributedTiming", "DistributedWorkerError",
    "add_distributed_arguments", "check_backend", "check_port", "check_world_size",
    "default_backend", "free_port", "launched_by_torchrun", "measure_distributed",
    "run_distributed_cli", "store_timing", "wants_distributed",
]
