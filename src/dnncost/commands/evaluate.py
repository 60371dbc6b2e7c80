"""``dnncost evaluate --db PATH``: held-out error of the step-time predictor on a study's networks
(leave one family out), beside the FLOPs-only line, the params-only line and the plain roofline.
``dnncost evaluate --unseen``: the honest protocol (dnncost.prediction.unseen): calibrate, then time
and predict every torchvision classification network not in the zoo, each result kept in the
results database as it is measured (dnncost.study.unseen; a rerun resumes) for ``dnncost report``."""
from __future__ import annotations

import argparse

from dnncost.commands._common import add_format_argument
from dnncost.commands._exit_codes import EXIT_OK

COLUMNS = ("step", "method", "n", "mape_pct", "within_10pct", "spearman", "pairwise",
           "x_per_op_error", "too_fast_pct", "too_slow_pct", "coverage_pct")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="held-out error of the step-time predictor on a study's networks",
        description="For every network of a study with measured training- and validation-step "
                    "times, predict the times with nothing measured on its family (leave one "
                    "family out) and report MAPE, the share within +-10%, Spearman's rho and "
                    "pairwise ordering accuracy of the per-operator model and of the baselines.")
    parser.add_argument("--db", default=None, metavar="PATH",
                        help="the study's results database; with --unseen, where the results are "
                             "kept as they are measured (a rerun of the same protocol resumes) "
                             "for `dnncost report` (default: dnncost-results/study.sqlite)")
    parser.add_argument("--config", default=None, metavar="HASH",
                        help="the configuration hash to evaluate (default: the largest group)")
    parser.add_argument("--networks", action="store_true",
                        help="list every network's measured and predicted times instead")
    parser.add_argument("--figure", default=None, metavar="PATH",
                        help="also write the predicted-vs-measured figure (PNG/PDF/SVG)")
    unseen = parser.add_argument_group("the unseen-network protocol (--unseen)")
    unseen.add_argument("--unseen", action="store_true",
                        help="calibrate on random networks, then time and predict every torchvision "
                             "classification network not in the zoo, at 3x32x32 batch 32 and "
                             "3x224x224 batch 8, train and eval steps")
    unseen.add_argument("--calibration", default=None, metavar="PATH|stored",
                        help="use this calibration file ('stored': this machine's) instead of "
                             "calibrating in the run (a rerun resumes only under the same "
                             "calibration, so give one to resume)")
    unseen.add_argument("--models", default=None, metavar="A,B,...",
                        help="only these networks: torchvision names, timm:NAME or hf:TYPE (default: every "
                        "torchvision network not in the zoo)")
    unseen.add_argument("--quick", action="store_true",
                        help="smoke run: a quick calibration, six small networks, 3x32x32 only, "
                             "one round")
    unseen.add_argument("--rounds", type=int, default=None, metavar="N",
                        help="round-robin timing passes over the networks (default: 3; 1 with "
                             "--quick)")
    unseen.add_argument("--max-gflops", type=float, default=None, metavar="G",
                        help="leave out networks whose step counts more GFLOPs (default: 250)")
    unseen.add_argument("--threads", type=int, default=None, metavar="N",
                        help="threads to time and calibrate with (default: torch's current)")
    unseen.add_argument("--recheck", action="store_true",
                        help="measure the machine's level alongside: every round first times the "
                             "calibration's held-out and transfer networks again, and the median "
                             "of their time now over their time at calibration scales every "
                             "prediction (instead of the level of the last `dnncost calibrate "
                             "--ops --recheck`, whose rows are printed too); a record of how the "
                             "machine moved during the run, not a correction: after 224x224 "
                             "networks those small ones run slower than on their own. Needs that "
                             "calibration's networks: calibrate in the run or use --calibration "
                             "stored")
    unseen.add_argument("--out", default=None, metavar="PATH",
                        help="also write the results as JSON here")
    add_format_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.unseen:
        return run_unseen(args)
    from dnncost.core.errors import InputSpecError

    unseen_only = [flag for flag, value in (
        ("--calibration", args.calibration), ("--models", args.models), ("--quick", args.quick),
        ("--rounds", args.rounds), ("--max-gflops", args.max_gflops), ("--threads", args.threads),
        ("--recheck", args.recheck), ("--out", args.out)) if value not in (None, False)]
    if unseen_only:
        raise InputSpecError(f"{', '.join(unseen_only)} belong{'s' if len(unseen_only) == 1 else ''} "
                             "to the unseen-network protocol: add --unseen")
    from pathlib import Path

    from dnncost.core.environment import machine_fingerprint
    from dnncost.core.errors import StoreError
    from dnncost.measuring.calibrate import load_calibration
    from dnncost.measuring.measurement import STUDY_ESTIMATOR
    from dnncost.prediction.evaluation import Method, evaluate
    from dnncost.prediction.storage import load_operator_model
    from dnncost.reporting.formatting import render
    from dnncost.reporting.plots import predicted_vs_measured
    from dnncost.study.defaults import DEFAULT_DB
    from dnncost.study.predicted import (
        latest_predictions,
        recounted_observations,
        select_group,
        stored_observations,
    )
    from dnncost.study.store import open_store

    path = Path(args.db or DEFAULT_DB)
    if not path.is_file():
        raise StoreError(f"no results database at '{path}': run `dnncost study` first or pass --db")
    with open_store(path, read_only=True) as store:
        group = select_group(store, config_hash=args.config)
        stored = latest_predictions(store.prediction_rows(group))
    if stored:  # what the study predicted when it had the machine's model: nothing is recounted
        observations = stored_observations(group.networks, stored)
        source = (f"predictions stored by the study (calibration "
                  f"{next(iter(stored.values())).calibration_id})")
    else:  # a study that stored none: count and predict now, with this machine's calibration
        threads = int(group.networks[0].threads)
        if group.fingerprint != machine_fingerprint("cpu", threads=threads):
            raise StoreError(f"the results in '{path}' were measured on another machine (or thread "
                             f"count), fingerprint {group.fingerprint}, and the study stored no "
                             "predictions; evaluate them where they were measured: the prediction "
                             "needs that machine's calibration")
        op_model = load_operator_model("cpu", threads=threads)  # NotCalibratedError names the command
        cal = load_calibration("cpu", threads=threads)
        peak = (cal.peak_flops_per_s("float32") if cal else None) or group.peak_flops_per_s
        bandwidth = cal.bandwidth.bytes_per_s if cal and cal.bandwidth else None
        observations = recounted_observations(group, op_model=op_model, peak_flops_per_s=peak,
                                              bytes_per_s=bandwidth)
        source = "counted and predicted now with this machine's calibration (the study stored none)"
    evaluation = evaluate(observations)
    footer = [f"leave one family out over {len({p.name for p in evaluation.points})} networks "
              f"({group.config.get('batch_size')} per batch, configuration {group.config_hash}); "
              f"measured = the study's figure ({STUDY_ESTIMATOR.value} of the kept steps); "
              "mape_pct and within_10pct in %, x_per_op_error = MAPE / per-operator MAPE; "
              "too_fast_pct / too_slow_pct: networks predicted below / above their measured time; "
              "coverage_pct: measured inside the per-operator prediction's interval",
              f"predicted: {source}"]
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
    return EXIT_OK


def run_unseen(args: argparse.Namespace) -> int:
    """The unseen-network protocol (see dnncost.prediction.unseen), kept in the store at --db."""
    import json
    import sys
    from pathlib import Path

    import torch

    from dnncost.core.errors import InputSpecError, ModelNotFoundError
    from dnncost.prediction import unseen
    from dnncost.prediction.calibration import calibrate_operators, stored_samples
    from dnncost.prediction.interval import COVERAGE
    from dnncost.prediction.samples import StoredSamples, load_samples, samples_path
    from dnncost.prediction.storage import load_operator_model, read_operator_model
    from dnncost.reporting.formatting import render
    from dnncost.study.defaults import DEFAULT_DB
    from dnncost.study.store import open_store
    from dnncost.study.unseen import protocol_config, start_unseen

    if args.rounds is not None and args.rounds < 1:
        raise InputSpecError(f"--rounds must be a positive integer, got {args.rounds}")
    if args.threads is not None and args.threads < 1:
        raise InputSpecError(f"--threads must be a positive integer, got {args.threads}")
    if args.max_gflops is not None and not args.max_gflops > 0:
        raise InputSpecError(f"--max-gflops must be positive, got {args.max_gflops}")
    if args.recheck and args.calibration not in (None, "stored"):
        raise InputSpecError("--recheck times the calibration's own networks again, which a "
                             f"calibration file ('{args.calibration}') does not hold: use "
                             "--calibration stored, or calibrate in the run")
    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else (
        list(unseen.QUICK_MODELS) if args.quick else None)
    if args.models is not None:  # before calibrating or timing anything
        if not names:
            raise ModelNotFoundError("--models needs at least one network name")
        names = unseen.check_unseen_names(names)

    def progress(line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)

    show = progress if args.format == "table" else None
    rounds = args.rounds or (1 if args.quick else unseen.ROUNDS)
    threads = args.threads or torch.get_num_threads()
    max_gflops = args.max_gflops or unseen.MAX_STEP_GFLOPS
    db = Path(args.db or DEFAULT_DB)
    with open_store(db) as store:
        store.lock()  # before calibrating: a busy database is said at once, not after minutes
        samples: StoredSamples | None = None
        if args.calibration == "stored":
            model = load_operator_model("cpu", threads=args.threads)
            if args.recheck:
                samples = load_samples(samples_path(model.fingerprint))
        elif args.calibration:
            model = read_operator_model(args.calibration)
        else:
            done = calibrate_operators(threads=args.threads, quick=args.quick, progress=show)
            model, samples = done.model, stored_samples(done) if args.recheck else None
        config = protocol_config(model, rounds=rounds, repeats=unseen.REPEATS, warmup=unseen.WARMUP,
                                 threads=threads, max_step_gflops=max_gflops, recheck=args.recheck)
        recorder = start_unseen(store, model, threads=threads, config=config,
                                command="dnncost " + " ".join(sys.argv[1:]))
        kept = recorder.done()
        try:
            this_run = unseen.evaluate_unseen(
                model, names=names, configs=unseen.CONFIGS[:1] if args.quick else unseen.CONFIGS,
                rounds=rounds, repeats=unseen.REPEATS, warmup=unseen.WARMUP, threads=args.threads,
                max_step_gflops=max_gflops, progress=show, done=kept, on_result=recorder.record,
                recheck=samples)
        except KeyboardInterrupt:
            recorder.finish("interrupted")
            raise
        except BaseException:
            recorder.finish("failed")
            raise
        recorder.finish("complete")
        result = recorder.result()
    payload = result.to_dict()
    at_stored = [r for r in result.at_level(model.level).rows()
                 if r["method"] == "per_kernel"] if args.recheck else []
    if args.recheck:  # what the same measurements give at the level a user predicts with
        payload["at_stored_level"] = at_stored
    if args.out:
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(payload, indent=2))
        except OSError as exc:
            raise InputSpecError(f"cannot write the results to '{out}': {exc.strerror}") from None
    held = model.held_out
    footer = [f"{len({p.name for p in result.points})} unseen networks, measured = "
              f"{unseen.ESTIMATOR} over {rounds} round-robin round(s); calibration: "
              f"{model.networks} random networks, {model.kernels} kernels, "
              f"{'quick, ' if model.quick else ''}held-out MAPE "
              + ", ".join(f"{m} {v['mape']:.1%}" for m, v in held.items())
              + "; transfer-set MAPE "
              + (", ".join(f"{m} {v['mape']:.1%}" for m, v in model.transfer.items()) or "not recorded")
              + ("; every method's predictions scaled by the machine's level measured alongside "
                 "(the calibration's held-out and transfer networks, first in every round: time "
                 "now / time at calibration, median): "
                 + ", ".join(f"{k} x{v:.3f}" for k, v in result.levels().items()) if args.recheck
                 else f"; rechecked {model.level_checked}: every method's predictions scaled by "
                 f"{model.level_text()}" if model.level
                 else "; not rechecked (predictions at the calibration's speed)"),
              f"per-kernel intervals at {COVERAGE:.0%}: coverage = the share of networks "
              "measured inside theirs; too_fast_pct / too_slow_pct = predicted below / above the "
              "measured time",
              "baselines: one scale factor per mode fitted on the calibration's random networks "
              "(never on these): flops = k*FLOPs, params = k*params, roofline = k*sum max(FLOPs/peak, "
              "bytes/bandwidth)",
              "run-to-run noise (median over networks of the spread of round medians): "
              + ", ".join(f"{k} {v:.1%}" for k, v in result.noise().items()),
              "machine speed against the calibration's (the reference probe after each network's "
              "rounds, median; positive: slower now, every step then likely slower than "
              "predicted): " + ", ".join(f"{k} {v:+.0%}" if v == v else f"{k} not recorded"
                                         for k, v in result.speed_change().items())]
    if args.recheck:
        footer.append("at the model's stored level instead ("
                      + (model.level_text() or "x1, never rechecked")
                      + "), the per-kernel model's MAPE / within +-10% / too slow: " + "; ".join(
                          f"{r['input']} {r['step']} {r['mape_pct']:.1f}% / {r['within_10pct']:.0f}%"
                          f" / {r['too_slow_pct']:.0f}%" for r in at_stored))
    footer += [f"left out: {k}: {v}" for k, v in {**this_run.skipped, **result.skipped}.items()]
    resumed = len(result.points) - len(this_run.points)
    footer.append(f"kept in {db} ({len(this_run.points)} results measured in {this_run.seconds:.0f} s"
                  + (f", {resumed} from an earlier run of the same protocol" if resumed else "")
                  + "); `dnncost report --db " + str(db) + "` shows them"
                  + (f"; JSON written to {args.out}" if args.out else ""))
    print(render(result.rows(), args.format, title="step-time prediction on unseen networks",
                 footer="\n".join(footer), json_payload=payload))
    return EXIT_OK
