"""Measurement records the study's store keeps as they are (:mod:`dnncost.study.store`): one epoch
of real training (table ``epochs``, one column per field) and one data-parallel training step with
its all-reduce (tables ``step_timings`` and ``allreduce_timings``).

They live apart from ``training.py`` and ``distributed.py`` so that reading a results store does
not import torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: wall times (seconds), data-loading share, mean loss and accuracy of each pass.

    A loss or accuracy that is NaN (e.g. a pass over no samples) is stored as SQL NULL and read
    back as NaN.
    """

    epoch: int  # 1-based
    train_time_s: float  # the whole training pass, data loading included
    val_time_s: float  # the whole validation pass, data loading included
    train_data_time_s: float  # part of train_time_s spent waiting for batches
    val_data_time_s: float  # part of val_time_s spent waiting for batches
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    train_samples: int
    val_samples: int
    steps: int

    @property
    def data_time_s(self) -> float:
        """Time spent waiting for data in both passes."""
        return self.train_data_time_s + self.val_data_time_s

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "data_time_s": self.data_time_s}


@dataclass(frozen=True)
class DataParallelStep:
    """A data-parallel training step as measured (:func:`dnncost.measuring.distributed.store_timing`
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


__all__ = ["DataParallelStep", "EpochRecord"]
