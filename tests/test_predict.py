"""dnncost.prediction: kernel kinds from the formula registry, the per-kernel regressors and step
weights fitted on synthetic timings with a known answer, the sampler, the kernel clock, the
calibration's freshness checks and the predict command's errors."""
from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dnncost.cli import main
from dnncost.core.errors import InputSpecError
from dnncost.counting import formulas as F
from dnncost.counting.cost import Cost, CostReport, OpRecord, Phase
from dnncost.counting.counter import count
from dnncost.counting.formulas import OpKind
from dnncost.prediction import sampling
from dnncost.prediction.calibration import baseline_seconds, fit_baselines
from dnncost.prediction.features import conv_geometry, op_kind
from dnncost.prediction.fitting import NetworkSample, fit_kind, fit_line, fit_operator_model
from dnncost.prediction.kernels import STEP_FEATURES, step_features, time_kernels
from dnncost.prediction.model import Freshness, KindRegressor, OperatorModel
from dnncost.prediction.predict import predict_report
from dnncost.prediction.storage import save_operator_model


# -- one registry --------------------------------------------------------------------------------
def test_every_formula_states_its_kernel_kind() -> None:
    assert {F.op_name(p) for p in F.FORMULAS} == set(F.KINDS)
    assert F.kind_of("aten.convolution") is OpKind.CONV
    assert F.kind_of("aten.convolution_backward") is OpKind.CONV_BACKWARD
    assert F.kind_of("aten.hardswish") is OpKind.ELEMENTWISE
    assert F.kind_of("aten.cat") is OpKind.COPY
    assert F.kind_of("aten.bernoulli_") is OpKind.RANDOM
    assert F.kind_of("aten._foreach_add_") is OpKind.OPTIMIZER
    assert F.kind_of("aten.not_an_op") is None


def test_a_formula_without_a_kind_is_refused_at_registration() -> None:
    with pytest.raises(TypeError):
        F.register_formula(torch.ops.aten.mm)(F.mm_cost)  # type: ignore[call-arg]


def rec(op: str, phase: Phase = Phase.FORWARD, *, flops: int = 0, nbytes: int = 0,
        shapes: tuple[tuple[int, ...], ...] = ((8, 8),)) -> OpRecord:
    return OpRecord(op, phase, "m", "M", Cost(flops // 2, flops, nbytes, 0), shapes)


def test_op_kind_comes_from_the_registry_and_the_phase() -> None:
    assert op_kind(rec("aten.silu")) is OpKind.ELEMENTWISE
    assert op_kind(rec("aten.mul", Phase.OPTIMIZER)) is OpKind.OPTIMIZER  # any call of the optimizer
    assert op_kind(rec("aten.unknown_thing")) is None


def test_conv_geometry_of_a_strided_depthwise_backward() -> None:
    # grad_output (8, 32, 8, 8), input (8, 32, 16, 16), weight (32, 1, 5, 5): 32 groups of 1 channel,
    # kernel area 5*5 = 25, stride 16 / 8 = 2, output area 8*8 = 64
    r = rec("aten.convolution_backward", Phase.BACKWARD,
            shapes=((8, 32, 8, 8), (8, 32, 16, 16), (32, 1, 5, 5)))
    assert conv_geometry(r) == (32, 1, 25, 2, 64)


def test_conv_geometry_of_a_forward_call_reads_its_output_from_its_macs() -> None:
    # grouped 5x5, stride 2, padding 2: input (4, 16, 9, 9) -> output (4, 32, 5, 5); 16 / 4 = 4
    # groups of 4 channels, MACs 4 * 32 * 25 (output) * 4 * 25 = 320000; stride sqrt(81 / 25) = 2
    conv = nn.Conv2d(16, 32, 5, stride=2, padding=2, groups=4)
    forward = next(r for r in count(conv, mode="eval", batch_size=4, input_shape=(16, 9, 9)).records
                   if r.op == "aten.convolution")
    assert forward.cost.macs == 320000
    assert conv_geometry(forward) == (4, 4, 25, 2, 25)
    # depthwise 5x5 on a 2x2 map at stride 2: one output pixel
    dw = nn.Conv2d(8, 8, 5, stride=2, padding=2, groups=8)
    forward = next(r for r in count(dw, mode="eval", batch_size=2, input_shape=(8, 2, 2)).records
                   if r.op == "aten.convolution")
    assert conv_geometry(forward) == (8, 1, 25, 2, 1)


def test_a_convolutions_last_feature_is_its_gemm_rows() -> None:
    """batch x output area, log2: a 1x1 convolution from 96 to 576 channels on a 2x2 map at batch
    32 multiplies 32 * 4 = 128 rows -- forward (rows from the MACs) and backward (grad_output's
    shape) alike; a call of another kind has 0 there."""
    from dnncost.prediction.features import N_FEATURES, features

    report = count(nn.Conv2d(96, 576, 1), mode="train", batch_size=32, input_shape=(96, 2, 2))
    convs = [r for r in report.records if r.op.startswith("aten.convolution")]
    assert {r.op for r in convs} == {"aten.convolution", "aten.convolution_backward"}
    for r in convs:
        x = features(r, "train")
        assert len(x) == N_FEATURES and x[-1] == 7.0  # log2(128)
    assert features(rec("aten.silu"), "train")[-1] == 0.0


def test_a_calls_channels_modulo_the_vector_width_are_features() -> None:
    """ReXNet-like widths: a convolution from 91 to 125 channels has remainders 91 % 16 = 11 and
    125 % 16 = 13 (forward; backward, grad_output's 125 and the weight's 125), its batch norm 13;
    a convolution of 64 to 128 channels 0 and 0, a matmul none."""
    from dnncost.prediction.features import channel_remainders, features

    odd = count(nn.Sequential(nn.Conv2d(91, 125, 3, padding=1), nn.BatchNorm2d(125)), mode="train",
                batch_size=2, input_shape=(91, 8, 8))
    by_op = {r.op: channel_remainders(r) for r in odd.records}
    assert by_op["aten.convolution"] == (11, 13)
    assert by_op["aten.convolution_backward"] == (13, 13)
    assert by_op["aten.native_batch_norm"] == (13, 0)
    even = count(nn.Conv2d(64, 128, 3, padding=1), mode="eval", batch_size=2, input_shape=(64, 8, 8))
    assert channel_remainders(even.records[0]) == (0, 0)
    assert channel_remainders(rec("aten.mm", shapes=((8, 91), (91, 8)))) == (0, 0)
    conv = next(r for r in odd.records if r.op == "aten.convolution")
    assert list(features(conv, "train")[9:11]) == [11.0, 13.0]


def test_some_random_networks_keep_unrounded_widths_and_the_others_are_drawn_as_before(
        monkeypatch) -> None:
    """A network in UNROUNDED_SHARE keeps widths off multiples of 8 (ReXNet's, a pruned
    network's); whether it does is drawn apart from the network's own draws, so every other
    network is the one drawn with no unrounded share at all."""
    seeds = range(24)
    drawn = {seed: str(sampling.random_network(seed).module) for seed in seeds}
    monkeypatch.setattr(sampling, "UNROUNDED_SHARE", 0.0)
    rounded = {seed: str(sampling.random_network(seed).module) for seed in seeds}
    changed = [seed for seed in seeds if drawn[seed] != rounded[seed]]
    assert 0 < len(changed) < len(seeds)
    monkeypatch.setattr(sampling, "UNROUNDED_SHARE", 1.0)
    for seed in changed:  # the changed ones are the unrounded ones, stem and stage widths moved
        net = sampling.random_network(seed)
        assert str(net.module) == drawn[seed]
        assert any(m.out_channels % 8 for m in net.module.modules() if isinstance(m, nn.Conv2d))


def test_pointwise_probes_run_wide_1x1_convolutions_on_tiny_maps_with_the_ordinary_regressor() -> None:
    from dnncost.prediction.features import conv_geometry, regressor_key

    probes = sampling.pointwise_probes()
    assert len({p.name for p in probes}) == len(probes) == 30
    for probe in probes[::5]:
        report = count(probe.module, mode="train", batch_size=probe.batch_size,
                       input_shape=probe.input_shape)
        back = next(r for r in report.records if r.op == "aten.convolution_backward")
        groups, _, area, _, out_area = conv_geometry(back)
        assert (groups, area) == (1, 1) and out_area <= 16, probe.name
        assert regressor_key(back) == "conv_backward", probe.name



def test_wide_probes_run_dense_late_stage_convolutions_on_tiny_maps() -> None:
    """Each wide probe's backward is a dense convolution (the ordinary regressor's) with a weight
    of half a MiB or more on an output of at most 4x4 pixels, and the probes are timed with the
    other kernel probes."""
    from dnncost.prediction.features import conv_geometry, regressor_key

    probes = sampling.wide_probes()
    assert len({p.name for p in probes}) == len(probes) == len(sampling.WIDE_CONVS)
    assert {p.name for p in sampling.kernel_probes()} >= {p.name for p in probes}
    for probe in probes:
        report = count(probe.module, mode="train", batch_size=probe.batch_size,
                       input_shape=probe.input_shape)
        back = next(r for r in report.records if r.op == "aten.convolution_backward")
        groups, _, _, _, out_area = conv_geometry(back)
        weight = back.shapes[2]
        assert groups == 1 and out_area <= 16, probe.name
        assert 4 * weight[0] * weight[1] * weight[2] * weight[3] >= 2 ** 19, probe.name
        assert regressor_key(back) == "conv_backward", probe.name

# -- fitting on synthetic data with a known answer ---------------------------------------------
def test_fit_line_recovers_a_known_line() -> None:
    rng = np.random.default_rng(0)
    flops, nbytes = rng.uniform(1e5, 1e9, 200), rng.uniform(1e3, 1e8, 200)
    seconds = 2e-6 + flops / 5e10 + nbytes / 1e10
    a, b, c = fit_line(flops, nbytes, seconds)
    assert a == pytest.approx(2e-6, rel=0.01)
    assert b == pytest.approx(1 / 5e10, rel=0.01)
    assert c == pytest.approx(1 / 1e10, rel=0.01)


def synthetic_conv(rng: random.Random) -> tuple[OpRecord, float]:
    """A conv call whose true time is FLOPs / (2e10 * efficiency): depthwise (1 channel per group)
    runs at 1/10 of the dense rate -- a shape effect the FLOPs line alone cannot see."""
    b, c, s, k = rng.choice((1, 8, 32)), rng.choice((16, 64, 256)), rng.choice((7, 14, 28)), 3
    depthwise = rng.random() < 0.5
    w = (c, 1, k, k) if depthwise else (c, c, k, k)
    macs = b * c * s * s * w[1] * k * k
    r = OpRecord("aten.convolution", Phase.FORWARD, "m", "Conv2d",
                 Cost(macs, 2 * macs, 4 * (b * c * s * s + c * w[1] * k * k), 4 * b * c * s * s),
                 ((b, c, s, s), w))
    return r, 2 * macs / (2e10 * (0.1 if depthwise else 1.0))


def test_the_trees_learn_a_shape_effect_the_line_misses() -> None:
    from dnncost.prediction.features import features

    rng = random.Random(0)
    train = [synthetic_conv(rng) for _ in range(400)]
    test = [synthetic_conv(rng) for _ in range(100)]

    def arrays(data):  # noqa: ANN001, ANN202
        x = np.array([features(r, "train") for r, _ in data])
        return (x, np.array([r.cost.flops for r, _ in data], float),
                np.array([r.cost.bytes for r, _ in data], float), np.array([t for _, t in data]))

    reg = fit_kind(*arrays(train))
    x, fl, nb, truth = arrays(test)
    err = np.abs(reg.seconds(x, fl, nb) / truth - 1)
    line_err = np.abs(KindRegressor(reg.line).seconds(x, fl, nb) / truth - 1)
    assert np.median(err) < 0.05  # the depthwise penalty is learned
    assert np.median(line_err) > 3 * np.median(err)  # which the line alone only partly sees


def synthetic_network(rng: random.Random, name: str, mode: str) -> NetworkSample:
    """A network of matmul and relu calls with known kernel times; its step costs its kernels
    + 30 us + 20 us per module + 4 us per backward call, + 4% of its kernels' time in a train step
    (the known step weights)."""
    records, kernel_s = [], []
    for _ in range(rng.randint(5, 40)):
        n = rng.choice((64, 256, 1024))
        flops = 2 * n**3 // 64
        records.append(OpRecord("aten.mm", Phase.FORWARD, "m", "Linear", Cost(flops // 2, flops,
                                4 * n * n, 4 * n * n), ((n, n // 8), (n // 8, n))))
        kernel_s.append(5e-6 + flops / 1e11)
        if mode == "train":
            records.append(OpRecord("aten.threshold_backward", Phase.BACKWARD, "m", "ReLU",
                                    Cost(0, n * n, 8 * n * n, 4 * n * n), ((n, n), (n, n))))
            kernel_s.append(2e-6 + 12 * n * n / 2e10)
    report = CostReport(model=name, mode=mode, input_shape=(8,), batch_size=8, records=tuple(records),
                        params=1000, trainable_params=1000, param_bytes=4000, activation_bytes=0,
                        peak_bytes=0)
    modules = rng.randint(3, 60)
    backward = sum(r.phase is Phase.BACKWARD for r in records)
    step = sum(kernel_s) * (1.04 if mode == "train" else 1.0) + 30e-6 + 20e-6 * modules \
        + 4e-6 * backward
    return NetworkSample(name, report, tuple(kernel_s), modules, 10, step)


def test_fit_operator_model_recovers_kernels_and_step_weights() -> None:
    rng = random.Random(1)
    fitted = [synthetic_network(rng, f"n{i}", m) for i in range(60) for m in ("train", "eval")]
    held = [synthetic_network(rng, f"h{i}", m) for i in range(20) for m in ("train", "eval")]
    model = fit_operator_model(fitted)
    weights = dict(zip(STEP_FEATURES, model.step_weights, strict=True))
    assert weights["modules"] == pytest.approx(20e-6, rel=0.05)
    assert weights["train_kernel_s"] == pytest.approx(0.04, rel=0.1)
    assert weights["eval_kernel_s"] == pytest.approx(0.0, abs=0.004)
    errors = [predict_report(s.report, model, modules=s.modules, param_tensors=s.param_tensors
                             ).step_s / s.step_s - 1 for s in held]
    assert max(abs(e) for e in errors) < 0.03


def test_step_weights_resist_steps_another_process_slowed() -> None:
    from dnncost.prediction.fitting import fit_step_weights

    rng = np.random.default_rng(0)
    n = 80
    # known answer: rest = 50 us per step + 20 us per module + 5 us per backward call
    feats = np.column_stack([np.ones(n), rng.integers(5, 300, n), rng.integers(0, 400, n)]).astype(float)
    true_w = np.array([50e-6, 20e-6, 5e-6])
    kernels = rng.uniform(5e-3, 0.2, n)
    rest = feats @ true_w * rng.uniform(0.98, 1.02, n)  # +-2% noise
    slowed = np.arange(n) % 7 == 0  # every 7th step timed while another process ran: 1.5-4x slower
    steps = kernels + rest
    steps[slowed] *= rng.uniform(1.5, 4.0, slowed.sum())
    rest_seen = steps - kernels
    w = fit_step_weights(feats, rest_seen, steps, lower=np.zeros(3))
    # the per-module and per-backward-call weights (the 50 us a step is < 0.1% of any step here,
    # too little to pin down) are recovered within 10%
    assert w[1:] == pytest.approx(true_w[1:], rel=0.1)
    # plain least squares on the same data is pulled far off by the slowed steps
    from scipy.optimize import lsq_linear

    plain = lsq_linear(feats / steps[:, None], rest_seen / steps, bounds=(0, np.inf)).x
    assert np.max(np.abs(plain[1:] / true_w[1:] - 1)) > 0.3


def test_step_features_count_what_is_not_a_kernel() -> None:
    records = (rec("aten.mm"), rec("aten.mm"), rec("aten.mm", Phase.BACKWARD),
               rec("aten._foreach_add_", Phase.OPTIMIZER))
    report = CostReport(model="x", mode="train", input_shape=(8,), batch_size=1, records=records,
                        params=1, trainable_params=1, param_bytes=4, activation_bytes=0, peak_bytes=0)
    # train, eval, 4 kernel calls, 2 forward calls, 1 backward call, 5 modules, 3 parameter tensors,
    # the kernels' 0.5 s in a train step, none in an eval step
    assert list(step_features(report, 5, 3, 0.5)) == [1, 0, 4, 2, 1, 5, 3, 0.5, 0]


def test_baselines_are_one_scale_factor_per_mode_fitted_on_the_given_networks() -> None:
    rng = random.Random(2)
    nets = [synthetic_network(rng, f"n{i}", m) for i in range(10) for m in ("train", "eval")]
    base = fit_baselines(nets)
    for s in nets:  # the geometric-mean scale: each network's FLOPs-only error is its own ratio
        ratio = baseline_seconds(s.report, base)["flops"] / s.step_s
        assert 0.2 < ratio < 5
    assert base["flops_train"] > 0 and base["params_eval"] > 0 and base["roofline_train"] > 0


# -- the sampler -----------------------------------------------------------------------------------
def test_random_networks_are_reproducible_and_run_at_their_input() -> None:
    a, b = sampling.random_network(3), sampling.random_network(3)
    assert a.blocks == b.blocks and a.input_shape == b.input_shape
    assert all(torch.equal(p, q) for p, q in zip(a.module.parameters(), b.module.parameters(),
                                                  strict=True))
    report = count(a.module, mode="train", batch_size=2, input_shape=a.input_shape)
    assert report.records and not report.unsupported()


def test_the_sampler_covers_the_stated_modern_operators() -> None:
    seen: set[str] = set()
    for seed in range(40):
        net = sampling.random_network(seed)
        for m in net.module.modules():
            seen.add(type(m).__name__)
            if isinstance(m, nn.Conv2d) and m.groups == m.in_channels and m.in_channels > 1:
                seen.add(f"depthwise{m.kernel_size[0]}")
            elif isinstance(m, nn.Conv2d) and m.groups > 1:
                seen.add("grouped")
    assert {"SiLU", "Hardswish", "GELU", "_SqueezeExcite", "depthwise5", "grouped",
            "MultiheadAttention", "LayerNorm", "Dropout", "_Shuffle"} <= seen


def test_the_sampler_draws_deep_networks_and_strided_stems_on_small_inputs() -> None:
    depths, strided_small = [], 0
    for seed in range(40):
        net = sampling.random_network(seed)
        depths.append(len(net.blocks))
        stem = next(m for m in net.module.modules() if isinstance(m, nn.Conv2d))
        strided_small += net.input_shape[-1] <= 64 and stem.stride == (2, 2)
    # deep: at least 2 stages of at least 3 blocks (DEEP_BLOCKS_PER_STAGE) = 6 blocks and more
    assert max(depths) >= 2 * min(sampling.DEEP_BLOCKS_PER_STAGE)
    assert strided_small >= 3  # about half of the small inputs (SIDES: 5 of 8 are <= 64)


def test_the_sampler_draws_convnext_blocks_whose_later_convolutions_run_channels_last() -> None:
    """A ConvNeXt block's permutation back leaves its output channels-last: the calibration then
    times (and its trees see) convolutions on channels-last inputs, as in ConvNeXt and MambaOut."""
    seed = next(s for s in range(40) if "convnext" in sampling.random_network(s).blocks)
    net = sampling.random_network(seed)
    report = count(net.module, mode="train", batch_size=2, input_shape=net.input_shape)
    layouts = {r.channels_last for r in report.records if r.op == "aten.convolution"}
    assert layouts == {True, False}


def test_the_samplers_convnext_v2_blocks_run_the_response_norm_on_either_view() -> None:
    """ConvNeXt V2's global response norm: an L2 norm over the map, on the channels-last
    permutation (B, H, W, C) or on its (B, C, H, W) view (recorded channels-last, as timm's
    convnextv2_femto's), and the sampler draws both."""
    for view, shape, layout in (("bhwc", (2, 4, 4, 32), False), ("bchw", (2, 32, 4, 4), True)):
        block = sampling._ChannelsLastMLP(8, 32, "gelu", view)
        report = count(block, mode="eval", batch_size=2, input_shape=(8, 4, 4))
        (norm,) = [r for r in report.records if r.op == "aten.linalg_vector_norm"]
        assert norm.shapes[0] == shape and norm.channels_last is layout
    views = {m.grn.channel_dim if m.grn is not None else None for s in range(60)
             for m in sampling.random_network(s).module.modules()
             if isinstance(m, sampling._ChannelsLastMLP)}
    assert views == {None, -1, 1}  # none, on (B, H, W, C), on (B, C, H, W)


# -- the kernel clock ------------------------------------------------------------------------------
def test_every_counted_call_of_a_real_step_gets_its_kernel_time() -> None:
    module = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
    timed = time_kernels(module, (16,), batch_size=4, mode="train", runs=2, warmup=1, step_repeats=2)
    assert len(timed.kernel_s) == len(timed.report.records) > 5
    assert all(t > 0 for t in timed.kernel_s) and timed.step_s > 0


# -- freshness, storage and the command ------------------------------------------------------------
def tiny_model(**meta: object) -> OperatorModel:
    regressor = KindRegressor((1e-5, 1e-10, 1e-11))
    return OperatorModel({k: regressor for k in OpKind}, regressor,
                         (1e-4, 1e-5) + (0.0,) * (len(STEP_FEATURES) - 2), **meta)  # type: ignore[arg-type]


def test_freshness_names_every_reason_a_figure_may_be_rough() -> None:
    now = datetime(2026, 1, 10, tzinfo=timezone.utc)
    fresh = tiny_model(fingerprint="f", threads=2, torch_version="2.0",
                       created=(now - timedelta(hours=1)).isoformat())
    assert fresh.freshness(fingerprint="f", threads=2, torch_version="2.0", now=now) == []
    old = tiny_model(fingerprint="f", threads=2, torch_version="2.0", quick=True,
                     created=(now - timedelta(days=2)).isoformat())
    assert old.freshness(fingerprint="f", threads=2, torch_version="2.0", now=now) == [
        Freshness.QUICK, Freshness.STALE]
    assert fresh.freshness(fingerprint="g", threads=4, torch_version="2.1", now=now) == [
        Freshness.OTHER_TORCH, Freshness.OTHER_THREADS]
    assert fresh.freshness(fingerprint="g", threads=2, torch_version="2.0", now=now) == [
        Freshness.OTHER_MACHINE]
    # 3 of 20 networks timed on a busy machine: over BUSY_SHARE (a tenth, 2 of 20)
    busy = tiny_model(fingerprint="f", threads=2, torch_version="2.0", networks=20, busy_networks=3,
                      created=(now - timedelta(hours=1)).isoformat())
    assert busy.freshness(fingerprint="f", threads=2, torch_version="2.0", now=now) == [Freshness.BUSY]
    assert replace(busy, busy_networks=2).freshness(fingerprint="f", threads=2, torch_version="2.0",
                                                    now=now) == []


def test_a_stored_model_predicts_as_the_fitted_one() -> None:
    rng = random.Random(3)
    model = fit_operator_model([synthetic_network(rng, f"n{i}", m) for i in range(40)
                                for m in ("train", "eval")])
    again = OperatorModel.from_dict(json.loads(json.dumps(model.to_dict())))
    s = synthetic_network(rng, "x", "train")
    assert predict_report(s.report, again, modules=s.modules).step_s == pytest.approx(
        predict_report(s.report, model, modules=s.modules).step_s)


def test_a_stored_model_is_plain_data_and_an_old_pickled_one_is_never_loaded() -> None:
    import base64
    import pickle

    from dnncost.prediction.errors import OldModelFormatError

    rng = random.Random(3)
    model = fit_operator_model([synthetic_network(rng, f"n{i}", m) for i in range(40)
                                for m in ("train", "eval")])
    text = json.dumps(model.to_dict())
    assert "regressors" not in text and model.kinds[OpKind.MATMUL.value].trees is not None

    def plain(obj: object) -> bool:
        return obj is None or type(obj) in (bool, int, float, str) or (
            isinstance(obj, list) and all(plain(v) for v in obj)) or (
            isinstance(obj, dict) and all(isinstance(k, str) and plain(v) for k, v in obj.items()))

    assert plain(json.loads(text))
    old = {**model.summary(), "step_weights": list(model.step_weights),
           "regressors": base64.b64encode(pickle.dumps({"kinds": {}})).decode("ascii")}
    with pytest.raises(OldModelFormatError, match="old format"):
        OperatorModel.from_dict(old)


def test_a_stored_model_of_another_version_or_with_a_wrong_field_is_refused() -> None:
    from dnncost.prediction.errors import ModelFormatError, OldModelFormatError
    from dnncost.prediction.model import MODEL_VERSION

    data = tiny_model().to_dict()
    with pytest.raises(OldModelFormatError, match="version 2; this dnncost reads"):
        OperatorModel.from_dict({**data, "version": 2})  # older: refit from the kept samples
    with pytest.raises(ModelFormatError, match=f"version {MODEL_VERSION + 1}; this dnncost reads") as newer:
        OperatorModel.from_dict({**data, "version": MODEL_VERSION + 1})
    assert not isinstance(newer.value, OldModelFormatError)  # a newer dnncost's: refit won't help
    with pytest.raises(ModelFormatError, match="model.step_weights has 2 items, expected 9"):
        OperatorModel.from_dict({**data, "step_weights": [0.0, 0.0]})
    with pytest.raises(ModelFormatError, match="unknown fields: not_a_kind"):
        OperatorModel.from_dict({**data, "kinds": {"not_a_kind": data["fallback"]}})
    with pytest.raises(ModelFormatError, match="model.threads must be an integer, got str"):
        OperatorModel.from_dict({**data, "threads": "2"})


def test_predict_refuses_zero_threads_before_looking_for_a_calibration(
        tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))
    assert main(["predict", "resnet20", "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "--threads must be a positive integer, got 0" in err
    assert "calibrate" not in err and "Traceback" not in err


def test_predict_without_a_calibration_names_the_command(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))
    assert main(["predict", "resnet20"]) == 2
    assert "dnncost calibrate --ops" in capsys.readouterr().err


def test_predict_names_the_network_and_marks_a_quick_calibration(
        tmp_path: Path, monkeypatch, capsys) -> None:
    from dnncost.core.environment import machine_fingerprint

    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))
    threads = torch.get_num_threads()
    save_operator_model(tiny_model(fingerprint=machine_fingerprint("cpu", threads=threads),
                                   threads=threads, torch_version=str(torch.__version__),
                                   created=datetime.now(timezone.utc).isoformat(), quick=True))
    assert main(["predict", "resnet20", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "resnet20: predicted time" in out and "ResNetCifar" not in out
    assert "rough" in out and "quick calibration" in out
    assert main(["predict", "resnet20", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["caveats"] == ["quick"]
    assert all(p["predicted_step_ms"] > 0 and not math.isnan(p["predicted_step_ms"])
               for p in payload["predictions"])


def test_predict_reads_a_given_calibration_file_and_marks_another_machine(
        tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))
    threads = torch.get_num_threads()
    path = save_operator_model(tiny_model(fingerprint="elsewhere", threads=threads,
                                          torch_version=str(torch.__version__),
                                          created=datetime.now(timezone.utc).isoformat()))
    assert main(["predict", "resnet20", "--calibration", path, "--mode", "eval"]) == 0
    assert "fitted on another machine" in capsys.readouterr().out
    assert main(["predict", "resnet20", "--calibration", str(tmp_path / "none.json")]) == 2
    assert "no calibration file" in capsys.readouterr().err



def test_the_machines_speed_is_set_against_the_calibrations_probe(
        tmp_path: Path, monkeypatch, capsys) -> None:
    """A calibration stores the reference probe's time; a prediction on the same machine and
    thread count times the probe again and says how much slower (or faster) the machine runs now:
    a probe stored as a thousandth of its real time reads as a machine far slower now, one stored as
    a whole second as one far faster; beyond SPEED_TOLERANCE the figure is marked."""
    from dnncost.core.environment import machine_fingerprint
    from dnncost.prediction.errors import ModelFormatError
    from dnncost.prediction.predict import SPEED_TOLERANCE, caveats_here, speed_change

    threads = torch.get_num_threads()
    here = {"fingerprint": machine_fingerprint("cpu", threads=threads), "threads": threads,
            "torch_version": str(torch.__version__),
            "created": datetime.now(timezone.utc).isoformat(), "quick": False}
    assert speed_change(tiny_model(**here), threads=threads) is None  # none stored
    assert speed_change(tiny_model(**{**here, "fingerprint": "elsewhere"}, probe_s=1e-3),
                        threads=threads) is None  # another machine's probe
    slow = speed_change(tiny_model(**here, probe_s=1e-9), threads=threads)
    fast = speed_change(tiny_model(**here, probe_s=1.0), threads=threads)
    assert slow is not None and slow > 100 and fast is not None and fast < -0.9
    assert caveats_here(tiny_model(**here), threads=threads, speed=slow) == [Freshness.SPEED]
    assert caveats_here(tiny_model(**here), threads=threads, speed=SPEED_TOLERANCE / 2) == []
    # stored with the model, and a model stored before it was kept reads back without one
    data = tiny_model(probe_s=2e-3).to_dict()
    assert OperatorModel.from_dict(json.loads(json.dumps(data))).probe_s == 2e-3
    assert OperatorModel.from_dict({k: v for k, v in data.items() if k != "probe_s"}).probe_s == 0.0
    with pytest.raises(ModelFormatError, match="model.probe_s must be 0 or more seconds"):
        OperatorModel.from_dict({**data, "probe_s": -1.0})
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))
    save_operator_model(tiny_model(**here, probe_s=1e-9))
    assert main(["predict", "resnet20", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "machine speed: the reference probe took" in out
    assert "steps will likely run slower than predicted" in out and "another speed than now" in out
    assert main(["predict", "resnet20", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["speed_change"] > 100 and payload["caveats"] == ["speed"]

def test_a_rechecked_level_scales_every_prediction_and_its_interval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A recheck's level (the calibration's own networks' time now over their time then) scales
    a step's every call, its overhead and its interval, per mode; it is stored with the model,
    read back checked, and quoted by `dnncost predict`."""
    from dnncost.core.environment import machine_fingerprint
    from dnncost.prediction.errors import ModelFormatError
    from dnncost.prediction.predict import predict_time

    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
    plain = predict_time(net, input_shape=(16,), batch_size=4, calibration=interval_model())
    model = replace(interval_model(), level={"train": 0.9, "eval": 1.25},
                    level_checked="2026-12-06T12:00:00+00:00")
    train = predict_time(net, input_shape=(16,), batch_size=4, calibration=model)
    assert train.step_s == pytest.approx(0.9 * plain.step_s)
    assert train.step_overhead_s == pytest.approx(0.9 * plain.step_overhead_s)
    assert train.step_interval_s == pytest.approx(tuple(0.9 * x for x in plain.step_interval_s))  # type: ignore[union-attr]
    plain_eval = predict_time(net, input_shape=(16,), batch_size=4, calibration=interval_model(),
                              mode="eval")
    rechecked_eval = predict_time(net, input_shape=(16,), batch_size=4, calibration=model, mode="eval")
    assert rechecked_eval.step_s == pytest.approx(1.25 * plain_eval.step_s)
    data = json.loads(json.dumps(model.to_dict()))
    again = OperatorModel.from_dict(data)
    assert again.level == {"train": 0.9, "eval": 1.25} and again.level_checked == model.level_checked
    old = {k: v for k, v in data.items() if k not in ("level", "level_checked")}
    assert OperatorModel.from_dict(old).level == {} and OperatorModel.from_dict(old).level_of("train") == 1.0
    with pytest.raises(ModelFormatError, match="model.level.train must be a positive factor"):
        OperatorModel.from_dict({**data, "level": {"train": 0.0}})
    with pytest.raises(ModelFormatError, match="model.level has unknown fields: fast"):
        OperatorModel.from_dict({**data, "level": {"fast": 1.0}})
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))
    threads = torch.get_num_threads()
    save_operator_model(replace(model, threads=threads, torch_version=str(torch.__version__),
                                fingerprint=machine_fingerprint("cpu", threads=threads)))
    assert main(["predict", "resnet20", "--batch-size", "4"]) == 0
    assert "level: rechecked 2026-12-06T12:00:00+00:00, every step scaled by x0.90 (train), " \
           "x1.25 (eval)" in capsys.readouterr().out
    assert main(["predict", "resnet20", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_fit"]["level"] == {"train": 0.9, "eval": 1.25}


# -- the interval ----------------------------------------------------------------------------------
RATIOS = tuple(0.9 + 0.4 * i / 18 for i in range(19))  # measured / predicted on 19 networks
# at 80%: k_lo = 2, k_hi = 18 (test_interval), about the median RATIOS[9] = 1.1: the factors
# LOW = RATIOS[1] / 1.1 and HIGH = RATIOS[17] / 1.1
LOW, HIGH = RATIOS[1] / RATIOS[9], RATIOS[17] / RATIOS[9]


def interval_model(**meta: object) -> OperatorModel:
    from dnncost.prediction.interval import IntervalModel

    residuals = tuple(math.log(r) for r in RATIOS)
    return replace(tiny_model(**meta), interval=IntervalModel({"train": residuals, "eval": residuals}),
                   held_out={"train": {"n": 10.0, "mape": 0.083}},
                   transfer={"train": {"n": 4.0, "mape": 0.251}})


def test_every_prediction_carries_its_interval_step_and_epoch() -> None:
    from dnncost.prediction.predict import predict_time

    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
    p = predict_time(net, input_shape=(16,), batch_size=4, calibration=interval_model(),
                     dataset_size=10)
    assert p.coverage == 0.8
    assert p.step_interval_s == pytest.approx((LOW * p.step_s, HIGH * p.step_s))
    assert p.epoch_interval_s == pytest.approx((LOW * p.epoch_s, HIGH * p.epoch_s))
    summary = p.summary()
    assert summary["low_ms"] == pytest.approx(LOW * p.step_s * 1e3)
    assert summary["epoch_high_s"] == pytest.approx(HIGH * p.epoch_s)
    wide = predict_time(net, input_shape=(16,), batch_size=4, calibration=interval_model(),
                        coverage=0.95)
    assert wide.step_interval_s[0] <= p.step_interval_s[0]  # type: ignore[index]
    bare = predict_time(net, input_shape=(16,), batch_size=4, calibration=tiny_model())
    assert bare.step_interval_s is None and bare.summary()["low_ms"] is None
    with pytest.raises(InputSpecError, match="coverage must lie strictly between 0 and 1"):
        predict_time(net, input_shape=(16,), calibration=tiny_model(), coverage=1.0)


def test_predict_prints_the_interval_and_quotes_held_out_and_transfer_errors(
        tmp_path: Path, monkeypatch, capsys) -> None:
    import csv
    import io

    from dnncost.core.environment import machine_fingerprint

    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))
    threads = torch.get_num_threads()
    save_operator_model(interval_model(fingerprint=machine_fingerprint("cpu", threads=threads),
                                       threads=threads, torch_version=str(torch.__version__),
                                       created=datetime.now(timezone.utc).isoformat()))
    assert main(["predict", "resnet20", "--batch-size", "4", "--dataset-size", "100"]) == 0
    out = capsys.readouterr().out
    assert "train step: " in out and " ms (80%: " in out and "one epoch over 100 samples: " in out
    assert ("train-step error (MAPE) 8.3% on 10 held-out random networks, 25.1% on 4 standard "
            "networks it never fitted (transfer set)") in out
    assert main(["predict", "resnet20", "--batch-size", "4", "--format", "json"]) == 0
    (train, _) = json.loads(capsys.readouterr().out)["predictions"]
    assert train["low_ms"] == pytest.approx(LOW * train["predicted_step_ms"])
    assert train["high_ms"] == pytest.approx(HIGH * train["predicted_step_ms"])
    assert main(["predict", "resnet20", "--mode", "eval", "--dataset-size", "100", "--format",
                 "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    step = rows[0]
    assert step["module"] == "(whole step)" and float(step["low_ms"]) < float(step["predicted_ms"])
    assert float(step["epoch_high_s"]) == pytest.approx(HIGH * float(step["epoch_s"]))
    assert rows[1]["low_ms"] == ""  # a layer row: the interval is the step's
    assert main(["predict", "resnet20", "--coverage", "80"]) == 2
    assert "--coverage must be a fraction strictly between 0 and 1" in capsys.readouterr().err


def test_the_report_names_the_calibration_that_predicted_with_its_own_errors() -> None:
    from dnncost.study.findings import describe_calibration

    quick = tiny_model(quick=True, networks=7, passes=2, focus="32x3x32x32",
                       held_out={"train": {"mape": 0.123}}, transfer={"train": {"mape": 0.2}})
    text = describe_calibration(quick)
    assert "quick calibration of this machine (7 random networks drawn at 32x3x32x32, 2 passes)" in text
    assert "train-step error: held-out random networks 12.3%, transfer set 20.0%" in text
    assert "eval step: not measured" in text and "dnncost calibrate --ops" in text
    full = describe_calibration(tiny_model(networks=36, passes=3))
    assert "full calibration" in full and "trades accuracy" not in full
    assert "whole range, one in 3 at 8x3x224x224, 8x3x224x224 (first stage) and 32x3x32x32 in turn" \
        in full
    unfocused = describe_calibration(tiny_model(quick=True, networks=4, passes=1))
    assert "(4 random networks drawn at 8x3x224x224 and 32x3x32x32 in turn, 1 pass)" in unfocused


def test_a_dense_convolution_on_an_image_is_not_a_thin_one() -> None:
    """A ViT's patch embedding (3 channels, 16x16 kernel, stride 16) on a 32x32 image has an output
    within what "same" padding would be, but it is dense: the ordinary kind times it, forward and
    backward; a depthwise 7x7 on a 1x1 map is the padded one's."""
    from torch import nn

    from dnncost.prediction.features import regressor_key

    patch = count(nn.Conv2d(3, 48, 16, stride=16), mode="train", batch_size=2,
                  input_shape=(3, 32, 32))
    assert {regressor_key(r) for r in patch.records if "conv" in r.op} == {"conv", "conv_backward"}
    thin = count(nn.Conv2d(48, 48, 7, padding=3, groups=48), mode="train", batch_size=2,
                 input_shape=(48, 1, 1))
    assert {regressor_key(r) for r in thin.records if "conv" in r.op} == {"conv@padded",
                                                                         "conv_backward@padded"}


def test_a_thin_3x3_backward_on_a_2x2_output_is_the_padded_ones() -> None:
    """A depthwise 3x3 with padding 1 on a 2x2 map has an output beyond its padding, but its
    backward runs oneDNN's slow path (0.8 GFLOP/s against 13 on a 3x3 map): the padded regressor
    times it; its forward, the same convolution on a 3x3 map, one padded beforehand and a dense one
    stay the ordinary kind's."""
    from torch import nn

    from dnncost.prediction.features import regressor_key

    def keys(conv: nn.Conv2d, side: int) -> dict[str, str | None]:
        report = count(conv, mode="train", batch_size=2, input_shape=(conv.in_channels, side, side))
        return {r.op: regressor_key(r) for r in report.records if "conv" in r.op}

    depthwise = nn.Conv2d(64, 64, 3, padding=1, groups=64)
    assert keys(depthwise, 2) == {"aten.convolution": "conv",
                                  "aten.convolution_backward": "conv_backward@padded"}
    assert keys(nn.Conv2d(64, 64, 3, stride=2, padding=1, groups=64), 4) == {
        "aten.convolution": "conv", "aten.convolution_backward": "conv_backward@padded"}
    assert keys(depthwise, 3) == {"aten.convolution": "conv", "aten.convolution_backward": "conv_backward"}
    assert keys(nn.Conv2d(64, 64, 3, padding=0, groups=64), 4) == {
        "aten.convolution": "conv", "aten.convolution_backward": "conv_backward"}
    assert keys(nn.Conv2d(64, 64, 3, padding=1), 2) == {"aten.convolution": "conv",
                                                        "aten.convolution_backward": "conv_backward"}


def test_every_kernel_probe_runs_the_padded_regressors_kernels() -> None:
    """Each probe's step calls a convolution the padded regressor times: its backward always, its
    forward too where the output lies below the padding (5x5 and 7x7; a 3x3's forward on a 1x1 map
    is the ordinary kind's)."""
    from dnncost.prediction.features import regressor_key

    probes = sampling.padded_probes()
    assert len({p.name for p in probes}) == len(probes) >= 40
    assert {p.name for p in sampling.kernel_probes()} >= {p.name for p in probes}
    for probe in probes[::7]:
        report = count(probe.module, mode="train", batch_size=probe.batch_size,
                       input_shape=probe.input_shape)
        keys = {regressor_key(r) for r in report.records}
        assert "conv_backward@padded" in keys, probe.name
        assert ("conv@padded" in keys) == ("k3" not in probe.name), probe.name


def test_dynamic_probes_fold_the_batch_into_the_channels() -> None:
    """A per-sample (CondConv) probe runs its convolution at batch 1 over batch x channels, with
    batch x groups groups, on kernels a matmul of ``experts`` inner rows builds for every sample; its
    output is the ordinary convolution's, and it is a calibration probe like the others."""
    probes = sampling.dynamic_probes()
    assert len({p.name for p in probes}) == len(probes) == len(sampling.DYNAMIC_CONVS)
    assert {p.name for p in sampling.kernel_probes()} >= {p.name for p in probes}
    first = probes[0]  # a depthwise 5x5 over 1152 channels on a 1x1 map at batch 32
    assert (first.batch_size, first.input_shape) == (32, (1152, 1, 1))
    report = count(first.module, mode="eval", batch_size=32, input_shape=(1152, 1, 1))
    (conv,) = [r for r in report.records if r.op == "aten.convolution"]
    assert conv.shapes[:2] == ((1, 32 * 1152, 1, 1), (32 * 1152, 1, 5, 5))  # 36,864 channels
    (kernels,) = [r for r in report.records if r.op == "aten.mm"]  # routing (32 x 4) @ (4 x 28,800)
    assert kernels.cost.bytes_written == 32 * 1152 * 25 * 4
    x = torch.randn(32, 1152, 1, 1)
    assert first.module(x).shape == (32, 10)


def test_a_convolution_padded_beforehand_gets_the_ordinary_regressor() -> None:
    """A 5x5 depthwise convolution whose 1x1 output lies within its own padding runs oneDNN's
    padded path (its own regressor); the same convolution on an input padded beforehand (padding 0,
    as Hugging Face's MobileNets port TensorFlow's "same") reads no padding and does not -- its
    shapes alone would say it did."""
    from dnncost.prediction.features import features, regressor_key

    class PrePadded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 5, groups=8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(nn.functional.pad(x, (2, 2, 2, 2)))

    def convs(model: nn.Module) -> list[OpRecord]:
        return [r for r in count(model, mode="train", batch_size=4, input_shape=(8, 1, 1)).records
                if r.op.startswith("aten.convolution")]

    padded, beforehand = convs(nn.Conv2d(8, 8, 5, padding=2, groups=8)), convs(PrePadded())
    assert len(padded) == len(beforehand) == 2
    assert all(regressor_key(r).endswith("@padded") for r in padded)
    assert not any(regressor_key(r).endswith("@padded") for r in beforehand)
    margin = 11 + 3 * 5 + 5  # the padding margin's index among the features
    assert [features(r, "train")[margin] for r in padded] == [-1.0, -1.0]  # 1 - 2
    assert [features(r, "train")[margin] for r in beforehand] == [1.0, 1.0]  # 1 - 0


def test_a_channels_last_depthwise_convolution_leaves_the_padded_path_forward_only() -> None:
    """Below its padding a 7x7 depthwise convolution on a channels-last 2x2 map runs oneDNN's fast
    kernel forward, but its backward stays as slow as a contiguous one's: only the forward call
    leaves the padded regressor."""
    from dnncost.prediction.features import regressor_key

    def keys(channels_last: bool) -> dict[str, str | None]:
        report = count(nn.Conv2d(8, 8, 7, padding=3, groups=8), mode="train", batch_size=4,
                       input_shape=(8, 2, 2), channels_last=channels_last)
        convs = [r for r in report.records if r.op.startswith("aten.convolution")]
        assert all(r.channels_last is channels_last for r in convs)
        return {r.op: regressor_key(r) for r in convs}

    assert keys(False) == {"aten.convolution": "conv@padded",
                           "aten.convolution_backward": "conv_backward@padded"}
    assert keys(True) == {"aten.convolution": "conv",
                          "aten.convolution_backward": "conv_backward@padded"}
