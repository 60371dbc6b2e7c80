"""Really train and validate a network, timing every epoch and every validation: training,
validation and data loading apart.

:func:`train` takes the model, the data and a :class:`TrainOptions` record. It runs a fixed number
of epochs (the paper's protocol), or -- with ``target_accuracy`` -- until the validation accuracy
first reaches the target or the epochs run out (time-to-accuracy, as MLPerf Training and DAWNBench
measure it), validating ``validations_per_epoch`` times an epoch to place the crossing. It returns
a :class:`TrainingResult` of frozen :class:`EpochRecord` s, :class:`ValidationRecord` s and, with a
target, a :class:`TimeToTarget`; ``on_epoch`` and ``on_validation`` receive each record as it is
made, so a caller can store results as they come (a diverged or interrupted run keeps every
finished one). Times are wall-clock (time.perf_counter) with the device synchronised at the end of
each stretch of training and each validation pass; data-loading time is the time spent waiting for
the next batch.

The learning-rate schedule is planned over every step of ``epochs``: a run that stops early at its
target stops wherever the schedule then is (a cosine not yet decayed to zero), so its time to
target depends on the cap it was given as well as on the target.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from dnncost.training.recipe import LrSchedule, Recipe, lr_factor
from dnncost.training.records import (  # the study's store keeps them as they are
    EpochRecord,
    TimeToTarget,
    ValidationRecord,
    reaches,
    time_to_target,
)

# Defaults: LeNet-5 on digits reaches >= 95% validation accuracy with them (tests/test_training.py)
DEFAULT_EPOCHS = 10  # source: measured, LeNet-5/digits passes 95% validation accuracy by epoch ~4
DEFAULT_BATCH_SIZE = 32  # source: measured with DEFAULT_LR; a common small-data batch size
DEFAULT_LR = 0.05  # source: measured, SGD momentum 0.9 on digits converges without diverging
VALIDATIONS_PER_EPOCH = 4  # source: our choice (issue 24): a run to a target places its crossing to
# a quarter epoch; measured, LeNet-5 on digits at 1 thread: a validation pass (360 images) takes
# about a tenth of an epoch's training (1437), so four of them add some 40% to the training time
PROGRESS_EVERY = 10  # source: our choice, refresh the progress bar's loss every 10 steps


@dataclass(frozen=True)
class TrainOptions:
    """How :func:`train` trains: the one option set of a training run.

    ``epochs`` is the run's length, or with ``target_accuracy`` (a share of the validation set in
    (0, 1]) its cap: the run stops at the first validation at or above the target. The learning
    rate follows :func:`~dnncost.training.recipe.lr_factor` (``warmup_steps`` of linear warm-up,
    then ``schedule`` over all ``epochs``), updated every step; ``weight_decay`` is the optimizer's
    L2 penalty; ``precision`` casts the model and its batches and runs the forward and loss under
    autocast. ``seed`` orders the training batches (the weights are the caller's: seed torch
    before building the model). ``validations_per_epoch``: None validates once an epoch (at its
    end) without a target and VALIDATIONS_PER_EPOCH times with one.
    """

    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR
    optimizer: OptimizerKind = OptimizerKind.SGD
    schedule: LrSchedule = LrSchedule.CONSTANT
    warmup_steps: int = 0
    weight_decay: float = 0.0
    precision: Precision = Precision()
    device: str = "cpu"
    threads: int | None = None  # None: torch's current intra-op thread count
    seed: int = 0
    num_workers: int = 0  # DataLoader worker processes; 0 loads in this process
    target_accuracy: float | None = None  # None: train all ``epochs``
    validations_per_epoch: int | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "optimizer", OptimizerKind(self.optimizer))
        except ValueError:
            raise InputSpecError(f"unknown optimizer '{self.optimizer}'; choose one of "
                                 f"{', '.join(k.value for k in OptimizerKind)}") from None
        try:
            object.__setattr__(self, "schedule", LrSchedule(self.schedule))
        except ValueError:
            raise InputSpecError(f"unknown learning-rate schedule '{self.schedule}'; choose one of "
                                 f"{', '.join(s.value for s in LrSchedule)}") from None
        object.__setattr__(self, "device", str(self.device))
        epochs = "epochs (the cap of a run to a target accuracy)" if self.target_accuracy is not None \
            else "epochs"
        for label, value in (("batch size", self.batch_size), (epochs, self.epochs),
                             ("validations per epoch", self.validations_per_epoch)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputSpecError(f"{label} must be a positive integer, got {value!r}")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) \
                or self.num_workers < 0:
            raise InputSpecError(f"data-loading workers must be 0 (load in this process) or more, "
                                 f"got {self.num_workers!r}")
        if not self.lr > 0:
            raise InputSpecError(f"learning rate must be positive, got {self.lr}")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise InputSpecError(f"warm-up steps and weight decay must be >= 0, got "
                                 f"{self.warmup_steps}, {self.weight_decay}")
        if self.target_accuracy is not None and not 0.0 < self.target_accuracy <= 1.0:
            raise InputSpecError(f"target accuracy must lie in (0, 1], a share of the validation set "
                                 f"(0.9 for 90%), got {self.target_accuracy}")

    @property
    def effective_validations_per_epoch(self) -> int:
        """The validations per epoch in force (``validations_per_epoch`` or its default)."""
        if self.validations_per_epoch is not None:
            return self.validations_per_epoch
        return 1 if self.target_accuracy is None else VALIDATIONS_PER_EPOCH

    def with_recipe(self, recipe: Recipe) -> TrainOptions:
        """These options with ``recipe``'s learning rate, schedule, warm-up and weight decay (the
        epochs stay: a caller multiplies its configured ones by ``recipe.epochs``)."""
        return dataclasses.replace(self, lr=recipe.lr, schedule=recipe.schedule,
                                   warmup_steps=recipe.warmup_steps, weight_decay=recipe.weight_decay)

    def replace(self, **changes: Any) -> TrainOptions:
        """A copy with ``changes`` (field names of TrainOptions)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrainingResult:
    """A finished training run: its settings, environment, one record per epoch (the last one
    partial when the run stopped at its target inside an epoch), one per validation, and with a
    target accuracy its time to target (None in the fixed-epoch mode)."""

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
    validations: tuple[ValidationRecord, ...] = ()
    time_to_target: TimeToTarget | None = None

    @property
    def final(self) -> EpochRecord:
        return self.epochs[-1]

    @property
    def best_val_accuracy(self) -> float:
        accuracies = [v.val_accuracy for v in self.validations] or [e.val_accuracy for e in self.epochs]
        return max(accuracies)

    @property
    def total_time_s(self) -> float:
        return sum(e.train_time_s + e.val_time_s for e in self.epochs)

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "dataset": self.dataset, "batch_size": self.batch_size,
                "lr": self.lr, "optimizer": self.optimizer, "device": self.device,
                "threads": self.threads, "seed": self.seed,
                "best_val_accuracy": self.best_val_accuracy, "total_time_s": self.total_time_s,
                "epochs": [e.to_dict() for e in self.epochs],
                "validations": [v.to_dict() for v in self.validations],
                "time_to_target": None if self.time_to_target is None else self.time_to_target.to_dict(),
                "environment": self.environment.to_dict()}


@dataclass
class _Pass:
    """Running totals of one pass (or several) over a loader."""

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

    def add_pass(self, other: _Pass) -> None:
        """Add the time and samples of another pass (its loss and accuracy stay its own)."""
        self.time_s += other.time_s
        self.data_s += other.data_s
        self.samples += other.samples

    @property
    def loss(self) -> float:
        return self.loss_sum / self.samples if self.samples else math.nan

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples if self.samples else math.nan


def validation_steps(steps_per_epoch: int, per_epoch: int) -> tuple[int, ...]:
    """The 1-based steps of an epoch after which the run validates: floor(j * S / K) for
    j = 1..K (S steps, K validations an epoch), so the last is always the epoch's end; when K > S
    the duplicates (and step 0) go, and it validates after every step."""
    return tuple(sorted({j * steps_per_epoch // per_epoch for j in range(1, per_epoch + 1)} - {0}))


def train(model: nn.Module, data: DatasetSplit, *, options: TrainOptions | None = None,
          name: str | None = None, progress: bool = True,
          on_epoch: Callable[[EpochRecord], None] | None = None,
          on_validation: Callable[[ValidationRecord], None] | None = None) -> TrainingResult:
    """Train ``model`` on ``data.train`` as ``options`` say (default TrainOptions()), validating on
    ``data.val``: ``options.epochs`` epochs, or until ``options.target_accuracy`` is reached.

    The model is trained in place (and moved to ``options.device``). A non-finite loss stops the
    run with TrainingDivergedError naming the epoch and step; a batch too large for memory raises
    BatchTooLargeError. ``on_epoch`` and ``on_validation`` receive each EpochRecord and
    ValidationRecord as soon as it is made; ``progress`` shows one bar for the run with an
    estimate of the time left (to the cap, for a run to a target).
    """
    from tqdm.auto import tqdm

    opts = options if options is not None else TrainOptions()
    dev = resolve_device(opts.device)
    name = name if name is not None else type(model).__name__
    generator = torch.Generator().manual_seed(opts.seed)
    pin = dev.type == "cuda"  # page-locked batches copy to the GPU asynchronously
    train_loader = DataLoader(data.train, batch_size=opts.batch_size, shuffle=True, generator=generator,
                              num_workers=opts.num_workers, pin_memory=pin)
    val_loader = DataLoader(data.val, batch_size=opts.batch_size, shuffle=False,
                            num_workers=opts.num_workers, pin_memory=pin)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise InputSpecError(f"dataset '{data.name}' has no training samples")
    if not trainable_parameters(model):
        raise InputSpecError(f"{name} has no trainable parameters, so training has nothing to update")
    train_size = len(train_loader.dataset)  # type: ignore[arg-type]
    checkpoints = set(validation_steps(steps_per_epoch, opts.effective_validations_per_epoch))
    target = opts.target_accuracy
    records: list[EpochRecord] = []
    validations: list[ValidationRecord] = []
    batch_shape = "x".join(map(str, (opts.batch_size, *data.input_shape)))
    with using_threads(opts.threads) as n_threads, \
            out_of_memory_as_error(batch_size=opts.batch_size, device=dev), \
            named_model_failure(model, name=name, shape=batch_shape), \
            tqdm(total=opts.epochs * steps_per_epoch, unit="batch", leave=False,
                 disable=not progress) as bar:
        model.to(dev)
        prec = opts.precision
        prec.apply(model)
        _check_classes(model, data, dev, prec)
        opt = make_optimizer(opts.optimizer, model.parameters(), lr=opts.lr)
        for group in opt.param_groups:
            group["weight_decay"] = opts.weight_decay
        sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(
            _factor, total_steps=opts.epochs * steps_per_epoch, warmup_steps=opts.warmup_steps,
            schedule=opts.schedule))
        stop = False
        postfix: dict[str, str] = {}  # the latest training loss and validation accuracy
        for epoch in range(1, opts.epochs + 1):
            bar.set_description(f"epoch {epoch}/{opts.epochs}"
                                + ("" if target is None else f", to {target:g} accuracy"))
            tr, va = _Pass(), _Pass()
            last_val = _Pass()
            model.train()
            start = time.perf_counter()
            for step, (x, y) in enumerate(_batches(train_loader, dev, tr, prec), start=1):
                _train_step(model, (x, y), optimizer=opt, scheduler=sched, totals=tr, device=dev,
                            precision=prec, where=f"epoch {epoch}, step {step} of {steps_per_epoch}")
                bar.update(1)
                if step % PROGRESS_EVERY == 0:
                    postfix["loss"] = f"{tr.loss:.4f}"
                    bar.set_postfix(postfix, refresh=False)
                if step not in checkpoints:
                    continue
                synchronize(dev)
                tr.time_s += time.perf_counter() - start
                last_val = _val_pass(model, val_loader, dev, prec)
                va.add_pass(last_val)
                record = _validation(records, (tr, va, last_val), index=len(validations) + 1,
                                     epoch=epoch, train_size=train_size)
                validations.append(record)
                if on_validation is not None:
                    on_validation(record)
                postfix["val_acc"] = f"{last_val.accuracy:.4f}"
                bar.set_postfix(postfix)
                if target is not None and reaches(last_val.accuracy, target):
                    stop = True
                    break
                model.train()
                start = time.perf_counter()
            else:  # the epoch ran out (its last step validated): the wait for the end of the data
                synchronize(dev)
                tr.time_s += time.perf_counter() - start
            record_e = EpochRecord(
                epoch=epoch, train_time_s=tr.time_s, val_time_s=va.time_s,
                train_data_time_s=tr.data_s, val_data_time_s=va.data_s,
                train_loss=tr.loss, train_accuracy=tr.accuracy,
                val_loss=last_val.loss, val_accuracy=last_val.accuracy,
                train_samples=tr.samples, val_samples=va.samples, steps=tr.steps)
            records.append(record_e)
            if on_epoch is not None:
                on_epoch(record_e)
            if stop:
                break
        environment = current_environment(dev, threads=n_threads)
    reached = None if target is None else time_to_target(
        validations, target_accuracy=target, max_epochs=opts.epochs,
        validations_per_epoch=opts.effective_validations_per_epoch)
    return TrainingResult(
        model=name, dataset=data.name, epochs=tuple(records), batch_size=opts.batch_size, lr=opts.lr,
        optimizer=opts.optimizer.value, device=str(dev), threads=n_threads, seed=opts.seed,
        environment=environment, validations=tuple(validations), time_to_target=reached)


def _validation(finished: list[EpochRecord], passes: tuple[_Pass, _Pass, _Pass], *, index: int,
                epoch: int, train_size: int) -> ValidationRecord:
    """The run's totals at a validation: the ``finished`` epochs' and this epoch's so far
    (``passes``: its training, its validations, and the validation just run)."""
    tr, va, last = passes
    samples = sum(e.train_samples for e in finished) + tr.samples
    return ValidationRecord(
        index=index, epoch=epoch, epochs=samples / train_size,
        steps=sum(e.steps for e in finished) + tr.steps, samples=samples,
        train_time_s=sum(e.train_time_s for e in finished) + tr.time_s,
        val_time_s=sum(e.val_time_s for e in finished) + va.time_s,
        train_data_time_s=sum(e.train_data_time_s for e in finished) + tr.data_s,
        val_data_time_s=sum(e.val_data_time_s for e in finished) + va.data_s,
        val_loss=last.loss, val_accuracy=last.accuracy)


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


def _train_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], *,
                optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                totals: _Pass, device: torch.device, precision: Precision, where: str) -> None:
    """One optimizer step on ``batch`` (x, y), added to ``totals``; TrainingDivergedError naming
    ``where`` on a non-finite loss."""
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    with precision.forward_context(device):
        logits = primary_output(model(x))
        loss = F.cross_entropy(logits, y)
    loss_value = loss.item()  # also synchronises the device
    if not math.isfinite(loss_value):
        raise TrainingDivergedError(
            f"loss became {loss_value} at {where}; "
            "lower the learning rate or check the data")
    loss.backward()
    optimizer.step()
    scheduler.step()
    totals.add(loss_value, logits.detach(), y)


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


__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_EPOCHS", "DEFAULT_LR", "VALIDATIONS_PER_EPOCH", "EpochRecord",
           "TimeToTarget", "TrainOptions", "TrainingResult", "ValidationRecord", "evaluate", "train",
           "validation_steps"]
