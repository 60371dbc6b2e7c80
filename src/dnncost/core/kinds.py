"""The kinds of step, named once: what a step is (:class:`Mode`), which optimizer a training step
uses (:class:`OptimizerKind`), which backend data-parallel workers meet over (:class:`Backend`), and
how many untimed steps come before a timed one (:data:`DEFAULT_WARMUP`). Free of torch, so the
command line can offer the choices and defaults without importing it; :mod:`dnncost.core.step`
builds steps from them."""
from __future__ import annotations

from enum import Enum


class Mode(str, Enum):
    """What one step is. It prints, formats, hashes and compares as its name ('train'), so it
    stands wherever the name does: in f-strings, dictionary keys, JSON and the store."""

    TRAIN = "train"  # zero_grad + forward + loss + backward + optimizer step
    EVAL = "eval"  # model.eval() + forward under no_grad

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class OptimizerKind(str, Enum):
    """The optimizers a training step can use (one list: every command and API takes these)."""

    SGD = "sgd"  # momentum 0.9
    ADAM = "adam"
    ADAMW = "adamw"


class Backend(str, Enum):
    """torch.distributed backends: gloo for CPU workers, nccl for one GPU per worker."""

    GLOO = "gloo"
    NCCL = "nccl"


MODES = tuple(m.value for m in Mode)  # the names ('train', 'eval'), for argument choices and rows
OPTIMIZERS = tuple(k.value for k in OptimizerKind)  # the names, for argument choices and messages

DEFAULT_WARMUP = 2  # untimed steps before the timed ones, for every timer (time_model, the study,
# cost vs work); source: measured, the allocator is warm and oneDNN/cuDNN have picked and built
# their kernels after 2 steps

__all__ = ["DEFAULT_WARMUP", "MODES", "OPTIMIZERS", "Backend", "Mode", "OptimizerKind"]
