"""Communication share of a data-parallel training step vs parameter count, beside FLOPs.

For each CIFAR-sized zoo network, run N data-parallel workers (torch.distributed + DDP, gloo on CPU)
on this machine and measure the step time, the time with a gradient all-reduce in flight and its
bytes, and the weak-scaling efficiency against one process; print a table and save a figure
(communication share against parameters and against FLOPs, log x).

    python benchmarks/ddp_comm_share.py ddp_comm_share.png [--nproc 2] [--batch-size 16]

The all-reduce moves one gradient per trainable parameter whatever the batch, while compute grows
with the batch, so the share printed holds for the batch size printed with it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dnncost.core.kinds import Backend
from dnncost.distributed.data_parallel import DistributedTiming, measure_distributed
from dnncost.distributed.launch import GroupOptions
from dnncost.reporting.formatting import render_table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("figure", type=Path, help="where to save the figure (.png, .pdf, .svg)")
    parser.add_argument("--nproc", type=int, default=2, help="data-parallel workers (default 2)")
    parser.add_argument("--backend", choices=[b.value for b in Backend], default="gloo")
    parser.add_argument("--batch-size", type=int, default=16, help="per worker (default 16)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=None,
                        help="zoo names (default: dnncost.models.list_models(size='cifar'))")
    parser.add_argument("--json", type=Path, default=None, help="also save every record as JSON")
    return parser.parse_args(argv)


def table_rows(timings: Sequence[DistributedTiming]) -> list[dict[str, object]]:
    """One row per network, fewest parameters first."""
    rows = []
    for t in sorted(timings, key=lambda t: t.params):
        rows.append({
            "model": t.model, "params_M": t.params / 1e6, "train_GFLOPs": (t.flops or 0) / 1e9,
            "grad_MB": t.gradient_bytes / 1e6, "allreduce_MB": t.allreduce_bytes_per_step / 1e6,
            "buckets": t.buckets_per_step, "step_ms": t.step.median * 1e3,
            "step_iqr_ms": t.step.iqr * 1e3, "allreduce_ms": t.allreduce.median * 1e3,
            "comm_share": t.comm_share,
            "single_ms": t.single_process.median * 1e3 if t.single_process else None,
            "efficiency": t.efficiency,
        })
    return rows


def figure(timings: Sequence[DistributedTiming]):
    """Two panels: communication share against parameters and against training-step FLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    from scipy.stats import spearmanr

    first = timings[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (label, values) in zip(axes, (
            ("parameters", [t.params for t in timings]),
            ("training-step FLOPs per worker", [t.flops or 0 for t in timings])), strict=True):
        shares = [t.comm_share for t in timings]
        ax.scatter(values, shares, color="tab:blue")
        for t, x, y in zip(timings, values, shares, strict=True):
            ax.annotate(t.model, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_title(f"Spearman rho = {spearmanr(values, shares).statistic:.2f}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("all-reduce time / step time")
    fig.suptitle(f"DDP communication share: {first.world_size} {first.backend} workers, batch "
                 f"{first.batch_size} and {first.threads} thread(s) per worker, "
                 f"{first.environment.cpu_model}", fontsize=9)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from dnncost.models import list_models

    names = args.models or list_models(size="cifar")
    load_before = os.getloadavg()[0]
    timings = []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name}", file=sys.stderr, flush=True)
        timings.append(measure_distributed(
            name, nproc=args.nproc, group=GroupOptions(args.backend), batch_size=args.batch_size,
            device="cuda" if args.backend == Backend.NCCL.value else "cpu",
            warmup=args.warmup, steps=args.repeats))
    first = timings[0]
    print(render_table(
        table_rows(timings),
        title=f"DDP communication share: {first.world_size} {first.backend} workers, batch "
              f"{first.batch_size} and {first.threads} thread(s) per worker",
        footer="step = slowest worker's median; allreduce = time with a gradient all-reduce in "
               "flight (DDP comm hook, overlap with backward included); comm_share = allreduce / "
               "step; efficiency = t1 / tN, weak scaling (one plain process, same batch and "
               f"threads)\nload average (1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} "
               f"after, on {os.cpu_count()} cores: other work on the machine slows and spreads "
               "the steps"))
    fig = figure(timings)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=150)
    print(f"figure saved to {args.figure}")
    if args.json:
        args.json.write_text(json.dumps([t.to_dict() for t in timings], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
