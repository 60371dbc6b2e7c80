"""``dnncost whatif MODEL``: does cutting FLOPs cut time? Each transformation counted and timed side
by side with the unmodified network."""
from __future__ import annotations

import argparse
import sys
import warnings

from dnncost.commands._common import (
    add_format_argument,
    add_model_input_arguments,
    add_optimizer_argument,
)

DEFAULT_BATCH_SIZE = 16  # source: our choice; batch 1 measures Python overhead, not the layers
DEFAULT_PAIRS = 6  # source: MIN_SAMPLES_FOR_CI, the fewest pairs with a 95% interval of the median; keeps a
# default run near 3 minutes per CIFAR network on 2 cores
TABLE_COLUMNS = ("transformation", "mode", "flops", "nominal_flops", "params", "bytes", "activations",
                 "time", "time_ci95_low", "time_ci95_high", "original_gflops_per_s", "gflops_per_s",
                 "note")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "whatif", help="does cutting FLOPs cut time? count and time compression techniques",
        description="Apply each transformation (pruning, low rank, depthwise-separable, int8, "
                    "reduced precision, channels_last, torch.compile, batch size, threads) to the "
                    "network, count it and time it interleaved with the unmodified network "
                    "(A B, B A, ...): ratios of FLOPs, params, bytes and activation memory, and the "
                    "measured time ratio with its 95% interval, all per sample.")
    add_model_input_arguments(parser, specs=False)  # transformations need one float input
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
    parser.add_argument("--out", default=None, metavar="FILE.png",
                        help="write the 'FLOPs saved vs time saved' figure here")
    parser.add_argument("--db", default=None, metavar="FILE.sqlite",
                        help="also keep the results in this study database (table whatif_results)")
    add_format_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from dnncost.measuring.step import Mode
    from dnncost.measuring.timing import StepOptions
    from dnncost.models.loading import load_model, parse_input_shape
    from dnncost.whatif.registry import TransformationError, all_transformations, parse_specs
    from dnncost.whatif.runner import run_whatif

    if args.list:
        return _list(all_transformations())
    specs = parse_specs(args.only)  # bad names and ratios fail here, before anything is built
    loaded = load_model(args.model)
    shape = parse_input_shape(args.input_shape) if args.input_shape else loaded.input_shape
    modes = ("train", "eval") if args.mode == "both" else (args.mode,)
    results = []
    caught: list[warnings.WarningMessage] = []
    bar = tqdm(total=len(specs) * len(modes), desc=f"whatif {loaded.name}", unit="technique",
               file=sys.stderr, disable=None, leave=False)
    try:
        with warnings.catch_warnings(record=True) as caught, bar:
            warnings.simplefilter("always")
            for mode in modes:
                options = StepOptions(batch_size=args.batch_size, mode=Mode(mode),
                                      device=args.device, threads=args.threads,
                                      warmup=args.warmup, repeats=args.repeats,
                                      optimizer=args.optimizer)
                for result in run_whatif(loaded.module, specs, input_shape=shape, options=options,
                                         name=loaded.name):
                    results.append(result)
                    bar.set_postfix_str(result.transformation)
                    bar.update()
    except (TransformationError, KeyboardInterrupt):
        _warn(caught)
        if results:  # nothing measured is lost: print and store what finished, then the error
            _print(results, args, loaded.name, shape, partial=True)
            _save(results, args, loaded, shape)
        raise
    _warn(caught)
    _print(results, args, loaded.name, shape, partial=False)
    _save(results, args, loaded, shape)
    return 0


def _save(results: list, args: argparse.Namespace, loaded, shape: tuple[int, ...]) -> None:
    """Keep ``results`` in the study database ``--db`` (one run per step mode)."""
    if not args.db:
        return
    from dnncost.measuring.step import Mode
    from dnncost.measuring.timing import StepOptions
    from dnncost.models.registry import get_model_info
    from dnncost.study.store import open_store
    from dnncost.study.whatif import save_whatif

    try:
        family = get_model_info(loaded.name).family
    except LookupError:  # a torchvision, timm or file model outside the zoo
        family = "other"
    with open_store(args.db) as store:
        for mode in dict.fromkeys(r.mode for r in results):
            options = StepOptions(batch_size=args.batch_size, mode=Mode(mode), device=args.device,
                                  threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                                  optimizer=args.optimizer)
            save_whatif(store, [r for r in results if r.mode is mode], family=family,
                        input_shape=shape, options=options,
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
             "steps": "/".join(sorted(m.value for m in t.modes)), "what": t.summary}
            for t in transformations.values()]
    print(render_table(rows, title="what-if transformations"))
    return 0


def _print(results: list, args: argparse.Namespace, name: str, shape: tuple[int, ...], *,
           partial: bool) -> None:
    from dnncost.reporting.formatting import render

    rows = [r.to_row() for r in results]
    if args.format == "table":  # an empty cell would read as the next column's value
        rows = [{k: "-" if v is None else v for k, v in row.items()} for row in rows]
    title = f"{name}: what if? (transformed / original, per sample)" + \
        (" -- PARTIAL: stopped early" if partial else "")
    footer = "\n".join([
        f"input {args.batch_size}x{'x'.join(map(str, shape))}, device {args.device}; "
        f"{args.repeats} interleaved A/B pairs after {args.warmup} warm-up steps each",
        "time = median of the per-pair time ratios, ci95 its 95% order-statistics interval; "
        "< 1 is faster. flops are executed (counted) FLOPs; nominal_flops skips pruned zeros",
        *sorted({f"{r.transformation}: {r.count_note}" for r in results if r.count_note}),
    ])
    payload = {"model": name, "partial": partial, "results": [r.to_dict() for r in results]}
    print(render(rows, args.format, columns=TABLE_COLUMNS if args.format == "table" else None,
                 title=title, footer=footer, json_payload=payload))
    if args.out and not partial:
        from pathlib import Path

        from dnncost.reporting.plots import png_bytes
        from dnncost.reporting.whatif import flops_vs_time

        Path(args.out).write_bytes(png_bytes(flops_vs_time(results, title=name)))
        print(f"figure written to {args.out}", file=sys.stderr)
