"""How time relates to computation across the networks of a study, with the uncertainty of each figure.

For each time (training step, validation step, training epoch, validation epoch, total, time to the
target accuracy) against each measure of computation (FLOPs, MACs, params, bytes moved, operator
calls; for the time to the target also the FLOPs of one step) :func:`analyze_points` gives the fits
of :mod:`dnncost.study.fits` over the points of :mod:`dnncost.study.points`, each network's
achieved GFLOP/s and share of the machine's calibrated peak, the explanation of
:mod:`dnncost.study.explanation`, the per-layer-type shares and the data-parallel communication
shares, the time-to-accuracy figures of :mod:`dnncost.study.time_to_accuracy`, and the verdicts and
claims of :mod:`dnncost.study.verdict` in plain words.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dnncost.measuring.measurement import STUDY_ESTIMATOR, STUDY_ESTIMATOR_WHY
from dnncost.study.explanation import Explanation, explain
from dnncost.study.fits import (
    DataParallelAnalysis,
    Efficiency,
    Fit,
    LayerShare,
    data_parallel,
    efficiency,
    fit,
    layer_type_shares,
)
from dnncost.study.points import CostMetric, NetworkPoint, TimeMetric, points_from_results
from dnncost.study.store import NetworkResult
from dnncost.study.time_to_accuracy import (
    RankAgreement,
    SeedRanking,
    SeedSpread,
    TargetRow,
    rankings,
    seed_spread,
    target_rows,
)
from dnncost.study.verdict import Verdict, explanation_claims, ranking_claims, seed_claims, verdict


@dataclass(frozen=True)
class TimeToAccuracy:
    """Time-to-accuracy across the networks: the table's rows, the verdicts of time to the target
    against the FLOPs to the target and against the FLOPs of one step (None with too few
    networks that reached it), the rankings against FLOPs per step, step time and FLOPs to the
    target, and the spread over seeds (empty when trained from one); ``claims`` in words."""

    rows: tuple[TargetRow, ...]
    to_target: Verdict
    per_step: Verdict
    rankings: tuple[RankAgreement, ...]
    spreads: tuple[SeedSpread, ...]
    seed_ranking: SeedRanking | None
    claims: tuple[str, ...]  # the rankings' sentences, then the seeds'

    def to_dict(self) -> dict[str, object]:
        return {"networks": [r.to_row() for r in self.rows],
                "verdict_vs_flops_to_target": _verdict_dict(self.to_target),
                "verdict_vs_flops_per_step": _verdict_dict(self.per_step),
                "rankings": [a.to_dict() for a in self.rankings],
                "seeds": [s.to_dict() for s in self.spreads],
                "seed_ranking_stable": None if self.seed_ranking is None else self.seed_ranking.stable,
                "claims": list(self.claims)}


def _verdict_dict(v: Verdict) -> dict[str, object]:
    return {"linear": v.linear, "kind": v.kind.value, "headline": v.headline,
            "reasons": list(v.reasons), "numbers": dict(v.numbers)}


def time_to_accuracy(points: Sequence[NetworkPoint], fits: Sequence[Fit]) -> TimeToAccuracy | None:
    """The time-to-accuracy figures of ``points`` (None when no network trained to a target)."""
    rows = target_rows(points)
    if not rows:
        return None
    by_key = {(f.time_metric, f.cost_metric): f for f in fits}
    ranked = rankings(points)
    spreads, seed_order = seed_spread(points)
    return TimeToAccuracy(
        rows=tuple(rows),
        to_target=verdict(by_key.get((TimeMetric.TIME_TO_TARGET, CostMetric.FLOPS))),
        per_step=verdict(by_key.get((TimeMetric.TIME_TO_TARGET, CostMetric.STEP_FLOPS))),
        rankings=ranked, spreads=spreads, seed_ranking=seed_order,
        claims=ranking_claims(ranked) + seed_claims(spreads, seed_order))


@dataclass(frozen=True)
class StudyAnalysis:
    """The whole analysis of one group of comparable results (one configuration, one machine)."""

    points: tuple[NetworkPoint, ...]
    fits: tuple[Fit, ...]
    efficiency: tuple[Efficiency, ...]
    verdict: Verdict
    peak_flops_per_s: float | None = None
    skipped: Mapping[str, str] = field(default_factory=dict)
    layer_types: tuple[LayerShare, ...] = ()
    data_parallel: DataParallelAnalysis | None = None
    explanation: Explanation | None = None
    claims: tuple[str, ...] = ()  # the explanation's sentences (dnncost.study.verdict)
    time_to_accuracy: TimeToAccuracy | None = None  # None: no network trained to a target

    def fit(self, time_metric: TimeMetric, cost_metric: CostMetric = CostMetric.FLOPS) -> Fit | None:
        for f in self.fits:
            if f.time_metric is time_metric and f.cost_metric is cost_metric:
                return f
        return None

    def network_rows(self) -> list[dict[str, object]]:
        """One row per network: computation, times (steps by STUDY_ESTIMATOR with their 95%
        interval over repeats, epochs by the median), speed, residual, accuracy."""
        line = self.fit(TimeMetric.TRAIN_STEP)
        speed = {e.name: e for e in self.efficiency}
        rows: list[dict[str, object]] = []
        for p in self.points:
            e = speed[p.name]
            low, high = p.interval(TimeMetric.TRAIN_STEP)
            rows.append({
                "network": p.name, "family": p.family,
                "params": _int(p.cost(TimeMetric.TRAIN_STEP, CostMetric.PARAMS)),
                "eval_flops": _int(p.cost(TimeMetric.EVAL_STEP, CostMetric.FLOPS)),
                "train_flops": _int(p.cost(TimeMetric.TRAIN_STEP, CostMetric.FLOPS)),
                "train_bytes": _int(p.cost(TimeMetric.TRAIN_STEP, CostMetric.BYTES)),
                "train_ops": _int(p.cost(TimeMetric.TRAIN_STEP, CostMetric.OPS)),
                "train_step_ms": p.time(TimeMetric.TRAIN_STEP) * 1e3,
                "train_step_ci_low_ms": low * 1e3, "train_step_ci_high_ms": high * 1e3,
                "train_step_repeats": len(p.times.get(TimeMetric.TRAIN_STEP, ())),
                "eval_step_ms": p.time(TimeMetric.EVAL_STEP) * 1e3,
                "train_epoch_s": p.time(TimeMetric.TRAIN_EPOCH),
                "val_epoch_s": p.time(TimeMetric.VAL_EPOCH),
                "total_s": p.time(TimeMetric.TOTAL),
                "train_gflops_per_s": e.train_gflops_per_s,
                "eval_gflops_per_s": e.eval_gflops_per_s,
                "train_share_of_peak": e.train_share_of_peak,
                "residual": line.residual(p.name) if line and p.name in line.names else math.nan,
                "val_accuracy": p.val_accuracy,
            })
        return rows

    def fit_rows(self) -> list[dict[str, object]]:
        return [f.to_row() for f in self.fits]

    def to_dict(self) -> dict[str, object]:
        return {
            "verdict": _verdict_dict(self.verdict),
            "peak_flops_per_s": self.peak_flops_per_s,
            "step_estimator": {"name": STUDY_ESTIMATOR.value, "why": STUDY_ESTIMATOR_WHY},
            "networks": self.network_rows(),
            "fits": self.fit_rows(),
            "residuals": {f"{f.time_metric.value}_vs_flops": {n: f.residual(n) for n in f.names}
                          for f in self.fits if f.cost_metric is CostMetric.FLOPS},
            "repeats": {p.name: {m.value: list(v) for m, v in p.times.items()} for p in self.points},
            "skipped": dict(self.skipped),
            "layer_types": [{"layer_type": r.layer_type, "time_share": r.time_share,
                             "flops_share": r.flops_share, "networks": r.networks}
                            for r in self.layer_types],
            "data_parallel": self.data_parallel.to_dict() if self.data_parallel else None,
            "explanation": ({**self.explanation.to_dict(), "claims": list(self.claims)}
                            if self.explanation else None),
            "time_to_accuracy": self.time_to_accuracy.to_dict() if self.time_to_accuracy else None,
        }


def _int(value: float) -> int | None:
    """A count as an integer for tables (None when unknown)."""
    return int(value) if math.isfinite(value) else None


def analyze_points(points: Sequence[NetworkPoint], *, peak_flops_per_s: float | None = None,
                   skipped: Mapping[str, str] | None = None,
                   layer_types: Sequence[LayerShare] = (), seed: int = 0,
                   data_parallel: DataParallelAnalysis | None = None) -> StudyAnalysis:
    """Every relation of every time to every measure of computation, speed per network, verdict."""
    fits = tuple(f for t in TimeMetric for c in CostMetric
                 if (f := fit(points, t, cost_metric=c, seed=seed)) is not None)
    by_key = {(f.time_metric, f.cost_metric): f for f in fits}
    main = by_key.get((TimeMetric.TRAIN_STEP, CostMetric.FLOPS)) or by_key.get(
        (TimeMetric.EVAL_STEP, CostMetric.FLOPS))
    explanation = explain(points, TimeMetric.TRAIN_STEP, seed=seed)
    return StudyAnalysis(points=tuple(points), fits=fits,
                         efficiency=tuple(efficiency(points, peak_flops_per_s=peak_flops_per_s)),
                         verdict=verdict(main), peak_flops_per_s=peak_flops_per_s,
                         skipped=dict(skipped or {}), layer_types=tuple(layer_types),
                         data_parallel=data_parallel, explanation=explanation,
                         claims=explanation_claims(explanation) if explanation else (),
                         time_to_accuracy=time_to_accuracy(points, fits))


def analyze(networks: Sequence[NetworkResult], *, peak_flops_per_s: float | None = None,
            seed: int = 0) -> StudyAnalysis:
    """Analyse stored study results (one configuration on one machine)."""
    points, skipped = points_from_results(networks)
    return analyze_points(points, peak_flops_per_s=peak_flops_per_s, skipped=skipped,
                          layer_types=layer_type_shares(networks), seed=seed,
                          data_parallel=data_parallel(networks))


__all__ = ["StudyAnalysis", "TimeToAccuracy", "analyze", "analyze_points", "time_to_accuracy"]
