"""``dnncost train MODEL``: really train and validate, reporting time, loss and accuracy per epoch."""
from __future__ import annotations

import argparse

from dnncost.commands._common import (
    add_format_argument,
    add_optimizer_argument,
    add_precision_arguments,
    input_spec,
)
from dnncost.commands._exit_codes import EXIT_OK

# Mirrors of dnncost.training.trainer's defaults (kept literal so that building the parser stays light;
# tests/test_time_cli.py checks they agree).
DEFAULT_EPOCHS, DEFAULT_BATCH_SIZE, DEFAULT_LR = 10, 32, 0.05

COLUMNS = ("epoch", "train_s", "val_s", "data_s", "train_loss", "train_acc", "val_loss", "val_acc",
           "train_samples_per_s")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train and validate a model on real data, timing each epoch",
        description="Train MODEL on a dataset and validate after every epoch; report per epoch the "
                    "training time, validation time, data-loading time, loss and accuracy. "
                    "Datasets: digits (scikit-learn's bundled digits, the offline default), "
                    "synthetic, cifar10:PATH, mnist:PATH, imagefolder:PATH (local files only, "
                    "never downloaded).")
    parser.add_argument("model", metavar="MODEL",
                        help="zoo or torchvision name, timm:NAME, or file.py:factory")
    parser.add_argument("--dataset", default="digits", metavar="SPEC",
                        help="digits (default) | synthetic | cifar10:PATH | mnist:PATH | imagefolder:PATH")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, metavar="N",
                        help=f"epochs (default: {DEFAULT_EPOCHS})")
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
    from dnncost.training.trainer import EpochRecord, train

    loaded = load_model(args.model)
    spec = input_spec(args, loaded.input_shape)
    image = spec.tensors[0] if spec.tensors else None
    if image is None or len(spec.tensors) != 1 or not image.dtype.is_floating_point \
            or len(image.shape) != 3:
        raise InputSpecError(f"--input '{args.input_shape}' is not one image shape CxHxW: dnncost "
                             "train reads image datasets (e.g. --input 3x64x64)")
    precision = Precision(dtype=args.dtype, autocast=args.autocast, channels_last=args.channels_last)
    data = load_dataset(args.dataset, input_shape=image.shape,
                        val_fraction=args.val_fraction, seed=args.seed)
    torch.manual_seed(args.seed)  # the weights' initialisation
    model = loaded.build("cpu")
    finished: list[EpochRecord] = []
    try:
        result = train(model, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       optimizer=args.optimizer, device=args.device, threads=args.threads,
                       seed=args.seed, num_workers=args.workers, progress=not args.no_progress,
                       name=loaded.name, on_epoch=finished.append, precision=precision)
    except DnncostError:
        if finished:  # keep what was done: the finished epochs, then the error
            print(render([_row(e) for e in finished], args.format, columns=COLUMNS,
                         title=f"{loaded.name} on {data.name}: epochs finished before the error"),
                  file=sys.stderr)
        raise
    if args.format == "json":
        print(render([], "json", json_payload={**result.to_dict(), "dataset_description": data.description}))
        return EXIT_OK
    env = result.environment
    footer = "\n".join([
        data.description,
        f"{result.optimizer} lr {result.lr}, batch {result.batch_size}, seed {result.seed}; "
        f"{env.device_name}, {result.threads} threads, torch {env.torch_version}",
        f"best validation accuracy {result.best_val_accuracy:.4f}; total {result.total_time_s:.2f} s. "
        "train_s/val_s are wall times of each pass, data loading included; data_s is the time "
        "spent waiting for batches in both.",
    ])
    print(render([_row(e) for e in result.epochs], args.format, columns=COLUMNS,
                 title=f"{loaded.name} on {data.name}", footer=footer))
    return EXIT_OK


def _row(e) -> dict[str, object]:
    return {"epoch": e.epoch, "train_s": e.train_time_s, "val_s": e.val_time_s,
            "data_s": e.data_time_s, "train_loss": e.train_loss, "train_acc": e.train_accuracy,
            "val_loss": e.val_loss, "val_acc": e.val_accuracy,
            "train_samples_per_s": e.train_samples / e.train_time_s}
