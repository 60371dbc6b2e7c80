"""``whatif --train``: validation accuracy beside the time saved.

The original is trained with the study's recipe (:mod:`dnncost.training.recipe`: its family's rate,
SGD with momentum 0.9, linear warm-up then cosine decay, and its family's epochs -- ``Recipe.epochs``
of the configured ones, RECIPE_EPOCHS by default, as the study trains it) on the offline data
(scikit-learn's digits by default, :mod:`dnncost.training.data`) at the study's batch size. Each
transformation is then applied to the *trained* network, as compression is used -- prune, factorise
or replace, then retrain (Han et al. 2015; Li et al. 2017; Denton et al. 2014) -- and its
:class:`~dnncost.whatif.registry.Training` says what follows:

- ``fine-tune``: trained again with the same recipe for the same epochs (bf16/fp16 under their
  autocast); a variant whose training would crawl on this device (fp16 on a CPU:
  ``Variant.not_trained`` says why) is validated as transformed instead;
- ``fine-tune, zeros kept``: the same, every zero weight held at zero by a pruning mask (magnitude
  pruning: without one, training refills the zeros);
- ``evaluate``: validated as transformed, not trained (int8: quantised kernels have no backward),
  calibrated on training images;
- ``original's``: the network and its function are the original's (channels_last, compile, threads,
  batch size -- the recipe trains at its own batch size), so the original's accuracy stands.

A variant whose training fails (diverges, runs out of memory, ...) gets no accuracy and says why;
the others go on. Accuracy is the validation accuracy after the last epoch.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace

from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader

from dnncost.core.device import resolve_device, using_threads
from dnncost.core.errors import DnncostError, InputSpecError
from dnncost.core.inputs import InputSpec, ModelInputs, Precision, TensorInput
from dnncost.core.kinds import Mode
from dnncost.training.data import DatasetSplit, load_dataset
from dnncost.training.recipe import DEFAULT_RECIPE, RECIPE_EPOCHS, Recipe
from dnncost.training.records import EpochRecord
from dnncost.training.trainer import TrainOptions, evaluate, train
from dnncost.whatif.int8 import CALIBRATION_BATCHES
from dnncost.whatif.prune_magnitude import PRUNABLE
from dnncost.whatif.registry import Context, NotApplicable, Spec, Training, first_line
from dnncost.whatif.runner import WhatIfResult

ORIGINAL = "(original)"  # the label of the original network's accuracy
SEED = 0  # source: the study's seed (dnncost.study.sweep.SEED): the same split and batch order
TRAINED = (Training.FINE_TUNE, Training.FINE_TUNE_MASKED)  # the plans that run epochs
FAILURES = (DnncostError, RuntimeError, ValueError, TypeError, IndexError, AttributeError, KeyError)
# what a transformed network's training may raise: kept as that variant's note, the others go on

EpochHook = Callable[[str, EpochRecord], None]  # (transformation label or ORIGINAL, the epoch)


@dataclass(frozen=True)
class TrainingOptions:
    """How the original and each transformed network are trained: the study's ``recipe`` on
    ``dataset``, each run as ``train`` says (:class:`~dnncost.training.trainer.TrainOptions`: its
    epochs, batch size, device, threads, the original's precision, seed), the recipe's rate and
    schedule laid over it. ``train.epochs`` are the recipe's for the configured ones
    (``recipe.epochs(configured)``: a family may train a multiple), as the caller worked them out.
    """

    recipe: Recipe = DEFAULT_RECIPE
    dataset: str = "digits"
    train: TrainOptions = TrainOptions(epochs=RECIPE_EPOCHS, seed=SEED)

    def run(self, precision: Precision) -> TrainOptions:
        """One training run's options: ``train`` in ``precision`` with the recipe applied."""
        return replace(self.train, precision=precision).with_recipe(self.recipe)

    def describe(self) -> str:
        multiple = self.recipe.epoch_multiple
        return (f"{_epochs(self.train.epochs)}"
                + (f" (the recipe's {multiple}x the configured)" if multiple > 1 else "")
                + f" on {self.dataset} at batch {self.train.batch_size}, "
                f"{self.recipe.describe(multiple=False)}")


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class Accuracy:
    """One network's validation accuracy (0-1) and how it was found, or why there is none."""

    transformation: str  # a spec's label, or ORIGINAL
    accuracy: float | None
    note: str
    failed: bool = False  # training or validation raised (the note says what)


def load_training_data(inputs: InputSpec, options: TrainingOptions) -> DatasetSplit:
    """The dataset shaped for the network's one image input; InputSpecError for any other input."""
    tensors = inputs.tensors
    if inputs.factory is not None or len(tensors) != 1 or len(tensors[0].shape) != 3 \
            or not tensors[0].dtype.is_floating_point:
        raise InputSpecError(f"training reads images from dataset '{options.dataset}', so the "
                             f"network must take one float CxHxW input; its input is '{inputs}'")
    return load_dataset(options.dataset, input_shape=tensors[0].shape, seed=options.train.seed)


def epochs_planned(specs: Iterable[Spec], options: TrainingOptions) -> int:
    """The epochs :func:`variant_accuracies` runs for ``specs`` (at most: a variant that does not
    apply, fails, or is validated instead of trained runs fewer); the original's
    :func:`train_original` runs ``options.train.epochs``."""
    return options.train.epochs * sum(s.transformation.training in TRAINED for s in specs)


def _train(model: nn.Module, data: DatasetSplit, *, options: TrainingOptions, precision: Precision,
           label: str, name: str, on_epoch: EpochHook | None) -> float:
    """Train ``model`` in place with the recipe; its validation accuracy after the last epoch."""
    result = train(model, data, options=options.run(precision), progress=False, name=name,
                   on_epoch=None if on_epoch is None else lambda record: on_epoch(label, record))
    return result.final.val_accuracy


def train_original(model: nn.Module, data: DatasetSplit, *, options: TrainingOptions,
                   name: str | None = None, on_epoch: EpochHook | None = None
                   ) -> tuple[nn.Module, Accuracy]:
    """A trained copy of ``model`` (``model`` is left as found) and its accuracy. A failure
    raises (TrainingDivergedError, ...): without the original there is nothing to compare with."""
    trained = copy.deepcopy(model)
    accuracy = _train(trained, data, options=options, precision=options.train.precision, label=ORIGINAL,
                      name=name or type(model).__name__, on_epoch=on_epoch)
    return trained, Accuracy(ORIGINAL, accuracy, f"trained {options.describe()}")


@contextlib.contextmanager
def zeros_kept(model: nn.Module) -> Iterator[int]:
    """Hold every zero weight of ``model``'s conv/linear layers at zero inside the block (a
    torch.nn.utils.prune mask each), made permanent on leaving; yields how many layers are masked."""
    layers = [m for m in model.modules() if isinstance(m, PRUNABLE) and bool((m.weight == 0).any())]
    for m in layers:
        prune.custom_from_mask(m, "weight", mask=m.weight != 0)
    try:
        yield len(layers)
    finally:
        for m in layers:
            prune.remove(m, "weight")


def variant_accuracies(trained: nn.Module, specs: Iterable[Spec], *, data: DatasetSplit,
                       options: TrainingOptions, original: Accuracy, name: str | None = None,
                       on_epoch: EpochHook | None = None) -> Iterator[Accuracy]:
    """Each spec's accuracy, transformed from the ``trained`` original (left as found) by its
    transformation's Training plan (see the module docstring); a failure is an Accuracy that says
    so, and the next spec goes on."""
    device = resolve_device(options.train.device)
    shape = data.input_shape
    loader = DataLoader(data.train, batch_size=options.train.batch_size, shuffle=False)
    calibration = tuple(ModelInputs((options.train.precision.batch(x),))
                        for x, _ in itertools.islice(loader, CALIBRATION_BATCHES))
    with using_threads(options.train.threads) as threads:
        context = Context(inputs=InputSpec((TensorInput(tuple(shape)),)),
                          batch_size=options.train.batch_size, mode=Mode.TRAIN, device=device,
                          threads=threads, precision=options.train.precision,
                          calibration=calibration)
    for spec in specs:
        yield _accuracy(spec, trained, data=data, options=options, original=original,
                        context=context, name=name or type(trained).__name__, on_epoch=on_epoch)


def _accuracy(spec: Spec, trained: nn.Module, *, data: DatasetSplit, options: TrainingOptions,
              original: Accuracy, context: Context, name: str, on_epoch: EpochHook | None
              ) -> Accuracy:
    plan = spec.transformation.training
    if plan is Training.ORIGINAL:
        return Accuracy(spec.label, original.accuracy,
                        "the original's: same network and function, not trained again")
    try:
        variant = spec.transformation.apply(copy.deepcopy(trained), spec.value, context)
    except NotApplicable as reason:
        return Accuracy(spec.label, None, f"not applicable: {reason}")
    except FAILURES as exc:
        return Accuracy(spec.label, None, f"transforming the trained network failed: "
                                          f"{first_line(exc)}", failed=True)
    base = options.train.precision
    autocast = str(variant.autocast).removeprefix("torch.") if variant.autocast is not None \
        else base.autocast
    precision = Precision(dtype=base.dtype, autocast=autocast,
                          channels_last=base.channels_last or variant.channels_last_input)
    under = f", under {autocast} autocast" if autocast != base.autocast else ""
    try:
        if plan is Training.EVALUATE or variant.not_trained:
            variant.module.to(context.device)
            accuracy = evaluate(variant.module, data.val, batch_size=options.train.batch_size,
                                device=context.device, precision=precision)
            if variant.not_trained:
                return Accuracy(spec.label, accuracy, f"not trained ({variant.not_trained}): the "
                                                      f"trained original validated{under}")
            return Accuracy(spec.label, accuracy, "the trained original transformed and validated, "
                                                  f"not trained (it cannot be){under}: {variant.note}")
        masked = zeros_kept(variant.module) if plan is Training.FINE_TUNE_MASKED \
            else contextlib.nullcontext(0)
        with masked as layers:
            accuracy = _train(variant.module, data, options=options, precision=precision, label=spec.label,
                              name=f"{name} {spec.label}", on_epoch=on_epoch)
    except FAILURES as exc:
        return Accuracy(spec.label, None, f"training failed: {first_line(exc)}", failed=True)
    kept = f", zero weights of {layers} layers kept at zero" if layers else ""
    return Accuracy(spec.label, accuracy, f"the trained original transformed, then trained again "
                                          f"({_epochs(options.train.epochs)}, the recipe){kept}{under}")


def measured_specs(specs: Iterable[Spec], results: Iterable[WhatIfResult]) -> list[Spec]:
    """The specs measured (applicable) in some step mode of ``results``: the ones worth training."""
    measured = {r.transformation for r in results if r.applicable}
    return [s for s in specs if s.label in measured]


def with_accuracy(results: Iterable[WhatIfResult], *, original: Accuracy,
                  accuracies: Mapping[str, Accuracy]) -> list[WhatIfResult]:
    """``results`` with the original's accuracy and each transformation's (by label) filled in;
    a result that was not measured, or has no accuracy yet, keeps what it had."""
    out = []
    for r in results:
        found = accuracies.get(r.transformation)
        if r.applicable and found is not None:
            r = replace(r, original_accuracy=original.accuracy, accuracy=found.accuracy,
                        accuracy_note=found.note)
        elif r.applicable:
            r = replace(r, original_accuracy=original.accuracy)
        out.append(r)
    return out


__all__ = ["ORIGINAL", "TRAINED", "Accuracy", "TrainingOptions", "epochs_planned",
           "load_training_data", "measured_specs", "train_original", "variant_accuracies",
           "with_accuracy", "zeros_kept"]
