"""The whatif applicability matrix: every transformation of a default ``dnncost whatif`` run x every
torchvision classification network and every zoo network -- applicable or the one-line reason, and
the counted FLOPs and params ratios of the validation step per sample (no timing).

Run:  python benchmarks/whatif_matrix.py [--networks resnet18,mobilenet_v2] [--cells FILE.jsonl]

Prints the machine and library versions, then one line per network as it finishes (applicable count
and the FLOPs ratio of every transformation), then the counts: per transformation how many networks
it applies to, and every reason it does not, grouped (numbers and names blanked), with the networks
it concerns. Structural transformations are applied to each network built on the meta device;
unstructured pruning, int8 and reduced precision to the network with its initial weights on the CPU
(dnncost.whatif.applicability), so a full run takes from about half an hour on 2 idle cores to a few
hours on a loaded machine, most of it in int8's calibration and the checks of the largest networks.

Each network runs in its own process, which returns its memory to the machine when it ends and
contains a crash (the cell then says how the process ended); every cell is appended to FILE.jsonl
as it is found, and a run given the same file resumes after the networks it holds.
``compile`` is left out: it runs on request only (its first step compiles the network, longer than
the rest of a row), and its verdict comes from compiling, not from applying it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torchvision

from dnncost.core.environment import cpu_model, git_revision
from dnncost.models import list_models
from dnncost.models.loading import load_model
from dnncost.whatif.applicability import BATCH_SIZE, Cell, network_cells, reason_kind
from dnncost.whatif.registry import parse_specs

NETWORK_LIMIT_S = 3600  # source: our choice; the slowest row took 203 s (densenet121) on a 2-core
# machine loaded 4x -- a row past an hour is stuck, and the next network goes on
DEFAULT_BOUND_GIB = 1.0  # source: our choice; int8 holds ~4 copies of the network, and the networks
# over 1 GiB of weights (vit_h_14, vit_l_16, vit_l_32, regnet_y_128gf) would need 5-10 GiB of a
# shared 2-core machine's memory


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


def row_line(row: list[Cell]) -> str:
    yes = sum(c.applicable for c in row)
    took = sum(c.seconds for c in row)
    return (f"{row[0].network:34s} {yes:2d}/{len(row)}  "
            + " ".join(f"{short(c.transformation)}={cell_text(c)}" for c in row) + f"  ({took:.0f} s)")


def summary(cells: list[Cell], labels: list[str]) -> list[str]:
    """The counts: per transformation, applicable / not, and each grouped reason with its networks."""
    lines = ["", "== counts: networks each transformation applies to, and why not where it does not"]
    yes = sum(c.applicable for c in cells)
    skipped = sum(c.skipped for c in cells)
    failed = sum(c.failed for c in cells)
    lines.append(f"{len(cells)} cells ({len({c.network for c in cells})} networks x {len(labels)} "
                 f"transformations): {yes} applicable, {len(cells) - yes - skipped} not "
                 f"({failed} of them failures rather than verdicts), {skipped} not run (weights "
                 "over the bound)")
    for label in labels:
        mine = [c for c in cells if c.transformation == label]
        run = [c for c in mine if not c.skipped]
        ok = [c for c in run if c.applicable]
        flops = sorted(c.flops_ratio for c in ok if c.flops_ratio is not None)
        params = sorted(c.params_ratio for c in ok if c.params_ratio is not None)
        spread = (f"; FLOPs ratio {flops[0]:.3g}-{flops[-1]:.3g} (median {flops[len(flops) // 2]:.3g}), "
                  f"params {params[0]:.3g}-{params[-1]:.3g} (median {params[len(params) // 2]:.3g})"
                  if flops and params else "")
        lines.append(f"{label}: applicable to {len(ok)} of {len(run)}{spread}"
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


def read_cells(path: Path) -> list[Cell]:
    if not path.exists():
        return []
    return [Cell.from_dict(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def one(name: str, cells: Path, bound: int) -> None:
    """The child: every cell of network ``name``, appended to ``cells`` as each is found."""
    loaded = load_model(name)
    with cells.open("a", encoding="utf-8") as f:
        for cell in network_cells(loaded, parse_specs(None), max_weight_bytes=bound):
            f.write(json.dumps(cell.to_dict()) + "\n")
            f.flush()


def in_child(name: str, cells: Path, bound_gib: float, labels: list[str]) -> list[Cell]:
    """Run network ``name`` in its own process; its cells, with any it could not give marked failed
    with how the process ended."""
    command = [sys.executable, __file__, "--one", name, "--cells", str(cells),
               "--max-weights-gib", str(bound_gib)]
    try:
        done = subprocess.run(command, timeout=NETWORK_LIMIT_S, capture_output=True, text=True,
                              check=False)
        ended = "" if done.returncode == 0 else (
            f"the process running it ended with {done.returncode}"
            + (" (killed: out of memory?)" if done.returncode < 0 else "") + ": "
            + (done.stderr.strip().splitlines() or [""])[-1][:160])
    except subprocess.TimeoutExpired:
        ended = f"the process running it did not finish within {NETWORK_LIMIT_S} s"
    loaded_name = load_model(name).name
    have = {c.transformation: c for c in read_cells(cells) if c.network == loaded_name}
    missing = [Cell(loaded_name, label, False, ended or "no cell written", failed=True)
               for label in labels if label not in have]
    if missing:
        with cells.open("a", encoding="utf-8") as f:
            for cell in missing:
                f.write(json.dumps(cell.to_dict()) + "\n")
    return [have.get(label) or next(c for c in missing if c.transformation == label) for label in labels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=None, metavar="A,B",
                        help="these networks only (default: every zoo and torchvision classifier)")
    parser.add_argument("--cells", default="whatif_matrix.jsonl", metavar="FILE.jsonl",
                        help="every cell, one JSON object a line; a run resumes after the networks "
                             "it holds (default: whatif_matrix.jsonl here)")
    parser.add_argument("--max-weights-gib", type=float, default=DEFAULT_BOUND_GIB, metavar="GiB",
                        help="skip the transformations that copy the real network (unstructured "
                             "pruning, int8, reduced precision) for networks with more weights "
                             f"than this (default {DEFAULT_BOUND_GIB})")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child's network
    args = parser.parse_args()
    cells_path = Path(args.cells)
    bound = round(args.max_weights_gib * 2**30)
    if args.one:
        one(args.one, cells_path, bound)
        return

    labels = [s.label for s in parse_specs(None)]  # a default run's: compile runs on request only
    names = networks(args.networks)
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} threads")
    print(f"software: {versions()}")
    print(f"{len(names)} networks x {len(labels)} transformations ({', '.join(labels)}); validation "
          f"step at batch {BATCH_SIZE}, counted on the meta device; FLOPs ratio per sample "
          "(transformed / original); '-' not applicable, '!' failed, '~' not run")
    start = time.perf_counter()
    stored: dict[str, list[Cell]] = defaultdict(list)
    for cell in read_cells(cells_path):
        stored[cell.network].append(cell)
    everything: list[Cell] = []
    for name in names:
        known = stored.get(load_model(name).name, [])
        if {c.transformation for c in known} >= set(labels):
            row = [next(c for c in known if c.transformation == label) for label in labels]
            print(row_line(row) + " [stored]", flush=True)
        else:
            row = in_child(name, cells_path, args.max_weights_gib, labels)
            print(row_line(row), flush=True)
        everything += row
    for line in summary(everything, labels):
        print(line)
    print(f"\nthis run: {time.perf_counter() - start:.0f} s; every cell in {cells_path}")


if __name__ == "__main__":
    main()
