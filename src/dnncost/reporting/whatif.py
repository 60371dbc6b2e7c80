"""The what-if figure: FLOPs saved against time saved, every network and technique on one plot --
a colour per network, a marker per technique -- with the y = x line (where time would fall if it were
proportional to FLOPs) and, after ``--train``, each point's validation accuracy in its label and the
original's in the legend. A pure function of the results -> Figure."""
from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dnncost.reporting.plots import _figure, _label_points
from dnncost.whatif.registry import all_transformations
from dnncost.whatif.runner import WhatIfResult

MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "h", "p", "<", ">", "d", "8", "H")
# source: our choice, matplotlib's filled markers, one per technique in the registry's order
NETWORK_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
                   "#17becf", "#bcbd22", "#7f7f7f")  # source: matplotlib's tab10, one per network
FLOOR = -1.5  # source: our choice; time saved below -150% (2.5x slower) is drawn on the bottom edge


def technique(label: str) -> str:
    """The technique of a result label: 'prune_channels:0.5' -> 'prune_channels'."""
    return label.partition(":")[0]


def _marker(name: str) -> str:
    names = list(all_transformations())
    index = names.index(name) if name in names else len(names)
    return MARKERS[index % len(MARKERS)]


def _accuracy(r: WhatIfResult) -> str:
    if r.accuracy is None:
        return ""
    change = f" ({r.accuracy - r.original_accuracy:+.3f})" if r.original_accuracy is not None else ""
    return f" acc {r.accuracy:.3f}{change}"


def flops_vs_time(results: Sequence[WhatIfResult], *, title: str = "") -> Figure:
    """1 - FLOPs ratio (x) against 1 - time ratio (y), the 95% interval as an error bar, for every
    network (colour) and technique (marker) in ``results``; for unstructured pruning a hollow marker
    at the nominal FLOPs saved, joined to the executed one."""
    fig = _figure(10.0, 6.2)
    ax = fig.add_subplot()
    ax.set_xlabel("FLOPs saved per sample (1 - transformed/original, counted)")
    ax.set_ylabel("time saved per sample (1 - measured time ratio)")
    networks = list(dict.fromkeys(r.model for r in results))
    ax.set_title(f"{title or ', '.join(networks)}: does cutting FLOPs cut time?", fontsize=10)
    points = [r for r in results if r.applicable and r.flops_ratio is not None and r.time_ratio]
    if not points:
        ax.text(0.5, 0.5, "nothing measured", ha="center", va="center", transform=ax.transAxes)
        return fig
    colours = {n: NETWORK_COLOURS[i % len(NETWORK_COLOURS)] for i, n in enumerate(networks)}
    both_modes = len({r.mode for r in points}) > 1
    lo = max(FLOOR, min(-0.1, *(1 - r.flops_ratio for r in points),  # type: ignore[operator]
                        *(1 - r.time_ratio.median for r in points)))  # type: ignore[union-attr]
    labels: list[tuple[str, float, float, str]] = []
    for r in points:
        x = 1 - r.flops_ratio  # type: ignore[operator]
        ratio = r.time_ratio.median  # type: ignore[union-attr]
        y = 1 - ratio
        low, high = r.time_ratio_ci95
        colour, marker = colours[r.model], _marker(technique(r.transformation))
        name = r.transformation + (f" ({r.mode.value})" if both_modes else "") + _accuracy(r)
        if y < lo:  # off the bottom: drawn on the edge, its ratio in the label
            y, errors = lo, None
            name += f" time x{ratio:.2g}"
        else:
            errors = [[y - (1 - high)], [(1 - low) - y]] if not math.isnan(low) else None
        ax.errorbar([x], [y], yerr=errors, fmt=marker, capsize=3, markersize=7, color=colour,
                    markeredgecolor="black", markeredgewidth=0.5)
        if r.nominal_flops_ratio is not None:
            nominal_x = 1 - r.nominal_flops_ratio
            ax.plot([x, nominal_x], [y, y], ":", color=colour, linewidth=1)
            ax.plot([nominal_x], [y], marker, mfc="none", color=colour, markersize=7)
        labels.append((name, x, y, colour))
    ax.plot([lo, 1], [lo, 1], "--", color="grey", linewidth=1)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_xlim(lo - 0.05, 1.02)
    ax.set_ylim(lo - 0.05, 1.02)
    _label_points(ax, labels, fontsize=7)
    _legends(fig, points, colours)
    return fig


def _legends(fig: Figure, points: Sequence[WhatIfResult], colours: dict[str, str]) -> None:
    """Two legends beside the axes, where they cover no point: the networks' colours (with the
    trained original's accuracy), the techniques' markers (with the y = x line and the hollow
    nominal marker)."""
    original = {r.model: r.original_accuracy for r in points if r.original_accuracy is not None}
    networks = [Line2D([], [], color=c, marker="o", linestyle="",
                       label=n + (f" (original acc {original[n]:.3f})" if n in original else ""))
                for n, c in colours.items() if any(r.model == n for r in points)]
    fig.legend(handles=networks, loc="outside right upper", fontsize=7, title="network",
               title_fontsize=7)
    techniques = [Line2D([], [], color="grey", marker=_marker(t), linestyle="", label=t)
                  for t in dict.fromkeys(technique(r.transformation) for r in points)]
    techniques.append(Line2D([], [], color="grey", linestyle="--", label="y = x (time ~ FLOPs)"))
    if any(r.nominal_flops_ratio is not None for r in points):
        techniques.append(Line2D([], [], color="grey", marker="o", mfc="none", linestyle="",
                                 label="nominal FLOPs (sparse kernel)"))
    fig.legend(handles=techniques, loc="outside right lower", fontsize=7, title="technique",
               title_fontsize=7)


__all__ = ["flops_vs_time", "technique"]
