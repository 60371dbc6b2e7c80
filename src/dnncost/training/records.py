"""One epoch of real training as the study's store keeps it (table ``epochs``, one column per
field). It lives apart from :mod:`.trainer` so that reading a results store does not import torch.
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


__all__ = ["EpochRecord"]
