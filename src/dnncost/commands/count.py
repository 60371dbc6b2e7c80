"""``dnncost count MODEL``: params, MACs, FLOPs and bytes of a forward pass or a training step."""
from __future__ import annotations

import argparse

from dnncost.commands._common import add_format_argument, add_model_input_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "count", help="count params, MACs, FLOPs and bytes (no real arithmetic)",
        description="Count a model's computation per module or operator, forward or training step.")
    add_model_input_arguments(parser)
    parser.add_argument("--mode", choices=("eval", "train"), default="eval",
                        help="eval: one forward pass; train: forward + loss + backward + optimizer")
    parser.add_argument("--depth", type=int, default=1, help="module depth of the table (default 1)")
    parser.add_argument("--by", choices=("module", "operator"), default="module")
    parser.add_argument("--device", default="meta",
                        help="meta (default: no arithmetic), or cpu/cuda to count on real tensors")
    parser.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="sgd")
    add_format_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dnncost.counting.conventions import CONVENTION
    from dnncost.counting.counter import count
    from dnncost.models.loading import load_model, parse_input_shape
    from dnncost.reporting.formatting import human, render

    loaded = load_model(args.model)
    shape = parse_input_shape(args.input_shape) if args.input_shape else loaded.input_shape
    report = count(loaded, input_shape=shape, batch_size=args.batch_size,
                   mode=args.mode, device=args.device, optimizer=args.optimizer, name=loaded.name)
    rows = report.to_rows(args.by, depth=args.depth)
    if args.format == "table":
        for row in rows:
            for key in ("macs", "flops", "bytes_read", "bytes_written", "bytes"):
                row[key] = human(row[key])
    total = report.total()
    unsupported = report.unsupported()
    footer_lines = [
        f"model {report.model}  input {report.batch_size}x{'x'.join(map(str, report.input_shape))}"
        f"  mode {report.mode}  counted on {report.counted_on}",
        f"params {report.params:,} ({report.trainable_params:,} trainable)  "
        f"MACs {total.macs:,}  FLOPs {total.flops:,}  bytes {total.bytes:,}",
        f"activation memory {human(report.activation_bytes, unit='B')}  "
        f"peak memory estimate {human(report.peak_bytes, unit='B')}",
    ]
    if report.mode == "train":
        footer_lines.append(f"data-parallel all-reduce volume per step (gradients): "
                            f"{human(report.gradient_bytes, unit='B')}")
    if unsupported:
        footer_lines.append("unsupported operators (cost unknown, not zero): "
                            + ", ".join(f"{op} x{n}" for op, n in unsupported.items()))
    footer_lines.append(CONVENTION)
    print(render(rows, args.format, title=f"{report.model}: cost by {args.by}",
                 footer="\n".join(footer_lines), json_payload=report.to_dict(by=args.by, depth=args.depth)))
    return 0
