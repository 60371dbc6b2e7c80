"""dnncost.prediction.evaluation: the metrics on hand-made vectors, the leave-one-family-out protocol on
synthetic networks with a known answer, the baselines, the figure and the CLI's errors."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from dnncost.cli import main
from dnncost.core.errors import ModelNotFoundError
from dnncost.counting.cost import Cost, CostReport, OpRecord, Phase
from dnncost.counting.formulas import OpKind
from dnncost.prediction.evaluation import (
    Method,
    Metrics,
    Observation,
    evaluate,
    mape,
    pairwise_accuracy,
    roofline_seconds,
    share_within,
    spearman,
)
from dnncost.prediction.kernels import STEP_FEATURES
from dnncost.prediction.model import KindRegressor, OperatorModel
from dnncost.prediction.predict import predict_report
from dnncost.reporting.plots import predicted_vs_measured
from dnncost.study.store import NetworkRow, TimingRow


# -- metrics on hand-made vectors ---------------------------------------------------------------------
def test_mape_is_the_mean_relative_error() -> None:
    # |110-100|/100 = 0.1, |90-100|/100 = 0.1, 0 -> mean 0.2 / 3
    assert mape([110, 90, 100], [100, 100, 100]) == pytest.approx(0.2 / 3)
    assert mape([3.0], [2.0]) == pytest.approx(0.5)


def test_share_within_counts_the_edge_as_inside() -> None:
    # 110 is exactly +10% (inside), 120 is +20% (outside), 95 is -5% (inside) -> 2 of 3
    assert share_within([110, 120, 95], [100, 100, 100]) == pytest.approx(2 / 3)
    assert share_within([80, 100], [100, 100], tolerance=0.25) == 1.0


def test_spearman_matches_the_rank_formula() -> None:
    # ranks of measured [1, 3, 2, 4] against predicted [1, 2, 3, 4]: d = (0, 1, 1, 0),
    # rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([4, 3, 2, 1], [1, 2, 3, 4]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2], [1, 2]))  # too few points


def test_pairwise_accuracy_counts_pairs_in_the_measured_order() -> None:
    # pairs (0,1) and (0,2) are ordered right, (1,2) wrong -> 2 of 3
    assert pairwise_accuracy([1, 2, 3], [1, 3, 2]) == pytest.approx(2 / 3)
    # a tied prediction counts half: (0,1) tie 0.5, (0,2) right, (1,2) right -> 2.5 / 3
    assert pairwise_accuracy([1, 1, 3], [1, 2, 3]) == pytest.approx(2.5 / 3)
    # pairs with equal measured times are skipped: only (0,2) and (1,2) count, both right
    assert pairwise_accuracy([1, 2, 3], [1, 1, 3]) == 1.0


def test_metrics_refuse_mismatched_or_non_positive_vectors() -> None:
    with pytest.raises(ValueError):
        mape([1, 2], [1])
    with pytest.raises(ValueError):
        mape([1], [0])


# -- the protocol on synthetic networks ---------------------------------------------------------------
# 1 GFLOP/s for a matmul, nothing else: seconds = 0 + 1e-9 * FLOPs + 0 * bytes, no step overhead
MODEL = OperatorModel(kinds={OpKind.MATMUL: KindRegressor((0.0, 1e-9, 0.0))},
                      fallback=KindRegressor((0.0, 0.0, 0.0)), step_weights=(0.0,) * len(STEP_FEATURES))


def _report(name: str, flops: int, *, params: int = 1000, nbytes: int = 0, mode: str = "train") -> CostReport:
    records = (OpRecord("aten.mm", Phase.BACKWARD, "fc", "Linear", Cost(flops // 2, flops, nbytes, 0),
                        ((4, 4), (4, 4))),)  # a backward call: no autograd overhead in any mode
    return CostReport(model=name, mode=mode, input_shape=(4,), batch_size=1, records=records,
                      params=params, trainable_params=params, param_bytes=4 * params,
                      activation_bytes=0, peak_bytes=0)


def network(name: str, family: str, flops: int, seconds: float, *, params: int = 1000,
            mode: str = "train", roofline_s: float | None = None, model: bool = True) -> Observation:
    """One network's numbers; its per-kernel prediction is MODEL's (FLOPs / 1 GFLOP/s)."""
    per_operator = predict_report(_report(name, flops, params=params, mode=mode), MODEL).step_s
    return Observation(name, family, mode, seconds, flops=flops, params=params,
                       per_operator_s=per_operator if model else None, roofline_s=roofline_s)


def test_a_perfect_per_operator_model_scores_zero_error_and_perfect_order() -> None:
    # MODEL runs at 1 GFLOP/s and every network's measured time is exactly its FLOPs / 1e9
    nets = [network(f"n{i}", f"f{i % 3}", flops=(i + 1) * 10**8, seconds=(i + 1) * 0.1) for i in range(6)]
    result = evaluate(nets)
    m = result.metrics(Method.PER_OPERATOR, "train")
    assert (m.n, m.mape, m.within, m.spearman, m.pairwise) == (6, pytest.approx(0), 1.0,
                                                               pytest.approx(1.0), 1.0)


def test_the_flops_line_of_a_held_out_family_is_fitted_on_the_other_families_only() -> None:
    # families a and b lie on time = FLOPs / 1e9 exactly; family c takes 3x as long. Held out, c is
    # predicted from the line through a and b: 1e9 FLOPs -> 1.0 s against 3.0 s measured: -66.7%.
    # (Fitted with c included, the line would predict more than 1.0 s.)
    nets = [network("a1", "a", 10**8, 0.1), network("a2", "a", 4 * 10**8, 0.4),
            network("b1", "b", 2 * 10**8, 0.2), network("b2", "b", 8 * 10**8, 0.8),
            network("c1", "c", 10**9, 3.0)]
    result = evaluate(nets)
    c1 = next(p for p in result.points if p.name == "c1")
    assert c1.predicted_s[Method.FLOPS_LINE] == pytest.approx(1.0)
    assert c1.error(Method.FLOPS_LINE) == pytest.approx(-2 / 3)
    # the per-operator model never sees a network: 1e9 FLOPs at 1 GFLOP/s = 1.0 s as well
    assert c1.predicted_s[Method.PER_OPERATOR] == pytest.approx(1.0)


def test_the_network_level_scale_comes_from_the_other_families() -> None:
    # every network is measured at 2x the model's prediction except family c (4x): held out, c
    # gets the scale of a and b, 2x, so its scaled prediction is half its measured time
    nets = [network("a1", "a", 10**8, 0.2), network("b1", "b", 10**8, 0.2),
            network("c1", "c", 10**8, 0.4)]
    result = evaluate(nets)
    c1 = next(p for p in result.points if p.name == "c1")
    assert c1.predicted_s[Method.PER_OPERATOR_SCALED] == pytest.approx(0.2)
    a1 = next(p for p in result.points if p.name == "a1")
    # a's scale is the geometric mean of b (2x) and c (4x): sqrt(8) = 2.828...
    assert a1.predicted_s[Method.PER_OPERATOR_SCALED] == pytest.approx(0.1 * math.sqrt(8))


def test_the_params_line_uses_parameters() -> None:
    # a and b: time = params * 1e-6 + 0.1; held-out c with 5e5 params -> 0.6 s
    nets = [network("a1", "a", 1, 0.2, params=10**5), network("a2", "a", 1, 0.3, params=2 * 10**5),
            network("b1", "b", 1, 0.5, params=4 * 10**5), network("c1", "c", 1, 0.9, params=5 * 10**5)]
    c1 = next(p for p in evaluate(nets).points if p.name == "c1")
    assert c1.predicted_s[Method.PARAMS_LINE] == pytest.approx(0.6)


def test_plain_roofline_sums_the_slower_side_of_each_call() -> None:
    report = _report("n", 2 * 10**9, nbytes=10**9)
    # max(2e9 / 1e10, 1e9 / 5e9) = max(0.2, 0.2) = 0.2 s
    assert roofline_seconds(report, peak_flops_per_s=1e10, bytes_per_s=5e9) == pytest.approx(0.2)
    # max(2e9 / 1e10, 1e9 / 1e9) = 1.0 s: memory-bound
    assert roofline_seconds(report, peak_flops_per_s=1e10, bytes_per_s=1e9) == pytest.approx(1.0)
    result = evaluate([network("n", "f", 2 * 10**9, 1.0, roofline_s=1.0),
                       network("m", "g", 10**9, 1.0, roofline_s=0.5),
                       network("k", "h", 10**9, 1.0, roofline_s=0.5)])
    assert result.points[0].predicted_s[Method.ROOFLINE] == pytest.approx(1.0)
    # one network without the roofline's prediction: the method is left out, with a note
    partial = evaluate([network("n", "f", 2 * 10**9, 1.0, roofline_s=1.0), network("m", "g", 10**9, 1.0)])
    assert Method.ROOFLINE not in partial.methods and "roofline" in partial.notes


def test_missing_inputs_leave_methods_out_with_a_note() -> None:
    nets = [network("a1", "a", 10**8, 0.1), network("b1", "b", 2 * 10**8, 0.2),
            network("c1", "c", 3 * 10**8, 0.3)]
    nets = [network(o.name, o.family, int(o.flops), o.measured_s, model=False) for o in nets]
    result = evaluate(nets)
    assert Method.PER_OPERATOR not in result.methods and Method.ROOFLINE not in result.methods
    assert "per_operator" in result.notes and "roofline" in result.notes
    assert {r["method"] for r in result.table_rows()} == {"flops_line", "params_line"}


def test_table_rows_compare_each_method_with_the_per_operator_error() -> None:
    nets = [network("a1", "a", 10**8, 0.1), network("b1", "b", 2 * 10**8, 0.2),
            network("c1", "c", 3 * 10**8, 0.6)]
    rows = {r["method"]: r for r in evaluate(nets).table_rows()}
    per_op = rows["per_operator"]
    # errors 0, 0, -50% -> MAPE 16.67%, 2 of 3 within 10%
    assert per_op["mape_pct"] == pytest.approx(50 / 3)
    assert per_op["within_10pct"] == pytest.approx(200 / 3)
    assert per_op["x_per_op_error"] == pytest.approx(1.0)


def test_the_figure_has_one_panel_per_mode() -> None:
    nets = [network(f"n{i}", f"f{i % 3}", (i + 1) * 10**8, (i + 1) * 0.1, mode=mode)
            for mode in ("train", "eval") for i in range(4)]
    fig = predicted_vs_measured(evaluate(nets))
    assert len(fig.axes) == 2
    assert fig.axes[0].get_xscale() == "log"


def test_evaluate_cli_without_a_database_says_so(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert "dnncost study" in capsys.readouterr().err


def test_evaluate_cli_reads_the_study_store_and_holds_each_family_out(
        tmp_path: Path, monkeypatch, capsys) -> None:
    import json

    import torch

    from dnncost.core.environment import current_environment, machine_fingerprint
    from dnncost.measuring.calibrate import Bandwidth, Calibration, MatmulPeak, save_calibration
    from dnncost.measuring.measurement import Measurement
    from dnncost.prediction.storage import save_operator_model
    from dnncost.study.store import open_store

    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    fingerprint = machine_fingerprint("cpu", threads=threads)
    save_calibration(Calibration(
        fingerprint=fingerprint, device="cpu", threads=threads, created="test", environment={},
        matmul={"float32": MatmulPeak("float32", 64, 1e11, Measurement((1.0,)))},
        bandwidth=Bandwidth(2**20, 1e10, Measurement((1.0,)))))
    save_operator_model(OperatorModel({k: KindRegressor((1e-5, 1e-10, 1e-10)) for k in OpKind},
                                      KindRegressor((1e-5, 1e-10, 1e-10)),
                                      (1e-4, 1e-5) + (0.0,) * (len(STEP_FEATURES) - 2),
                                      fingerprint=fingerprint, threads=threads))
    db = tmp_path / "study.sqlite"
    with open_store(db) as store:
        store.put_environment(fingerprint, current_environment("cpu", threads=threads).to_dict(),
                              peak_flops_per_s=1e11, bandwidth_bytes_per_s=1e10, calibration="test")
        run = store.start_run(command="test", config={}, config_hash="cfg", fingerprint=fingerprint)
        for name, family, train_s in (("lenet5", "lenet", 0.004), ("resnet20", "resnet", 0.07),
                                      ("alexnet_cifar", "alexnet", 0.05)):
            nid = store.network_id(NetworkRow(
                name=name, family=family, config_hash="cfg", fingerprint=fingerprint,
                config={"batch_size": 4}, input_shape="1x32x32" if name == "lenet5" else "3x32x32",
                batch_size=4, dataset="digits", device="cpu", threads=threads))
            for mode, seconds in (("train", train_s), ("eval", train_s / 3)):
                for repeat in (1.0, 1.1, 0.9):  # three repeats of one timed step each
                    store.add_timing(nid, run, TimingRow(
                        mode=mode, samples=[seconds * repeat], median_s=seconds * repeat, iqr_s=0.0,
                        threads=threads, peak_memory_bytes=None))
    assert main(["evaluate", "--db", str(db), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["network"] for r in out["networks"]} == {"lenet5", "resnet20", "alexnet_cifar"}
    measured = {(r["network"], r["step"]): r["measured_ms"] for r in out["networks"]}
    # the study's figure, not the median (70 ms): the lower quartile of the timed steps 63, 70, 77 ms,
    # linearly interpolated at position 0.25 * (3 - 1) = 0.5: 63 + 0.5 * 7 = 66.5 ms
    assert measured[("resnet20", "train")] == pytest.approx(66.5)
    assert {r["method"] for r in out["metrics"]} == {m.value for m in Method}


def test_the_study_stores_each_networks_prediction_and_evaluate_prefers_them(
        tmp_path: Path, monkeypatch, capsys) -> None:
    """At the end of a study the stored per-kernel model predicts every counted network's steps
    (dnncost.study.predicted.predict_with_stored_model); `evaluate --db` then reads those numbers, on any
    machine, and counts and predicts nothing."""
    import json

    from dnncost.study.predicted import predict_with_stored_model
    from dnncost.study.store import CountRow, open_store

    model = OperatorModel({k: KindRegressor((1e-5, 1e-10, 1e-10)) for k in OpKind},
                          KindRegressor((1e-5, 1e-10, 1e-10)),
                          (1e-4, 1e-5) + (0.0,) * (len(STEP_FEATURES) - 2),
                          fingerprint="elsewhere", created="then")
    db = tmp_path / "study.sqlite"
    with open_store(db) as store:
        store.put_environment("elsewhere", {}, peak_flops_per_s=1e11, bandwidth_bytes_per_s=1e10,
                              calibration="test", operator_model=model.to_dict())
        run = store.start_run(command="test", config={}, config_hash="cfg", fingerprint="elsewhere")
        for name, family, train_s in (("lenet5", "lenet", 0.004), ("resnet20", "resnet", 0.07),
                                      ("alexnet_cifar", "alexnet", 0.05)):
            nid = store.network_id(NetworkRow(
                name=name, family=family, config_hash="cfg", fingerprint="elsewhere",
                config={"batch_size": 4}, input_shape="1x32x32" if name == "lenet5" else "3x32x32",
                batch_size=4, dataset="digits", device="cpu", threads=1))
            for mode, seconds in (("train", train_s), ("eval", train_s / 3)):
                store.put_count(nid, CountRow(mode, 10**5, 10**5, 10**7, 2 * 10**7, 10**6, 50, 0, 0,
                                              {}, {}))
                store.add_timing(nid, run, TimingRow(
                    mode=mode, samples=[seconds] * 3, median_s=seconds, iqr_s=0.0, threads=1,
                    peak_memory_bytes=None))
        predict_with_stored_model(store, config_hash="cfg", fingerprint="elsewhere")
        (group,) = store.groups()
        rows = store.prediction_rows(group)
        # a resumed study predicts nothing again
        predict_with_stored_model(store, config_hash="cfg", fingerprint="elsewhere")
        assert len(store.prediction_rows(group)) == len(rows) == 6  # 3 networks x 2 modes
    assert {r.calibration_id for _, r in rows} == {"elsewhere@then"}
    assert all(r.predicted_s > 0 and r.roofline_s is not None and r.low_s is None for _, r in rows)

    import dnncost.counting.counter

    def no_count(*args, **kwargs):
        raise AssertionError("evaluate recounted a network whose prediction is stored")

    monkeypatch.setattr(dnncost.counting.counter, "count", no_count)
    assert main(["evaluate", "--db", str(db), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    stored = {(name, r.mode): r.predicted_s for name, r in rows}
    assert {(r["network"], r["step"]): r["per_operator_ms"] / 1e3 for r in out["networks"]} \
        == pytest.approx(stored)
    assert {r["method"] for r in out["metrics"]} == {m.value for m in Method}  # roofline included


def test_an_unreadable_stored_model_is_warned_about_and_predicts_nothing(tmp_path: Path) -> None:
    from dnncost.study.predicted import predict_with_stored_model
    from dnncost.study.store import open_store

    with open_store(tmp_path / "s.sqlite") as store:
        store.put_environment("m", {}, peak_flops_per_s=None, bandwidth_bytes_per_s=None,
                              calibration=None, operator_model={"not": "a model"})
        store.start_run(command="test", config={}, config_hash="cfg", fingerprint="m")
        store.network_id(NetworkRow(
            name="lenet5", family="lenet", config_hash="cfg", fingerprint="m", config={},
            input_shape="1x32x32", batch_size=4, dataset="digits", device="cpu", threads=1))
        with pytest.warns(UserWarning, match="could not predict the networks"):
            predict_with_stored_model(store, config_hash="cfg", fingerprint="m")
        (group,) = store.groups()
        assert store.prediction_rows(group) == []


# -- one-sidedness and the interval's coverage -------------------------------------------------------
def test_one_sidedness_and_coverage_by_hand() -> None:
    # predicted 0.9, 1.0, 1.2, 0.5 against measured 1.0 each: 2 too fast (0.9, 0.5), 1 too slow
    # (1.2), one exact; intervals (0.8, 1.1), (1.1, 1.3), (0.95, 1.5), (0.4, 0.6): 1.0 lies in
    # the first and the third only
    m = Metrics.of([0.9, 1.0, 1.2, 0.5], [1.0] * 4,
                   intervals=[(0.8, 1.1), (1.1, 1.3), (0.95, 1.5), (0.4, 0.6)])
    assert (m.too_fast, m.too_slow, m.coverage) == (0.5, 0.25, 0.5)
    assert math.isnan(Metrics.of([1.0], [1.0]).coverage)  # no intervals: no coverage


def test_the_per_operator_points_carry_intervals_and_the_table_their_coverage() -> None:
    from dataclasses import replace

    from dnncost.prediction.interval import IntervalModel

    # the model says 1 GFLOP/s; its interval: measured between 0.7x and 1.3x the prediction
    # (19 residuals spread evenly from 0.8 to 1.6: k_lo = 2 -> ~0.84, k_hi = 18 -> ~1.56, about
    # their median 1.2)
    ratios = [0.8 + 0.8 * i / 18 for i in range(19)]
    model = replace(MODEL, interval=IntervalModel({"train": tuple(math.log(r) for r in ratios)}))
    interval = predict_report(_report("a1", 10**8), model).step_interval_s
    # measured 1x, 1.2x, 2x and 0.5x the prediction: the first two inside, the others not
    nets = [replace(network(n, f, 10**8, s), per_operator_interval_s=interval)
            for n, f, s in (("a1", "a", 0.1), ("b1", "b", 0.12), ("c1", "c", 0.2), ("d1", "d", 0.05))]
    result = evaluate(nets)
    a1 = next(p for p in result.points if p.name == "a1")
    assert a1.interval_s == pytest.approx((0.1 * ratios[1] / 1.2, 0.1 * ratios[17] / 1.2))
    rows = {r["method"]: r for r in result.table_rows()}
    assert rows["per_operator"]["coverage_pct"] == pytest.approx(50.0)
    # predicted 0.1 s each: too fast for b1 (0.12) and c1 (0.2), too slow for d1 (0.05)
    assert rows["per_operator"]["too_fast_pct"] == pytest.approx(50.0)
    assert rows["per_operator"]["too_slow_pct"] == pytest.approx(25.0)
    assert math.isnan(rows["flops_line"]["coverage_pct"])  # a baseline states no interval
    assert "50% measured inside their 80% interval" in result.headline("train")
    assert "per_operator_low_ms" in result.network_rows()[0]


def test_timm_networks_are_unseen_by_name() -> None:
    """timm:NAME joins the unseen protocol as is (the calibration never builds timm code); its
    torchvision names are checked as before."""
    pytest.importorskip("timm")
    from dnncost.prediction import unseen

    names = ["timm:resnet10t", "mobilenet_v3_small", "timm:resnet10t"]
    assert unseen.check_unseen_names(names) == ["timm:resnet10t", "mobilenet_v3_small"]
    with pytest.raises(ModelNotFoundError, match="nosuchnet_xyz"):
        unseen.check_unseen_names(["timm:nosuchnet_xyz"])
