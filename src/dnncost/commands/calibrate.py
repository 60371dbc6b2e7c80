"""``dnncost calibrate``: measure and store this machine's peak FLOP/s (matmul and convolution) and
memory bandwidth."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from dnncost.commands._common import add_format_argument
from dnncost.commands._exit_codes import EXIT_OK

if TYPE_CHECKING:
    from dnncost.prediction.model import OperatorModel


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="measure this machine's peak FLOP/s and memory bandwidth",
        description="Measure peak square-matmul and 3x3-convolution FLOP/s per dtype and thread "
                    "count (the peak is the faster of the two) and the memory "
                    "bandwidth of a large tensor copy, and store them (keyed by a machine "
                    "fingerprint) in ~/.cache/dnncost/calibration/ or $DNNCOST_CACHE_DIR; "
                    "'dnncost time' then reports efficiency = achieved / peak.")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--threads", default=None, metavar="N[,N...]",
                        help="thread counts to calibrate, e.g. 1,2 (default: torch's current)")
    parser.add_argument("--dtypes", default="float32", metavar="D[,D...]",
                        help="float32 (default), float64, bfloat16, float16, comma-separated")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and short runs: a rough figure in a second or two "
                             "(with --ops, a rough per-kernel model in about 30 s: a few random "
                             "networks at 224x224 batch 8 and 32x32 batch 32, one pass)")
    parser.add_argument("--ops", action="store_true",
                        help="also time the kernels and steps of random networks and fit the "
                             "per-kernel time model that 'dnncost predict' uses, with its error on "
                             "held-out random networks and on a transfer set of standard networks "
                             "it never fits on (CPU; at most about 5 minutes, --quick "
                             "under a minute); calibrate close in time to a study")
    parser.add_argument("--refit", action="store_true",
                        help="with --ops: refit the per-kernel time model on the samples the last "
                             "'--ops' calibration of this machine stored, timing nothing")
    parser.add_argument("--recheck", action="store_true",
                        help="with --ops: time again the networks the last '--ops' calibration "
                             "of this machine held out and its transfer set, as 'dnncost time' "
                             "does (about a minute), and scale every prediction by how much "
                             "faster or slower they run now (the machine's speed drifts)")
    parser.add_argument("--rounds", type=int, default=None, metavar="N",
                        help="with --recheck: round-robin rounds per network (default: 2)")
    add_format_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dnncost.core.cache import cache_dir, check_cache_writable
    from dnncost.core.errors import DeviceError
    from dnncost.measuring.calibrate import calibrate, save_calibration
    from dnncost.reporting.formatting import render

    dtypes = [d for d in args.dtypes.split(",") if d.strip()]
    thread_counts: list[int | None] = [None]
    if args.threads:
        try:
            thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
        except ValueError:
            raise DeviceError(f"--threads takes positive integers separated by commas, "
                              f"got '{args.threads}'") from None
    check_cache_writable(cache_dir() / "calibration")  # before any measuring, not after it
    rows: list[dict[str, object]] = []
    stored: list[str] = []
    payload: list[dict[str, Any]] = []
    if args.recheck:
        if not args.ops or args.refit:
            raise DeviceError("--recheck times the per-kernel model's networks again: give it with "
                              "--ops, without --refit")
        for threads in thread_counts:
            rows += _recheck_operators(args, threads, stored, payload)
        print(render(rows, args.format, title="machine speed against the per-kernel calibration",
                     footer="level: time now / time at calibration, median over the networks the "
                            "calibration did not fit on; every prediction is scaled by it; cv: "
                            f"the median spread of a network's rounds; stored in "
                            f"{', '.join(dict.fromkeys(stored))}",
                     json_payload={"stored": stored, "rechecks": payload}))
        return EXIT_OK
    if args.refit:
        if not args.ops:
            raise DeviceError("--refit refits the per-kernel time model: give it with --ops")
        for threads in thread_counts:
            rows += _operator_rows(_refit_operators(threads, stored))
        print(render(rows, args.format, title="per-kernel time model refitted",
                     footer=f"from stored samples; stored in {', '.join(dict.fromkeys(stored))}",
                     json_payload={"stored": stored}))
        return EXIT_OK
    for threads in thread_counts:
        cal = calibrate(args.device, threads=threads, dtypes=dtypes, quick=args.quick)
        path = save_calibration(cal)
        stored.append(str(path))
        payload.append({**cal.to_dict(), "path": str(path)})
        for dtype, peak in cal.matmul.items():
            rows.append({"device": cal.device, "threads": cal.threads, "measure": f"matmul {dtype}",
                         "size": f"{peak.size}x{peak.size}", "value": peak.flops_per_s / 1e9,
                         "unit": "GFLOP/s", "cv": peak.measurement.cv})
        for dtype, conv in cal.conv.items():
            n, c, h = conv.shape
            rows.append({"device": cal.device, "threads": cal.threads, "measure": f"conv 3x3 {dtype}",
                         "size": f"{n}x{c}x{h}x{h}", "value": conv.flops_per_s / 1e9,
                         "unit": "GFLOP/s", "cv": conv.measurement.cv})
        if cal.bandwidth is not None:
            bw = cal.bandwidth
            rows.append({"device": cal.device, "threads": cal.threads, "measure": "copy bandwidth",
                         "size": f"{bw.nbytes / 2**20:.0f} MiB", "value": bw.bytes_per_s / 1e9,
                         "unit": "GB/s", "cv": bw.measurement.cv})
        if args.ops:
            rows += _calibrate_operators(args, threads, stored)
    env = payload[0]["environment"]
    footer = (f"{env['device_name']}, {env['cpu_cores']} cores, torch {env['torch_version']}; "
              f"stored in {', '.join(dict.fromkeys(stored))}. The peak FLOP/s of a dtype is the faster "
              "of its matmul and convolution; bandwidth counts bytes read + written.")
    print(render(rows, args.format, title="machine calibration", footer=footer,
                 json_payload={"calibrations": payload}))
    return EXIT_OK


def _calibrate_operators(args: argparse.Namespace, threads: int | None,
                         stored: list[str]) -> list[dict[str, object]]:
    """Fit and store the per-kernel time model; its rows for the table."""
    import sys

    from dnncost.prediction.calibration import calibrate_operators, stored_samples
    from dnncost.prediction.samples import samples_path, save_samples
    from dnncost.prediction.storage import save_operator_model

    def progress(line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)

    done = calibrate_operators(threads=threads, quick=args.quick,
                               progress=progress if args.format == "table" else None)
    stored.append(save_operator_model(done.model))
    stored.append(str(save_samples(stored_samples(done), samples_path(done.model.fingerprint))))
    return _operator_rows(done.model)


def _refit_operators(threads: int | None, stored: list[str]) -> OperatorModel:
    """Refit the per-kernel model on this machine's stored samples and store it."""
    from dnncost.core.environment import machine_fingerprint
    from dnncost.prediction.calibration import refit
    from dnncost.prediction.samples import load_samples, samples_path
    from dnncost.prediction.storage import save_operator_model

    model = refit(load_samples(samples_path(machine_fingerprint("cpu", threads=threads)))).model
    stored.append(save_operator_model(model))
    return model


def _recheck_operators(args: argparse.Namespace, threads: int | None, stored: list[str],
                       payload: list[dict[str, Any]]) -> list[dict[str, object]]:
    """Time the stored calibration's held-out and transfer networks again, store the model with
    the level they give; the level's rows for the table."""
    import sys

    from dnncost.core.device import using_threads
    from dnncost.prediction.recheck import RECHECK_ROUNDS, recheck, with_level
    from dnncost.prediction.samples import load_samples, samples_path
    from dnncost.prediction.storage import load_operator_model, save_operator_model

    def progress(line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)

    rounds = args.rounds if args.rounds is not None else RECHECK_ROUNDS
    with using_threads(threads) as n_threads:
        model = load_operator_model("cpu", threads=n_threads)
        samples = load_samples(samples_path(model.fingerprint))
        result = recheck(samples, rounds=rounds,
                         progress=progress if args.format == "table" else None)
    stored.append(save_operator_model(with_level(model, result)))
    payload.append({"threads": n_threads, "level": result.level, "noise": result.noise,
                    "ratios": result.ratios, "rounds": rounds, "seconds": result.seconds})
    return [{"device": "cpu", "threads": n_threads, "measure": f"{mode}-step level",
             "size": f"{len(result.ratios[mode])} networks x {rounds} rounds",
             "value": level, "unit": "x calibration", "cv": result.noise.get(mode)}
            for mode, level in result.level.items()]


def _operator_rows(model: OperatorModel) -> list[dict[str, object]]:
    """The per-kernel model's rows for the table: its error per mode on held-out random networks
    and on the transfer set, its interval, what it was fitted on."""
    from dnncost.prediction.interval import COVERAGE

    rows: list[dict[str, object]] = [
        {"device": "cpu", "threads": model.threads, "measure": f"held-out {mode}-step MAPE",
         "size": f"{int(m['n'])} random networks", "value": 100 * m["mape"], "unit": "%", "cv": None}
        for mode, m in model.held_out.items()]
    rows += [
        {"device": "cpu", "threads": model.threads, "measure": f"transfer-set {mode}-step MAPE",
         "size": f"{int(m['n'])} standard networks", "value": 100 * m["mape"], "unit": "%",
         "cv": None} for mode, m in model.transfer.items()]
    for mode in model.interval.residuals:
        factors = model.interval.factors(mode)
        if factors is not None:
            rows.append({"device": "cpu", "threads": model.threads,
                         "measure": f"{mode}-step interval ({COVERAGE:.0%})",
                         "size": f"x{factors[0]:.2f} to x{factors[1]:.2f} the prediction",
                         "value": 100 * (factors[1] - factors[0]), "unit": "% wide", "cv": None})
    rows.append({"device": "cpu", "threads": model.threads, "measure": "per-kernel model",
                 "size": f"{model.networks} networks x {model.passes} pass"
                         f"{'es' if model.passes > 1 else ''}", "value": model.kernels,
                 "unit": "kernels", "cv": None})
    if model.busy_networks:
        rows.append({"device": "cpu", "threads": model.threads,
                     "measure": "timed while the machine was busy (slow-biased)",
                     "size": "in every pass, after re-timing", "value": model.busy_networks,
                     "unit": "networks", "cv": None})
    return rows
