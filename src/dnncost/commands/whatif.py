"""``dnncost whatif MODEL``: does cutting FLOPs cut time? Each transformation counted and timed side
by side with the unmodified network; with ``--train``, each trained so accuracy stands beside it."""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import TYPE_CHECKING, Any

from dnncost.commands._common import (
    add_format_argument,
    add_model_input_arguments,
    add_optimizer_argument,
    add_precision_arguments,
    input_spec,
)
from dnncost.commands._exit_codes import EXIT_OK
from dnncost.training.recipe import RECIPE_EPOCHS

if TYPE_CHECKING:
    from torch import nn

    from dnncost.core.inputs import InputSpec
    from dnncost.measuring.timing import StepOptions
    from dnncost.models.loading import LoadedModel
    from dnncost.training.data import DatasetSplit
    from dnncost.training.records import EpochRecord
    from dnncost.whatif.accuracy import Accuracy, TrainingOptions
    from dnncost.whatif.registry import Spec
    from dnncost.whatif.runner import WhatIfResult

DEFAULT_BATCH_SIZE = 16  # source: our choice; batch 1 measures Python overhead, not the layers
DEFAULT_PAIRS = 6  # source: MIN_SAMPLES_FOR_CI, the fewest pairs with a 95% interval of the median; keeps a
# default run near 3 minutes per CIFAR network on 2 cores
TABLE_COLUMNS = ("transformation", "mode", "flops", "nominal_flops", "params", "bytes", "activations",
                 "time", "time_ci95_low", "time_ci95_high", "original_gflops_per_s", "gflops_per_s",
                 "note")
TRAINED_COLUMNS = (*TABLE_COLUMNS[:-1], "accuracy", "accuracy_change", "note", "accuracy_note")
# with --train: the accuracies beside the time, each note last


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "whatif", help="does cutting FLOPs cut time? count and time compression techniques",
        description="Apply each transformation (pruning, low rank, depthwise-separable, int8, "
                    "reduced precision, channels_last, torch.compile, batch size, threads) to the "
                    "network, count it and time it interleaved with the unmodified network "
                    "(A B, B A, ...): ratios of FLOPs, params, bytes and activation memory, and the "
                    "measured time ratio with its 95% interval, all per sample. With --train, the "
                    "original is trained with the study's recipe on offline data and each "
                    "transformation applied to it and trained again, so validation accuracy stands "
                    "beside the time saved.")
    add_model_input_arguments(parser)
    add_precision_arguments(parser)
    parser.set_defaults(batch_size=DEFAULT_BATCH_SIZE)
    parser.add_argument("--mode", choices=("train", "eval", "both"), default="train",
                        help="train step, eval step, or both (default: train)")
    parser.add_argument("--only", default=None, metavar="T1,T2",
                        help="transformations to run, NAME or NAME:VALUE (e.g. prune_channels:0.3); "
                             "default: all at their default values. --list shows them")
    parser.add_argument("--list", action="store_true", help="list the transformations and exit")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="intra-op CPU threads (default: torch's current setting)")
    parser.add_argument("--warmup", type=int, default=2, metavar="N",
                        help="untimed warm-up steps of each network (default: 2)")
    parser.add_argument("--repeats", type=int, default=DEFAULT_PAIRS, metavar="N",
                        help=f"timed A/B pairs per transformation (default: {DEFAULT_PAIRS})")
    add_optimizer_argument(parser)
    training = parser.add_argument_group("accuracy (--train)")
    training.add_argument("--train", action="store_true",
                          help="also train the original with the study's recipe (its family's "
                               "rate, SGD momentum 0.9, warm-up then cosine decay) and each "
                               "transformed network from it, and report validation accuracy "
                               "(image networks only)")
    training.add_argument("--epochs", type=int, default=RECIPE_EPOCHS, metavar="N",
                          help=f"epochs of each training with --train (default: the recipe's "
                               f"{RECIPE_EPOCHS}); a family whose recipe trains a multiple trains "
                               "that many times N, as in the study (AlexNet 2x)")
    training.add_argument("--dataset", default="digits", metavar="SPEC",
                          help="data for --train: digits (default, offline) | synthetic | "
                               "cifar10:PATH | mnist:PATH | imagefolder:PATH")
    parser.add_argument("--out", default=None, metavar="FILE.png",
                        help="write the 'FLOPs saved vs time saved' figure here")
    parser.add_argument("--db", default=None, metavar="FILE.sqlite",
                        help="also keep the results in this study database (table whatif_results)")
    add_format_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from dnncost.core.step import Mode
    from dnncost.measuring.timing import StepOptions
    from dnncost.models.loading import load_model
    from dnncost.whatif.registry import TransformationError, all_transformations, parse_specs
    from dnncost.whatif.runner import run_whatif

    if args.list:
        return _list(all_transformations())
    specs = parse_specs(args.only)  # bad names and ratios fail here, before anything is built
    loaded = load_model(args.model)
    spec = input_spec(args, loaded.input_shape)
    modes = ("train", "eval") if args.mode == "both" else (args.mode,)
    options = {mode: StepOptions(batch_size=args.batch_size, mode=Mode(mode), device=args.device,
                                 threads=args.threads, warmup=args.warmup, steps=args.repeats,
                                 optimizer=args.optimizer, dtype=args.dtype, autocast=args.autocast,
                                 channels_last=args.channels_last)
               for mode in modes}
    training = _training_options(args, loaded, options[modes[0]]) if args.train else None
    trainer = _Trainer(loaded, spec, training) if training is not None else None
    results = []
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if trainer is not None:  # the original first: a network that cannot train fails early
                trainer.original()
            with tqdm(total=len(specs) * len(modes), desc=f"whatif {loaded.name}", unit="technique",
                      file=sys.stderr, disable=None, leave=False) as bar:
                for mode in modes:
                    for result in run_whatif(loaded.module, specs, input_shape=spec,
                                             options=options[mode], name=loaded.name):
                        results.append(result)
                        bar.set_postfix_str(result.transformation)
                        bar.update()
            if trainer is not None:
                results = trainer.variants(specs, results)
    except (TransformationError, KeyboardInterrupt):
        _warn(caught)
        if trainer is not None:
            results = trainer.attach(results)
        if results:  # nothing measured is lost: print and store what finished, then the error
            _print(results, args, loaded.name, spec, trainer, partial=True)
            _save(results, args, loaded, spec, options, training)
        raise
    _warn(caught)
    _print(results, args, loaded.name, spec, trainer, partial=False)
    _save(results, args, loaded, spec, options, training)
    return EXIT_OK


def _training_options(args: argparse.Namespace, loaded: LoadedModel, options: StepOptions
                      ) -> TrainingOptions:
    from dnncost.core.errors import InputSpecError
    from dnncost.models import family_of
    from dnncost.training.recipe import recipe_for
    from dnncost.whatif.accuracy import TrainingOptions
    from dnncost.whatif.runner import options_precision

    if args.epochs < 1:  # before the recipe's multiple, so the error quotes what was given
        raise InputSpecError(f"--epochs must be a positive integer, got {args.epochs}")
    recipe = recipe_for(family_of(loaded.name))
    return TrainingOptions(recipe=recipe, epochs=recipe.epochs(args.epochs),  # as the study does
                           dataset=args.dataset, device=args.device, threads=args.threads,
                           precision=options_precision(options))


class _Trainer:
    """``--train``: the original trained first, each measured transformation after the timing,
    each part with a progress bar over its epochs."""

    def __init__(self, loaded: LoadedModel, spec: InputSpec, options: TrainingOptions) -> None:
        self.loaded, self.spec, self.options = loaded, spec, options
        self.trained: nn.Module | None = None
        self.original_accuracy: Accuracy | None = None
        self.accuracies: dict[str, Accuracy] = {}
        self.data: DatasetSplit | None = None
        self.bar: Any = None  # the tqdm bar of the training running now
        self.epochs_seen = 0  # epochs the bar counted since the last variant's accuracy

    def _progress(self, total: int) -> Any:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=f"training {self.loaded.name}", unit="epoch",
                        file=sys.stderr, disable=None, leave=False)
        return self.bar

    def _epoch(self, label: str, record: EpochRecord) -> None:
        self.epochs_seen += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"{label} val acc {record.val_accuracy:.3f}")
            self.bar.update()

    def _settle(self, planned: int) -> None:
        """After one variant: take the epochs it was planned but did not run (validated instead of
        trained, not applicable, failed) off the bar's total, so that the bar ends full."""
        if self.bar is not None and planned > self.epochs_seen:
            self.bar.total -= planned - self.epochs_seen
            self.bar.refresh()
        self.epochs_seen = 0

    def original(self) -> None:
        import torch

        from dnncost.core.errors import InputSpecError
        from dnncost.whatif.accuracy import load_training_data, train_original

        try:
            data = self.data = load_training_data(self.spec, self.options)
        except InputSpecError as exc:
            raise InputSpecError(f"--train: {exc}") from None
        torch.manual_seed(self.options.seed)  # the weights' initialisation, as dnncost train does
        with self._progress(self.options.epochs):
            self.trained, self.original_accuracy = train_original(
                self.loaded.build("cpu"), data, options=self.options, name=self.loaded.name,
                on_epoch=self._epoch)

    def variants(self, specs: list[Spec], results: list[WhatIfResult]) -> list[WhatIfResult]:
        """Each spec measured in some mode trained (or its accuracy found), then ``results``
        with the accuracies filled in; a failed training is a warning naming the transformation."""
        from dnncost.whatif.accuracy import epochs_planned, measured_specs, variant_accuracies

        assert self.trained is not None and self.data is not None \
            and self.original_accuracy is not None, "the original is trained first"
        todo = measured_specs(specs, results)
        planned = {s.label: epochs_planned([s], self.options) for s in todo}
        self.epochs_seen = 0
        with self._progress(epochs_planned(todo, self.options)):
            for accuracy in variant_accuracies(self.trained, todo, data=self.data,
                                               options=self.options, original=self.original_accuracy,
                                               name=self.loaded.name, on_epoch=self._epoch):
                self._settle(planned.get(accuracy.transformation, 0))
                self.accuracies[accuracy.transformation] = accuracy
                if accuracy.failed:
                    warnings.warn(f"transformation '{accuracy.transformation}': {accuracy.note}; "
                                  "its timing is kept", stacklevel=1)
        return self.attach(results)

    def attach(self, results: list[WhatIfResult]) -> list[WhatIfResult]:
        from dnncost.whatif.accuracy import with_accuracy

        if self.original_accuracy is None:
            return results
        return with_accuracy(results, original=self.original_accuracy, accuracies=self.accuracies)


def _save(results: list[WhatIfResult], args: argparse.Namespace, loaded: LoadedModel, spec: InputSpec,
          options: dict[str, StepOptions], training: TrainingOptions | None) -> None:
    """Keep ``results`` in the study database ``--db`` (one run per step mode)."""
    if not args.db:
        return
    from dnncost.models import family_of
    from dnncost.study.store import open_store
    from dnncost.study.whatif import save_whatif

    with open_store(args.db) as store:
        for mode in dict.fromkeys(r.mode for r in results):
            save_whatif(store, [r for r in results if r.mode is mode], family=family_of(loaded.name),
                        input_shape=spec, options=options[mode.value], training=training,
                        command="dnncost " + " ".join(sys.argv[1:]))
    print(f"results kept in {args.db} (table whatif_results)", file=sys.stderr)


def _warn(caught: list[warnings.WarningMessage]) -> None:
    """Each distinct warning once (first line), on stderr."""
    for message in dict.fromkeys(str(w.message).strip().splitlines()[0] for w in caught
                                 if str(w.message).strip()):
        print(f"dnncost whatif: warning: {message}", file=sys.stderr)


def _list(transformations: dict) -> int:
    from dnncost.reporting.formatting import render_table

    rows = [{"name": t.name, "parameter": t.parameter.value if t.parameter else "",
             "defaults": ", ".join("default" if v is None else f"{v:g}" for v in t.defaults),
             "steps": "/".join(sorted(m.value for m in t.modes)), "--train": t.training.value,
             "what": t.summary}
            for t in transformations.values()]
    print(render_table(rows, title="what-if transformations",
                       footer="--train: fine-tune = the trained original transformed and trained "
                              "again with the recipe; evaluate = validated, not trained; "
                              "original's = same network, the original's accuracy"))
    return EXIT_OK


def _print(results: list[WhatIfResult], args: argparse.Namespace, name: str, spec: InputSpec,
           trainer: _Trainer | None, *, partial: bool) -> None:
    from dnncost.reporting.formatting import render

    rows = [r.to_row() for r in results]
    if args.format == "table":  # an empty cell would read as the next column's value
        rows = [{k: "-" if v is None else v for k, v in row.items()} for row in rows]
    title = f"{name}: what if? (transformed / original, per sample)" + \
        (" -- PARTIAL: stopped early" if partial else "")
    precision = "".join([f", {args.dtype}" if args.dtype else "",
                         f", autocast {args.autocast}" if args.autocast else "",
                         ", channels_last" if args.channels_last else ""])
    lines = [
        f"input {spec}, batch {args.batch_size}{precision}, device {args.device}; "
        f"{args.repeats} interleaved A/B pairs after {args.warmup} warm-up steps each",
        "time = median of the per-pair time ratios, ci95 its 95% order-statistics interval; "
        "< 1 is faster. flops are executed (counted) FLOPs; nominal_flops skips pruned zeros",
        *sorted({f"{r.transformation}: {r.count_note}" for r in results if r.count_note}),
    ]
    original = trainer.original_accuracy if trainer is not None else None
    payload: dict[str, object] = {"model": name, "partial": partial, "inputs": str(spec),
                                  "results": [r.to_dict() for r in results]}
    if original is not None:
        lines.append(f"accuracy: validation accuracy after the last epoch; the original "
                     f"{original.accuracy:.3f} ({original.note}); accuracy_change = transformed - "
                     "original")
        payload["original_accuracy"] = {"accuracy": original.accuracy, "note": original.note}
    columns = (TABLE_COLUMNS if original is None else TRAINED_COLUMNS) if args.format == "table" \
        else None
    print(render(rows, args.format, columns=columns, title=title, footer="\n".join(lines),
                 json_payload=payload))
    if args.out and not partial:
        from pathlib import Path

        from dnncost.reporting.plots import png_bytes
        from dnncost.reporting.whatif import flops_vs_time

        Path(args.out).write_bytes(png_bytes(flops_vs_time(results, title=name)))
        print(f"figure written to {args.out}", file=sys.stderr)
