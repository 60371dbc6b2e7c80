"""The analysis on synthetic data with known answers: a perfect line, a fixed cost plus a line, a
power law, hand-computed correlations, repeat-based intervals, epoch costs and layer-type shares."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest

from dnncost.study.analysis import analyze, analyze_points
from dnncost.study.explanation import explain, family_lines
from dnncost.study.fits import fit, layer_type_shares
from dnncost.study.points import CostMetric, NetworkPoint, TimeMetric, points_from_results
from dnncost.study.store import CountRow, NetworkResult, TimingRow, TrainingRow
from dnncost.study.verdict import Linearity, explanation_claims
from dnncost.training.records import EpochRecord, TimeToTarget, ValidationRecord

FLOPS = (1e6, 3e6, 1e7, 3e7, 1e8, 3e8)


def _points(time_of, *, noise=(1.0, 1.0, 1.02, 1.04), flops=FLOPS):
    """One network per FLOPs figure; its repeats are time_of(flops) scaled by ``noise``. The
    default's lower quartile (the study's estimator) is time_of(flops) itself: index
    0.25 * (4 - 1) = 0.75 lies between the two 1.0s."""
    return [NetworkPoint(f"n{i}", "x",
                         {TimeMetric.TRAIN_STEP: tuple(time_of(x) * k for k in noise)},
                         {TimeMetric.TRAIN_STEP: {CostMetric.FLOPS: x, CostMetric.PARAMS: x / 10}})
            for i, x in enumerate(flops)]


def test_perfect_proportional_line():
    analysis = analyze_points(_points(lambda x: x / 1e9), peak_flops_per_s=4e9)  # 1 GFLOP/s each
    f = analysis.fit(TimeMetric.TRAIN_STEP, CostMetric.FLOPS)
    assert f.n == 6
    assert f.pearson_r == pytest.approx(1.0) and f.r_squared == pytest.approx(1.0)
    assert f.spearman_rho == pytest.approx(1.0)
    assert f.loglog_slope == pytest.approx(1.0) and f.slope == pytest.approx(1e-9)
    assert f.intercept == pytest.approx(0.0, abs=1e-12)
    assert all(f.residual(n) == pytest.approx(1.0) for n in f.names)
    assert analysis.verdict.kind is Linearity.PROPORTIONAL and analysis.verdict.linear is True
    speed = analysis.efficiency[0]
    assert speed.train_gflops_per_s == pytest.approx(1.0)  # 1e6 FLOPs / 1e-3 s
    assert speed.train_share_of_peak == pytest.approx(0.25)  # 1 of 4 GFLOP/s


def test_fixed_cost_plus_line_is_affine_not_proportional():
    # 10 ms per step plus 1 ns per FLOP: the line fits exactly, the log-log slope is below 1
    analysis = analyze_points(_points(lambda x: 0.01 + x / 1e9))
    f = analysis.fit(TimeMetric.TRAIN_STEP)
    assert f.r_squared == pytest.approx(1.0)
    assert f.intercept == pytest.approx(0.01) and f.slope == pytest.approx(1e-9)
    assert f.loglog_slope < 0.9
    assert analysis.verdict.kind is Linearity.AFFINE and analysis.verdict.linear is True


def test_power_law_is_not_linear():
    # time ~ sqrt(FLOPs): the log-log slope is exactly 0.5, and no line predicts the small networks
    analysis = analyze_points(_points(lambda x: 1e-3 * math.sqrt(x)))
    f = analysis.fit(TimeMetric.TRAIN_STEP)
    assert f.loglog_slope == pytest.approx(0.5)
    low, high = f.slope_ci
    assert high < 1.0
    assert f.spearman_rho == pytest.approx(1.0)  # still perfectly ordered
    v = analysis.verdict
    assert v.kind is Linearity.NOT_LINEAR and v.linear is False
    assert "Not linear" in v.headline and "0.50" in v.text
    # speed spread: 3e8/sqrt(3e8) over 1e6/sqrt(1e6) = sqrt(300) = 17.3-fold
    assert v.numbers["flops_per_s_spread"] == pytest.approx(math.sqrt(300))


def test_hand_computed_correlation_and_line():
    # x = 1..4, y = 2, 4, 5, 4: mean x 2.5, mean y 3.75; Sxy = 3.5, Sxx = 5, Syy = 4.75
    # r = 3.5 / sqrt(5 * 4.75) = 0.71818; slope = 3.5 / 5 = 0.7; intercept = 3.75 - 0.7 * 2.5 = 2.0
    points = [NetworkPoint(f"n{x}", "x", {TimeMetric.EVAL_STEP: (y,)},
                           {TimeMetric.EVAL_STEP: {CostMetric.FLOPS: float(x)}})
              for x, y in zip((1, 2, 3, 4), (2.0, 4.0, 5.0, 4.0), strict=True)]
    f = fit(points, TimeMetric.EVAL_STEP, cost_metric=CostMetric.FLOPS)
    assert f.pearson_r == pytest.approx(3.5 / math.sqrt(5 * 4.75))
    assert f.slope == pytest.approx(0.7) and f.intercept == pytest.approx(2.0)
    assert f.r_squared == pytest.approx(3.5 ** 2 / (5 * 4.75))
    # Spearman: ranks of y are 1, 2.5, 4, 2.5 -> rho = 0.632 (Pearson of the ranks)
    assert f.spearman_rho == pytest.approx(0.6324555, rel=1e-6)
    assert f.residual("n1") == pytest.approx(2.0 / 2.7)  # predicted 0.7 * 1 + 2.0 = 2.7
    assert math.isnan(f.repeat_slope_ci[0])  # one value per network: no spread from repeats


def test_intervals_widen_with_noisier_repeats():
    quiet = fit(_points(lambda x: x / 1e9, noise=(0.99, 1.0, 1.01)), TimeMetric.TRAIN_STEP)
    noisy = fit(_points(lambda x: x / 1e9, noise=(0.5, 1.0, 1.5)), TimeMetric.TRAIN_STEP)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert quiet.repeat_slope_ci[0] <= 1.0 <= quiet.repeat_slope_ci[1]
    assert width(noisy.repeat_slope_ci) > 5 * width(quiet.repeat_slope_ci)
    lo, hi = quiet.pearson_ci
    assert lo <= quiet.pearson_r <= hi


def test_too_few_networks_gives_no_verdict():
    analysis = analyze_points(_points(lambda x: x / 1e9, flops=(1e6, 1e7)))
    assert analysis.fits == () and analysis.verdict.linear is None


def _result(name: str, flops: int, step_s: float, *, breakdown=None) -> NetworkResult:
    count = lambda mode, f: CountRow(  # noqa: E731
        mode=mode, params=100, trainable_params=100, macs=f // 2, flops=f, bytes=10 * f, op_count=20,
        activation_bytes=0, peak_bytes=0, by_layer_type={}, unsupported={})
    epochs = tuple(EpochRecord(e, 2.0 * e, 0.5, 0.0, 0.0, 1.0, 0.5, 1.0, 0.5, 64, 16, 2)
                   for e in (1, 2))
    return NetworkResult(
        name=name, family="x", config_hash="c", fingerprint="m", input_shape="3x8x8",
        batch_size=32, dataset="digits", device="cpu", threads=1, world_size=1, backend="none",
        counts={"train": count("train", 3 * flops), "eval": count("eval", flops)},
        timings=tuple(TimingRow(uid=f"{name}{i}", mode=mode, samples=(step_s,), median_s=step_s,
                                iqr_s=0.0, threads=1, peak_memory_bytes=None, world_size=1,
                                backend="none", measured="t")
                      for i, mode in enumerate(("train", "eval"))),
        trainings=(TrainingRow(uid="t-old", status="interrupted", epochs_planned=2, dataset="digits",
                               epochs=epochs[:1]),
                   TrainingRow(uid="t", status="complete", epochs_planned=2, dataset="digits",
                               epochs=epochs)),
        breakdown=breakdown or {})


def test_points_from_results_scale_epoch_costs():
    points, skipped = points_from_results([_result("a", 1000, 0.1)])
    p = points[0]
    assert skipped == {}
    assert p.cost(TimeMetric.TRAIN_STEP, CostMetric.FLOPS) == 3000
    # 64 training samples at batch 32 = 2 steps of 3000 FLOPs; 16 validation samples = half a step
    assert p.cost(TimeMetric.TRAIN_EPOCH, CostMetric.FLOPS) == 6000
    assert p.cost(TimeMetric.VAL_EPOCH, CostMetric.FLOPS) == 500
    assert p.cost(TimeMetric.TOTAL, CostMetric.FLOPS) == 2 * (6000 + 500)
    assert p.cost(TimeMetric.TOTAL, CostMetric.PARAMS) == 100  # params do not scale
    # only the complete training counts: epochs of 2 s and 4 s -> median 3 s; total 2 + 4 + 2 * 0.5
    assert p.times[TimeMetric.TRAIN_EPOCH] == (2.0, 4.0) and p.time(TimeMetric.TRAIN_EPOCH) == 3.0
    assert p.time(TimeMetric.TOTAL) == 7.0


def test_failed_network_is_left_out_with_its_reason():
    bare = NetworkResult(name="broken", family="x", config_hash="c", fingerprint="m",
                         input_shape="3x8x8", batch_size=32, dataset="digits", device="cpu",
                         threads=1, world_size=1, backend="none")
    analysis = analyze([_result("a", 1000, 0.1), _result("b", 2000, 0.2), _result("c", 4000, 0.4),
                        bare])
    assert [p.name for p in analysis.points] == ["a", "b", "c"]
    assert analysis.skipped == {"broken": "not counted"}
    assert analysis.verdict.kind is Linearity.PROPORTIONAL  # 10 kFLOP/s each: 1000 / 0.1 ...


def test_layer_type_shares_are_means_over_networks():
    a = _result("a", 1000, 0.1, breakdown={"Conv2d": (0.6, 90), "ReLU": (0.4, 10)})
    b = _result("b", 1000, 0.1, breakdown={"Conv2d": (0.2, 50), "Linear": (0.8, 50)})
    shares = {s.layer_type: s for s in layer_type_shares([a, b])}
    # Conv2d: time (0.6 + 0.2) / 2 = 0.4, FLOPs (0.9 + 0.5) / 2 = 0.7, in both networks
    assert shares["Conv2d"].time_share == pytest.approx(0.4)
    assert shares["Conv2d"].flops_share == pytest.approx(0.7) and shares["Conv2d"].networks == 2
    # ReLU only in a: time 0.4 / 2 networks = 0.2, FLOPs 0.1 / 2 = 0.05
    assert shares["ReLU"].time_share == pytest.approx(0.2)
    assert shares["ReLU"].flops_share == pytest.approx(0.05)
    assert sum(s.time_share for s in shares.values()) == pytest.approx(1.0)


# -- several measures together (issue 13) -------------------------------------------------------------
def _measured(time_of, n=12, seed=3):
    """n networks with independent FLOPs, bytes, operator calls and params; time = time_of(costs)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    points = []
    for i in range(n):
        costs = {CostMetric.FLOPS: 10 ** rng.uniform(6, 9), CostMetric.BYTES: 10 ** rng.uniform(6, 9),
                 CostMetric.OPS: rng.uniform(50, 500), CostMetric.PARAMS: 10 ** rng.uniform(4, 7)}
        t = time_of(costs)
        points.append(NetworkPoint(f"n{i}", "abc"[i % 3], {TimeMetric.TRAIN_STEP: (t, t, t)},
                                   {TimeMetric.TRAIN_STEP: costs}))
    return points


def test_explain_exact_two_measure_time_is_recovered():
    # time = 2e-10 s/FLOP + 5e-10 s/byte, exactly: the joint fit recovers both rates, predicts
    # every held-out network (CV R^2 = 1) and gives operator calls and parameters no share.
    points = _measured(lambda c: 2e-10 * c[CostMetric.FLOPS] + 5e-10 * c[CostMetric.BYTES])
    e = explain(points, bootstrap=200)
    joint = e.joint
    assert joint.cv_r_squared == pytest.approx(1.0, abs=1e-9)
    assert joint.coefficients[CostMetric.FLOPS] == pytest.approx(2e-10, rel=1e-6)
    assert joint.coefficients[CostMetric.BYTES] == pytest.approx(5e-10, rel=1e-6)
    assert joint.intercept_s == pytest.approx(0.0, abs=1e-9)
    shares = {s.measure: s for s in e.shares}
    assert sum(s.share for s in e.shares) == pytest.approx(joint.r_squared)  # Shapley: efficiency
    assert shares[CostMetric.OPS].share < 0.02 and shares[CostMetric.PARAMS].share < 0.02
    assert shares[CostMetric.OPS].unique == pytest.approx(0.0, abs=1e-9)
    # the shares follow each term's variance: var(5e-10 bytes) vs var(2e-10 FLOPs) on this draw
    import numpy as np

    f = np.array([p.cost(TimeMetric.TRAIN_STEP, CostMetric.FLOPS) for p in points]) * 2e-10
    b = np.array([p.cost(TimeMetric.TRAIN_STEP, CostMetric.BYTES) for p in points]) * 5e-10
    bigger = CostMetric.BYTES if b.var() > f.var() else CostMetric.FLOPS
    assert shares[bigger].share > 0.5
    assert e.single(CostMetric.OPS).cv_r_squared < 0.2  # unrelated to time
    assert any("cross-validated R²" in c for c in explanation_claims(e))


def test_explain_one_measure_with_fixed_cost():
    # time = 3 ms + FLOPs / 1 GFLOP/s: FLOPs alone has CV R^2 1 and the intercept is the fixed
    # cost. Shapley shares split what correlated measures explain together, so a measure that
    # happens to correlate with FLOPs on this draw gets a little; none adds anything unique.
    points = _measured(lambda c: 3e-3 + c[CostMetric.FLOPS] / 1e9)
    e = explain(points, bootstrap=200)
    flops = e.single(CostMetric.FLOPS)
    assert flops.cv_r_squared == pytest.approx(1.0, abs=1e-9)
    assert flops.intercept_s == pytest.approx(3e-3, rel=1e-6)
    assert flops.worst_error == pytest.approx(0.0, abs=1e-9)
    shares = {s.measure: s for s in e.shares}
    assert shares[CostMetric.FLOPS].share > 0.9
    assert sum(s.share for s in e.shares) == pytest.approx(1.0)
    assert all(shares[m].unique == pytest.approx(0.0, abs=1e-9)
               for m in (CostMetric.BYTES, CostMetric.OPS, CostMetric.PARAMS))
    assert "FLOPs predict training step time best" in " ".join(explanation_claims(e))


def test_explain_needs_more_networks_than_coefficients():
    points = _measured(lambda c: c[CostMetric.FLOPS] / 1e9, n=5)  # 4 measures + intercept + 1 = 6
    assert explain(points) is None


def test_family_lines_within_family_exponent():
    # family a: time = FLOPs^1 / 1e9 (3 networks); family b: time ~ FLOPs^0.5 (2 networks)
    pts = [NetworkPoint(f"a{i}", "a", {TimeMetric.TRAIN_STEP: (x / 1e9,) * 2},
                        {TimeMetric.TRAIN_STEP: {CostMetric.FLOPS: x}})
           for i, x in enumerate((1e6, 1e7, 1e8))]
    pts += [NetworkPoint(f"b{i}", "b", {TimeMetric.TRAIN_STEP: (math.sqrt(x) / 1e5,) * 2},
                         {TimeMetric.TRAIN_STEP: {CostMetric.FLOPS: x}})
            for i, x in enumerate((1e6, 1e8))]
    lines = {f.family: f for f in family_lines(pts)}
    assert lines["a"].loglog_slope == pytest.approx(1.0)
    assert lines["a"].flops_ratio == pytest.approx(100.0) and lines["a"].time_ratio == pytest.approx(100.0)
    assert lines["b"].loglog_slope == pytest.approx(0.5)
    assert lines["b"].time_ratio == pytest.approx(10.0)  # sqrt(100)
    assert math.isnan(lines["b"].slope_ci[0])  # two networks: no regression interval


def test_family_lines_give_no_exponent_for_variants_of_nearly_equal_flops():
    # 4% apart in FLOPs, 1.5x apart in time: log(1.5) / log(1.04) = 10.3 would be noise, not a law
    pts = [NetworkPoint(f"s{i}", "s", {TimeMetric.TRAIN_STEP: (t,) * 2},
                        {TimeMetric.TRAIN_STEP: {CostMetric.FLOPS: x}})
           for i, (x, t) in enumerate(((1e9, 0.2), (1.04e9, 0.3)))]
    (line,) = family_lines(pts)
    assert math.isnan(line.loglog_slope) and math.isnan(line.repeat_slope_ci[0])
    assert line.flops_ratio == pytest.approx(1.04) and line.time_ratio == pytest.approx(1.5)


def test_step_times_and_their_bootstrap_use_the_study_estimator():
    # every repeat: 2 of its 5 steps at the network's own time t, the others slowed; the pooled
    # lower quartile of any draw of k repeats is t (index (5k - 1) / 4 < 2k, the count of t's),
    # while the repeats' medians (2t and 7t) disagree: no spread over repeats by the estimator
    repeats = ((1, 1, 2, 5, 9), (1, 1, 7, 9, 20))
    points = [NetworkPoint(f"n{i}", "x", {TimeMetric.TRAIN_STEP: (2 * x / 1e9, 7 * x / 1e9)},
                           {TimeMetric.TRAIN_STEP: {CostMetric.FLOPS: x}},
                           samples={TimeMetric.TRAIN_STEP: tuple(tuple(v * x / 1e9 for v in r)
                                                                 for r in repeats)})
              for i, x in enumerate(FLOPS)]
    assert points[0].time(TimeMetric.TRAIN_STEP) == pytest.approx(1e6 / 1e9)  # t, not 2t or 4.5t
    f = fit(points, TimeMetric.TRAIN_STEP)
    assert f.loglog_slope == pytest.approx(1.0)
    assert f.repeat_slope_ci == pytest.approx((1.0, 1.0))
    assert points[0].interval(TimeMetric.TRAIN_STEP) == pytest.approx((1e-3, 1e-3))


def test_repeats_whose_probe_drifted_are_left_out_of_the_estimate():
    from dnncost.study.store import RepeatConditions

    def rows(probes):
        return tuple(TimingRow(uid=f"r{i}", mode="train", samples=(s, s), median_s=s, iqr_s=0.0,
                               threads=1, peak_memory_bytes=None, world_size=1, backend="none",
                               measured="t", conditions=RepeatConditions(
                                   probe_before_s=p, probe_after_s=p,
                                   probe_reference_s=None if p is None else 1e-3))
                     for i, (s, p) in enumerate(zip((1.0, 5.0, 1.2), probes, strict=True)))

    base = _result("a", 1000, 0.1)
    # the second repeat ran while the probe took 3 ms against 1 ms: 200% > DRIFT_THRESHOLD
    probed = points_from_results([replace(base, timings=rows((1e-3, 3e-3, 1e-3)))])[0][0]
    assert probed.times[TimeMetric.TRAIN_STEP] == (1.0, 1.2)
    assert probed.time(TimeMetric.TRAIN_STEP) == 1.0  # pooled 1 1 1.2 1.2: index 0.75 -> 1.0
    # stored before probes were (no probe): every repeat is kept
    old = points_from_results([replace(base, timings=rows((None, None, None)))])[0][0]
    assert old.times[TimeMetric.TRAIN_STEP] == (1.0, 5.0, 1.2)


# -- time-to-accuracy ------------------------------------------------------------------------------------
def _target(steps: int, total_s: float, *, reached: bool = True) -> TimeToTarget:
    # training 3/4 of the time, validation 1/4 (exact in binary: the sum is total_s)
    return TimeToTarget(target_accuracy=0.9, reached=reached, max_epochs=3, validations_per_epoch=2,
                        validations=4, epochs=steps / 45, steps=steps, samples=32 * steps,
                        train_time_s=0.75 * total_s, val_time_s=0.25 * total_s, train_data_time_s=0.0,
                        val_data_time_s=0.0, val_loss=0.3, val_accuracy=0.92 if reached else 0.5,
                        best_val_accuracy=0.92 if reached else 0.5)


def _trained(name: str, flops: int, step_s: float, runs: list[tuple[int, TimeToTarget]]) -> NetworkResult:
    """_result's network with one complete training run to a target per (seed, time to target)."""
    base = _result(name, flops, step_s)
    epoch = EpochRecord(1, 2.0, 0.5, 0.0, 0.0, 1.0, 0.5, 1.0, 0.5, 64, 16, 2)
    return replace(base, trainings=tuple(
        TrainingRow(uid=f"{name}-{seed}", status="complete", epochs_planned=3, dataset="digits",
                    epochs=(epoch,), seed=seed, time_to_target=t) for seed, t in runs))


def test_time_to_target_is_set_against_the_flops_to_it_and_per_step():
    # a: 3000 FLOPs a step (3 x 1000), 90 steps to the target in 10 s; two seeds for b
    a = _trained("a", 1000, 0.1, [(0, _target(90, 10.0))])
    b = _trained("b", 2000, 0.2, [(0, _target(45, 12.0)), (1, _target(55, 16.0))])
    missed = _trained("c", 4000, 0.4, [(0, _target(135, 30.0, reached=False))])
    (pa, pb, pc), _ = points_from_results([a, b, missed])
    assert pa.cost(TimeMetric.TIME_TO_TARGET, CostMetric.FLOPS) == 3000 * 90  # FLOPs to the target
    assert pa.cost(TimeMetric.TIME_TO_TARGET, CostMetric.STEP_FLOPS) == 3000
    assert pa.cost(TimeMetric.TIME_TO_TARGET, CostMetric.PARAMS) == 100  # not multiplied
    assert pa.time(TimeMetric.TIME_TO_TARGET) == 10.0 and pa.time_to_target.steps == 90
    # two seeds: the median of 12 and 16 s; FLOPs to the target at the median steps, 50
    assert pb.times[TimeMetric.TIME_TO_TARGET] == (12.0, 16.0) and pb.time(TimeMetric.TIME_TO_TARGET) == 14.0
    assert pb.cost(TimeMetric.TIME_TO_TARGET, CostMetric.FLOPS) == 6000 * 50
    assert pb.time_to_target.steps == 45  # seed 0's run is the study's
    # not reached within the cap: no time to the target, the run kept for the table
    assert TimeMetric.TIME_TO_TARGET not in pc.times and not pc.time_to_target.reached
    assert TimeMetric.TOTAL not in pa.times  # a run to a target: its whole run is its time to it
    assert TimeMetric.TIME_TO_TARGET.work_label(CostMetric.FLOPS) == "FLOPs to the target"
    assert TimeMetric.TIME_TO_TARGET.work_label(CostMetric.STEP_FLOPS) == "FLOPs per step"


def test_partial_epochs_are_scaled_to_the_whole_training_set():
    # 1000 training images; epoch 1 whole (10 s, 2 validation passes in 1 s), epoch 2 stopped at
    # its target after a quarter (250 images in 2.5 s, 1 pass in 0.5 s)
    validations = tuple(ValidationRecord(i, e, x, 0, int(1000 * x), 0.0, 0.0, 0.0, 0.0, 1.0, 0.5)
                        for i, (e, x) in enumerate(((1, 0.5), (1, 1.0), (2, 1.25)), start=1))
    run = TrainingRow(uid="t", status="complete", epochs_planned=3, dataset="digits",
                      epochs=(EpochRecord(1, 10.0, 1.0, 0, 0, 1, 0.5, 1, 0.5, 1000, 200, 32),
                              EpochRecord(2, 2.5, 0.5, 0, 0, 1, 0.5, 1, 0.92, 250, 100, 8)),
                      validations=validations, time_to_target=_target(40, 14.0))
    (p,), _ = points_from_results([replace(_result("a", 1000, 0.1), trainings=(run,))])
    assert p.times[TimeMetric.TRAIN_EPOCH] == (10.0, 10.0)  # 2.5 s x 1000 / 250
    assert p.times[TimeMetric.VAL_EPOCH] == (0.5, 0.5)  # 1 s / 2 passes; 0.5 s / 1 pass
    assert p.cost(TimeMetric.TRAIN_EPOCH, CostMetric.FLOPS) == 3000 * 1000 / 32
    assert p.cost(TimeMetric.VAL_EPOCH, CostMetric.FLOPS) == 1000 * 100 / 32  # one pass: 100 images
    assert p.val_accuracy == 0.92


def _tta_points(times, per_step):
    return [NetworkPoint(f"n{i}", "x", {TimeMetric.TIME_TO_TARGET: (t,), TimeMetric.TRAIN_STEP: (s / 1e9,)},
                         {TimeMetric.TIME_TO_TARGET: {CostMetric.STEP_FLOPS: s, CostMetric.FLOPS: s * 10},
                          TimeMetric.TRAIN_STEP: {CostMetric.FLOPS: s}},
                         targets=((0, _target(10, t)),))
            for i, (t, s) in enumerate(zip(times, per_step, strict=True), start=1)]


def test_the_ranking_by_time_to_accuracy_is_set_against_flops_and_step_time():
    from dnncost.study.time_to_accuracy import Swap, rankings
    from dnncost.study.verdict import ranking_claims

    # by time n1 < n2 < n3 < n4; by FLOPs per step n1 < n3 < n2 < n4: the pair (n2, n3) swaps.
    # Kendall: 5 concordant, 1 discordant of 6 pairs: (5 - 1) / 6; Spearman: d = 0, 1, 1, 0,
    # rho = 1 - 6 x 2 / (4 x 15) = 0.8
    per_flops, by_step, to_target = rankings(_tta_points((1.0, 2.0, 3.0, 4.0), (1e6, 3e6, 2e6, 4e6)))
    assert per_flops.kendall_tau == pytest.approx(4 / 6) and per_flops.spearman_rho == pytest.approx(0.8)
    assert per_flops.swaps == (Swap("n2", "n3", 1.5, 1.5),)  # 3 s / 2 s; 3e6 / 2e6
    assert by_step.swaps == per_flops.swaps  # the step time follows the FLOPs here
    assert to_target.pairs == 6 and not to_target.same
    claims = ranking_claims((per_flops, by_step, to_target))
    assert claims[0].startswith("Ranked by time-to-accuracy, the 4 networks that reached the target "
                                "come in a different order from their ranking by FLOPs per step")
    assert "1 of 6 pairs swap: n2 reaches the target 1.5× sooner than n3 but has 1.5× its FLOPs per " \
           "step." in claims[1]
    same = rankings(_tta_points((1.0, 2.0, 3.0, 4.0), (1e6, 2e6, 3e6, 4e6)))
    assert all(a.same and a.kendall_tau == pytest.approx(1.0) for a in same)
    assert "the same order as by FLOPs per step" in ranking_claims(same)[0]


def test_the_verdicts_of_time_to_accuracy_name_the_work_they_set_it_against():
    points = _tta_points((1.0, 2.0, 3.0, 4.0), (1e6, 3e6, 2e6, 4e6))
    analysis = analyze_points(points)
    tta = analysis.time_to_accuracy
    assert [r.name for r in tta.rows] == ["n1", "n2", "n3", "n4"]  # fastest to the target first
    assert tta.rows[1].flops_to_target == 3e6 * 10  # FLOPs per step x the 10 steps of _target
    assert "FLOPs to the target" in tta.to_target.headline
    assert "Achieved speed" in tta.to_target.text  # FLOPs to the target / time is a speed
    assert "time per unit of FLOPs per step differs" in tta.per_step.text  # FLOPs per step is not
    assert "(FLOPs per step)^" in tta.per_step.text and tta.spreads == () and tta.seed_ranking is None


def test_the_seeds_spread_is_stated_when_trained_from_several():
    from dnncost.study.time_to_accuracy import seed_spread
    from dnncost.study.verdict import seed_claims

    def net(name: str, times: tuple[float, ...], steps: tuple[int, ...]) -> NetworkPoint:
        return NetworkPoint(name, "x", {TimeMetric.TIME_TO_TARGET: times}, {},
                            targets=tuple((seed, replace(_target(n, t), steps=n))
                                          for seed, (t, n) in enumerate(zip(times, steps, strict=True))))

    spreads, order = seed_spread([net("a", (10.0, 12.0, 14.0), (100, 110, 120)),
                                  net("b", (20.0, 19.0, 30.0), (90, 90, 90)), net("c", (5.0,), (9,))])
    a, b = spreads  # c was trained from one seed
    assert (a.median_s, a.min_s, a.max_s) == (12.0, 10.0, 14.0)
    assert a.cv_time == pytest.approx(2.0 / 12.0)  # sample std 2 over mean 12
    assert a.cv_steps == pytest.approx(10.0 / 110.0) and b.cv_steps == 0.0
    # a is faster than b from every seed: the same ranking, tau 1 against the medians'
    assert order is not None and order.stable and order.taus == pytest.approx((1.0, 1.0, 1.0))
    text = " ".join(seed_claims(spreads, order))
    assert "Trained from 3 seeds" in text and "the same from every seed" in text
    assert seed_claims((), None) == ()
