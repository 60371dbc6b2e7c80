"""Really train and validate a network, timing every epoch: training, validation and data loading.

:func:`train` returns a :class:`TrainingResult` of frozen :class:`EpochRecord` s and calls
``on_epoch`` as each epoch finishes, so a caller can store results as they come (a diverged or
interrupted run keeps every finished epoch). Times are wall-clock (time.perf_counter) with the device
synchronised at the end of each pass; data-loading time is the time spent waiting for the next batch.
"""
from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dnncost.core.device import (
    out_of_memory_as_error,
    resolve_device,
    synchronize,
    using_threads,
)
from dnncost.core.environment import Environment, current_environment
from dnncost.core.errors import InputSpecError, TrainingDivergedError
from dnncost.core.failure import named_model_failure
from dnncost.core.inputs import Precision
from dnncost.core.step import OptimizerKind, make_optimizer, primary_output, trainable_parameters
from dnncost.training.data import DatasetSplit
from dnncost.training.recipe import LrSchedule, lr_factor
from dnncost.training.records import EpochRecord  # the study's store keeps it as it is

# Defaults: LeNet-5 on digits reaches >= 95% validation accuracy with them (tests/test_training.py)
DEFAULT_EPOCHS = 10  # source: measured, LeNet-5/digits passes 95% validation accuracy by epoch ~4
DEFAULT_BATCH_SIZE = 32  # source: measured with DEFAULT_LR; a common small-data batch size
DEFAULT_LR = 0.05  # source: measured, SGD momentum 0.9 on digits converges without diverging
PROGRESS_EVERY = 10  # source: our choice, refresh the progress bar's loss every 10 steps
@dataclass(frozen=True)
class TrainingResult:
    """A finished training run: its settings, environment and one record per epoch."""

    model: str
    dataset: str
    epochs: tuple[EpochRecord, ...]
    batch_size: int
    lr: float
    optimizer: str
    device: str
    threads: int
    seed: int
    environment: Environment

    @property
    def final(self) -> EpochRecord:
        return self.epochs[-1]

    @property
    def best_val_accuracy(self) -> float:
        return max(e.val_accuracy for e in self.epochs)

    @property
    def total_time_s(self) -> float:
        return sum(e.train_time_s + e.val_time_s for e in self.epochs)

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "dataset": self.dataset, "batch_size": self.batch_size,
                "lr": self.lr, "optimizer": self.optimizer, "device": self.device,
                "threads": self.threads, "seed": self.seed,
                "best_val_accuracy": self.best_val_accuracy, "total_time_s": self.total_time_s,
                "epochs": [e.to_dict() for e in self.epochs],
                "environment": self.environment.to_dict()}


@dataclass
class _Pass:
    """Running totals of one pass over a loader."""

    time_s: float = 0.0
    data_s: float = 0.0
    loss_sum: float = 0.0
    correct: int = 0
    samples: int = 0
    steps: int = 0

    def add(self, loss: float, logits: torch.Tensor, y: torch.Tensor) -> None:
        n = y.shape[0]
        self.loss_sum += loss * n
        self.correct += int((logits.argmax(1) == y).sum())
        self.samples += n
        self.steps += 1

    @property
    def loss(self) -> float:
        return self.loss_sum / self.samples if self.samples else math.nan

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples if self.samples else math.nan


def train(
    model: nn.Module,
    data: DatasetSplit,
    *,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    optimizer: OptimizerKind | str = OptimizerKind.SGD,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    seed: int = 0,
    num_workers: int = 0,
    progress: bool = True,
    name: str | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    schedule: LrSchedule | str = LrSchedule.CONSTANT,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    precision: Precision | None = None,
) -> TrainingResult:
    """Train ``model`` on ``data.train`` for ``epochs``, validating on ``data.val`` after each.

    The learning rate follows :func:`lr_factor` (``warmup_steps`` of linear warm-up, then
    ``schedule``), updated every step; ``weight_decay`` is the optimizer's L2 penalty;
    ``precision`` casts the model and its batches and runs the forward and loss under autocast
    (dnncost.core.inputs.Precision).

    The model is trained in place (and moved to ``device``). A non-finite loss stops the run with
    TrainingDivergedError naming the epoch and step; a batch too large for memory raises
    BatchTooLargeError. ``on_epoch`` receives each EpochRecord as soon as the epoch is done.
    """
    optimizer = OptimizerKind(optimizer)
    dev = resolve_device(device)
    for label, value in (("batch size", batch_size), ("epochs", epochs)):
        if value <= 0:
            raise InputSpecError(f"{label} must be a positive integer, got {value}")
    if num_workers < 0:
        raise InputSpecError(f"data-loading workers must be 0 (load in this process) or more, "
                             f"got {num_workers}")
    if not lr > 0:
        raise InputSpecError(f"learning rate must be positive, got {lr}")
    if warmup_steps < 0 or weight_decay < 0:
        raise InputSpecError(f"warm-up steps and weight decay must be >= 0, got {warmup_steps}, "
                             f"{weight_decay}")
    try:
        schedule = LrSchedule(schedule)
    except ValueError:
        raise InputSpecError(f"unknown learning-rate schedule '{schedule}'; choose one of "
                             f"{', '.join(s.value for s in LrSchedule)}") from None
    name = name or type(model).__name__
    generator = torch.Generator().manual_seed(seed)
    pin = dev.type == "cuda"  # page-locked batches copy to the GPU asynchronously
    train_loader = DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=generator,
                              num_workers=num_workers, pin_memory=pin)
    val_loader = DataLoader(data.val, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            pin_memory=pin)
    records: list[EpochRecord] = []
    if not trainable_parameters(model):
        raise InputSpecError(f"{name} has no trainable parameters, so training has nothing to update")
    batch_shape = "x".join(map(str, (batch_size, *data.input_shape)))
    with using_threads(threads) as n_threads, out_of_memory_as_error(batch_size=batch_size, device=dev), \
            named_model_failure(model, name=name, shape=batch_shape):
        model.to(dev)
        prec = precision or Precision()
        prec.apply(model)
        _check_classes(model, data, dev, prec)
        opt = make_optimizer(optimizer, model.parameters(), lr=lr)
        for group in opt.param_groups:
            group["weight_decay"] = weight_decay
        total = epochs * len(train_loader)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(
            _factor, total_steps=total, warmup_steps=warmup_steps, schedule=schedule))
        for epoch in range(1, epochs + 1):
            tr = _train_pass(model, train_loader, opt, dev, prec, epoch=epoch, epochs=epochs,
                             progress=progress, scheduler=sched)
            va = _val_pass(model, val_loader, dev, prec)
            record = EpochRecord(
                epoch=epoch, train_time_s=tr.time_s, val_time_s=va.time_s,
                train_data_time_s=tr.data_s, val_data_time_s=va.data_s,
                train_loss=tr.loss, train_accuracy=tr.accuracy,
                val_loss=va.loss, val_accuracy=va.accuracy,
                train_samples=tr.samples, val_samples=va.samples, steps=tr.steps)
            records.append(record)
            if on_epoch is not None:
                on_epoch(record)
        environment = current_environment(dev, threads=n_threads)
    return TrainingResult(
        model=name, dataset=data.name, epochs=tuple(records), batch_size=batch_size, lr=lr,
        optimizer=optimizer.value, device=str(dev), threads=n_threads, seed=seed,
        environment=environment)


def _factor(step: int, **kwargs: object) -> float:
    """lr_factor as LambdaLR calls it (one positional argument)."""
    return lr_factor(step, **kwargs)  # type: ignore[arg-type]


def _check_classes(model: nn.Module, data: DatasetSplit, device: torch.device,
                   precision: Precision) -> None:
    """The network must have an output per class of the dataset."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), precision.forward_context(device):
        x = precision.batch(data.train[0][0].unsqueeze(0).to(device))  # (1, *sample)
        logits = primary_output(model(x))  # (1, classes)
    model.train(was_training)
    if logits.dim() != 2 or logits.shape[1] < data.num_classes:
        raise InputSpecError(
            f"the network gives outputs of shape {tuple(logits.shape[1:])} per sample but dataset "
            f"'{data.name}' has {data.num_classes} classes; it needs at least {data.num_classes} logits")


def _batches(loader: DataLoader, device: torch.device, totals: _Pass, precision: Precision):
    """Yield (x, y) on ``device`` (x in ``precision``), adding the time spent waiting for each batch
    to ``totals.data_s``."""
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            return
        x, y = precision.batch(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
        totals.data_s += time.perf_counter() - t0
        yield x, y


def _train_pass(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer,
                device: torch.device, precision: Precision, *, epoch: int, epochs: int, progress: bool,
                scheduler: torch.optim.lr_scheduler.LRScheduler) -> _Pass:
    from tqdm.auto import tqdm

    totals = _Pass()
    model.train()
    t0 = time.perf_counter()
    with tqdm(total=len(loader), desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
              disable=not progress) as bar:
        for step, (x, y) in enumerate(_batches(loader, device, totals, precision), start=1):
            opt.zero_grad(set_to_none=True)
            with precision.forward_context(device):
                logits = primary_output(model(x))
                loss = F.cross_entropy(logits, y)
            loss_value = loss.item()  # also synchronises the device
            if not math.isfinite(loss_value):
                raise TrainingDivergedError(
                    f"loss became {loss_value} at epoch {epoch}, step {step} of {len(loader)}; "
                    "lower the learning rate or check the data")
            loss.backward()
            opt.step()
            scheduler.step()
            totals.add(loss_value, logits.detach(), y)
            bar.update(1)
            if step % PROGRESS_EVERY == 0:
                bar.set_postfix(loss=f"{totals.loss:.4f}")
    synchronize(device)
    totals.time_s = time.perf_counter() - t0
    return totals


def _val_pass(model: nn.Module, loader: DataLoader, device: torch.device,
              precision: Precision) -> _Pass:
    totals = _Pass()
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for x, y in _batches(loader, device, totals, precision):
            with precision.forward_context(device):
                logits = primary_output(model(x))
                loss = F.cross_entropy(logits, y)
            totals.add(loss.item(), logits, y)
    synchronize(device)
    totals.time_s = time.perf_counter() - t0
    return totals


def evaluate(model: nn.Module, data: Dataset, *, batch_size: int = DEFAULT_BATCH_SIZE,
             device: str | torch.device = "cpu", precision: Precision | None = None) -> float:
    """Accuracy (0-1) of ``model`` (already on ``device``) on ``data``: the validation pass of
    :func:`train`, for a network that is validated without being trained."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    return _val_pass(model, loader, resolve_device(device), precision or Precision()).accuracy


__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_EPOCHS", "DEFAULT_LR", "EpochRecord", "TrainingResult",
           "evaluate", "train"]
