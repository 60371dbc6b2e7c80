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

Launching the workers (spawned or under ``torchrun``, never outliving their parent) is
:mod:`dnncost.distributed.launch`'s.

``allreduce_bytes_per_step`` is what each worker hands to all-reduce (the gradients' size), not the
bytes on the wire (a ring all-reduce sends 2 (N - 1) / N of it per worker). The buffers (BatchNorm
statistics) DDP broadcasts at each forward are part of the step time, not of the all-reduce time.
"""
from __future__ import annotations

import copy
import functools
import io
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dnncost.core.device import StepClock, check_threads, synchronize
from dnncost.core.environment import Environment, current_environment
from dnncost.core.errors import InputSpecError
from dnncost.core.failure import named_model_failure
from dnncost.core.step import Mode, primary_output
from dnncost.core.workload import Workload
from dnncost.counting.counter import count
from dnncost.distributed.launch import (
    Backend,
    GroupOptions,
    backend_for_device,
    check_port,
    check_world_size,
    free_port,
    launch_environment,
    launched_by_torchrun,
    process_group,
    spawn,
)
from dnncost.distributed.records import DataParallelStep
from dnncost.measuring.measurement import Measurement
from dnncost.measuring.timing import StepOptions, prepare_step, step_options
from dnncost.models.loading import load_model

SCALING = "weak"  # efficiency compares equal per-worker batches: t1 / tN


@dataclass(frozen=True)
class DistributedTiming(Workload):
    """A data-parallel training step of one network on ``world_size`` workers.

    ``step`` holds per-step seconds (slowest worker), ``allreduce`` the per-step seconds with a
    gradient all-reduce in flight (mean over workers), ``single_process`` the same step in one plain
    process (no DDP) with the same per-worker batch and threads (None when not measured).
    ``gradient_bytes`` is dnncost.counting.counter's figure (CostReport.gradient_bytes); ``flops`` the counted
    FLOPs of one worker's step. Its :class:`Workload` is always a training step, at the batch size
    of one worker.
    """

    world_size: int
    backend: str
    device: str
    launcher: str  # "spawn" (dnncost started the workers) or "torchrun"
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
    group: GroupOptions
    baseline: bool


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
    """Warm up, then time ``cfg.options.steps`` training steps of ``net`` (dnncost.measuring.timing's
    step, the one ``dnncost time`` measures); with a recorder (DDP), a barrier starts every step
    together.
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
    for _ in range(opts.steps):
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
    nccl = cfg.group.backend == Backend.NCCL.value
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


# -- the public entry point ------------------------------------------------------------------------
def measure_distributed(
    model: nn.Module | str,
    input_shape: Sequence[int] | None = None,
    *,
    options: StepOptions | None = None,
    group: GroupOptions | None = None,
    nproc: int | None = None,
    port: int | None = None,
    baseline: bool = True,
    name: str | None = None,
    **overrides: Any,
) -> DistributedTiming:
    """Time a data-parallel training step of ``model`` on ``nproc`` workers with DDP.

    ``model`` is an nn.Module (copied to each worker; it is not modified) or a model spec that each
    worker loads with dnncost.models.loading. ``options`` (or keyword ``overrides`` of its fields,
    as :func:`dnncost.measuring.timing.time_model` takes them) is the timed step: a training step,
    ``batch_size`` and ``threads`` per worker (threads default to the CPU cores divided among the
    workers), ``warmup`` (at least 1: DDP rebuilds its buckets after the first step), ``steps``,
    ``optimizer``. ``group`` (:class:`~dnncost.distributed.launch.GroupOptions`) is how the workers
    meet: the backend (default: the one that goes with the step's ``device``), how long every
    worker has to arrive and how long each collective may wait afterwards. ``port`` (default:
    a free one) is the rendezvous port on 127.0.0.1. Under torchrun the launched workers are used
    (``nproc`` must be None or the world size; ``port`` is ignored) and every worker returns the
    record. ``baseline`` also times one plain process for the weak-scaling efficiency.
    """
    opts = step_options(options, overrides)
    if opts.mode is not Mode.TRAIN:
        raise InputSpecError("data-parallel timing needs a training step (mode 'train'): workers "
                             "only communicate when they train")
    if opts.budget_s is not None:
        raise InputSpecError("a time budget is not supported for data-parallel timing; give a "
                             "number of steps instead")
    if opts.warmup < 1:
        raise InputSpecError(f"data-parallel timing needs at least 1 warm-up step (DDP rebuilds "
                             f"its buckets after the first step), got {opts.warmup}")
    if opts.threads is not None:
        check_threads(opts.threads)
    group = GroupOptions() if group is None else group
    backend = backend_for_device(opts.device, group.backend)
    group = replace(group, backend=backend.value)

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
    report = count(module, mode=Mode.TRAIN, batch_size=opts.batch_size, input_shape=shape,
                   optimizer=opts.optimizer.value, name=name)
    cfg = _Config(model=source, name=name, input_shape=shape, options=opts, group=group,
                  baseline=baseline)

    if launched_by_torchrun():
        rank, world_size, local_rank, addr, master_port = launch_environment()
        if nproc is not None and nproc != world_size:
            raise InputSpecError(f"{nproc} workers requested but torchrun's world size is "
                                 f"{world_size}; leave the number of workers out under torchrun")
        if backend is Backend.NCCL:
            check_world_size(local_rank + 1, backend)
        with process_group(group, rank=rank, world_size=world_size, addr=addr, port=master_port):
            result = _measure_rank(dist.get_rank(), dist.get_world_size(), local_rank, cfg)
        launcher = "torchrun"
    else:
        nproc = 1 if nproc is None else nproc
        check_world_size(nproc, backend)
        result = spawn(functools.partial(_measure_rank, cfg=cfg), group, nproc=nproc,
                       port=check_port(port) if port is not None else free_port())
        launcher = "spawn"

    device = "cuda" if backend is Backend.NCCL else "cpu"
    return DistributedTiming(
        model=name, mode=Mode.TRAIN, world_size=result.world_size, backend=backend.value, device=device,
        launcher=launcher, input_shape=shape, batch_size=opts.batch_size, threads=result.threads,
        optimizer=opts.optimizer.value, step=Measurement(result.step_s),
        allreduce=Measurement(result.allreduce_s), allreduce_bytes_per_step=result.allreduce_bytes,
        buckets_per_step=result.buckets, gradient_bytes=report.gradient_bytes, params=report.params,
        trainable_params=report.trainable_params, flops=report.total().flops,
        single_process=Measurement(result.single_s) if result.single_s else None,
        environment=current_environment(device, threads=result.threads))


__all__ = ["DistributedTiming", "measure_distributed"]
