"""The study's repeat intervals by estimator: how far the measurement noise of the repeats moves
the log-log slope of step time against FLOPs, and each network's figure, in a study database.

For each configuration in each database, and for the median of the repeat medians (the study's
figure before issue 16) and the study's estimator (:data:`STUDY_ESTIMATOR`, min of the repeat
medians): the log-log slope of time against FLOPs with its 95% bootstrap interval over the repeats
(each network's repeats resampled with replacement, the estimator applied, the slope refitted), and
the median over networks of each network's own 95% bootstrap interval width relative to its figure.
Run it on the database of a study made before this change and of one made after, or on one alone to
compare the estimators on the same repeats.

Run:  python benchmarks/study_repeat_intervals.py dnncost-results/study.sqlite [more.sqlite ...]
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

import numpy as np

from dnncost.measuring.measurement import STUDY_ESTIMATOR, Estimator, estimate
from dnncost.study.analysis import CostMetric, NetworkPoint, TimeMetric, points_from_results
from dnncost.study.store import open_store

BOOTSTRAP = 2000  # source: analysis.BOOTSTRAP_SAMPLES' order; percentile ends settle by ~2000
SEED = 0  # source: our choice; the same resamples for every estimator


def repeat_intervals(points: Sequence[NetworkPoint], metric: TimeMetric,
                     reduce: Callable[[np.ndarray], np.ndarray], *, samples: int = BOOTSTRAP,
                     seed: int = SEED) -> tuple[float, tuple[float, float], float]:
    """(log-log slope, its 95% bootstrap interval over repeats, median relative width of the
    networks' own 95% intervals) with ``reduce`` turning (samples, repeats) into (samples,)."""
    usable = [p for p in points if p.times.get(metric) and p.cost(metric, CostMetric.FLOPS) > 0]
    if len(usable) < 2:
        return math.nan, (math.nan, math.nan), math.nan
    rng = np.random.default_rng(seed)
    x = np.log([p.cost(metric, CostMetric.FLOPS) for p in usable])
    xc = x - x.mean()
    columns, widths, point = [], [], []
    for p in usable:
        values = np.asarray(p.times[metric], dtype=float)
        picks = values[rng.integers(0, len(values), size=(samples, len(values)))]
        col = reduce(picks)
        columns.append(col)
        figure = float(reduce(values[None, :])[0])
        point.append(figure)
        low, high = np.percentile(col, [2.5, 97.5])
        widths.append((high - low) / figure)
    y = np.log(np.stack(columns, axis=1))  # (samples, networks)
    slopes = ((y - y.mean(axis=1, keepdims=True)) @ xc) / (xc @ xc)
    ly = np.log(point)
    slope = float(((ly - ly.mean()) @ xc) / (xc @ xc))
    low, high = np.percentile(slopes, [2.5, 97.5])
    return slope, (float(low), float(high)), float(np.median(widths))


REDUCERS: dict[Estimator, Callable[[np.ndarray], np.ndarray]] = {
    Estimator.MEDIAN: lambda a: np.median(a, axis=-1),
    Estimator.MIN_OF_MEDIANS: lambda a: np.min(a, axis=-1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", nargs="+", help="study databases (dnncost study --db ...)")
    args = parser.parse_args()
    for path in args.db:
        store = open_store(path, create=False)
        for group in store.groups():
            points, skipped = points_from_results(group.networks)
            repeats = [len(p.times.get(TimeMetric.TRAIN_STEP, ())) for p in points]
            print(f"{path} [{group.config_hash}]: {len(points)} networks, repeats per network "
                  f"{min(repeats, default=0)}-{max(repeats, default=0)}"
                  + (f"; left out: {', '.join(skipped)}" if skipped else ""))
            for metric in (TimeMetric.TRAIN_STEP, TimeMetric.EVAL_STEP):
                for est, reduce in REDUCERS.items():
                    slope, (low, high), width = repeat_intervals(points, metric, reduce)
                    tag = (" (after: STUDY_ESTIMATOR)" if est is STUDY_ESTIMATOR
                           else " (before: what the study's analysis reported)")
                    print(f"  {metric.value:<10} {est.value:<15} log-log slope {slope:.3f}, 95% "
                          f"interval over repeats {low:.3f}-{high:.3f} (width {high - low:.3f}); "
                          f"networks' own interval, median width {width:.1%}{tag}")
            figures = {p.name: estimate(p.times.get(TimeMetric.TRAIN_STEP, ()), STUDY_ESTIMATOR)
                       for p in points}
            print("  train step by STUDY_ESTIMATOR: " + ", ".join(
                f"{n} {v * 1e3:.3g} ms" for n, v in figures.items()))


if __name__ == "__main__":
    main()
