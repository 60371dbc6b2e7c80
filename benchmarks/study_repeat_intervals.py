"""The study's repeat intervals by estimator: how far the measurement noise of the repeats moves
the log-log slope of step time against FLOPs, and each network's figure, in a study database.

For each configuration in each database and for each estimator that needs only the stored samples
(the median of the repeat medians -- what the study reported before issue 16 --, the minimum of the
repeat medians, and the lower quartile of the pooled samples; the study's is
:data:`STUDY_ESTIMATOR`): the log-log slope of time against FLOPs with its 95% bootstrap interval
over the repeats (each network's repeats drawn with replacement, the estimator applied, the slope
refitted: :func:`dnncost.measuring.measurement.bootstrap_estimates`), and the median over networks
of each network's own 95% interval width relative to its figure. The repeats are those the
analysis uses (a repeat whose stored probe drifted is left out). A database from schema 7 on also
gets a line on the machine over its run (the reference probe's drift, flagged, re-measured and busy
repeats). Run it on the database of a study made before this change and of one made after, or on
one alone to compare the estimators on the same repeats.

Run:  python benchmarks/study_repeat_intervals.py OLD.sqlite NEW.sqlite
"""
from __future__ import annotations

import argparse
import math
import zlib
from collections.abc import Sequence

import numpy as np

from dnncost.measuring.measurement import (
    SAMPLE_ESTIMATORS,
    STUDY_ESTIMATOR,
    Estimator,
    bootstrap_estimates,
    estimate,
)
from dnncost.study.drift import study_drift
from dnncost.study.points import CostMetric, NetworkPoint, TimeMetric, points_from_results
from dnncost.study.store import open_store

BOOTSTRAP = 2000  # source: analysis.BOOTSTRAP_SAMPLES; percentile ends settle by ~2000
SEED = 0  # source: our choice; the same draws of repeats for every estimator


def repeat_intervals(points: Sequence[NetworkPoint], metric: TimeMetric, estimator: Estimator, *,
                     samples: int = BOOTSTRAP, seed: int = SEED
                     ) -> tuple[float, tuple[float, float], float]:
    """(log-log slope, its 95% bootstrap interval over repeats, median relative width of the
    networks' own 95% intervals) of ``metric`` against FLOPs by ``estimator``."""
    usable = [p for p in points if p.times.get(metric) and p.cost(metric, CostMetric.FLOPS) > 0]
    if len(usable) < 2:
        return math.nan, (math.nan, math.nan), math.nan
    x = np.log([p.cost(metric, CostMetric.FLOPS) for p in usable])
    xc = x - x.mean()
    columns, widths, figures = [], [], []
    for p in usable:
        repeats = p.repeat_samples(metric)
        rng = np.random.default_rng([seed, zlib.crc32(p.name.encode())])  # as the analysis draws
        col = bootstrap_estimates(repeats, estimator, rng=rng, resamples=samples)
        figure = estimate(repeats, estimator)
        low, high = np.percentile(col, [2.5, 97.5])
        columns.append(col)
        figures.append(figure)
        widths.append((high - low) / figure)
    y = np.log(np.stack(columns, axis=1))  # (samples, networks)
    slopes = ((y - y.mean(axis=1, keepdims=True)) @ xc) / (xc @ xc)
    ly = np.log(figures)
    slope = float(((ly - ly.mean()) @ xc) / (xc @ xc))
    low, high = np.percentile(slopes, [2.5, 97.5])
    return slope, (float(low), float(high)), float(np.median(widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", nargs="+", help="study databases (dnncost study --db ...)")
    args = parser.parse_args()
    for path in args.db:
        with open_store(path, read_only=True) as store:
            groups = store.groups()
        for group in groups:
            if group.config.get("whatif"):
                continue
            points, skipped = points_from_results(group.networks)
            repeats = [len(p.times.get(TimeMetric.TRAIN_STEP, ())) for p in points]
            print(f"{path} [{group.config_hash}]: {len(points)} networks, repeats used per network "
                  f"{min(repeats, default=0)}-{max(repeats, default=0)}"
                  + (f"; left out: {', '.join(skipped)}" if skipped else ""))
            drift = study_drift(group.networks,
                                cores=int(str(group.environment.get("cpu_cores") or 1)))
            if drift.probed:
                print(f"  machine: probe drift median {drift.median_drift:+.1%}, max "
                      f"{drift.max_drift:+.1%}; {drift.flagged} of {len(drift.points)} repeats "
                      f"flagged, {drift.remeasured} re-measured, {len(drift.busy)} on a busy machine")
            else:
                print("  machine: no probe stored (a study from before schema 7)")
            for metric in (TimeMetric.TRAIN_STEP, TimeMetric.EVAL_STEP):
                for est in SAMPLE_ESTIMATORS:
                    slope, (low, high), width = repeat_intervals(points, metric, est)
                    tag = ("  <- the study's estimator" if est is STUDY_ESTIMATOR
                           else "  <- what the study reported before issue 16"
                           if est is Estimator.MEDIAN else "")
                    print(f"  {metric.value:<10} {est.value:<15} log-log slope {slope:.3f}, 95% "
                          f"interval over repeats {low:.3f}-{high:.3f} (width {high - low:.3f}); "
                          f"networks' own interval, median width {width:.1%}{tag}")
            print("  train step by STUDY_ESTIMATOR: " + ", ".join(
                f"{p.name} {p.time(TimeMetric.TRAIN_STEP) * 1e3:.3g} ms" for p in points))


if __name__ == "__main__":
    main()
