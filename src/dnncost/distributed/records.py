"""One data-parallel training step with its all-reduce, as the study's store keeps it (tables
``step_timings`` and ``allreduce_timings``). It lives apart from :mod:`.data_parallel` so that reading a
results store does not import torch.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataParallelStep:
    """A data-parallel training step as measured (:func:`dnncost.distributed.data_parallel.store_timing`
    makes it), with its all-reduce; the store keeps it as a step timing and an all-reduce row."""

    samples: tuple[float, ...]  # seconds per step, the slowest worker's
    median_s: float
    iqr_s: float
    threads: int  # per worker
    world_size: int
    backend: str
    allreduce_samples: tuple[float, ...]  # seconds per step with a gradient all-reduce in flight
    allreduce_s_per_step: float  # median of allreduce_samples
    allreduce_bytes_per_step: int  # what each worker hands to all-reduce
    buckets_per_step: int
    gradient_bytes: int  # dnncost.counting.counter's figure
    single_process_median_s: float | None  # one plain process, same batch and threads
    efficiency: float | None  # weak scaling t1 / tN
    launcher: str  # 'spawn' or 'torchrun'


__all__ = ["DataParallelStep"]
