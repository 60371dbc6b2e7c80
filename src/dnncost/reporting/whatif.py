"""The what-if figure: FLOPs saved against time saved, per transformation, with the y = x line
(where time would fall if it were proportional to FLOPs). A pure function of the results -> Figure."""
from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from dnncost.core.kinds import Mode
from dnncost.reporting.plots import _figure, _label_points
from dnncost.whatif.runner import WhatIfResult

MODE_MARKERS = {Mode.TRAIN.value: "o", Mode.EVAL.value: "s"}  # source: our choice, one marker per step mode
FLOOR = -1.5  # source: our choice; time saved below -150% (2.5x slower) is drawn on the bottom edge


def flops_vs_time(results: Sequence[WhatIfResult], *, title: str = "") -> Figure:
    """1 - FLOPs ratio (x) against 1 - time ratio (y), the 95% interval as an error bar; for
    unstructured pruning a hollow marker at the nominal FLOPs saved, joined to the executed one."""
    fig = _figure(7.5, 5.6)
    ax = fig.add_subplot()
    ax.set_xlabel("FLOPs saved per sample (1 - transformed/original, counted)")
    ax.set_ylabel("time saved per sample (1 - measured time ratio)")
    if title:
        ax.set_title(f"{title}: does cutting FLOPs cut time?")
    points = [r for r in results if r.applicable and r.flops_ratio is not None and r.time_ratio]
    if not points:
        ax.text(0.5, 0.5, "nothing measured", ha="center", va="center", transform=ax.transAxes)
        return fig
    lo = max(FLOOR, min(-0.1, *(1 - r.flops_ratio for r in points),  # type: ignore[operator]
                        *(1 - r.time_ratio.median for r in points)))  # type: ignore[union-attr]
    labels: list[tuple[str, float, float, str]] = []
    for r in points:
        x = 1 - r.flops_ratio  # type: ignore[operator]
        ratio = r.time_ratio.median  # type: ignore[union-attr]
        y = 1 - ratio
        low, high = r.time_ratio_ci95
        name = f"{r.transformation} ({r.mode.value})"
        marker = MODE_MARKERS.get(r.mode.value, "o")
        if y < lo:  # off the bottom: drawn on the edge, pointing down, its ratio in the label
            y, marker, errors = lo, "v", None
            name += f" time x{ratio:.2g}"
        else:
            errors = [[y - (1 - high)], [(1 - low) - y]] if not math.isnan(low) else None
        container = ax.errorbar([x], [y], yerr=errors, fmt=marker, capsize=3, markersize=6)
        colour = to_hex(container.lines[0].get_color())
        if r.nominal_flops_ratio is not None:
            nominal_x = 1 - r.nominal_flops_ratio
            ax.plot([x, nominal_x], [y, y], ":", color=colour, linewidth=1)
            ax.plot([nominal_x], [y], marker, mfc="none", color=colour, markersize=7)
        labels.append((name, x, y, colour))
    ax.plot([lo, 1], [lo, 1], "--", color="grey", linewidth=1, label="y = x (time proportional to FLOPs)")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_xlim(lo - 0.05, 1.02)
    ax.set_ylim(lo - 0.05, 1.02)
    _label_points(ax, labels)
    ax.legend(loc="upper left", fontsize=8, title="hollow: nominal FLOPs (sparse kernel)",
              title_fontsize=7)
    return fig


__all__ = ["flops_vs_time"]
