"""``dnncost time MODEL``: measured time of a training and/or validation step on this machine."""
from __future__ import annotations

import argparse

from dnncost.commands._common import (
    add_format_argument,
    add_model_input_arguments,
    add_optimizer_argument,
    add_precision_arguments,
    input_spec,
    warnings_once,
)
from dnncost.commands._distributed import add_distributed_arguments, run_distributed_cli, wants_distributed
from dnncost.commands._exit_codes import EXIT_OK
from dnncost.core.kinds import DEFAULT_WARMUP, MODES, Mode

TABLE_COLUMNS = ("model", "mode", "batch", "device", "threads", "step_ms", "median_ms", "iqr_ms", "cv",
                 "ci95_low_ms", "ci95_high_ms", "n", "samples_per_s", "achieved_gflops_per_s",
                 "efficiency", "peak_memory_bytes", "noisy")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "time", help="measure the time of a training or validation step",
        description="Time a model's training step (zero_grad + forward + loss + backward + optimizer "
                    "step) and/or validation step (eval forward under no_grad) on random data: "
                    "warm-up, repeated samples with the device synchronised, median, IQR, CV and a "
                    "95% interval of the median, achieved FLOP/s and efficiency against "
                    "'dnncost calibrate'.")
    add_model_input_arguments(parser)
    add_precision_arguments(parser)
    parser.add_argument("--mode", choices=(*MODES, "both"), default=Mode.TRAIN.value,
                        help="train step, eval step, or both (default: train)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="intra-op CPU threads (default: torch's current setting)")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, metavar="N",
                        help=f"untimed warm-up steps (default: {DEFAULT_WARMUP})")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=10, metavar="N",
                        help="timed steps (default: 10)")
    budget.add_argument("--repeats", type=int, dest="steps", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)  # the old name of --steps, still understood
    budget.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="time steps until their total reaches SECONDS (at least 6 steps)")
    add_optimizer_argument(parser)
    parser.add_argument("--breakdown", action="store_true",
                        help="also profile where the step's time goes (torch.profiler), beside "
                             "each part's share of FLOPs")
    parser.add_argument("--breakdown-by", choices=("module_type", "module", "operator"),
                        default="module_type", help="grouping of the breakdown (default: module_type)")
    add_distributed_arguments(parser)
    add_format_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dnncost.measuring.measurement import STUDY_ESTIMATOR
    from dnncost.measuring.timing import time_model
    from dnncost.models.loading import load_model
    from dnncost.reporting.formatting import human, render

    loaded = load_model(args.model)
    spec = input_spec(args, loaded.input_shape)
    shape = spec.sample_shape
    if wants_distributed(args):
        return run_distributed_cli(args, loaded, shape)
    model = loaded.module
    modes = MODES if args.mode == "both" else (args.mode,)
    timings, breakdowns = [], []
    with warnings_once("time"):
        for mode in modes:
            timing = time_model(model, spec, batch_size=args.batch_size, mode=mode,
                                dtype=args.dtype, autocast=args.autocast,
                                channels_last=args.channels_last,
                                device=args.device, threads=args.threads, warmup=args.warmup,
                                steps=args.steps, budget_s=args.budget,
                                optimizer=args.optimizer, name=loaded.name)
            timings.append(timing)
            if args.breakdown:
                breakdowns.append(_breakdown(model, shape, args, mode, loaded.name, timing))
    rows = [t.to_row() for t in timings]
    first = timings[0]
    env = first.environment
    footer = [
        f"input {spec}, batch {first.batch_size}, {first.dtype}"
        f"{' + autocast ' + args.autocast if args.autocast else ''}; "
        f"{env.device_name}, {env.cpu_cores} cores, {first.threads} threads, torch {env.torch_version} "
        f"({env.torch_build}); dnncost {env.git_revision}",
        f"{first.measurement.n} timed steps after {args.warmup} warm-up steps; step_ms = the "
        f"network's measured time ({STUDY_ESTIMATOR.value} of the steps: the figure the study, "
        "predict and evaluate use); ci95 = 95% interval of the median; cv = std/mean",
        f"peak memory: {first.peak_memory_source}",
    ]
    footer += [_machine_line(t) for t in timings if t.load is not None or t.probe is not None]
    if first.efficiency is None:
        calibrate = "dnncost calibrate" + (f" --threads {first.threads}" if args.threads else "")
        footer.append(f"efficiency needs a calibration of this machine: run '{calibrate}'")
    if args.format == "table":
        for row in rows:
            row["peak_memory_bytes"] = human(row["peak_memory_bytes"], unit="B")
    payload = {"timings": [t.to_dict() for t in timings],
               "breakdowns": [b.to_dict() for b in breakdowns]}
    if args.format == "json":
        print(render(rows, "json", json_payload=payload))
        return EXIT_OK
    print(render(rows, args.format, columns=TABLE_COLUMNS, title=f"{loaded.name}: step time",
                 footer="\n".join(footer)))
    for b in breakdowns:
        print()
        print(_render_breakdown(b, args))
    return EXIT_OK


def _machine_line(timing) -> str:
    """The machine during one timing: the reference probe against its fastest on record, and
    the load (a busy machine is also warned about on stderr)."""
    parts = []
    if timing.probe is not None and timing.probe.reference_s is not None:
        parts.append(f"reference probe {timing.probe.drift:+.0%} against the fastest on record")
    load = timing.load
    if load is not None:
        parts.append(load.describe())
    state = "BUSY" if timing.shifted or (load is not None and load.busy) else "quiet"
    return f"machine during the {timing.mode.value} step ({state}): {', '.join(parts) or 'unknown'}"


def _breakdown(model, shape, args: argparse.Namespace, mode: str, name: str, timing):
    from dnncost.measuring.breakdown import profile_breakdown

    return profile_breakdown(model, shape, batch_size=args.batch_size, mode=mode,
                             device=args.device, threads=args.threads, optimizer=args.optimizer,
                             name=name, report=timing.cost,  # time_model counted this very step
                             unprofiled_step_s=timing.measurement.median)


def _render_breakdown(b, args: argparse.Namespace) -> str:
    from dnncost.reporting.formatting import render

    rows = [{"mode": b.mode.value, **row} for row in b.rows(args.breakdown_by)]
    if args.format == "csv":
        return render(rows, "csv")
    r = b.reconciliation()
    overhead = (f"; an unprofiled step takes {r['unprofiled_step_ms']:.3f} ms, so profiling adds "
                f"{r['profiler_overhead']:+.1%}" if r["unprofiled_step_ms"] else "")
    footer = (f"profiled {b.mode.value} step {r['step_ms']:.3f} ms (mean of {b.steps}) = "
              f"{r['attributed_ms']:.3f} ms in operators + {r['gap_ms']:.3f} ms gap "
              f"({r['gap_share']:.1%}: Python, module dispatch and hooks between operators, profiler "
              f"bookkeeping){overhead}. time_share is of the profiled step; flops_share of the "
              "counted step (dnncost.counting.counter).")
    return render(rows, "table", title=f"{b.model}: where the {b.mode.value} step's time goes "
                  f"(by {args.breakdown_by})", footer=footer)
