"""dnncost.prediction.predict and dnncost.prediction.microbench: operator classes, fitting on synthetic timings with a known
answer, summing a prediction, uncovered operators, the stored calibration and the CLI."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from dnncost.cli import main
from dnncost.counting.cost import Cost, CostReport, OpRecord, Phase
from dnncost.prediction import microbench as opbench
from dnncost.prediction.predict import (
    CALIBRATE_COMMAND,
    ClassParams,
    NotCalibratedError,
    Observed,
    OpClass,
    OperatorModel,
    UncoveredOperatorError,
    classify,
    fit_operator_model,
    load_operator_model,
    predict_report,
    predict_time,
    save_operator_model,
)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))
    return tmp_path


def rec(op: str, *, flops: int = 0, nbytes: int = 0, phase: Phase = Phase.FORWARD,
        shapes: tuple[tuple[int, ...], ...] = (), module: str = "layer") -> OpRecord:
    return OpRecord(op, phase, module, "Layer", Cost(0, flops, nbytes, 0), shapes)


def report(records: list[OpRecord], *, mode: str = "train", name: str = "net") -> CostReport:
    return CostReport(model=name, mode=mode, input_shape=(3, 8, 8), batch_size=4,
                      records=tuple(records), params=10, trainable_params=10, param_bytes=40,
                      activation_bytes=0, peak_bytes=0)


# -- classes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("op", "shapes", "expected"), [
    # forward shapes: (input, weight); backward: (grad_output, input, weight)
    ("aten.convolution", ((8, 16, 8, 8), (32, 16, 3, 3)), OpClass.CONV),
    ("aten.convolution", ((8, 16, 8, 8), (32, 4, 1, 1)), OpClass.GROUPED_CONV),  # 16 / 4 = 4 groups
    ("aten.convolution", ((8, 16, 8, 8), (16, 1, 3, 3)), OpClass.DEPTHWISE_CONV),
    ("aten.convolution_backward", ((8, 32, 8, 8), (8, 16, 8, 8), (32, 16, 3, 3)), OpClass.CONV_BACKWARD),
    ("aten.convolution_backward", ((8, 16, 8, 8), (8, 16, 8, 8), (16, 1, 3, 3)),
     OpClass.DEPTHWISE_CONV_BACKWARD),
    ("aten.addmm", (), OpClass.MATMUL),
    ("aten.relu_", (), OpClass.ELEMENTWISE),
    ("aten.native_batch_norm_backward", (), OpClass.NORM_BACKWARD),
    ("aten.max_pool2d_with_indices", (), OpClass.MAX_POOL),
    ("aten.avg_pool2d", (), OpClass.AVG_POOL),
    ("aten.relu", (), OpClass.ELEMENTWISE),
    ("aten.cat", (), OpClass.COPY),
    ("aten._log_softmax", (), OpClass.SOFTMAX),
    ("aten.mean", (), OpClass.REDUCTION),
    ("aten.bernoulli_", (), OpClass.RANDOM),
    ("aten.not_an_op", (), None),
])
def test_operator_calls_are_classed_by_op_and_convolution_groups(op, shapes, expected) -> None:
    assert classify(rec(op, shapes=shapes)) is expected


def test_the_phase_of_a_call_picks_the_optimizer_and_gradient_classes() -> None:
    assert classify(rec("aten.add_", phase=Phase.OPTIMIZER)) is OpClass.OPTIMIZER
    assert classify(rec("aten.add_", phase=Phase.FORWARD)) is OpClass.ELEMENTWISE
    assert classify(rec("aten.add", phase=Phase.BACKWARD)) is OpClass.ELEMENTWISE_BACKWARD
    assert classify(rec("aten.constant_pad_nd", phase=Phase.BACKWARD)) is OpClass.COPY_BACKWARD
    assert classify(rec("aten.mm", phase=Phase.BACKWARD)) is OpClass.MATMUL
    assert classify(rec("aten.native_batch_norm"), "train") is OpClass.NORM
    assert classify(rec("aten.native_batch_norm"), "eval") is OpClass.NORM_EVAL


def test_the_counted_convolutions_of_a_grouped_network_are_classed_by_their_groups() -> None:
    from dnncost.counting.counter import count

    net = nn.Sequential(nn.Conv2d(6, 12, 3), nn.Conv2d(12, 12, 3, groups=12), nn.Conv2d(12, 12, 1, groups=3))
    classes = [classify(r) for r in count(net, mode="train", batch_size=2, input_shape=(6, 8, 8)).records]
    assert [c for c in classes if c and "conv" in c.value] == [
        OpClass.CONV, OpClass.DEPTHWISE_CONV, OpClass.GROUPED_CONV,
        OpClass.GROUPED_CONV_BACKWARD, OpClass.DEPTHWISE_CONV_BACKWARD, OpClass.CONV_BACKWARD]


# -- fitting: recover known parameters from synthetic timings -----------------------------------------
TRUE = OperatorModel(
    classes={OpClass.CONV: ClassParams(1e11, 2e10, 2e-5),
             OpClass.ELEMENTWISE: ClassParams(1e10, 5e9, 3e-6),
             OpClass.MATMUL: ClassParams(5e10, 1e10, 8e-6)},
    autograd_s=4e-6, step_s={"train": 1e-4, "eval": 2e-5})
OPS = {OpClass.CONV: "aten.convolution", OpClass.ELEMENTWISE: "aten.relu", OpClass.MATMUL: "aten.mm"}


def synthetic_benchmarks(model: OperatorModel, *, n: int = 60, seed: int = 0) -> list[Observed]:
    """Single- and two-call steps of every class, with FLOPs and bytes spread over four decades
    each, so that both sides of every roofline (and the overheads) are seen; times from ``model``."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        for cls, op in OPS.items():
            mode = rng.choice(("train", "eval"))
            shapes = ((8, 16, 8, 8), (16, 16, 3, 3)) if cls is OpClass.CONV else ()
            records = tuple(rec(op, flops=int(10 ** rng.uniform(4, 10)),
                                nbytes=int(10 ** rng.uniform(3, 9)), shapes=shapes)
                            for _ in range(rng.choice((1, 2))))
            seconds = predict_report(report(list(records), mode=mode), model).step_s
            out.append(Observed(records, mode, seconds))
    return out


def test_fitting_recovers_known_efficiencies_and_overheads() -> None:
    fitted = fit_operator_model(synthetic_benchmarks(TRUE))
    assert set(fitted.classes) == set(TRUE.classes)
    for cls, true in TRUE.classes.items():
        got = fitted.classes[cls]
        assert got.flops_per_s == pytest.approx(true.flops_per_s, rel=0.02), cls
        assert got.bytes_per_s == pytest.approx(true.bytes_per_s, rel=0.02), cls
        assert got.overhead_s == pytest.approx(true.overhead_s, rel=0.05), cls
    assert fitted.step_s["train"] == pytest.approx(1e-4, rel=0.05)
    assert fitted.step_s["eval"] == pytest.approx(2e-5, rel=0.05)
    assert fitted.fit_error["median_abs_error"] < 0.01


def test_fitting_shrugs_off_a_few_disturbed_benchmarks() -> None:
    observed = synthetic_benchmarks(TRUE)
    # every 20th benchmark slowed 3x, as when another process takes the CPU
    disturbed = [Observed(o.records, o.mode, o.seconds * (3 if i % 20 == 0 else 1))
                 for i, o in enumerate(observed)]
    fitted = fit_operator_model(disturbed)
    for cls, true in TRUE.classes.items():
        assert fitted.classes[cls].flops_per_s == pytest.approx(true.flops_per_s, rel=0.10), cls
        assert fitted.classes[cls].bytes_per_s == pytest.approx(true.bytes_per_s, rel=0.10), cls


def test_fitting_needs_observations() -> None:
    with pytest.raises(ValueError, match="no benchmark"):
        fit_operator_model([])


# -- predicting -----------------------------------------------------------------------------------------
def test_a_prediction_is_the_sum_of_its_calls_plus_the_step_overhead() -> None:
    model = OperatorModel(classes={OpClass.MATMUL: ClassParams(1e9, 1e9, 1e-5),
                                   OpClass.ELEMENTWISE: ClassParams(1e9, 1e8, 0.0)},
                          autograd_s=2e-6, step_s={"train": 1e-3, "eval": 5e-4})
    calls = [rec("aten.mm", flops=2_000_000, nbytes=1_000, module="fc"),  # max(2e-3, 1e-6) + 1e-5
             rec("aten.relu", flops=1_000, nbytes=400_000, module="act"),  # max(1e-6, 4e-3) = 4e-3
             rec("aten.mm", flops=1_000_000, phase=Phase.BACKWARD, module="fc")]  # 1e-3 + 1e-5
    train = predict_report(report(calls, mode="train"), model)
    # forward calls pay autograd_s: 2.01e-3 + 2e-6 + 4e-3 + 2e-6 + 1.01e-3 + step 1e-3 = 8.024e-3
    assert train.step_s == pytest.approx(8.024e-3)
    assert train.by_module() == pytest.approx({"fc": 2.012e-3 + 1.01e-3, "act": 4.002e-3})
    assert train.by_class() == pytest.approx({"elementwise": 4.002e-3, "matmul": 3.022e-3})
    evals = predict_report(report(calls[:2], mode="eval"), model)
    assert evals.step_s == pytest.approx(2.01e-3 + 4e-3 + 5e-4)  # no autograd, eval overhead


def test_uncovered_operators_are_named_with_their_share_of_flops() -> None:
    model = OperatorModel(classes={OpClass.MATMUL: ClassParams(1e9, 1e9, 0.0)}, autograd_s=0.0,
                          step_s={})
    calls = [rec("aten.mm", flops=750), rec("aten.relu", flops=200), rec("aten.relu", flops=50)]
    with pytest.raises(UncoveredOperatorError) as err:
        predict_report(report(calls), model)
    assert "aten.relu (2 calls, 25.0% of the step's FLOPs)" in str(err.value)  # 250 / 1000
    lenient = predict_report(report(calls), model, strict=False)
    assert lenient.uncovered == {"aten.relu": 2}
    assert lenient.step_s == pytest.approx(750 / 1e9)


def test_epoch_time_counts_full_batches_and_the_partial_last_one() -> None:
    model = OperatorModel(classes={c: ClassParams(1e9, 1e9, 1e-6) for c in OpClass},
                          autograd_s=0.0, step_s={"train": 1e-3, "eval": 1e-4})
    net = nn.Linear(4, 2)
    step3 = predict_time(net, input_shape=(4,), batch_size=3, mode="eval", calibration=model)
    step1 = predict_time(net, input_shape=(4,), batch_size=1, mode="eval", calibration=model)
    epoch = predict_time(net, input_shape=(4,), batch_size=3, mode="eval", calibration=model,
                         dataset_size=7)
    assert epoch.epoch_s == pytest.approx(2 * step3.step_s + step1.step_s)  # 7 = 3 + 3 + 1
    assert epoch.step_s == pytest.approx(step3.step_s)


# -- storing the calibration ----------------------------------------------------------------------------
def test_the_fitted_model_round_trips_through_the_calibration_file(cache: Path) -> None:
    from dnncost.measuring.environment import machine_fingerprint

    threads = torch.get_num_threads()
    model = OperatorModel(TRUE.classes, TRUE.autograd_s, TRUE.step_s,
                          fingerprint=machine_fingerprint("cpu", threads=threads), threads=threads,
                          created="2024-01-01T00:00:00+00:00", benchmarks=3,
                          fit_error={"median_abs_error": 0.05})
    path = save_operator_model(model)
    assert Path(path).parent == cache / "calibration"
    assert load_operator_model() == model


def test_an_uncalibrated_machine_gets_an_error_naming_the_command() -> None:
    with pytest.raises(NotCalibratedError, match=CALIBRATE_COMMAND.replace(" ", r"\s")):
        load_operator_model()


def test_predict_cli_without_calibration_says_what_to_run(capsys) -> None:
    assert main(["predict", "lenet5"]) == 2
    assert CALIBRATE_COMMAND in capsys.readouterr().err


def test_predict_cli_prints_step_and_epoch_times(capsys) -> None:
    from dnncost.measuring.environment import machine_fingerprint

    threads = torch.get_num_threads()
    model = OperatorModel({c: ClassParams(1e10, 1e10, 1e-6) for c in OpClass}, 1e-6,
                          {"train": 1e-4, "eval": 1e-5},
                          fingerprint=machine_fingerprint("cpu", threads=threads), threads=threads)
    save_operator_model(model)
    assert main(["predict", "lenet5", "--batch-size", "8", "--dataset-size", "100",
                 "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    modes = {p["mode"]: p for p in out["predictions"]}
    assert set(modes) == {"train", "eval"}
    assert modes["train"]["predicted_step_ms"] > modes["eval"]["predicted_step_ms"] > 0
    # 100 samples at batch 8: 12 full batches and one of 4, each at most one full step
    assert 12 * modes["train"]["predicted_step_ms"] / 1e3 < modes["train"]["predicted_epoch_s"] \
        <= 13 * modes["train"]["predicted_step_ms"] / 1e3
    assert main(["predict", "lenet5", "--mode", "eval"]) == 0
    table = capsys.readouterr().out
    assert "eval step:" in table and "train step:" not in table


# -- the micro-benchmarks -------------------------------------------------------------------------------
def test_the_suite_is_seeded_and_even_the_quick_one_exercises_every_class() -> None:
    assert opbench.suite() == opbench.suite()
    full, quick = opbench.suite(), opbench.suite(quick=True)
    assert len(full) == sum(n for n, _ in opbench.COUNTS.values())
    assert len(quick) == sum(n for _, n in opbench.COUNTS.values())
    assert {b.kind for b in quick} == set(opbench.BenchKind)
    seen = {classify(r, mode) for b in quick for mode in ("eval", "train")
            for r in opbench.count_bench(b, mode)}
    assert seen == set(OpClass)


def test_a_benchmark_is_timed_and_counted_like_a_network_step() -> None:
    bench = opbench.OpBench(opbench.BenchKind.CONV, 2, (4, 6, 6),
                            (("cout", 8), ("k", 3), ("stride", 1), ("groups", 1), ("bias", False)))
    results = opbench.run_suite([bench], budget_s=0.001, passes=2)
    by_mode = {r.mode: r for r in results}
    assert set(by_mode) == {"eval", "train"}
    assert all(len(r.passes_s) == 2 and r.seconds == min(r.passes_s) > 0 for r in results)
    ops = [r.op for r in by_mode["train"].records]
    # the input requires grad, so backward computes it; the spatial mean feeds a (2, 8) cross-entropy
    assert "aten.convolution_backward" in ops and "aten._log_softmax" in ops
    backward = next(r for r in by_mode["train"].records if r.op == "aten.convolution_backward")
    assert backward.cost.macs == 2 * 2 * 8 * 36 * 4 * 9  # grad input + grad weight, each = forward MACs
    assert [r.op for r in by_mode["eval"].records] == ["aten.convolution", "aten.mean"]
    again = opbench.BenchResult.from_dict(json.loads(json.dumps(by_mode["train"].to_dict())))
    assert again.bench == bench and again.seconds == by_mode["train"].seconds
    assert [r.cost for r in again.records] == [r.cost for r in by_mode["train"].records]


@pytest.mark.parametrize("kind", list(opbench.BenchKind))
def test_every_benchmark_kind_builds_and_runs_in_both_modes(kind) -> None:
    bench = next(b for b in opbench.suite(quick=True) if b.kind is kind)
    for mode in ("eval", "train"):
        records = opbench.count_bench(bench, mode)
        assert all(classify(r, mode) is not None for r in records), (bench.name, mode)
        assert records or (kind is opbench.BenchKind.DROPOUT and mode == "eval")  # eval dropout: identity
        assert opbench.time_bench(bench, mode, budget_s=0.001, warmup=0) > 0
    assert math.isfinite(bench.build()(torch.randn(bench.batch_size, *bench.input_shape)).sum().item())


def test_a_quick_calibration_covers_the_default_networks_and_predicts_them() -> None:
    from dnncost.prediction.predict import calibrate_operators

    model, results = calibrate_operators(quick=True)
    assert len(results) == 2 * len(opbench.suite(quick=True))
    assert set(model.classes) == set(OpClass)
    save_operator_model(model, results, quick=True)
    for name in ("lenet5", "resnet20", "mobilenet_v1_cifar", "shufflenet_v1_g3_cifar"):
        train = predict_time(name, batch_size=8, mode="train")
        evals = predict_time(name, batch_size=8, mode="eval")
        assert train.step_s > evals.step_s > 0 and not train.uncovered


def test_the_idle_gate_waits_for_idle_cpus_within_its_budget(monkeypatch) -> None:
    loads = iter([0.9, 0.8, 0.05])  # busy, busy, then idle
    monkeypatch.setattr(opbench, "cpu_busy", lambda: next(loads))
    gate = opbench.IdleGate(budget_s=60)
    gate.wait()
    with pytest.raises(StopIteration):
        next(loads)  # probed three times: waited through both busy readings
    gate.wait()  # idle a moment ago: no probe (the iterator is exhausted, a probe would raise)
    monkeypatch.setattr(opbench, "cpu_busy", lambda: 1.0)  # always busy
    spent = opbench.IdleGate(budget_s=0.0)
    spent.wait()  # no budget: goes ahead at once
    assert spent.waited_s < 1.0
