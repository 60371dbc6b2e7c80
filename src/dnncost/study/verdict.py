"""The analysis in words: :func:`verdict` states whether time is linear in FLOPs here (or in the
measure a fit sets it against: the FLOPs to the target for time-to-accuracy), with the numbers
behind the answer; :func:`explanation_claims` the sentences an
:class:`~dnncost.study.explanation.Explanation`'s numbers support, every figure with its interval;
:func:`ranking_claims` whether ranking the networks by time-to-accuracy differs from ranking them by
FLOPs and by step time, the swapped pairs named; :func:`seed_claims` how much the seeds move it.

Time is proportional to FLOPs exactly when every network runs at the same FLOP/s; then the log-log
slope is 1, the line fits (R^2 near 1) and the achieved FLOP/s of the fastest and slowest network
agree. Time can also be affine in FLOPs (a fixed cost per step plus a part proportional to FLOPs):
then the line fits and predicts every network closely, but the log-log slope is below 1. Otherwise
no straight line in FLOPs predicts the networks' times, which is the paper's finding.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from dnncost.study.explanation import Explanation, FamilyLine
from dnncost.study.fits import Fit
from dnncost.study.points import MIN_POINTS, CostMetric, TimeMetric
from dnncost.study.time_to_accuracy import MAX_SWAPS, RankAgreement, SeedRanking, SeedSpread

LINEAR_SLOPE = 1.0  # time proportional to FLOPs: log-log slope 1
R2_MIN = 0.9  # source: our choice; a line leaving > 10% of the variance unexplained is not 'linear'
SPREAD_MAX = 2.0  # source: our choice; if achieved FLOP/s differ 2-fold, FLOPs mispredict time 2-fold
RESIDUAL_MAX = 0.25  # source: our choice; a useful line predicts every network within +-25%


def explanation_claims(explanation: Explanation) -> tuple[str, ...]:
    """The sentences the explanation's numbers support, every figure with its interval."""
    metric, models, shares = explanation.time_metric, explanation.models, explanation.shares
    families, best, diff_ci = explanation.families, explanation.best, explanation.best_vs_flops_ci
    across = explanation.across
    joint, singles = models[-1], models[:-1]
    what = f"{metric.label} time"
    n = len(joint.loo_ratio)
    out = [
        f"Leave-one-network-out over {n} networks, each measure alone predicts {what} with "
        "cross-validated R² " + "; ".join(
            f"{m.label} {m.cv_r_squared:.2f} ({_fmt_ci(m.cv_r_squared_ci)})" for m in singles)
        + f"; all {len(joint.measures)} together {joint.cv_r_squared:.2f} "
          f"({_fmt_ci(joint.cv_r_squared_ci)}), with a median held-out error of "
          f"{joint.median_error:.0%} (worst {joint.worst_error:.0%}).",
    ]
    if best is not CostMetric.FLOPS and all(math.isfinite(v) for v in diff_ci):
        settled = diff_ci[0] > 0
        out.append(f"{best.label.capitalize()} predict{'s' if best is CostMetric.BYTES else ''} "
                   f"{what} best of the single measures; its cross-validated R² exceeds FLOPs' by "
                   f"{diff_ci[0]:+.2f} to {diff_ci[1]:+.2f} (95% interval over resampled networks)"
                   + ("." if settled else ": the interval includes 0, so this run does not settle "
                                         "which measure is better."))
    elif best is CostMetric.FLOPS:
        out.append(f"FLOPs predict {what} best of the single measures on this run.")
    out.append(f"Shares of the variance (Shapley/LMG decomposition of the joint in-sample R² = "
               f"{joint.r_squared:.2f}): " + "; ".join(
                   f"{s.measure.label} {s.share:.2f} ({_fmt_ci(s.share_ci)}), unique "
                   f"{s.unique:.2f}" for s in shares)
               + ". 'Unique' is the R² lost when that measure is dropped from the joint fit.")
    out.append(f"The joint fit's fixed cost per step is {joint.intercept_s * 1e3:.3g} ms.")
    if families:
        inside = "; ".join(_family_claim(f) for f in families)
        tail = (f" Across all networks: FLOPs^{across.loglog_slope:.2f} "
                f"({_fmt_ci(across.loglog_slope_ci)}), R² {across.r_squared:.2f}."
                if across is not None else "")
        out.append(f"Inside each family (depth/width variants), {what} grows as {inside}.{tail}")
    return tuple(out)


def _family_claim(f: FamilyLine) -> str:
    """One family's part of the within-family sentence: its exponent with an interval, or, when
    its variants' FLOPs are too close for one, the plain ratios."""
    head = f"{f.family} (n = {len(f.names)})"
    if not math.isfinite(f.loglog_slope):
        return (f"{head} {f.flops_ratio:.2f}× the FLOPs in {f.time_ratio:.2f}× the time (FLOPs too "
                "close for an exponent)")
    ci = (f" ({_fmt_ci(f.slope_ci)})" if math.isfinite(f.slope_ci[0]) else
          f" ({_fmt_ci(f.repeat_slope_ci)} over repeats)" if math.isfinite(f.repeat_slope_ci[0])
          else "")
    return (f"{head} FLOPs^{f.loglog_slope:.2f}{ci}, {f.flops_ratio:.1f}× the FLOPs in "
            f"{f.time_ratio:.1f}× the time")


# -- the verdict ---------------------------------------------------------------------------------------
class Linearity(str, Enum):
    """How time relates to FLOPs across the networks."""

    PROPORTIONAL = "proportional"  # time = FLOPs / one speed shared by every network
    AFFINE = "affine"  # time = a + b * FLOPs predicts every network well, with a fixed cost a
    NOT_LINEAR = "not linear"  # no straight line predicts every network well
    UNKNOWN = "unknown"  # too few networks to say


@dataclass(frozen=True)
class Verdict:
    """Is time linear in FLOPs here? A plain-words headline, the reasons with their numbers."""

    kind: Linearity
    headline: str
    reasons: tuple[str, ...]
    numbers: Mapping[str, object]

    @property
    def linear(self) -> bool | None:
        """True for proportional or affine, False for not linear, None when unknown."""
        if self.kind is Linearity.UNKNOWN:
            return None
        return self.kind is not Linearity.NOT_LINEAR

    @property
    def text(self) -> str:
        return " ".join((self.headline, *self.reasons))


def _fmt_ci(ci: tuple[float, float], digits: int = 2) -> str:
    if not all(math.isfinite(v) for v in ci):
        return "n/a"
    return f"{ci[0]:.{digits}f} to {ci[1]:.{digits}f}"


def _gflops(flops_per_s: float) -> str:
    g = flops_per_s / 1e9
    return f"{g:,.0f} GFLOP/s" if g >= 1000 else f"{g:.3g} GFLOP/s"


def _fmt_p(p: float) -> str:
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.2g}"


def verdict(fit_: Fit | None) -> Verdict:
    """Judge how time relates to FLOPs from one Fit (normally training-step time vs FLOPs).

    Proportional: the log-log slope's interval (the wider of across-networks and over-repeats)
    includes 1, the line explains R^2 >= R2_MIN and achieved FLOP/s differ at most SPREAD_MAX-fold.
    Affine: not proportional, but R^2 >= R2_MIN and the line predicts every network within
    RESIDUAL_MAX. Not linear: otherwise.
    """
    if fit_ is None:
        return Verdict(Linearity.UNKNOWN, f"Not enough data: the verdict needs at least {MIN_POINTS} "
                                          "networks with both a count and a time.", (), {})
    rates = [xi / yi for xi, yi in zip(fit_.x, fit_.y, strict=True)]  # achieved FLOP/s of each network
    work = fit_.time_metric.work_label(fit_.cost_metric)  # 'FLOPs', 'FLOPs to the target', ...
    fastest, slowest = int(np.argmax(rates)), int(np.argmin(rates))
    spread = rates[fastest] / rates[slowest]
    residuals = {n: fit_.residual(n) for n in fit_.names}
    worst = max(residuals, key=lambda n: abs(math.log(residuals[n])) if residuals[n] > 0 else math.inf)
    worst_ratio = residuals[worst]
    low, high = fit_.slope_ci
    slope_is_1 = not math.isfinite(low) or low <= LINEAR_SLOPE <= high
    fits_line = fit_.r_squared >= R2_MIN
    line_predicts = worst_ratio > 0 and abs(worst_ratio - 1) <= RESIDUAL_MAX
    what = fit_.time_metric.time_label
    power = f"({work})" if " " in work else work
    numbers = {"n": fit_.n, "loglog_slope": fit_.loglog_slope, "loglog_slope_ci": list(fit_.slope_ci),
               "regression_slope_ci": list(fit_.loglog_slope_ci),
               "repeat_slope_ci": list(fit_.repeat_slope_ci), "r_squared": fit_.r_squared,
               "pearson_r": fit_.pearson_r, "pearson_ci": list(fit_.pearson_ci),
               "spearman_rho": fit_.spearman_rho, "spearman_p": fit_.spearman_p,
               "flops_per_s_spread": spread, "fastest": fit_.names[fastest],
               "slowest": fit_.names[slowest], "worst_residual": worst_ratio,
               "worst_residual_network": worst}
    off = (f"{worst_ratio:.2f}× the line's prediction" if worst_ratio > 0
           else "a time the line cannot predict (it predicts no positive time)")
    reasons = (
        f"Across {fit_.n} networks, {what} grows as {power}^{fit_.loglog_slope:.2f} (log-log slope; "
        f"95% interval {_fmt_ci(fit_.loglog_slope_ci)} across networks, "
        f"{_fmt_ci(fit_.repeat_slope_ci)} over {fit_.time_metric.repeats_label}; "
        f"{'it includes 1' if slope_is_1 else 'it excludes 1'}).",
        f"The least-squares line explains R² = {fit_.r_squared:.2f} of the variance "
        f"(Pearson r = {fit_.pearson_r:.2f}, 95% interval {_fmt_ci(fit_.pearson_ci)}; "
        f"Spearman ρ = {fit_.spearman_rho:.2f}, {_fmt_p(fit_.spearman_p)}); the network furthest "
        f"from it, {worst}, takes {off}.",
        _spread_sentence(fit_, rates, work=work),
    )
    if slope_is_1 and fits_line and spread <= SPREAD_MAX:
        return Verdict(Linearity.PROPORTIONAL, f"Linear: {what} is proportional to {work} on this "
                                               "machine, within the measurements' uncertainty.",
                       reasons, numbers)
    if fits_line and line_predicts:
        return Verdict(Linearity.AFFINE, f"Linear with a fixed cost: {what} ≈ a + b × {work} "
                                         f"predicts every network within ±{RESIDUAL_MAX:.0%}, but time "
                                         f"is not proportional to {work}.", reasons, numbers)
    why = [w for w, bad in ((f"R² < {R2_MIN}", not fits_line),
                            (f"the line is off by more than ±{RESIDUAL_MAX:.0%} for {worst}",
                             not line_predicts),
                            ("the log-log slope is not 1", not slope_is_1)) if bad]
    return Verdict(Linearity.NOT_LINEAR, f"Not linear: no straight line in {work} predicts {what} "
                                         f"on this machine ({'; '.join(why)}).", reasons, numbers)


def _spread_sentence(fit_: Fit, rates: list[float], *, work: str) -> str:
    """How far apart the networks' ratios of work to time lie: their achieved speed when the
    measure counts the work the time covers, else the time per unit of the measure."""
    fastest, slowest = int(np.argmax(rates)), int(np.argmin(rates))
    spread = rates[fastest] / rates[slowest]
    if not fit_.cost_metric.is_work:
        return (f"The time per unit of {work} differs {spread:.1f}-fold between networks: least "
                f"for {fit_.names[fastest]}, most for {fit_.names[slowest]}.")
    def speed(rate: float) -> str:
        return _gflops(rate) if fit_.cost_metric is CostMetric.FLOPS else f"{rate:.3g} {work} per second"

    if spread < 1.05:
        return f"Every network achieves about the same speed, {speed(rates[fastest])}."
    return (f"Achieved speed differs {spread:.1f}-fold between networks: {speed(rates[fastest])} "
            f"for {fit_.names[fastest]}, {speed(rates[slowest])} for {fit_.names[slowest]}.")


# -- time-to-accuracy: the rankings and the seeds -------------------------------------------------------
def ranking_claims(agreements: Sequence[RankAgreement]) -> tuple[str, ...]:
    """The verdict on the rankings: whether ordering the networks by time-to-accuracy differs from
    ordering them by each other figure, then per figure Kendall's tau, Spearman's rho and the
    swapped pairs, the clearest named."""
    usable = [a for a in agreements if a.n >= 2]
    if not usable:
        return ()
    what = TimeMetric.TIME_TO_TARGET.label
    differ = [a for a in usable if not a.same]
    same = [a for a in usable if a.same]
    parts = []
    if differ:
        parts.append("a different order from their ranking by " + _and(
            [f"{a.by} (Kendall τ = {_num(a.kendall_tau)})" for a in differ]))
    if same:
        parts.append("the same order as by " + _and([a.by for a in same]))
    out = [f"Ranked by {what}, the {usable[0].n} networks that reached the target come in "
           + "; and in ".join(parts) + "."]
    for a in usable:
        p = "" if not math.isfinite(a.kendall_p) else f", {_fmt_p(a.kendall_p)}"
        ci = (f", 95% interval {_fmt_ci(a.spearman_ci)}" if all(map(math.isfinite, a.spearman_ci))
              else "")
        head = (f"Against {a.by}: Kendall τ = {_num(a.kendall_tau)}{p}; Spearman ρ = "
                f"{_num(a.spearman_rho)}{ci}")
        if a.same:
            out.append(f"{head}; no pair of networks swaps.")
            continue
        named = "; ".join(f"{s.first} reaches the target {s.time_ratio:.2g}× sooner than {s.second} "
                          f"but has {s.other_ratio:.2g}× its {a.by}" for s in a.swaps[:MAX_SWAPS])
        more = (f"; and {len(a.swaps) - MAX_SWAPS} more" if len(a.swaps) > MAX_SWAPS else "")
        out.append(f"{head}; {len(a.swaps)} of {a.pairs} pairs swap: {named}{more}.")
    return tuple(out)


def seed_claims(spreads: Sequence[SeedSpread], ranking: SeedRanking | None) -> tuple[str, ...]:
    """How much the seeds moved the time to the target (empty when the study trained from one)."""
    if not spreads:
        return ()
    seeds = max(s.seeds for s in spreads)
    timed = [s for s in spreads if math.isfinite(s.cv_time)]
    out = []
    missed = [f"{s.name} ({s.seeds - s.reached} of {s.seeds})" for s in spreads if s.reached < s.seeds]
    if timed:
        low = min(timed, key=lambda s: s.cv_time)
        high = max(timed, key=lambda s: s.cv_time)
        out.append(
            f"Trained from {seeds} seeds (each the initialisation and the batch order), a network's "
            f"time-to-accuracy moves by a median coefficient of variation of "
            f"{float(np.median([s.cv_time for s in timed])):.0%} (from {low.cv_time:.0%} for "
            f"{low.name} to {high.cv_time:.0%} for {high.name}), its steps to the target by "
            f"{float(np.median([s.cv_steps for s in timed])):.0%}.")
    if missed:
        out.append("Seeds that missed the target within the cap: " + ", ".join(missed) + ".")
    if ranking is not None:
        out.append(f"The ranking of the networks by time-to-accuracy is "
                   f"{'the same' if ranking.stable else 'not the same'} from every seed (lowest "
                   f"Kendall τ of a seed's ranking against the ranking by the medians: "
                   f"{ranking.lowest_tau:.2f}).")
    return tuple(out)


def _num(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "n/a"


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


__all__ = ["LINEAR_SLOPE", "R2_MIN", "RESIDUAL_MAX", "SPREAD_MAX", "Linearity", "Verdict",
           "explanation_claims", "ranking_claims", "seed_claims", "verdict"]
