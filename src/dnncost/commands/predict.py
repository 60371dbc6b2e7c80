"""``dnncost predict MODEL``: predicted training/validation step and epoch time, per layer, without
running the network (its operators are counted on the meta device and timed by the fitted model)."""
from __future__ import annotations

import argparse

from dnncost.commands._common import add_format_argument, add_model_input_arguments

COLUMNS = ("mode", "module", "predicted_ms", "share", "gflops")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="predict step and epoch time from the network's structure",
        description="Predict the time of a training step (forward + loss + backward + SGD step) "
                    "and/or a validation step on this machine, per layer, from the network's "
                    "operators and the per-operator time model fitted on micro-benchmarks by "
                    "'dnncost calibrate --ops'. Nothing is run: the network is counted on the meta "
                    "device.")
    add_model_input_arguments(parser)
    parser.add_argument("--mode", choices=("train", "eval", "both"), default="both",
                        help="training step, validation step, or both (default: both)")
    parser.add_argument("--dataset-size", type=int, default=None, metavar="N",
                        help="also predict one epoch over N samples (last batch partial)")
    parser.add_argument("--depth", type=int, default=1, metavar="D",
                        help="module depth of the per-layer breakdown (default: 1; -1 innermost)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="the thread count whose calibration to use (default: torch's current)")
    parser.add_argument("--allow-uncovered", action="store_true",
                        help="predict even when some operators have no fitted class (counted as "
                             "zero time and listed)")
    add_format_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dnncost.errors import InputSpecError
    from dnncost.models.loading import load_model, parse_input_shape
    from dnncost.prediction.predict import load_operator_model, predict_time
    from dnncost.reporting.formatting import render

    if args.batch_size < 1:
        raise InputSpecError(f"--batch-size must be a positive integer, got {args.batch_size}")
    op_model = load_operator_model("cpu", threads=args.threads)
    loaded = load_model(args.model)
    shape = parse_input_shape(args.input_shape) if args.input_shape else loaded.input_shape
    modes = ("train", "eval") if args.mode == "both" else (args.mode,)
    predictions = [predict_time(loaded.build("meta"), input_shape=shape, batch_size=args.batch_size,
                                mode=mode, calibration=op_model, dataset_size=args.dataset_size,
                                strict=not args.allow_uncovered) for mode in modes]
    rows = [row for p in predictions for row in p.layer_rows(args.depth)]
    lines = []
    for p in predictions:
        line = (f"{p.mode} step: {p.step_s * 1e3:.2f} ms predicted "
                f"({p.batch_size / p.step_s:.1f} samples/s)")
        if p.epoch_s is not None:
            line += f"; one epoch over {p.dataset_size} samples: {p.epoch_s:.2f} s"
        if p.uncovered:
            line += f"; left out (no fitted class): {', '.join(p.uncovered)}"
        lines.append(line)
    lines.append(f"per-operator model of this machine ({op_model.threads} threads), fitted "
                 f"{op_model.created} on {op_model.benchmarks} micro-benchmark timings "
                 f"(median error {op_model.fit_error.get('median_abs_error', float('nan')):.1%}); "
                 "step overhead not in the per-layer rows")
    payload = {"model": loaded.name, "input_shape": list(shape), "batch_size": args.batch_size,
               "predictions": [{**p.summary(), "by_class_ms": {k: v * 1e3 for k, v in p.by_class().items()},
                                "by_phase_ms": {k: v * 1e3 for k, v in p.by_phase().items()},
                                "layers": p.layer_rows(args.depth)} for p in predictions],
               "model_fit": op_model.to_dict()}
    print(render(rows, args.format, columns=COLUMNS,
                 title=f"{loaded.name}: predicted time, input {args.batch_size}x"
                       f"{'x'.join(map(str, shape))}",
                 footer="\n".join(lines), json_payload=payload))
    return 0
