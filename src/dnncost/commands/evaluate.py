"""``dnncost evaluate --db PATH``: held-out error of the step-time predictor on a study's networks
(leave one family out), beside the FLOPs-only line, the params-only line and the plain roofline."""
from __future__ import annotations

import argparse

from dnncost.commands._common import add_format_argument

COLUMNS = ("step", "method", "n", "mape_pct", "within_10pct", "spearman", "pairwise",
           "x_per_op_error")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="held-out error of the step-time predictor on a study's networks",
        description="For every network of a study with measured training- and validation-step "
                    "times, predict the times with nothing measured on its family (leave one "
                    "family out) and report MAPE, the share within +-10%%, Spearman's rho and "
                    "pairwise ordering accuracy of the per-operator model and of the baselines.")
    parser.add_argument("--db", default=None, metavar="PATH",
                        help="the study's results database (default: dnncost-results/study.sqlite)")
    parser.add_argument("--config", default=None, metavar="HASH",
                        help="the configuration hash to evaluate (default: the largest group)")
    parser.add_argument("--statistic", choices=("median", "min"), default="median",
                        help="a network's measured time: the median of its repeats (the study's "
                             "figure, default) or the fastest repeat (least disturbed by other load)")
    parser.add_argument("--networks", action="store_true",
                        help="list every network's measured and predicted times instead")
    parser.add_argument("--figure", default=None, metavar="PATH",
                        help="also write the predicted-vs-measured figure (PNG/PDF/SVG)")
    add_format_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dnncost.errors import StoreError
    from dnncost.measuring.calibrate import load_calibration
    from dnncost.measuring.environment import machine_fingerprint
    from dnncost.prediction.evaluation import (
        Method,
        Statistic,
        evaluate_group,
        predicted_vs_measured,
        select_group,
    )
    from dnncost.prediction.predict import load_operator_model
    from dnncost.reporting.formatting import render
    from dnncost.study.store import open_store
    from dnncost.study.sweep import DEFAULT_DB

    path = Path(args.db or DEFAULT_DB)
    if not path.is_file():
        raise StoreError(f"no results database at '{path}': run `dnncost study` first or pass --db")
    with open_store(path, read_only=True) as store:
        group = select_group(store, config_hash=args.config)
    threads = int(group.networks[0].threads)
    if group.fingerprint != machine_fingerprint("cpu", threads=threads):
        raise StoreError(f"the results in '{path}' were measured on another machine (or thread "
                         f"count), fingerprint {group.fingerprint}; evaluate them where they were "
                         "measured: the prediction needs that machine's calibration")
    op_model = load_operator_model("cpu", threads=threads)  # NotCalibratedError names the command
    cal = load_calibration("cpu", threads=threads)
    peak = (cal.peak_flops_per_s("float32") if cal else None) or group.peak_flops_per_s
    bandwidth = cal.bandwidth.bytes_per_s if cal and cal.bandwidth else None
    evaluation = evaluate_group(group, op_model=op_model, peak_flops_per_s=peak,
                                bytes_per_s=bandwidth, statistic=Statistic(args.statistic))
    footer = [f"leave one family out over {len({p.name for p in evaluation.points})} networks "
              f"({group.config.get('batch_size')} per batch, configuration {group.config_hash}); "
              f"measured = {args.statistic} of each network's repeats; mape_pct and within_10pct "
              "in %, x_per_op_error = MAPE / per-operator MAPE"]
    footer += [f"{m.value}: {m.label}" for m in evaluation.methods]
    footer += [f"not evaluated: {k}: {v}" for k, v in evaluation.notes.items()]
    if args.figure:
        fig = predicted_vs_measured(evaluation, (Method.PER_OPERATOR, Method.FLOPS_LINE))
        fig.savefig(args.figure, dpi=150)
        footer.append(f"figure written to {args.figure}")
    rows = evaluation.network_rows() if args.networks else evaluation.table_rows()
    print(render(rows, args.format, columns=None if args.networks else COLUMNS,
                 title="step-time prediction, held-out error", footer="\n".join(footer),
                 json_payload=evaluation.to_dict()))
    return 0
