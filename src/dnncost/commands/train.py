"""``dnncost train MODEL``: really train and validate, reporting time, loss and accuracy per epoch --
or, with ``--target-accuracy``, per validation up to the first that reaches the target (the time
to accuracy)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from dnncost.commands._common import (
    add_format_argument,
    add_optimizer_argument,
    add_precision_arguments,
    input_spec,
)
from dnncost.commands._exit_codes import EXIT_OK

if TYPE_CHECKING:
    from dnncost.training.records import EpochRecord, TimeToTarget, ValidationRecord

# Mirrors of dnncost.training.trainer's defaults (kept literal so that building the parser stays light;
# tests/test_time_cli.py checks they agree).
DEFAULT_EPOCHS, DEFAULT_BATCH_SIZE, DEFAULT_LR, VALIDATIONS_PER_EPOCH = 10, 32, 0.05, 4

COLUMNS = ("epoch", "train_s", "val_s", "data_s", "train_loss", "train_acc", "val_loss", "val_acc",
           "train_samples_per_s")
TARGET_COLUMNS = ("validation", "epochs", "steps", "samples", "train_s", "val_s", "total_s", "data_s",
                  "val_loss", "val_acc", "crossing")  # one row per validation, times so far


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train and validate a model on real data, timing each epoch",
        description="Train MODEL on a dataset and validate after every epoch; report per epoch the "
                    "training time, validation time, data-loading time, loss and accuracy. "
                    "Datasets: digits (scikit-learn's bundled digits, the offline default), "
                    "synthetic, cifar10:PATH, mnist:PATH, imagefolder:PATH (local files only, "
                    "never downloaded).")
    parser.add_argument("model", metavar="MODEL",
                        help="zoo or torchvision name, timm:NAME, hf:TYPE, or file.py:factory")
    parser.add_argument("--dataset", default="digits", metavar="SPEC",
                        help="digits (default) | synthetic | cifar10:PATH | mnist:PATH | imagefolder:PATH")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help=f"epochs of a fixed-length run (default: {DEFAULT_EPOCHS})")
    parser.add_argument("--target-accuracy", type=float, default=None, metavar="A",
                        help="train until the validation accuracy first reaches A, a share in (0, 1] "
                             "(0.9 for 90%%), and report the time to it: training and validation "
                             "time, steps, epochs, samples")
    parser.add_argument("--max-epochs", type=int, default=None, metavar="N",
                        help=f"with --target-accuracy: stop after N epochs if the target is not "
                             f"reached (default: {DEFAULT_EPOCHS}); the learning-rate schedule is "
                             "planned over them")
    parser.add_argument("--validations-per-epoch", type=int, default=None, metavar="K",
                        help=f"with --target-accuracy: validate K times an epoch, placing the crossing "
                             f"to 1/K epoch (default: {VALIDATIONS_PER_EPOCH}); each validation's time "
                             "counts in the time to target")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="B",
                        help=f"batch size (default: {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR,
                        help=f"learning rate (default: {DEFAULT_LR})")
    add_optimizer_argument(parser)
    parser.add_argument("--input", dest="input_shape", default=None, metavar="CxHxW",
                        help="one sample's image shape the dataset is read at, e.g. 3x64x64 "
                             "(default: the model's; the datasets are images, so no token inputs)")
    add_precision_arguments(parser)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="intra-op CPU threads (default: torch's current setting)")
    parser.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                        help="share held out for validation by digits/synthetic/imagefolder "
                             "(default: 0.2; cifar10/mnist validate on their test split)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, shuffling and weights")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="DataLoader worker processes (default: 0, load in the main process)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_format_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    import torch

    from dnncost.core.errors import DnncostError, InputSpecError
    from dnncost.core.inputs import Precision
    from dnncost.models.loading import load_model
    from dnncost.reporting.formatting import render
    from dnncost.training.data import load_dataset
    from dnncost.training.trainer import TrainOptions, train

    options = TrainOptions(
        epochs=_epochs(args), batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        precision=Precision(dtype=args.dtype, autocast=args.autocast, channels_last=args.channels_last),
        device=args.device, threads=args.threads, seed=args.seed, num_workers=args.workers,
        target_accuracy=args.target_accuracy, validations_per_epoch=args.validations_per_epoch)
    loaded = load_model(args.model)
    spec = input_spec(args, loaded.input_shape)
    image = spec.tensors[0] if spec.tensors else None
    if image is None or len(spec.tensors) != 1 or not image.dtype.is_floating_point \
            or len(image.shape) != 3:
        raise InputSpecError(f"--input '{args.input_shape}' is not one image shape CxHxW: dnncost "
                             "train reads image datasets (e.g. --input 3x64x64)")
    data = load_dataset(args.dataset, input_shape=image.shape,
                        val_fraction=args.val_fraction, seed=args.seed)
    torch.manual_seed(args.seed)  # the weights' initialisation
    model = loaded.build("cpu")
    to_target = options.target_accuracy is not None
    finished: list[EpochRecord] = []
    validated: list[ValidationRecord] = []
    try:
        result = train(model, data, options=options, progress=not args.no_progress, name=loaded.name,
                       on_epoch=finished.append, on_validation=validated.append)
    except DnncostError:
        done = [_validation_row(v, crossing=False) for v in validated] if to_target \
            else [_row(e) for e in finished]
        if done:  # keep what was done: the finished epochs (validations), then the error
            print(render(done, args.format, columns=TARGET_COLUMNS if to_target else COLUMNS,
                         title=f"{loaded.name} on {data.name}: "
                               f"{'validations' if to_target else 'epochs'} finished before the error"),
                  file=sys.stderr)
        raise
    if args.format == "json":
        print(render([], "json", json_payload={**result.to_dict(), "dataset_description": data.description}))
        return EXIT_OK
    env = result.environment
    settings = (f"{result.optimizer} lr {result.lr}, batch {result.batch_size}, seed {result.seed}; "
                f"{env.device_name}, {result.threads} threads, torch {env.torch_version}")
    reached = result.time_to_target
    if reached is None:
        footer = "\n".join([
            data.description, settings,
            f"best validation accuracy {result.best_val_accuracy:.4f}; total {result.total_time_s:.2f} s. "
            "train_s/val_s are wall times of each pass, data loading included; data_s is the time "
            "spent waiting for batches in both.",
        ])
        print(render([_row(e) for e in result.epochs], args.format, columns=COLUMNS,
                     title=f"{loaded.name} on {data.name}", footer=footer))
        return EXIT_OK
    rows = [_validation_row(v, crossing=reached.reached and v.index == reached.validations)
            for v in result.validations]
    footer = "\n".join([
        data.description, settings, _crossing(reached),
        f"Validated {reached.validations_per_epoch} times an epoch: train_s, val_s and total_s are "
        "wall times so far (training steps; validation passes; both), data loading included; "
        "data_s is the time so far spent waiting for batches. The schedule is planned over the "
        f"{reached.max_epochs}-epoch cap.",
    ])
    print(render(rows, args.format, columns=TARGET_COLUMNS, footer=footer,
                 title=f"{loaded.name} on {data.name}: to validation accuracy {reached.target_accuracy:g}"))
    return EXIT_OK


def _epochs(args: argparse.Namespace) -> int:
    """The run's epochs: ``--epochs`` for a fixed run, ``--max-epochs`` for one to a target; a flag
    of the other kind of run is an error."""
    from dnncost.core.errors import InputSpecError

    if args.target_accuracy is None:
        for flag, value in (("--max-epochs", args.max_epochs),
                            ("--validations-per-epoch", args.validations_per_epoch)):
            if value is not None:
                raise InputSpecError(f"{flag} belongs to a run to --target-accuracy; give the target "
                                     "too, or --epochs N for a fixed-length run")
        return args.epochs if args.epochs is not None else DEFAULT_EPOCHS
    if args.epochs is not None:
        raise InputSpecError("--epochs fixes a run's length; with --target-accuracy give the cap as "
                             "--max-epochs N")
    return args.max_epochs if args.max_epochs is not None else DEFAULT_EPOCHS


def _row(e: EpochRecord) -> dict[str, object]:
    return {"epoch": e.epoch, "train_s": e.train_time_s, "val_s": e.val_time_s,
            "data_s": e.data_time_s, "train_loss": e.train_loss, "train_acc": e.train_accuracy,
            "val_loss": e.val_loss, "val_acc": e.val_accuracy,
            "train_samples_per_s": e.train_samples / e.train_time_s}


def _validation_row(v: ValidationRecord, *, crossing: bool) -> dict[str, object]:
    return {"validation": v.index, "epochs": round(v.epochs, 3), "steps": v.steps, "samples": v.samples,
            "train_s": v.train_time_s, "val_s": v.val_time_s, "total_s": v.total_time_s,
            "data_s": v.train_data_time_s + v.val_data_time_s, "val_loss": v.val_loss,
            "val_acc": v.val_accuracy, "crossing": "yes" if crossing else ""}


def _crossing(t: TimeToTarget) -> str:
    """The time to target in one sentence."""
    times = (f"{t.train_time_s:.2f} s training + {t.val_time_s:.2f} s validation = {t.total_time_s:.2f} s "
             f"(data loading {t.train_data_time_s + t.val_data_time_s:.2f} s of it)")
    where = f"{t.epochs:.2f} epochs, {t.steps} steps, {t.samples} samples, {t.validations} validations"
    if t.reached:
        return (f"Reached {t.target_accuracy:g} (validation accuracy {t.val_accuracy:.4f}) at validation "
                f"{t.validations}, placed to within 1/{t.validations_per_epoch} epoch: {where}; {times}.")
    cap = f"{t.max_epochs} epoch" + ("" if t.max_epochs == 1 else "s")
    return (f"Did not reach {t.target_accuracy:g} within {cap} (best {t.best_val_accuracy:.4f}): at "
            f"the cap, {where}; {times} -- lower bounds on the time to target.")
