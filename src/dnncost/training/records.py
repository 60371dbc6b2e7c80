"""What a training run leaves behind, as plain values a results store can keep without torch: one
record per epoch (table ``epochs``, one column per field), one per validation, and the time to a
target accuracy. They live apart from :mod:`.trainer` so that reading a store does not import torch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: wall times (seconds), data-loading share, mean loss and accuracy of each pass.

    An epoch validated several times (``validations_per_epoch`` > 1) sums the time and samples of
    all its validations in the ``val_*`` times and ``val_samples``; ``val_loss`` and
    ``val_accuracy`` are those of its last validation (at its end). A run stopped at a target
    accuracy ends with a partial epoch: its ``steps`` and ``train_samples`` say how much of it ran.
    A loss or accuracy that is NaN (e.g. a pass over no samples) is stored as SQL NULL and read
    back as NaN.
    """

    epoch: int  # 1-based
    train_time_s: float  # the epoch's training, data loading included, validations excluded
    val_time_s: float  # the epoch's validation passes, data loading included
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
class ValidationRecord:
    """One validation pass during training, with the run's totals up to and including it.

    Times are cumulative wall times (seconds) since training began: ``train_time_s`` of the
    training steps alone, ``val_time_s`` of every validation pass so far (this one included), each
    with its data-loading share apart; their sum is the run's time so far.
    """

    index: int  # 1-based count of validations in the run
    epoch: int  # 1-based epoch it falls in
    epochs: float  # training samples seen / training-set size: 1.25 after a quarter of epoch 2
    steps: int  # optimizer steps so far
    samples: int  # training samples seen so far
    train_time_s: float
    val_time_s: float
    train_data_time_s: float  # part of train_time_s spent waiting for batches
    val_data_time_s: float  # part of val_time_s spent waiting for batches
    val_loss: float
    val_accuracy: float

    @property
    def total_time_s(self) -> float:
        """Training and validation time so far together."""
        return self.train_time_s + self.val_time_s

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "total_time_s": self.total_time_s}


def reaches(accuracy: float, target: float) -> bool:
    """Whether a validation ``accuracy`` (0-1) reaches ``target``: at or above it (NaN never does)."""
    return accuracy >= target


@dataclass(frozen=True)
class TimeToTarget:
    """How long a run took to reach a validation accuracy (time-to-accuracy, as MLPerf Training
    and DAWNBench measure it), read at the first validation at or above the target.

    The crossing is placed to within one validation interval (1 / ``validations_per_epoch`` of an
    epoch): the run reached the target somewhere after the validation before. When ``reached`` is
    False the run hit its cap (``max_epochs``) first, and the figures are those of its last
    validation: lower bounds on the time to target. ``train_time_s`` counts the training steps
    alone (data loading included); ``val_time_s`` the validation passes the run made to find the
    crossing, which cost time too; ``total_time_s`` both.
    """

    target_accuracy: float
    reached: bool
    max_epochs: int
    validations_per_epoch: int
    validations: int  # validation passes run up to the crossing (or the cap), it included
    epochs: float  # fractional: training samples seen / training-set size
    steps: int
    samples: int
    train_time_s: float
    val_time_s: float
    train_data_time_s: float
    val_data_time_s: float
    val_loss: float  # at the crossing (or the last validation)
    val_accuracy: float  # at the crossing (or the last validation)
    best_val_accuracy: float  # the best of the validations up to the crossing (or the cap)

    @property
    def total_time_s(self) -> float:
        """Training and validation time to the target together."""
        return self.train_time_s + self.val_time_s

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "total_time_s": self.total_time_s}


def time_to_target(validations: Sequence[ValidationRecord], *, target_accuracy: float,
                   max_epochs: int, validations_per_epoch: int) -> TimeToTarget:
    """The time to ``target_accuracy`` of a run's ``validations`` (in order): read at the first that
    reaches it, or at the last (``reached`` False) when none does."""
    if not validations:
        raise ValueError("a time to target needs at least one validation")
    crossing = next((i for i, v in enumerate(validations) if reaches(v.val_accuracy, target_accuracy)),
                    len(validations) - 1)
    at, upto = validations[crossing], validations[:crossing + 1]
    return TimeToTarget(
        target_accuracy=target_accuracy, reached=reaches(at.val_accuracy, target_accuracy),
        max_epochs=max_epochs, validations_per_epoch=validations_per_epoch, validations=len(upto),
        epochs=at.epochs, steps=at.steps, samples=at.samples, train_time_s=at.train_time_s,
        val_time_s=at.val_time_s, train_data_time_s=at.train_data_time_s,
        val_data_time_s=at.val_data_time_s, val_loss=at.val_loss, val_accuracy=at.val_accuracy,
        best_val_accuracy=max((v.val_accuracy for v in upto if not math.isnan(v.val_accuracy)),
                              default=math.nan))


__all__ = ["EpochRecord", "TimeToTarget", "ValidationRecord", "reaches", "time_to_target"]
