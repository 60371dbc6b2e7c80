"""``dnncost whatif MODEL[,MODEL...]``: does cutting FLOPs cut time? Each transformation counted and
timed side by side with the unmodified network; with ``--train``, each trained so accuracy stands
beside it. Several networks are measured in turn, each printed as it finishes, and drawn on one
figure (``--out``)."""
from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dnncost.commands._common import (
    MODEL_HELP,
    add_format_argument,
    add_model_input_arguments,
    add_optimizer_argument,
    add_precision_arguments,
    input_spec,
)
from dnncost.commands._exit_codes import EXIT_OK
from dnncost.core.kinds import Mode
from dnncost.training.recipe import RECIPE_EPOCHS

if TYPE_CHECKING:
    from torch import nn

    from dnncost.core.inputs import InputSpec
    from dnncost.measuring.timing import StepOptions
    from dnncost.models.loading import LoadedModel
    from dnncost.training.data import DatasetSplit
    from dnncost.training.records import EpochRecord
    from dnncost.whatif.accuracy import Accuracy, TrainingOptions
    from dnncost.whatif.registry import Spec, Transformation
    from dnncost.whatif.runner import WhatIfResult

DEFAULT_BATCH_SIZE = 16  # source: our choice; batch 1 measures Python overhead, not the layers
DEFAULT_PAIRS = 6  # source: MIN_SAMPLES_FOR_CI, the fewest pairs with a 95% interval of the median
DEFAULT_DATASET = "digits"  # source: dnncost.training.data, the offline dataset every command defaults to
BOTH = "both"  # --mode: the training and the validation step
TABLE_COLUMNS = ("transformation", "mode", "flops", "nominal_flops", "params", "bytes", "activations",
                 "time", "time_ci95_low", "time_ci95_high", "original_gflops_per_s", "gflops_per_s",
                 "note")
TRAINED_COLUMNS = (*TABLE_COLUMNS[:-1], "accuracy", "accuracy_change", "note", "accuracy_note")
# with --train: the accuracies beside the time, each note last


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "whatif", help="does cutting FLOPs cut time? count and time compression techniques",
        description="Apply each transformation (structured and unstructured pruning, low rank, "
                    "depthwise-separable, int8, reduced precision, channels_last, torch.compile, "
                    "batch size, threads) to the network, count it and time it interleaved with the "
                    "unmodified network (A B, B A, ...): ratios of FLOPs, params, bytes and "
                    "activation memory, and the measured time ratio with its 95% interval, all per "
                    "sample. With --train, the original is trained with the study's recipe on "
                    "offline data and each transformation applied to it and trained again, so "
                    "validation accuracy stands beside the time saved. Several networks, comma "
                    "separated, are measured in turn and drawn on one figure (--out).")
    add_model_input_arguments(
        parser, model_optional=True,
        model_help=f"{MODEL_HELP}; several, comma separated (resnet20,torchvision:mobilenet_v2), are "
                   "measured in turn (with several, JSON is {\"networks\": [...]} and CSV rows "
                   "start with the model); not needed with --list")
    add_precision_arguments(parser)
    parser.set_defaults(batch_size=DEFAULT_BATCH_SIZE)
    parser.add_argument("--mode", choices=(*(m.value for m in Mode), BOTH), default=Mode.TRAIN.value,
                        help="train step, eval step, or both (default: train)")
    parser.add_argument("--only", default=None, metavar="T1,T2",
                        help="transformations to run, NAME or NAME:VALUE (e.g. prune_channels:0.3); "
                             "default: all but those run on request (compile), at their default "
                             "values. --list shows them")
    parser.add_argument("--list", action="store_true",
                        help="list the transformations (and what this machine emulates) and exit")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="intra-op CPU threads (default: torch's current setting)")
    parser.add_argument("--warmup", type=int, default=2, metavar="N",
                        help="untimed warm-up steps of each network (default: 2)")
    parser.add_argument("--repeats", type=int, default=DEFAULT_PAIRS, metavar="N",
                        help=f"timed A/B pairs per transformation (default: {DEFAULT_PAIRS}; a "
                             "technique this device emulates, e.g. fp16 on a CPU without float16 "
                             "kernels, gets fewer: --list says which)")
    add_optimizer_argument(parser)
    training = parser.add_argument_group("accuracy (--train)")
    training.add_argument("--train", action="store_true",
                          help="also train the original with the study's recipe (its family's "
                               "rate, SGD momentum 0.9, warm-up then cosine decay) and each "
                               "transformed network from it, and report validation accuracy "
                               "(image networks only)")
    training.add_argument("--epochs", type=int, default=None, metavar="N",
                          help=f"epochs of each training with --train (default: the recipe's "
                               f"{RECIPE_EPOCHS}); a family whose recipe trains a multiple trains "
                               "that many times N, as in the study (AlexNet 2x)")
    training.add_argument("--dataset", default=None, metavar="SPEC",
                          help=f"data for --train: {DEFAULT_DATASET} (default, offline) | synthetic | "
                               "cifar10:PATH | mnist:PATH | imagefolder:PATH")
    parser.add_argument("--out", default=None, metavar="FILE.png",
                        help="write the 'FLOPs saved vs time saved' figure here, every network and "
                             "technique on one plot (the path is checked before anything is measured)")
    parser.add_argument("--db", default=None, metavar="FILE.sqlite",
                        help="also keep the results in this study database (table whatif_results)")
    add_format_argument(parser)
    parser.set_defaults(func=run)


@dataclass
class _Network:
    """One network of the run: what it is, how it is measured, and what was measured."""

    loaded: LoadedModel
    spec: InputSpec
    options: dict[Mode, StepOptions]
    training: TrainingOptions | None
    trainer: _Trainer | None
    results: list[WhatIfResult] = field(default_factory=list)


def run(args: argparse.Namespace) -> int:
    from dnncost.core.errors import DnncostError
    from dnncost.models.loading import load_model
    from dnncost.whatif.registry import all_transformations, parse_specs

    if args.list:
        return _list(all_transformations(), args.device, args.mode)
    names = _model_names(args.model)
    _check_training_flags(args)
    specs = parse_specs(args.only)  # bad names and ratios fail here, before anything is built
    if args.out:
        from dnncost.reporting.report import check_output_file

        check_output_file(args.out)  # before the measuring, so that none of it is lost
    loaded = [load_model(name) for name in names]  # an unknown name fails before any measuring
    done: list[_Network] = []
    for model in loaded:
        network = _network(args, model)
        done.append(network)
        try:
            _measure(network, specs)
        except (DnncostError, KeyboardInterrupt):  # a transformation broke the network, ...
            _finish(done, args, partial=True)  # nothing measured is lost: print, store, draw
            raise
        if args.format == "table":
            _print_table(network, args, partial=False)
        _save(network, args)
    _finish(done, args, partial=False)
    return EXIT_OK


def _model_names(text: str | None) -> list[str]:
    """The networks named by MODEL (comma separated, each once); an error when none is named."""
    from dnncost.core.errors import InputSpecError

    names = list(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    if not names:
        raise InputSpecError("the following arguments are required: MODEL (a zoo or torchvision name, "
                             "or several comma separated; only --list needs none)")
    return names


def _check_training_flags(args: argparse.Namespace) -> None:
    """--epochs and --dataset say how --train trains: without --train they would be ignored."""
    from dnncost.core.errors import InputSpecError

    given = [flag for flag, value in (("--epochs", args.epochs), ("--dataset", args.dataset))
             if value is not None]
    if given and not args.train:
        raise InputSpecError(f"{' and '.join(given)} set how --train trains, and --train is not "
                             "given: add --train, or leave them out")
    if args.epochs is not None and args.epochs < 1:  # before the recipe's multiple: quotes what was given
        raise InputSpecError(f"--epochs must be a positive integer, got {args.epochs}")


def _network(args: argparse.Namespace, loaded: LoadedModel) -> _Network:
    from dnncost.measuring.timing import StepOptions

    spec = input_spec(args, loaded.input_shape)
    modes = tuple(Mode) if args.mode == BOTH else (Mode(args.mode),)
    options = {mode: StepOptions(batch_size=args.batch_size, mode=mode, device=args.device,
                                 threads=args.threads, warmup=args.warmup, steps=args.repeats,
                                 optimizer=args.optimizer, dtype=args.dtype, autocast=args.autocast,
                                 channels_last=args.channels_last)
               for mode in modes}
    training = _training_options(args, loaded, options[modes[0]]) if args.train else None
    trainer = _Trainer(loaded, spec, training) if training is not None else None
    return _Network(loaded, spec, options, training, trainer)


def _measure(network: _Network, specs: list[Spec]) -> None:
    """Train the original (with --train), time every spec in every mode, then train the
    variants; ``network.results`` holds whatever finished, also when this raises."""
    from tqdm.auto import tqdm

    from dnncost.whatif.runner import run_whatif

    loaded, trainer = network.loaded, network.trainer
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if trainer is not None:  # the original first: a network that cannot train fails early
                trainer.original()
            with tqdm(total=len(specs) * len(network.options), desc=f"whatif {loaded.name}",
                      unit="technique", file=sys.stderr, disable=None, leave=False) as bar:
                for options in network.options.values():
                    for result in run_whatif(loaded.module, specs, input_shape=network.spec,
                                             options=options, name=loaded.name):
                        network.results.append(result)
                        bar.set_postfix_str(result.transformation)
                        bar.update()
            if trainer is not None:
                network.results = trainer.variants(specs, network.results)
    finally:
        _warn(caught)
        if trainer is not None:
            network.results = trainer.attach(network.results)


def _finish(done: list[_Network], args: argparse.Namespace, *, partial: bool) -> None:
    """Print what is not printed yet, keep the last network's results when stopped early, and
    draw the figure of everything measured."""
    measured = [n for n in done if n.results]
    stopped = done[-1] if partial and done[-1].results else None  # the network cut short
    if stopped is not None:
        if args.format == "table":
            _print_table(stopped, args, partial=True)
        _save(stopped, args)
    if args.format != "table" and measured:  # tables are printed as each network finishes
        _print_data(measured, args, partial=partial, stopped=stopped)
    if args.out and measured:
        from pathlib import Path

        from dnncost.reporting.plots import png_bytes
        from dnncost.reporting.whatif import flops_vs_time

        results = [r for n in measured for r in n.results]
        title = ", ".join(n.loaded.name for n in measured) + (" (PARTIAL)" if partial else "")
        Path(args.out).write_bytes(png_bytes(flops_vs_time(results, title=title)))
        print(f"figure written to {args.out}", file=sys.stderr)


def _training_options(args: argparse.Namespace, loaded: LoadedModel, options: StepOptions
                      ) -> TrainingOptions:
    from dnncost.models import family_of
    from dnncost.training.recipe import recipe_for
    from dnncost.training.trainer import TrainOptions
    from dnncost.whatif.accuracy import SEED, TrainingOptions
    from dnncost.whatif.runner import options_precision

    recipe = recipe_for(family_of(loaded.name))
    epochs = RECIPE_EPOCHS if args.epochs is None else args.epochs
    return TrainingOptions(recipe=recipe,
                           dataset=DEFAULT_DATASET if args.dataset is None else args.dataset,
                           train=TrainOptions(epochs=recipe.epochs(epochs),  # as the study does
                                              device=args.device, threads=args.threads,
                                              precision=options_precision(options), seed=SEED))


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
        torch.manual_seed(self.options.train.seed)  # the weights' initialisation, as dnncost train does
        with self._progress(self.options.train.epochs):
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


def _save(network: _Network, args: argparse.Namespace) -> None:
    """Keep the network's results in the study database ``--db`` (one run per step mode)."""
    if not args.db or not network.results:
        return
    from dnncost.models import family_of
    from dnncost.study.store import open_store
    from dnncost.study.whatif import save_whatif

    results = network.results
    with open_store(args.db) as store:
        for mode in dict.fromkeys(r.mode for r in results):
            save_whatif(store, [r for r in results if r.mode is mode],
                        family=family_of(network.loaded.name), input_shape=network.spec,
                        options=network.options[mode], training=network.training,
                        command="dnncost " + " ".join(sys.argv[1:]))
    print(f"results of {network.loaded.name} kept in {args.db} (table whatif_results)",
          file=sys.stderr)


def _warn(caught: list[warnings.WarningMessage]) -> None:
    """Each distinct warning once (first line), on stderr."""
    for message in dict.fromkeys(str(w.message).strip().splitlines()[0] for w in caught
                                 if str(w.message).strip()):
        print(f"dnncost whatif: warning: {message}", file=sys.stderr)


def _list(transformations: dict[str, Transformation], device: str, mode: str) -> int:
    """The transformations, their parameters and defaults, how --train treats them, and which run
    on request only or are emulated (fewer pairs) on ``device`` in the ``mode`` step(s)."""
    from dnncost.core.device import resolve_device
    from dnncost.reporting.formatting import render_table
    from dnncost.whatif.runner import EMULATED_PAIRS

    where = resolve_device(device)
    modes = tuple(Mode) if mode == BOTH else (Mode(mode),)

    def emulated(t: Transformation) -> str:
        return next((f"{why} in the {m.value} step" for m in modes if (why := t.emulated_on(where, m))),
                    "")

    def runs(t: Transformation) -> str:
        if t.on_request:
            return "on request"
        return f"{EMULATED_PAIRS} pairs (emulated)" if emulated(t) else "default"

    rows = [{"name": t.name, "parameter": t.parameter.value if t.parameter else "",
             "defaults": ", ".join("default" if v is None else f"{v:g}" for v in t.defaults),
             "steps": "/".join(sorted(m.value for m in t.modes)), "--train": t.training.value,
             "runs": runs(t), "what": t.summary}
            for t in transformations.values()]
    notes = [f"{t.name}: on request only (name it in --only): {t.on_request}"
             for t in transformations.values() if t.on_request]
    notes += [f"{t.name}: {emulated(t)} on {where}: timed with {EMULATED_PAIRS} pairs and no "
              "warm-up pairs, no interval" for t in transformations.values() if emulated(t)]
    print(render_table(rows, title="what-if transformations", footer="\n".join([
        "--train: fine-tune = the trained original transformed and trained again with the recipe; "
        "evaluate = validated, not trained; original's = same network, the original's accuracy",
        "runs: default = in a run without --only; on request = only when named in --only", *notes])))
    return EXIT_OK


def _footer(network: _Network, args: argparse.Namespace) -> list[str]:
    """The lines under a network's table: inputs and protocol, what the columns mean, count notes,
    and with --train the original's accuracy."""
    from dnncost.whatif.runner import EMULATED_PAIRS

    results = network.results
    precision = "".join([f", {args.dtype}" if args.dtype else "",
                         f", autocast {args.autocast}" if args.autocast else "",
                         ", channels_last" if args.channels_last else ""])
    emulated = sorted({r.transformation for r in results if r.emulated})
    lines = [
        f"input {network.spec}, batch {args.batch_size}{precision}, device {args.device}; "
        f"{args.repeats} interleaved A/B pairs after {args.warmup} warm-up steps each"
        + (f" ({', '.join(emulated)}: emulated on this device, {EMULATED_PAIRS} pairs, no warm-up "
           "pairs)" if emulated else ""),
        "time = median of the per-pair time ratios, ci95 its 95% order-statistics interval; "
        "< 1 is faster. flops are executed (counted) FLOPs; nominal_flops skips pruned zeros",
        *sorted({f"{r.transformation}: {r.count_note}" for r in results if r.count_note}),
    ]
    original = network.trainer.original_accuracy if network.trainer is not None else None
    if original is not None:
        lines.append(f"accuracy: validation accuracy after the last epoch; the original "
                     f"{original.accuracy:.3f} ({original.note}); accuracy_change = transformed - "
                     "original")
    return lines


def _print_table(network: _Network, args: argparse.Namespace, *, partial: bool) -> None:
    """One network's table (``--format table``), an empty cell printed as '-'."""
    from dnncost.reporting.formatting import render_table

    rows = [{k: "-" if v is None else v for k, v in r.to_row().items()} for r in network.results]
    trained = network.trainer is not None and network.trainer.original_accuracy is not None
    title = f"{network.loaded.name}: what if? (transformed / original, per sample)" + \
        (" -- PARTIAL: stopped early" if partial else "")
    print(render_table(rows, TRAINED_COLUMNS if trained else TABLE_COLUMNS, title=title,
                       footer="\n".join(_footer(network, args))))


def _payload(network: _Network, *, partial: bool) -> dict[str, object]:
    payload: dict[str, object] = {"model": network.loaded.name, "partial": partial,
                                  "inputs": str(network.spec),
                                  "results": [r.to_dict() for r in network.results]}
    original = network.trainer.original_accuracy if network.trainer is not None else None
    if original is not None:
        payload["original_accuracy"] = {"accuracy": original.accuracy, "note": original.note}
    return payload


def _print_data(networks: list[_Network], args: argparse.Namespace, *, partial: bool,
                stopped: _Network | None) -> None:
    """Every network's results as one JSON document or one CSV table: one network as before;
    several as {"networks": [...]} and CSV rows led by a model column. ``partial``: the run
    stopped early; ``stopped``: the network it stopped in, if it measured anything."""
    from dnncost.reporting.formatting import render

    several = len(networks) > 1
    rows = [({"model": n.loaded.name} if several else {}) | r.to_row()
            for n in networks for r in n.results]
    payloads = [_payload(n, partial=n is stopped) for n in networks]
    print(render(rows, args.format, json_payload={"partial": partial, "networks": payloads}
                 if several else payloads[0]))
