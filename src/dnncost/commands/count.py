"""``dnncost count MODEL``: params, MACs, FLOPs and bytes of a forward pass or a training step."""
from __future__ import annotations

import argparse
import sys

from dnncost.commands._common import (
    add_format_argument,
    add_model_input_arguments,
    add_optimizer_argument,
    add_precision_arguments,
    input_spec,
    warnings_once,
)
from dnncost.commands._exit_codes import EXIT_OK
from dnncost.core.kinds import MODES, Mode


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "count", help="count params, MACs, FLOPs and bytes (no real arithmetic)",
        description="Count a model's computation per module, operator or module type, forward pass "
                    "or training step. Totals marked '>=' are lower bounds: an operator without a "
                    "formula ran.")
    add_model_input_arguments(parser)
    add_precision_arguments(parser)
    parser.add_argument("--mode", choices=MODES[::-1], default=Mode.EVAL.value,
                        help="eval: one forward pass; train: forward + loss + backward + optimizer")
    parser.add_argument("--depth", type=int, default=1,
                        help="module tree depth of the table (default 1; -1: every module)")
    parser.add_argument("--by", choices=("module", "operator", "module_type"), default="module",
                        help="rows per module (the tree, parents with their children's totals), per "
                             "aten operator or per module type (default: module)")
    parser.add_argument("--device", default="meta",
                        help="meta (default: no arithmetic), or cpu/cuda to count on real tensors")
    add_optimizer_argument(parser)
    parser.add_argument("--convention", action="store_true",
                        help="print the full counting convention under the table (default: one line)")
    parser.add_argument("--plain", action="store_true",
                        help="plain text table even where the terminal could show a rich one")
    add_format_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dnncost.core.errors import InputSpecError
    from dnncost.counting.counter import META_HINT, count
    from dnncost.models.loading import load_model
    from dnncost.reporting.formatting import render

    with warnings_once("count"):  # torch's notices from inside the model, one line each
        loaded = load_model(args.model)
        try:
            report = count(loaded, input_spec(args, loaded.input_shape), batch_size=args.batch_size,
                           mode=args.mode, device=args.device, optimizer=args.optimizer,
                           name=loaded.name, dtype=args.dtype, autocast=args.autocast,
                           channels_last=args.channels_last)
        except InputSpecError as exc:
            if META_HINT in str(exc) or "autocast" in str(exc):
                raise InputSpecError(f"{exc} (--device cpu)") from exc
            raise
    if args.format != "table":
        rows = report.to_rows(args.by, depth=args.depth)
        print(render(rows, args.format, json_payload=report.to_dict(by=args.by, depth=args.depth)))
        return EXIT_OK
    if not args.plain and sys.stdout.isatty() and _print_rich(report, args):
        return EXIT_OK
    text = report.table(args.by, depth=args.depth, full_convention=args.convention)
    print(text if args.convention else text + " (--convention: the full text)")
    return EXIT_OK


def _print_rich(report: object, args: argparse.Namespace) -> bool:
    """The table through ``rich`` (an optional dependency) when installed and the terminal is wide
    enough for every column unwrapped; False otherwise (the caller prints plain text)."""
    try:
        from rich import box
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:
        return False
    from dnncost.counting.cost import CostReport
    from dnncost.counting.table import table_cells

    assert isinstance(report, CostReport)
    headers, cells = table_cells(report.to_rows(args.by, depth=args.depth), args.by)
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    console = Console()
    if sum(widths) + 3 * len(widths) + 1 > console.width:
        return False
    table = Table(title=Text(report.title(args.by)), title_justify="left", box=box.SIMPLE_HEAD)
    for i, header in enumerate(headers):
        numeric = header in ("params", "calls", "MACs", "FLOPs", "bytes", "%")
        table.add_column(header, justify="right" if numeric else "left", no_wrap=True,
                         style="bold" if i == 0 else ("dim" if header == "%" else None))
    for row in cells:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)
    footer = report.footer(full_convention=args.convention)
    if not args.convention:
        footer[-1] += " (--convention: the full text)"
    for line in footer:
        console.print(Text(line, style="bold red" if line.startswith("INCOMPLETE") else ""))
    return True
