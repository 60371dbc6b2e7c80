"""``dnncost predict MODEL``: predicted training/validation step and epoch time, per layer, without
running the network (its operators are counted on the meta device and timed by the fitted model)."""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from dnncost.commands._common import add_format_argument, add_model_input_arguments, input_spec
from dnncost.commands._exit_codes import EXIT_OK
from dnncost.core.kinds import MODES

if TYPE_CHECKING:
    from torch import nn

    from dnncost.core.inputs import InputSpec
    from dnncost.prediction.predict import Prediction

COLUMNS = ("mode", "module", "predicted_ms", "share", "gflops")
CSV_COLUMNS = COLUMNS + ("low_ms", "high_ms", "epoch_s", "epoch_low_s", "epoch_high_s")
STEP_ROW = "(whole step)"  # the CSV's row per mode carrying the step's interval and the epoch
CAVEAT_TEXT = {
    "quick": "fitted by a quick calibration (a rough figure)",
    "stale": "fitted more than a day ago",
    "other_torch": "fitted under another torch version",
    "other_threads": "fitted for another thread count",
    "other_machine": "fitted on another machine",
    "busy": "fitted partly on timings taken while other processes kept the CPU busy (slow-biased)",
    "speed": "made while the machine ran at another speed than now (the machine-speed line above)",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="predict step and epoch time from the network's structure",
        description="Predict the time of a training step (forward + loss + backward + SGD step) "
                    "and/or a validation step on this machine, per layer, from the network's "
                    "kernels and the per-kernel time model fitted on random networks by "
                    "'dnncost calibrate --ops'. Nothing is run: the network is counted on the meta "
                    "device.")
    add_model_input_arguments(parser)
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both",
                        help="training step, validation step, or both (default: both)")
    parser.add_argument("--dataset-size", type=int, default=None, metavar="N",
                        help="also predict one epoch over N samples (last batch partial)")
    parser.add_argument("--depth", type=int, default=1, metavar="D",
                        help="module depth of the per-layer breakdown (default: 1; -1 innermost)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="the thread count whose calibration to use (default: torch's current)")
    parser.add_argument("--calibration", default=None, metavar="PATH",
                        help="a calibration file to use instead of this machine's stored one "
                             "(e.g. copied from another machine: the figure is then marked)")
    parser.add_argument("--coverage", type=float, default=None, metavar="P",
                        help="the share of measurements the interval beside each figure should "
                             "hold, a fraction (default: 0.8)")
    parser.add_argument("--allow-uncovered", action="store_true",
                        help="predict even when some operators have no cost formula (counted as "
                             "zero time and listed)")
    add_format_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from dnncost.core.errors import InputSpecError
    from dnncost.models.loading import load_model
    from dnncost.prediction.errors import UncoveredOperatorError
    from dnncost.prediction.interval import COVERAGE
    from dnncost.prediction.predict import caveats_here, predict_time, speed_change
    from dnncost.prediction.storage import load_operator_model, read_operator_model
    from dnncost.reporting.formatting import render

    if args.batch_size < 1:
        raise InputSpecError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise InputSpecError(f"--threads must be a positive integer, got {args.threads}")
    if args.dataset_size is not None and args.dataset_size < 1:
        raise InputSpecError(f"--dataset-size must be a positive integer, got {args.dataset_size}")
    coverage = COVERAGE if args.coverage is None else args.coverage
    if not 0 < coverage < 1:
        raise InputSpecError(f"--coverage must be a fraction strictly between 0 and 1 (0.8 for 80%), "
                             f"got {args.coverage}")
    given = read_operator_model(args.calibration) if args.calibration else None
    loaded = load_model(args.model)
    spec = input_spec(args, loaded.input_shape)
    shape = spec.sample_shape
    _check_fits(loaded.build("meta"), spec, batch_size=args.batch_size)
    modes = MODES if args.mode == "both" else (args.mode,)
    try:
        predictions = [predict_time(loaded.build("meta"), input_shape=spec,
                                    batch_size=args.batch_size, mode=mode, calibration=given,
                                    threads=args.threads, dataset_size=args.dataset_size,
                                    name=loaded.name, strict=not args.allow_uncovered,
                                    coverage=coverage)
                       for mode in modes]
    except UncoveredOperatorError as exc:
        raise UncoveredOperatorError(f"{exc} (--allow-uncovered)") from exc
    op_model = given or load_operator_model("cpu", threads=args.threads)
    threads = args.threads or torch.get_num_threads()
    speed = speed_change(op_model, threads=threads)
    caveats = caveats_here(op_model, threads=threads, speed=speed)
    mark = " (rough: see below)" if caveats else ""
    rows = [row for p in predictions for row in p.layer_rows(args.depth)]
    if args.format == "csv":
        rows = [_step_row(p) for p in predictions] + rows
    lines = []
    for p in predictions:
        line = (f"{p.mode} step: {_figure(p.step_s * 1e3, p.step_interval_s, 1e3, p.coverage, 'ms')} "
                f"predicted{mark} ({p.batch_size / p.step_s:.1f} samples/s)")
        if p.epoch_s is not None:
            line += (f"; one epoch over {p.dataset_size} samples: "
                     f"{_figure(p.epoch_s, p.epoch_interval_s, 1.0, p.coverage, 's')}")
        if p.uncovered:
            line += f"; left out (no cost formula): {', '.join(p.uncovered)}"
        lines.append(line)
    lines.append(f"per-kernel model ({op_model.threads} threads, torch {op_model.torch_version}), "
                 f"fitted {op_model.created} on {op_model.kernels} kernels of {op_model.networks} "
                 f"random networks; {_errors(op_model.held_out, op_model.transfer)}; step overhead "
                 "not in the per-layer rows")
    if any(p.interval is None for p in predictions):
        lines.append("no interval: this calibration holds no residuals to make one; run "
                     "'dnncost calibrate --ops' again")
    thin = [p.mode for p in predictions
            if p.interval is not None and not op_model.interval.guaranteed(p.mode, coverage)]
    if thin:
        lines.append(f"note: too few residuals for a distribution-free {coverage:.0%} bound "
                     f"({', '.join(thin)}): the interval reaches the largest error seen")
    if speed is not None:
        lines.append(_speed_line(speed, op_model.probe_s))
    if op_model.level:
        lines.append(f"level: rechecked {op_model.level_checked}, every step scaled by "
                     f"{op_model.level_text()}: the calibration's own networks' time at that "
                     "recheck over their time at calibration ('dnncost calibrate --ops --recheck')")
    if caveats:
        lines.append("WARNING: the calibration is " + "; ".join(CAVEAT_TEXT[c.value] for c in caveats)
                     + ": run 'dnncost calibrate --ops' for a figure to rely on")
    payload = {"model": loaded.name, "input_shape": list(shape), "batch_size": args.batch_size,
               "caveats": [c.value for c in caveats], "speed_change": speed,
               "predictions": [{**p.summary(), "by_class_ms": {k: v * 1e3 for k, v in p.by_class().items()},
                                "by_phase_ms": {k: v * 1e3 for k, v in p.by_phase().items()},
                                "layers": p.layer_rows(args.depth)} for p in predictions],
               "model_fit": op_model.summary()}
    print(render(rows, args.format, columns=CSV_COLUMNS if args.format == "csv" else COLUMNS,
                 title=f"{loaded.name}: predicted time, input {spec}, batch {args.batch_size}",
                 footer="\n".join(lines), json_payload=payload))
    return EXIT_OK


def _number(value: float) -> str:
    """3 significant figures without exponents: 0.123, 12.3, 123, 1234."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _figure(value: float, interval: tuple[float, float] | None, scale: float, coverage: float,
            unit: str) -> str:
    """'70.8 ms (80%: 62.1-84.0 ms)'; the value alone without an interval."""
    text = f"{_number(value)} {unit}"
    if interval is None:
        return text
    return f"{text} ({coverage:.0%}: {_number(interval[0] * scale)}-{_number(interval[1] * scale)} {unit})"


def _speed_line(speed: float, probe_s: float) -> str:
    """The machine's speed now against its calibration's, in one line."""
    from dnncost.prediction.predict import SPEED_TOLERANCE

    now_ms = (1 + speed) * probe_s * 1e3
    text = (f"machine speed: the reference probe took {now_ms:.2f} ms now, {probe_s * 1e3:.2f} ms "
            f"while calibrated ({speed:+.0%})")
    if speed > SPEED_TOLERANCE:
        return text + ": steps will likely run slower than predicted"
    if speed < -SPEED_TOLERANCE:
        return text + ": steps will likely run faster than predicted"
    return text


def _errors(held_out: Mapping[str, Mapping[str, float]],
            transfer: Mapping[str, Mapping[str, float]]) -> str:
    """The calibration's train-step error on networks it did not fit, in one clause."""
    parts = []
    for label, metrics in (("held-out random networks", held_out.get("train")),
                           ("standard networks it never fitted (transfer set)", transfer.get("train"))):
        if metrics:
            parts.append(f"{metrics.get('mape', float('nan')):.1%} on {int(metrics.get('n', 0))} "
                         f"{label}")
    return "train-step error (MAPE) " + ", ".join(parts) if parts else "no held-out error recorded"


def _step_row(p: Prediction) -> dict[str, object]:
    """The CSV's row of one mode's whole step: the prediction, its interval and the epoch's."""
    step, epoch = p.step_interval_s, p.epoch_interval_s
    return {"mode": p.mode, "module": STEP_ROW, "predicted_ms": p.step_s * 1e3, "share": 1.0,
            "gflops": p.flops / 1e9, "low_ms": step[0] * 1e3 if step else None,
            "high_ms": step[1] * 1e3 if step else None, "epoch_s": p.epoch_s,
            "epoch_low_s": epoch[0] if epoch else None, "epoch_high_s": epoch[1] if epoch else None}


def _check_fits(meta_model: nn.Module, spec: InputSpec, *, batch_size: int) -> None:
    """Refuse a batch whose inputs and weights alone (a lower bound of any step's memory, known
    without counting or allocating) are more than this machine has: its time is no figure to
    predict. Nothing is allocated: the model is on the meta device."""
    import torch

    from dnncost.core.device import check_memory_fits

    inputs = spec.batch_bytes(batch_size)
    if inputs is None:  # a factory's inputs: unknown until it runs
        return
    weights = sum(p.numel() * p.element_size() for p in meta_model.parameters())
    check_memory_fits(inputs + weights, device=torch.device("cpu"), batch_size=batch_size,
                      estimate="its input batch and weights alone")
