"""``dnncost zoo``: every zoo network with its counted params and MACs beside its paper's figures."""
from __future__ import annotations

import argparse
from collections.abc import Callable

from dnncost.commands._common import add_format_argument
from dnncost.commands._exit_codes import EXIT_OK

COLUMNS = ("name", "family", "size", "input", "params", "paper params", "params diff %",
           "MACs", "paper MACs", "MACs diff %", "study")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "zoo", help="list the zoo's networks, counted params/MACs vs the papers' figures",
        description="List the zoo's networks with their params and MACs, counted on the meta "
                    "device, next to the figures their papers print and the difference in percent.")
    parser.add_argument("--family", default=None,
                        help="only this family (lenet, alexnet, vgg, googlenet, resnet, mobilenet, "
                             "shufflenet, or a later one such as mobilenet_v2)")
    parser.add_argument("--size", default=None, help="only this input size: imagenet, cifar or mnist")
    add_format_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dnncost.counting.conventions import CONVENTION
    from dnncost.reporting.formatting import human, render

    records = zoo_records(family=args.family, size=args.size)
    rows: list[dict[str, object]] = []
    if args.format == "table":
        rows += [_row(r, human) for r in records]
    else:
        rows += [_flat(r) for r in records]
    footer = "\n".join([
        f"{len(records)} networks; params and MACs counted at batch 1 on the meta device; "
        "diff % = counted vs paper.",
        "study: 'default' = trained by the default `dnncost study`; 'heavy' = left out of it.",
        *(f"* {r['name']}: {r['notes']}" for r in records
          if r["params_exception"] or r["macs_exception"]),
        *(f"{r['name']}: unsupported operators (cost unknown, not zero): "
          + ", ".join(f"{op} x{n}" for op, n in _unsupported(r).items())
          for r in records if r["unsupported_ops"]),
        CONVENTION,
    ])
    print(render(rows, args.format, columns=COLUMNS, title="dnncost zoo: counted vs paper",
                 footer=footer, json_payload=records))
    return EXIT_OK


def zoo_records(*, family: str | None = None, size: str | None = None) -> list[dict[str, object]]:
    """One record per zoo network: its metadata, counted params and MACs, and the differences
    from the paper's figures in percent (None where the paper prints none)."""
    import dataclasses
    import sys

    import torch
    from tqdm import tqdm

    from dnncost.counting.counter import count
    from dnncost.models import create_model, default_study_models, get_model_info, list_models
    from dnncost.models.registry import DEFAULT_TOLERANCE

    default_set = set(default_study_models())
    records = []
    names = list_models(family=family, size=size)
    for name in tqdm(names, desc="counting", unit="net", disable=not sys.stderr.isatty(), leave=False):
        info = get_model_info(name)
        with torch.device("meta"):  # no weights are allocated or initialised
            model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        report = count(model, input_shape=info.input_shape, batch_size=1, name=name)
        macs = report.total().macs
        records.append({
            **dataclasses.asdict(info), "input_shape": list(info.input_shape),
            "params": params, "macs": macs,
            "params_diff_pct": _diff(params, info.paper_params),
            "macs_diff_pct": _diff(macs, info.paper_macs),
            "params_exception": info.params_tolerance > DEFAULT_TOLERANCE,
            "macs_exception": info.macs_tolerance > DEFAULT_TOLERANCE,
            "study": "default" if name in default_set else "heavy" if info.heavy else "",
            "unsupported_ops": report.unsupported(),
        })
    return records


def _unsupported(record: dict[str, object]) -> dict[str, int]:
    ops = record["unsupported_ops"]
    assert isinstance(ops, dict)
    return ops


def _diff(value: int, paper: int | None) -> float | None:
    return None if paper is None else round((value / paper - 1) * 100, 2)


def _pct(diff: object, exception: bool) -> str:
    return "" if diff is None else f"{diff:+.1f}" + ("*" if exception else "")


def _row(record: dict, human: Callable[[float], str]) -> dict[str, object]:
    """A table row: human-readable numbers; '*' marks a documented exception (see the footer)."""
    return {
        "name": record["name"], "family": record["family"], "size": record["size"],
        "input": "x".join(map(str, record["input_shape"])),
        "params": human(record["params"]),
        "paper params": human(record["paper_params"]) if record["paper_params"] else "",
        "params diff %": _pct(record["params_diff_pct"], record["params_exception"]),
        "MACs": human(record["macs"]),
        "paper MACs": human(record["paper_macs"]) if record["paper_macs"] else "",
        "MACs diff %": _pct(record["macs_diff_pct"], record["macs_exception"]),
        "study": record["study"],
    }


def _flat(record: dict) -> dict[str, object]:
    """A CSV row: exact numbers."""
    return {
        "name": record["name"], "family": record["family"], "size": record["size"],
        "input": "x".join(map(str, record["input_shape"])),
        "params": record["params"], "paper params": record["paper_params"],
        "params diff %": record["params_diff_pct"],
        "MACs": record["macs"], "paper MACs": record["paper_macs"],
        "MACs diff %": record["macs_diff_pct"], "study": record["study"],
    }
