"""The study's figures: pure functions of a :class:`~dnncost.study.analysis.StudyAnalysis` (or of
an unseen-network evaluation, :class:`~dnncost.prediction.unseen.UnseenResult`) -> Figure.

Each function builds a new :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot, no global
state, no display needed); :func:`png_bytes` renders one. Nothing here computes a statistic: every
number drawn comes from the analysis.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dnncost.core.kinds import Mode
from dnncost.measuring.measurement import DRIFT_THRESHOLD
from dnncost.prediction.evaluation import TOLERANCE, Evaluation, Method
from dnncost.study.analysis import StudyAnalysis
from dnncost.study.drift import StudyDrift
from dnncost.study.explanation import Explanation
from dnncost.study.fits import Fit
from dnncost.study.points import CostMetric, NetworkPoint, TimeMetric
from dnncost.study.work import WorkAxis, WorkSeries

if TYPE_CHECKING:
    from dnncost.prediction.unseen import UnseenResult

DPI = 110  # source: our choice, sharp in a browser at a modest file size
FAMILY_COLOURS = {  # source: matplotlib's tab10 palette, one colour per family of the study
    "lenet": "#1f77b4", "alexnet": "#ff7f0e", "vgg": "#2ca02c", "googlenet": "#d62728",
    "resnet": "#9467bd", "mobilenet": "#8c564b", "shufflenet": "#e377c2",
}
OTHER_COLOUR = "#7f7f7f"  # source: tab10 grey, networks outside the seven families


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure rendered as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _colour(family: str) -> str:
    return FAMILY_COLOURS.get(family, OTHER_COLOUR)



def _point(ax: Any, p: NetworkPoint, metric: TimeMetric, x: float) -> None:
    """One network's time at ``x`` in its family's colour, with its 95% interval over repeats as
    an error bar (none with one repeat)."""
    y = p.time(metric)
    low, high = p.interval(metric)
    err = [[y - low], [high - y]] if math.isfinite(low) and math.isfinite(high) else None
    ax.errorbar([x], [y], yerr=err, fmt="o", color=_colour(p.family), ecolor=_colour(p.family),
                capsize=3, markersize=6)


def _fit_lines(ax: Any, fit: Fit, *, power: str) -> np.ndarray:
    """The power-law fit (labelled 'power-law fit: ``power``') and the least-squares line where it
    is positive, over the fit's x range widened 1.5x each way; returns those x."""
    xs = np.geomspace(min(fit.x) / 1.5, max(fit.x) * 1.5, 100)
    ax.plot(xs, np.exp(fit.loglog_intercept) * xs ** fit.loglog_slope, "-", color="black",
            lw=1.2, label=f"power-law fit: {power}")
    linear = fit.slope * xs + fit.intercept
    ok = linear > 0
    ax.plot(xs[ok], linear[ok], "--", color="black", lw=1,
            label=f"least-squares line (R² = {fit.r_squared:.2f})")
    return xs

def time_vs_flops(analysis: StudyAnalysis, metric: TimeMetric = TimeMetric.TRAIN_STEP) -> Figure:
    """Time against FLOPs on log axes: every network labelled, the 95% bootstrap interval of its
    figure over repeats as an error bar, the fitted power law, the least-squares line and the
    proportional line through the median network (where time would lie if it were linear in
    FLOPs)."""
    fig = _figure(7.5, 5.2)
    ax = fig.add_subplot()
    fit = analysis.fit(metric, CostMetric.FLOPS)
    points = [p for p in analysis.points
              if p.time(metric) > 0 and p.cost(metric, CostMetric.FLOPS) > 0]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"FLOPs of one {metric.label}" if "epoch" not in metric.value
                  else f"FLOPs of the {metric.label}")
    ax.set_ylabel(f"{metric.label} time (s)")
    if not points:
        ax.text(0.5, 0.5, f"no {metric.label} times measured", ha="center", va="center",
                transform=ax.transAxes)
        return fig
    for p in points:
        _point(ax, p, metric, p.cost(metric, CostMetric.FLOPS))
    families = sorted({p.family for p in points})
    for family in families:
        ax.plot([], [], "o", color=_colour(family), label=family)
    if fit is not None and math.isfinite(fit.loglog_slope):
        xs = _fit_lines(ax, fit, power=f"time ∝ FLOPs^{fit.loglog_slope:.2f}")
        median = int(np.argsort(fit.x)[len(fit.x) // 2])
        ax.plot(xs, fit.y[median] * xs / fit.x[median], ":", color="grey", lw=1,
                label=f"proportional to FLOPs (through {fit.names[median]})")
        ax.set_title(f"{metric.label.capitalize()} time vs FLOPs: log-log slope "
                     f"{fit.loglog_slope:.2f}, R² = {fit.r_squared:.2f}, n = {fit.n}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, which="both", alpha=0.25)
    ax.margins(x=0.1, y=0.15)  # room for the labels of the outermost points
    _label_points(ax, [(p.name, p.cost(metric, CostMetric.FLOPS), p.time(metric), _colour(p.family))
                       for p in points])
    return fig


def time_to_accuracy(analysis: StudyAnalysis) -> Figure:
    """Time-to-accuracy (training + validation) against the FLOPs of one training step (left) and
    the FLOPs to the target (right), log-log: every network labelled, its interval over seeds as
    an error bar (when trained from several), the fitted power law and the least-squares line; a
    network that did not reach the target within its cap as a hollow triangle at its lower
    bounds."""
    fig = _figure(11, 4.8)
    axes = fig.subplots(1, 2, sharey=True)
    tta = analysis.time_to_accuracy
    metric = TimeMetric.TIME_TO_TARGET
    missed = [r for r in (tta.rows if tta else ()) if not r.reached]
    for ax, cost, lower_x in ((axes[0], CostMetric.STEP_FLOPS, lambda r: r.flops_per_step),
                              (axes[1], CostMetric.FLOPS, lambda r: r.flops_to_target)):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(metric.work_label(cost))
        points = [p for p in analysis.points if p.time(metric) > 0 and p.cost(metric, cost) > 0]
        labelled = []
        for p in points:
            _point(ax, p, metric, p.cost(metric, cost))
            labelled.append((p.name, p.cost(metric, cost), p.time(metric), _colour(p.family)))
        for r in missed:
            ax.plot([lower_x(r)], [r.total_s], "^", mfc="none", color=_colour(r.family), markersize=7)
            labelled.append((r.name, lower_x(r), r.total_s, _colour(r.family)))
        fit = analysis.fit(metric, cost)
        title = f"vs {metric.work_label(cost)}"
        if fit is not None and math.isfinite(fit.loglog_slope):
            _fit_lines(ax, fit, power=f"∝ x^{fit.loglog_slope:.2f}")
            title += (f": slope {fit.loglog_slope:.2f}, Spearman ρ = {fit.spearman_rho:.2f}, "
                      f"n = {fit.n}")
        if missed:
            ax.plot([], [], "^", mfc="none", color=OTHER_COLOUR, label="did not reach the target "
                                                                        "(lower bounds)")
        if fit is not None or missed:
            ax.legend(fontsize=7, loc="upper left")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
        ax.margins(x=0.1, y=0.15)
        if labelled:
            _label_points(ax, labelled, fontsize=7)
        else:
            ax.text(0.5, 0.5, "no network trained to a target", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)
    axes[0].set_ylabel(f"{metric.label}: training + validation (s)")
    return fig


LABEL_OFFSETS = ((5, 4, "left"), (-5, 4, "right"), (5, -11, "left"), (-5, -11, "right"),
                 (12, 16, "left"), (-12, 16, "right"), (12, -24, "left"), (-12, -24, "right"),
                 (20, 28, "left"), (-20, -36, "right"))  # points; tried in order, first free wins


def _label_points(ax, labelled: list[tuple[str, float, float, str]], *, fontsize: float = 8) -> None:
    """Label every point (name, x, y, colour) in its colour, moving a label to another side of its
    point, with a leader line, when it would overlap a label already placed (greedy, estimated
    text extents in pixels)."""
    ax.autoscale_view()
    dpi = ax.figure.dpi
    char_w, height = 0.6 * fontsize * dpi / 72, fontsize * dpi / 72  # source: typical sans aspect
    placed: list[tuple[float, float, float, float]] = []
    for name, x, y, colour in sorted(labelled, key=lambda t: t[1]):
        px, py = ax.transData.transform((x, y))
        width = char_w * len(name)
        for dx, dy, ha in LABEL_OFFSETS:
            left = px + dx * dpi / 72 - (width if ha == "right" else 0)
            bottom = py + dy * dpi / 72
            box = (left, bottom, left + width, bottom + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                       for b in placed):
                break
        placed.append(box)
        moved = abs(dy) > 11  # a label away from its point gets a thin leader line
        ax.annotate(name, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                    ha=ha, color=colour,
                    arrowprops=dict(arrowstyle="-", lw=0.7, color=colour) if moved else None)


def achieved_gflops(analysis: StudyAnalysis) -> Figure:
    """Achieved GFLOP/s of each network's training and validation step, with the calibrated peak."""
    rows = sorted(analysis.efficiency, key=lambda e: (np.nan_to_num(e.train_gflops_per_s, nan=-1)))
    fig = _figure(7.5, 0.9 + 0.38 * max(len(rows), 1))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [e.train_gflops_per_s for e in rows], height=0.4, label="training step")
    ax.barh(y + 0.2, [e.eval_gflops_per_s for e in rows], height=0.4, label="validation step")
    ax.set_yticks(y, [e.name for e in rows], fontsize=8)
    ax.set_xlabel("achieved GFLOP/s (counted FLOPs / measured median time)")
    if analysis.peak_flops_per_s:
        peak = analysis.peak_flops_per_s / 1e9
        ax.axvline(peak, color="black", ls="--", lw=1, label=f"calibrated peak {peak:.1f} GFLOP/s")
    ax.set_title("Speed achieved by each network", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, axis="x", alpha=0.25)
    return fig


def layer_type_shares(analysis: StudyAnalysis, *, top: int = 12) -> Figure:
    """Share of training-step time beside share of FLOPs for each layer type (mean over networks);
    the ``top`` types by time share."""
    rows = list(analysis.layer_types)[:top]
    fig = _figure(7.5, 0.9 + 0.38 * max(len(rows), 1))
    ax = fig.add_subplot()
    if not rows:
        ax.text(0.5, 0.5, "no per-layer-type breakdown measured (study run with --no-breakdown)",
                ha="center", va="center", transform=ax.transAxes, fontsize=9)
        ax.set_axis_off()
        return fig
    rows = rows[::-1]
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [100 * r.time_share for r in rows], height=0.4, label="share of time")
    ax.barh(y + 0.2, [100 * r.flops_share for r in rows], height=0.4, label="share of FLOPs")
    ax.set_yticks(y, [f"{r.layer_type} ({r.networks})" for r in rows], fontsize=8)
    ax.set_xlabel("% of a training step (mean over networks; in brackets: networks with the type)")
    ax.set_title("Where the time goes vs where the FLOPs are, by layer type", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, axis="x", alpha=0.25)
    return fig


def train_vs_val(analysis: StudyAnalysis) -> Figure:
    """Training-epoch and validation-epoch time of each network (log scale)."""
    points = [p for p in analysis.points if p.time(TimeMetric.TRAIN_EPOCH) > 0]
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    if not points:
        ax.text(0.5, 0.5, "no training epochs run (step timing only)", ha="center", va="center",
                transform=ax.transAxes, fontsize=9)
        ax.set_axis_off()
        return fig
    points.sort(key=lambda p: p.time(TimeMetric.TRAIN_EPOCH))
    x = np.arange(len(points))
    train = [p.time(TimeMetric.TRAIN_EPOCH) for p in points]
    val = [p.time(TimeMetric.VAL_EPOCH) for p in points]
    ax.bar(x - 0.2, train, width=0.4, label="training epoch")
    ax.bar(x + 0.2, val, width=0.4, label="validation epoch")
    for xi, t, v in zip(x, train, val, strict=True):
        if v > 0:
            ax.annotate(f"×{t / v:.1f}", (xi, t), xytext=(0, 2), textcoords="offset points",
                        ha="center", fontsize=7)
    ax.set_xticks(x, [p.name for p in points], rotation=35, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("seconds per epoch (median over epochs)")
    ax.set_title("Training vs validation time per epoch (×: training / validation)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, axis="y", which="both", alpha=0.25)
    return fig


def comm_share(analysis: StudyAnalysis) -> Figure:
    """Data-parallel communication share (all-reduce time / step time) of each network against
    its parameters and, beside it, its training-step FLOPs per worker (log x), with Spearman rho
    of each from the analysis."""
    dp = analysis.data_parallel
    fig = _figure(11, 4.6)
    if dp is None:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no data-parallel results (study run without --nproc)", ha="center",
                va="center", transform=ax.transAxes, fontsize=9)
        ax.set_axis_off()
        return fig
    axes = fig.subplots(1, 2, sharey=True)
    rows = [r for r in dp.rows if math.isfinite(r.comm_share)]
    for ax, rank, label, value in (
            (axes[0], dp.vs_params, "parameters", lambda r: r.params),
            (axes[1], dp.vs_flops, "training-step FLOPs per worker", lambda r: r.train_flops)):
        for r in rows:
            ax.plot([value(r)], [100 * r.comm_share], "o", color=_colour(r.family), markersize=6)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        rho = f"{rank.rho:.2f} (p = {rank.p:.2g})" if math.isfinite(rank.rho) else "n/a"
        ax.set_title(f"vs {label}: Spearman ρ = {rho}, n = {rank.n}", fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
        ax.margins(x=0.15, y=0.15)
        _label_points(ax, [(r.name, value(r), 100 * r.comm_share, _colour(r.family)) for r in rows])
    axes[0].set_ylabel("% of the step with a gradient all-reduce in flight")
    first = dp.rows[0]
    fig.suptitle(f"Data-parallel communication share: {first.world_size} {first.backend} workers, "
                 f"batch {first.batch_size} and {first.threads} thread(s) per worker", fontsize=10)
    return fig


__all__ = ["achieved_gflops", "comm_share", "layer_type_shares", "png_bytes", "predicted_vs_measured",
           "time_to_accuracy", "time_vs_flops", "train_vs_val", "unseen_predicted_vs_measured"]


def _reach(length: float) -> float:
    """An error bar's length on one side: 0 for an unknown bound, or for a bootstrap interval
    that lies wholly on the other side of the estimate (matplotlib refuses negative lengths)."""
    return max(length, 0.0) if math.isfinite(length) else 0.0


def explanation(expl: Explanation) -> Figure:
    """Left: leave-one-network-out R^2 of time from each measure alone and from all together, with
    95% intervals. Right: each measure's Shapley share of the joint R^2 (interval over resampled
    networks) beside its drop-one loss (unique share)."""
    fig = _figure(10, 4.2)
    left, right = fig.subplots(1, 2)
    labels = [m.label if len(m.measures) == 1 else "all together" for m in expl.models]
    values = [m.cv_r_squared for m in expl.models]
    lows = [_reach(m.cv_r_squared - m.cv_r_squared_ci[0]) for m in expl.models]
    highs = [_reach(m.cv_r_squared_ci[1] - m.cv_r_squared) for m in expl.models]
    ys = np.arange(len(labels))
    left.barh(ys, values, xerr=[lows, highs], color="#4c72b0", capsize=3)
    left.set_yticks(ys, labels, fontsize=8)
    left.axvline(0, color="black", lw=0.8)
    left.set_xlim(max(min(values + [0.0]) - 0.2, -1.5), 1.05)
    left.set_xlabel("cross-validated R² (leave one network out)")
    left.set_title(f"{expl.time_metric.label.capitalize()} time predicted from each measure "
                   f"(n = {len(expl.names)})", fontsize=10)
    ys = np.arange(len(expl.shares))
    shares = [s.share for s in expl.shares]
    err = [[_reach(s.share - s.share_ci[0]) for s in expl.shares],
           [_reach(s.share_ci[1] - s.share) for s in expl.shares]]
    right.barh(ys + 0.2, shares, height=0.4, xerr=err, color="#55a868", capsize=3,
               label="Shapley share of R²")
    right.barh(ys - 0.2, [s.unique for s in expl.shares], height=0.4, color="#c44e52",
               label="unique (drop-one ΔR²)")
    right.set_yticks(ys, [s.measure.label for s in expl.shares], fontsize=8)
    right.set_xlim(0, 1.05)
    right.set_xlabel("share of the variance of time")
    right.set_title(f"Who explains the variance (joint R² = {expl.joint.r_squared:.2f})", fontsize=10)
    right.legend(fontsize=7, loc="lower right")
    return fig


def within_families(analysis: StudyAnalysis, metric: TimeMetric = TimeMetric.TRAIN_STEP) -> Figure:
    """Time against FLOPs (log-log) with each family's networks joined: the slope inside a family
    (depth/width variants) beside the cloud across families."""
    fig = _figure(7.5, 5.2)
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"FLOPs of one {metric.label}")
    ax.set_ylabel(f"{metric.label} time (s)")
    lines = {f.family: f for f in (analysis.explanation.families if analysis.explanation else ())}
    points = [p for p in analysis.points if p.time(metric) > 0 and p.cost(metric, CostMetric.FLOPS) > 0]
    labelled = []
    for family in sorted({p.family for p in points}):
        members = sorted((p for p in points if p.family == family),
                         key=lambda p: p.cost(metric, CostMetric.FLOPS))
        xs = [p.cost(metric, CostMetric.FLOPS) for p in members]
        ys = [p.time(metric) for p in members]
        line = lines.get(family)
        label = family + (f": FLOPs^{line.loglog_slope:.2f}" if line and math.isfinite(line.loglog_slope)
                          else "")
        ax.plot(xs, ys, "o-" if len(members) > 1 else "o", color=_colour(family), label=label)
        labelled += [(p.name, x, y, _colour(family)) for p, x, y in zip(members, xs, ys, strict=True)]
    _label_points(ax, labelled, fontsize=7)
    fit = analysis.fit(metric, CostMetric.FLOPS)
    if fit is not None and math.isfinite(fit.loglog_slope):
        grid = np.geomspace(min(fit.x) / 1.5, max(fit.x) * 1.5, 50)
        ax.plot(grid, np.exp(fit.loglog_intercept) * grid ** fit.loglog_slope, ":", color="black",
                lw=1, label=f"across all: FLOPs^{fit.loglog_slope:.2f}")
    ax.set_title("Inside each family vs across families", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def cost_vs_work(series: list[WorkSeries]) -> Figure:
    """Left: step time against the step's FLOPs (log-log) for each network as batch size (solid)
    and input size (dashed) grow, with the proportional line through each series' largest step.
    Right: achieved GFLOP/s against FLOPs: it climbs while fixed costs dominate, then levels off
    where time has become linear in work."""
    fig = _figure(11, 4.6)
    left, right = fig.subplots(1, 2)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("FLOPs of the step")
    left.set_yscale("log")
    left.set_ylabel("step time (s)")
    right.set_ylabel("achieved GFLOP/s")
    if not series:
        left.text(0.5, 0.5, "no cost-vs-work steps measured", ha="center", va="center",
                  transform=left.transAxes)
        return fig
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    colours = {n: palette[i % len(palette)] for i, n in enumerate(dict.fromkeys(s.network for s in series))}
    for s in series:
        xs = np.array([p.flops for p in s.points])
        ys = np.array([p.step_s for p in s.points])
        style = "-" if s.axis is WorkAxis.BATCH else "--"
        what = (f"batch 1-{s.points[-1].batch_size} @ {s.held}px" if s.axis is WorkAxis.BATCH
                else f"input {s.points[0].input_size}-{s.points[-1].input_size}px @ batch {s.held}")
        left.plot(xs, ys, style + "o", color=colours[s.network], ms=4, label=f"{s.network}: {what}")
        left.plot(xs, ys[-1] * xs / xs[-1], ":", color=colours[s.network], lw=0.8)
        right.plot(xs, [p.flops_per_s / 1e9 for p in s.points], style + "o", color=colours[s.network],
                   ms=4)
        linear = s.linear_from_flops
        if linear is not None:
            left.axvline(linear, color=colours[s.network], lw=0.6, alpha=0.5)
    left.set_title("Step time vs work (dotted: proportional to work)", fontsize=10)
    left.legend(fontsize=6, loc="upper left")
    right.set_title("Achieved speed vs work", fontsize=10)
    return fig


UNSEEN_METHODS = {"per_kernel": ("per-kernel model", "C0"), "flops": ("FLOPs-only", "C1"),
                  "roofline": ("roofline", "C2")}  # source: our choice; params-only is in the table


def unseen_predicted_vs_measured(result: UnseenResult) -> Figure:
    """Predicted against measured step time of the unseen networks, log-log: one panel per input
    configuration and step, the per-kernel model beside the FLOPs-only line and the roofline, the
    diagonal and the +-10% band; each legend gives the method's MAPE and Spearman rho there (from
    :meth:`UnseenResult.rows`)."""
    groups = list(result.by_group().items())
    cols = min(2, max(1, len(groups)))
    rows_n = max(1, math.ceil(len(groups) / cols))
    fig = _figure(5.2 * cols, 4.8 * rows_n)
    axes = fig.subplots(rows_n, cols, squeeze=False).ravel()
    metrics: dict[tuple[object, ...], dict[str, Any]] = {
        (r["input"], r["step"], r["method"]): r for r in result.rows()}
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    if not groups:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no unseen network measured", ha="center", va="center",
                     transform=axes[0].transAxes)
        return fig
    for ax, ((config, mode), pts) in zip(axes, groups, strict=False):
        methods = [m for m in UNSEEN_METHODS if all(m in p.predicted_s for p in pts)]
        values = [p.measured_s * 1e3 for p in pts] + [
            p.predicted_s[m] * 1e3 for p in pts for m in methods if p.predicted_s[m] > 0]
        lo, hi = min(values) / 1.5, max(values) * 1.5
        grid = np.geomspace(lo, hi, 50)
        ax.fill_between(grid, grid * (1 - TOLERANCE), grid * (1 + TOLERANCE), color="0.85",
                        label=f"within +-{TOLERANCE:.0%}")
        ax.plot(grid, grid, color="0.4", lw=0.8)
        for method in methods:
            label, colour = UNSEEN_METHODS[method]
            row = metrics.get((config, mode, method), {})
            mape, rho = row.get("mape_pct", math.nan), row.get("spearman", math.nan)
            rho_text = f"{rho:.2f}" if math.isfinite(rho) else "- (n < 3)"
            ax.scatter([p.measured_s * 1e3 for p in pts],
                       [max(p.predicted_s[method] * 1e3, lo) for p in pts], s=22, alpha=0.8,
                       color=colour, label=f"{label}: MAPE {mape:.0f}%, rho {rho_text}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        step = "training" if mode == "train" else "validation"
        ax.set_xlabel(f"measured {step} step (ms)")
        ax.set_ylabel(f"predicted {step} step (ms)")
        ax.set_title(f"{config}, {step} step, n = {len(pts)}", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    return fig


def machine_drift(drift: StudyDrift) -> Figure:
    """The reference probe's speed (the run's quiet level = 1) at every timed repeat over the study:
    repeats below the drift threshold's line were flagged (and left out of the estimate), ringed
    ones were re-measures, crossed ones ran while the machine was busy."""
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    ax.set_xlabel("minutes since the first timed repeat")
    ax.set_ylabel("probe speed (the run's quiet level = 1)")
    points = [p for p in drift.probed if math.isfinite(p.elapsed_s)]
    if not points:
        ax.text(0.5, 0.5, "no reference probe was stored with these repeats\n(a study stored "
                "before schema 7)", ha="center", va="center", transform=ax.transAxes)
        return fig
    for mode, marker in ((Mode.TRAIN.value, "o"), (Mode.EVAL.value, "s")):
        for flagged, colour in ((False, "#1f77b4"), (True, "#ff7f0e")):
            chosen = [p for p in points if p.mode == mode and p.flagged == flagged]
            if chosen:
                ax.scatter([p.elapsed_s / 60 for p in chosen], [p.speed for p in chosen],
                           marker=marker, s=18, color=colour,
                           label=f"{mode} step{', flagged' if flagged else ''}")
    again = [p for p in points if p.remeasure]
    if again:
        ax.scatter([p.elapsed_s / 60 for p in again], [p.speed for p in again], s=70,
                   facecolors="none", edgecolors="black", linewidths=0.8, label="re-measure")
    busy = [p for p in points if p.busy]
    if busy:
        ax.scatter([p.elapsed_s / 60 for p in busy], [p.speed for p in busy], marker="x", s=40,
                   color="#d62728", linewidths=1, label="machine busy")
    ax.axhline(1 / (1 + DRIFT_THRESHOLD), ls="--", color="grey", lw=1,
               label=f"drift threshold ({DRIFT_THRESHOLD:.0%} slower)")
    ax.set_yscale("log")  # a machine 2x and 20x slower read alike
    ax.set_ylim(min(p.speed for p in points) / 1.5, 1.5)
    fig.legend(fontsize=8, loc="outside lower center", ncols=3)
    return fig


FAMILY_MARKERS = "osD^vP*Xhp<>"  # source: matplotlib's filled markers, one per family


def predicted_vs_measured(evaluation: Evaluation,
                          methods: Sequence[Method] = (Method.PER_OPERATOR, Method.FLOPS_LINE)) -> Figure:
    """Log-log predicted vs measured step time, one panel per mode, one colour per method and one
    marker per family; the diagonal and the +-10% band. Each panel's legend gives each method's
    MAPE and Spearman rho on that step; the families' markers are explained below the panels."""
    from matplotlib.lines import Line2D

    modes = evaluation.modes()
    fig = _figure(5.2 * max(1, len(modes)), 5.2)
    axes = fig.subplots(1, max(1, len(modes)), squeeze=False)[0]
    families = sorted({p.family for p in evaluation.points})
    marker = {f: FAMILY_MARKERS[i % len(FAMILY_MARKERS)] for i, f in enumerate(families)}
    methods = [m for m in methods if m in evaluation.methods]
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    for ax, mode in zip(axes, modes, strict=False):
        pts = evaluation.of_mode(mode)
        values = [p.measured_s * 1e3 for p in pts] + [
            p.predicted_s[m] * 1e3 for p in pts for m in methods if p.predicted_s[m] > 0]
        lo, hi = min(values) / 1.5, max(values) * 1.5
        grid = np.geomspace(lo, hi, 50)
        ax.fill_between(grid, grid * (1 - TOLERANCE), grid * (1 + TOLERANCE), color="0.85")
        ax.plot(grid, grid, color="0.4", lw=0.8)
        handles = [Line2D([], [], color="0.85", lw=6, label=f"within +-{TOLERANCE:.0%}")]
        for method in methods:
            for p in pts:  # a non-positive prediction (a line's intercept) is drawn at the floor
                ax.scatter(p.measured_s * 1e3, max(p.predicted_s[method] * 1e3, lo),
                           marker=marker[p.family], color=colours[method], s=36, alpha=0.85)
            mt = evaluation.metrics(method, mode)
            handles.append(Line2D([], [], color=colours[method], marker="o", lw=0,
                                  label=f"{method.label}: MAPE {mt.mape:.0%}, rho {mt.spearman:.2f}"))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"measured {mode} step (ms)")
        ax.set_ylabel(f"predicted {mode} step (ms)")
        ax.set_title(f"{'training' if mode == 'train' else 'validation'} step, leave one family out")
        ax.legend(handles=handles, fontsize=7, loc="lower right")
    fig.legend(handles=[Line2D([], [], color="0.3", marker=marker[f], lw=0, label=f) for f in families],
               loc="outside lower center", ncols=min(len(families), 8), fontsize=8, frameon=False)
    return fig
