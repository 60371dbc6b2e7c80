"""The whatif applicability matrix: every transformation of a default ``dnncost whatif`` run x every
torchvision classification network and every zoo network -- applicable or the one-line reason, and
the counted FLOPs and params ratios of the validation step per sample (no timing).

Run:  python benchmarks/whatif_matrix.py [--networks resnet18,mobilenet_v2] [--json cells.json]

Prints the machine and library versions, then one line per network as it finishes (applicable count
and the FLOPs ratio of every applicable transformation), then the counts: per transformation how many
networks it applies to, and every reason it does not, grouped (numbers and names blanked), with the
networks it concerns. Structural transformations are applied to each network built on the meta
device; unstructured pruning, int8 and reduced precision to the network with its initial weights on
the CPU (dnncost.whatif.applicability), so the run takes a few minutes to a quarter of an hour on 2
cores, most of it in int8's calibration and the autocast checks of the largest networks.
``compile`` is left out: it runs on request only (its first step compiles the network, longer than
the rest of a matrix row), and its verdict comes from compiling, not from applying it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import defaultdict

import torch
import torchvision

from dnncost.core.environment import cpu_model, git_revision
from dnncost.models import list_models
from dnncost.models.loading import load_model
from dnncost.whatif.applicability import BATCH_SIZE, Cell, matrix, reason_kind
from dnncost.whatif.registry import parse_specs


def networks(names: str | None) -> list[str]:
    """The names given, or every zoo network and every torchvision classification network (once:
    a torchvision name the zoo also holds is the zoo's)."""
    if names:
        return [n.strip() for n in names.split(",") if n.strip()]
    zoo = list_models()
    extra = [f"torchvision:{n}" for n in torchvision.models.list_models(module=torchvision.models)
             if n not in zoo]
    return [*zoo, *extra]


def versions() -> str:
    try:
        import torch_pruning
        pruning = getattr(torch_pruning, "__version__", "installed")
    except ImportError:
        pruning = "not installed"
    return (f"torch {torch.__version__}, torchvision {torchvision.__version__}, torch-pruning "
            f"{pruning}, python {platform.python_version()}, dnncost {git_revision()}")


def short(label: str) -> str:
    """'prune_channels:0.5' -> 'prune_c:0.5': a column header short enough for one line."""
    name, _, value = label.partition(":")
    return name[:7] + (f":{value}" if value else "")


def cell_text(cell: Cell) -> str:
    """The FLOPs ratio of an applicable cell; '-' not applicable, '!' failed, '~' not run."""
    if cell.applicable:
        return "-" if cell.flops_ratio is None else f"{cell.flops_ratio:.3g}"
    return "!" if cell.failed else "~" if cell.skipped else "-"


def summary(cells: list[Cell], labels: list[str]) -> list[str]:
    """The counts: per transformation, applicable / not, and each grouped reason with its networks."""
    lines = ["", "== counts: networks each transformation applies to, and why not where it does not"]
    total_yes = sum(c.applicable for c in cells)
    skipped = sum(c.skipped for c in cells)
    lines.append(f"{len(cells)} cells ({len({c.network for c in cells})} networks x {len(labels)} "
                 f"transformations): {total_yes} applicable, {len(cells) - total_yes - skipped} not "
                 f"({sum(c.failed for c in cells)} of them failures rather than verdicts), "
                 f"{skipped} not run (weights over the bound)")
    for label in labels:
        mine = [c for c in cells if c.transformation == label]
        yes = [c for c in mine if c.applicable]
        flops = sorted(c.flops_ratio for c in yes if c.flops_ratio is not None)
        spread = f"; FLOPs ratio {flops[0]:.3g}-{flops[-1]:.3g}, median " \
                 f"{flops[len(flops) // 2]:.3g}" if flops else ""
        run = [c for c in mine if not c.skipped]
        lines.append(f"{label}: applicable to {len(yes)} of {len(run)}{spread}"
                     + (f" ({len(mine) - len(run)} not run)" if len(run) < len(mine) else ""))
        groups: dict[str, list[Cell]] = defaultdict(list)
        for c in run:
            if not c.applicable:
                groups[reason_kind(c.reason)].append(c)
        for group in sorted(groups.values(), key=len, reverse=True):
            names = ", ".join(c.network for c in group[:8]) + (" ..." if len(group) > 8 else "")
            kind = "FAILED" if group[0].failed else "not applicable"
            lines.append(f"    {len(group):3d} {kind}: {group[0].reason}  [{names}]")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=None, metavar="A,B",
                        help="these networks only (default: every zoo and torchvision classifier)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write every cell here")
    parser.add_argument("--max-weights-gib", type=float, default=1.0, metavar="GiB",
                        help="skip the transformations that copy the real network (unstructured "
                             "pruning, int8, reduced precision) for networks with more weights "
                             "than this (default 1.0: vit_h_14, vit_l_*, regnet_y_128gf)")
    args = parser.parse_args()

    specs = parse_specs(None)  # a default run's transformations: compile runs on request only
    labels = [s.label for s in specs]
    names = networks(args.networks)
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} threads")
    print(f"software: {versions()}")
    print(f"{len(names)} networks x {len(labels)} transformations ({', '.join(labels)}); validation "
          f"step at batch {BATCH_SIZE}, counted on the meta device; FLOPs ratio per sample "
          "(transformed / original); '-' not applicable, '!' failed, '~' not run")
    start = time.perf_counter()
    cells: list[Cell] = []
    row: list[Cell] = []
    bound = round(args.max_weights_gib * 2**30)
    for cell in matrix((load_model(n) for n in names), specs, max_weight_bytes=bound):
        cells.append(cell)
        row.append(cell)
        if len(row) == len(specs):
            yes = sum(c.applicable for c in row)
            took = sum(c.seconds for c in row)
            print(f"{row[0].network:34s} {yes:2d}/{len(row)}  "
                  + " ".join(f"{short(c.transformation)}={cell_text(c)}" for c in row)
                  + f"  ({took:.0f} s)", flush=True)
            row = []
    for line in summary(cells, labels):
        print(line)
    print(f"\nwhole run: {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([c.to_dict() for c in cells], f, indent=1)


if __name__ == "__main__":
    main()
