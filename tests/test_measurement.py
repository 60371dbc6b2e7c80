"""dnncost.measuring.measurement estimators and drift, environment's machine load: synthetic samples
with known answers (no wall-clock asserts)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dnncost.core.environment import CpuTimes, MachineLoad, cpu_times, machine_load
from dnncost.measuring.measurement import (
    DRIFT_THRESHOLD,
    MIN_RUN_PROBES,
    SHIFT_THRESHOLD,
    STUDY_ESTIMATOR,
    Estimator,
    Measurement,
    Repeats,
    bootstrap_estimates,
    estimate,
    probe_drift,
    run_reference,
)


def three_runs(probe_s: tuple[float, ...] = ()) -> Repeats:
    return Repeats((Measurement((1.0, 1.1, 0.9)),  # median 1.0
                    Measurement((2.0, 2.02, 1.98)),  # median 2.0: the whole run twice as slow
                    Measurement((1.2, 1.2, 1.2))),  # median 1.2
                   probe_s=probe_s)


def test_estimators_match_hand_arithmetic() -> None:
    reps = three_runs()
    assert reps.medians == (1.0, 2.0, 1.2)
    assert reps.estimate(Estimator.MEDIAN) == 1.2  # middle of 1.0, 1.2, 2.0
    assert reps.estimate(Estimator.MIN_OF_MEDIANS) == 1.0
    # pooled, sorted: 0.9 1.0 1.1 1.2 1.2 1.2 1.98 2.0 2.02; 25th percentile at index 0.25 * 8 = 2
    assert reps.estimate(Estimator.LOWER_QUARTILE) == pytest.approx(1.1)
    # no probe: probe-normalised falls back to the median
    assert reps.estimate(Estimator.PROBE_NORMALISED) == 1.2
    assert reps.estimate() == reps.estimate(STUDY_ESTIMATOR)


def test_probe_normalised_removes_a_proportional_slowdown() -> None:
    # probes 1.0, 2.0, 1.2 ms: each run slowed exactly as much as the machine; reference = 1.0 (min)
    reps = three_runs(probe_s=(1e-3, 2e-3, 1.2e-3))
    assert reps.reference == 1e-3
    # 1.0 * 1/1, 2.0 * 1/2, 1.2 * 1/1.2 -> all 1.0
    assert reps.estimate(Estimator.PROBE_NORMALISED) == pytest.approx(1.0)


def test_whole_run_shift_is_detected_from_the_probe_not_the_spread() -> None:
    reps = three_runs(probe_s=(1e-3, 2e-3, 1.05e-3))
    slow = reps.runs[1]
    assert not slow.noisy  # IQR 0.02 on a median of 2.0: 1%, the within-run check sees nothing
    assert reps.drift == pytest.approx((0.0, 1.0, 0.05))  # 2/1 - 1 = 100%; 1.05/1 - 1 = 5%
    assert reps.shifted == (False, True, False)  # 5% is within DRIFT_THRESHOLD, 100% is not
    assert DRIFT_THRESHOLD < 1.0


def test_given_reference_overrides_the_fastest_probe() -> None:
    reps = Repeats((Measurement((1.0,)), Measurement((1.0,))), probe_s=(1.5e-3, 1.5e-3),
                   reference_s=1e-3)
    assert reps.drift == pytest.approx((0.5, 0.5))  # 1.5/1 - 1
    assert reps.shifted == (True, True)


def test_run_reference_is_the_runs_quiet_level_not_one_lucky_probe() -> None:
    # 8 probes, one lucky 0.5 ms reading among 1.0-1.3 ms: sorted 0.5 1.0 1.0 1.05 1.05 1.2 1.2 1.3,
    # 25th percentile at index 0.25 * 7 = 1.75, between two 1.0 ms readings -> 1.0 ms
    probes = (1.0e-3, 1.05e-3, 0.5e-3, 1.2e-3, 1.0e-3, 1.3e-3, 1.05e-3, 1.2e-3)
    assert len(probes) == MIN_RUN_PROBES
    assert run_reference(probes) == pytest.approx(1.0e-3)
    # against the lucky minimum every other probe would be 100%+ slower; against the quiet level
    # only the 1.3 ms one (30%) and the 1.2 ms ones (20%) drift beyond 10%, not 1.05 (5%)
    reps = Repeats(tuple(Measurement((1.0,)) for _ in probes), probe_s=probes)
    assert sum(reps.shifted) == 3
    assert run_reference(probes[:3]) == 0.5e-3  # fewer than MIN_RUN_PROBES: the fastest
    assert run_reference(()) is None and run_reference((math.nan, 0.0)) is None
    # a whole run's quiet level set against the best on record: 1.0 / 0.5 - 1 = 100% > 50%
    assert probe_drift(run_reference(probes) or 0.0, 0.5e-3) > SHIFT_THRESHOLD > DRIFT_THRESHOLD


def test_unprobed_repeats_are_never_shifted() -> None:
    reps = three_runs()
    assert reps.drift == () and reps.shifted == (False, False, False) and reps.reference is None


def test_repeats_validation() -> None:
    with pytest.raises(ValueError):
        Repeats(())
    with pytest.raises(ValueError):
        Repeats((Measurement((1.0,)),), probe_s=(1.0, 2.0))


def test_probe_drift_arithmetic() -> None:
    assert probe_drift(1.25e-3, 1e-3) == pytest.approx(0.25)
    assert math.isnan(probe_drift(1e-3, None))
    assert math.isnan(probe_drift(1e-3, 0.0))


def test_estimate_from_stored_samples() -> None:
    stored = [(3.0, 3.2), (1.0, 1.2, 0.8), (2.0,)]  # repeat medians 3.1, 1.0, 2.0
    assert estimate(stored, Estimator.MEDIAN) == 2.0
    assert estimate(stored, Estimator.MIN_OF_MEDIANS) == 1.0
    # pooled, sorted: 0.8 1.0 1.2 2.0 3.0 3.2; 25th percentile at index 0.25 * 5 = 1.25:
    # 1.0 + 0.25 * (1.2 - 1.0) = 1.05
    assert estimate(stored, Estimator.LOWER_QUARTILE) == pytest.approx(1.05)
    assert math.isnan(estimate([]))
    with pytest.raises(ValueError, match="needs the probe times or CPU times"):
        estimate(stored, Estimator.PROBE_NORMALISED)


@pytest.mark.parametrize("estimator", [Estimator.MEDIAN, Estimator.MIN_OF_MEDIANS,
                                       Estimator.LOWER_QUARTILE])
def test_bootstrap_replicates_are_the_estimator_on_each_draw_of_repeats(estimator) -> None:
    rng = np.random.default_rng(1)
    stored = [tuple(1 + rng.exponential(size=k)) for k in (7, 3, 12, 5)]  # unequal repeats
    got = bootstrap_estimates(stored, estimator, rng=np.random.default_rng(5), resamples=200)
    picks = np.random.default_rng(5).integers(0, 4, size=(200, 4))  # the same draws, by hand
    want = [estimate([stored[i] for i in row], estimator) for row in picks]
    assert got.shape == (200,) and np.allclose(got, want)


def test_bootstrap_of_one_repeat_has_no_spread() -> None:
    reps = bootstrap_estimates([(1.0, 2.0, 3.0)], rng=np.random.default_rng(0), resamples=5)
    assert np.allclose(reps, 1.5)  # every draw is the one repeat: 1.0 + 0.25 * 2 * (2.0 - 1.0)


def test_kept_leaves_out_shifted_repeats_unless_all_are() -> None:
    reps = three_runs(probe_s=(1e-3, 2e-3, 1.05e-3))  # the middle repeat drifted 100%
    assert reps.kept.medians == (1.0, 1.2) and reps.kept.reference == 1e-3
    every = Repeats((Measurement((1.0,)), Measurement((2.0,))), probe_s=(1.5e-3, 1.5e-3),
                    reference_s=1e-3)
    assert every.kept.medians == (1.0, 2.0)  # all shifted: all kept


def test_study_estimator_is_a_lower_quantile_of_the_samples() -> None:
    # interference only adds time: slowing half of the steps by 10x leaves the estimate on the
    # undisturbed ones (1.0), where the mean and the median (1.0 and 10.0 averaged) move
    quiet, busy = (1.0,) * 10, (10.0,) * 10
    assert STUDY_ESTIMATOR is Estimator.LOWER_QUARTILE
    assert estimate([quiet, busy]) == 1.0
    assert estimate([quiet, busy], Estimator.MEDIAN) == 5.5  # (1 + 10) / 2


def test_min_of_medians_is_steadier_than_the_median_under_one_sided_interference() -> None:
    """Simulated sessions: a true step of 1.0 s, each repeat slowed as a whole by a busy spell
    (with probability 0.4, by 5-40%) plus 1% step noise. Interference only adds time, so the fastest
    repeat's median varies less between sessions than the median of the repeat medians."""
    rng = np.random.default_rng(0)
    medians, minima = [], []
    for _ in range(200):
        runs = []
        for _ in range(5):
            slow = 1 + (rng.uniform(0.05, 0.40) if rng.random() < 0.4 else 0.0)
            runs.append(Measurement(tuple(slow * (1 + 0.01 * rng.standard_normal(10)))))
        reps = Repeats(tuple(runs))
        medians.append(reps.estimate(Estimator.MEDIAN))
        minima.append(reps.estimate(Estimator.MIN_OF_MEDIANS))
    cv = lambda v: float(np.std(v) / np.mean(v))  # noqa: E731
    assert cv(minima) < cv(medians) / 2
    assert abs(np.mean(minima) - 1.0) < abs(np.mean(medians) - 1.0)


# -- machine load -----------------------------------------------------------------------------------
def test_machine_load_shares_from_two_snapshots() -> None:
    before = CpuTimes(total=1000, busy=300, steal=10, own=100)
    after = CpuTimes(total=1200, busy=450, steal=30, own=150)
    load = machine_load(before, after, threads=1)
    assert load.steal_share == pytest.approx(0.1)  # (30 - 10) / (1200 - 1000)
    assert load.others_share == pytest.approx(0.5)  # ((450 - 300) - (150 - 100)) / 200
    assert load.threads == 1


def test_machine_load_without_snapshots_is_unknown_not_quiet() -> None:
    load = machine_load(None, None, threads=1)
    assert load.steal_share is None and load.others_share is None and not load.busy


@pytest.mark.parametrize(("others", "steal", "threads", "busy"), [
    (0.25, 0.0, 1, False),  # 0.5 of 2 cores used by others; 1 core free: 0.5 <= 1 + 0.2
    (0.70, 0.0, 1, True),  # 1.4 cores > 1 free core + 0.2
    (0.15, 0.0, 2, True),  # 0.3 cores while both cores are timed: > 0 free + 0.1 * 2
    (0.05, 0.0, 2, False),  # 0.1 cores: <= 0 free + 0.2
    (0.0, 0.10, 1, True),  # 10% steal > STEAL_BUSY 5%
])
def test_busy_rule(others: float, steal: float, threads: int, busy: bool) -> None:
    load = MachineLoad(load_average=1.0, steal_share=steal, others_share=others, cpu_mhz=None,
                       cores=2, threads=threads)
    assert load.busy is busy
    assert bool(load.reasons) is busy


def test_cpu_times_reads_this_linux_machine() -> None:
    snap = cpu_times()
    if snap is None:
        pytest.skip("no /proc/stat here")
    assert snap.total >= snap.busy >= 0 and snap.own >= 0


def test_cpu_time_estimator() -> None:
    # wall 2.0 s per step while the process had the CPU for 0.5-0.6 s of it (a busy machine)
    runs = tuple(Measurement((2.0, 2.0), cpu_samples=(c, c)) for c in (0.5, 0.6, 0.55))
    assert runs[0].cpu_median == 0.5
    assert Repeats(runs).estimate(Estimator.CPU_TIME) == pytest.approx(0.55)  # median of 0.5 0.55 0.6
    assert three_runs().estimate(Estimator.CPU_TIME) == 1.2  # none recorded: the plain median
    assert math.isnan(Measurement((1.0,)).cpu_median)
    with pytest.raises(ValueError, match="CPU-time samples"):
        Measurement((1.0, 2.0), cpu_samples=(1.0,))
