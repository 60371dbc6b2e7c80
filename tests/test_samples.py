"""The calibration's stored raw samples: round trip, refit without timing, clear errors."""
from __future__ import annotations

import gzip
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dnncost.cli import main
from dnncost.counting.cost import Cost, CostReport, OpRecord, Phase
from dnncost.prediction.calibration import refit, stored_samples
from dnncost.prediction.fitting import NetworkSample
from dnncost.prediction.predict import predict_report
from dnncost.prediction.samples import (
    NoSamplesError,
    StoredSamples,
    load_samples,
    samples_path,
    save_samples,
)


def network(rng: random.Random, name: str, mode: str, *, sizes: tuple[int, ...] = (32, 128, 512),
            slow: dict[int, float] | None = None) -> NetworkSample:
    """A network of matmul, relu-backward and optimizer calls with known kernel times; its step
    costs its kernels + 40 us + 15 us per module. A matmul of side n in ``slow`` runs that many
    times slower (a kernel whose output lands on fresh pages)."""
    records, kernel_s = [], []
    for i in range(rng.randint(4, 30)):
        n = rng.choice(sizes)
        flops = 2 * n**3 // 16
        records.append(OpRecord("aten.mm", Phase.FORWARD, f"layer{i}", "Linear",
                                Cost(flops // 2, flops, 4 * n * n, 4 * n * n), ((n, n // 4), (n // 4, n))))
        kernel_s.append((4e-6 + flops / 5e10) * (slow or {}).get(n, 1.0))
        if mode == "train":
            records.append(OpRecord("aten.threshold_backward", Phase.BACKWARD, f"layer{i}", "ReLU",
                                    Cost(0, n * n, 8 * n * n, 4 * n * n), ((n, n), (n, n)),
                                    channels_last=i % 3 == 0))
            kernel_s.append(2e-6 + 12 * n * n / 1e10)
        if i % 5 == 0:
            records.append(OpRecord("aten.convolution", Phase.FORWARD, f"conv{i}", "Conv2d",
                                    Cost(9 * n * n, 18 * n * n, 8 * n * n, 4 * n * n),
                                    ((4, n // 4, 8, 8), (n // 4, n // 4, 3, 3)), stride=(1, 1),
                                    padding=(i % 2, i % 2)))
            kernel_s.append(3e-6 + 18 * n * n / 5e10)
    if mode == "train":
        records.append(OpRecord("aten._foreach_add_", Phase.OPTIMIZER, "(optimizer)", "SGD",
                                Cost(0, 1000, 8000, 4000), ((1000,),)))
        kernel_s.append(3e-6)
    report = CostReport(model=name, mode=mode, input_shape=(3, 8, 8), batch_size=4,
                        records=tuple(records), params=1000, trainable_params=900,
                        param_bytes=4000, activation_bytes=123, peak_bytes=456,
                        unsupported_ops=(("aten.weird", 2),))
    modules = rng.randint(3, 40)
    step = sum(kernel_s) + 40e-6 + 15e-6 * modules
    return NetworkSample(name, report, tuple(kernel_s), modules, 7, step,
                         (step * rng.uniform(1.0, 1.2), step, step * rng.uniform(1.0, 1.3)))


def stored(seed: int = 0, n: int = 24) -> StoredSamples:
    """Fitted, held-out and transfer networks (the transfer set 30% slower than its kernels say:
    networks unlike the fitted ones)."""
    rng = random.Random(seed)
    fitted = tuple(network(rng, f"n{i}", m) for i in range(n) for m in ("train", "eval"))
    held = tuple(network(rng, f"h{i}", m) for i in range(n // 4) for m in ("train", "eval"))
    transfer = tuple(replace(s, step_s=1.3 * s.step_s) for s in
                     (network(rng, f"transfer:t{i}", m) for i in range(3) for m in ("train", "eval")))
    return StoredSamples(fitted, held, {"fingerprint": "fp", "threads": 2, "torch_version": "2.x",
                                        "quick": False, "busy_networks": 1}, transfer)


def test_samples_round_trip_exactly(tmp_path: Path) -> None:
    original = stored()
    path = save_samples(original, tmp_path / "x.ops-samples.json.gz")
    back = load_samples(path)
    assert back == original  # frozen dataclasses: every record, shape, cost and second equal
    assert back.transfer and back.fitted[0].pass_steps  # the transfer set and every pass kept
    assert json.loads(gzip.decompress(path.read_bytes()))["format"] == "dnncost-op-samples"


def test_samples_kept_before_the_layout_flag_read_as_contiguous(tmp_path: Path) -> None:
    original = stored()
    path = save_samples(original, tmp_path / "x.ops-samples.json.gz")
    data = json.loads(gzip.decompress(path.read_bytes()))
    assert any(r[9] is True for s in data["fitted"] for r in s["report"]["records"])
    for s in data["fitted"] + data["held_out"] + data["transfer"]:
        s["report"]["records"] = [r[:9] for r in s["report"]["records"]]  # the older layout
    path.write_bytes(gzip.compress(json.dumps(data).encode()))
    back = load_samples(path)
    assert not any(r.channels_last for s in back.fitted for r in s.report.records)
    assert back.fitted[0].report.records[0].shapes == original.fitted[0].report.records[0].shapes


def test_samples_kept_before_the_stride_and_padding_read_without_them(tmp_path: Path) -> None:
    original = stored()
    path = save_samples(original, tmp_path / "x.ops-samples.json.gz")
    data = json.loads(gzip.decompress(path.read_bytes()))
    assert any(r[11] for s in data["fitted"] for r in s["report"]["records"])  # a padding kept
    for s in data["fitted"] + data["held_out"] + data["transfer"]:
        s["report"]["records"] = [r[:10] for r in s["report"]["records"]]  # the older layout
    path.write_bytes(gzip.compress(json.dumps(data).encode()))
    back = load_samples(path)
    assert not any(r.stride or r.padding for s in back.fitted for r in s.report.records)
    assert [r.channels_last for s in back.fitted for r in s.report.records] == \
        [r.channels_last for s in original.fitted for r in s.report.records]


def test_refit_on_stored_samples_gives_the_model_fitted_directly(tmp_path: Path) -> None:
    original = stored(1)
    direct = refit(original)
    again = refit(load_samples(save_samples(original, tmp_path / "s.json.gz")))
    assert again.model.step_weights == pytest.approx(direct.model.step_weights)
    assert dict(again.model.held_out) == dict(direct.model.held_out)
    assert dict(again.model.transfer) == dict(direct.model.transfer)
    assert again.model.interval.to_dict() == direct.model.interval.to_dict()
    assert dict(again.model.baselines) == pytest.approx(dict(direct.model.baselines))
    assert (again.model.fingerprint, again.model.threads, again.model.busy_networks) == ("fp", 2, 1)
    for s in original.held_out:
        assert predict_report(s.report, again.model, modules=s.modules, strict=False).step_s == \
            pytest.approx(predict_report(s.report, direct.model, modules=s.modules,
                                         strict=False).step_s)
    # and what a calibration keeps of itself is what it was fitted on
    assert stored_samples(direct) == original


def test_refit_stores_the_transfer_error_and_the_interval_it_makes() -> None:
    """The transfer set runs 30% slower than the model (fitted on networks without that) predicts:
    its error shows it, the interval's residuals hold it, and the interval is shifted up."""
    import math

    done = refit(stored(4))
    model = done.model
    # held out: like the fitted networks, small error; transfer: about 1 / 1.3 - 1 = -23% off
    assert model.held_out["train"]["mape"] < 0.05
    assert model.transfer["train"]["mape"] == pytest.approx(1 - 1 / 1.3, abs=0.03)
    assert model.transfer["train"]["too_fast"] == 1.0  # every one predicted too fast
    residuals = model.interval.residuals["train"]
    assert len(residuals) == 6 + 3  # 6 held-out networks and 3 transfer networks of the mode
    assert sum(r > math.log(1.2) for r in residuals) == 3  # the transfer set's, about log(1.3)
    low, high = model.interval.factors("train")
    assert low < 1 < high and high >= 1.25  # the slow transfer networks lie inside
    assert len(model.interval.spreads["train"]) == 24 + 6 + 3  # every network, its 3 passes


def test_samples_of_an_older_format_are_refused_with_the_command_to_run(tmp_path: Path) -> None:
    """Version 1 kept each network's fastest pass as its step; version 2 keeps every pass's steps
    and reads them as every measured step is read: an older file cannot be refitted to the same
    figure, so it is refused, naming the calibration to run."""
    path = save_samples(stored(), tmp_path / "s.json.gz")
    data = json.loads(gzip.decompress(path.read_bytes()))
    data["version"] = 1
    path.write_bytes(gzip.compress(json.dumps(data).encode()))
    with pytest.raises(NoSamplesError, match="version 1, this dnncost reads .* version 2: run "
                                             "`dnncost calibrate --ops`"):
        load_samples(path)


def test_missing_or_unreadable_samples_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NoSamplesError, match="no stored calibration samples .* `dnncost calibrate --ops`"):
        load_samples(tmp_path / "absent.json.gz")
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(NoSamplesError, match="unreadable"):
        load_samples(bad)
    other = tmp_path / "other.json.gz"
    other.write_bytes(gzip.compress(json.dumps({"format": "dnncost-op-samples", "version": 99}).encode()))
    with pytest.raises(NoSamplesError, match="version 99"):
        load_samples(other)


def test_calibrate_refit_command(tmp_path: Path, monkeypatch, capsys) -> None:
    from dnncost.core.environment import machine_fingerprint

    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))
    assert main(["calibrate", "--ops", "--refit"]) == 2
    err = capsys.readouterr().err
    assert "no stored calibration samples" in err and "Traceback" not in err
    assert main(["calibrate", "--refit"]) == 2
    assert "with --ops" in capsys.readouterr().err
    threads = torch.get_num_threads()
    fingerprint = machine_fingerprint("cpu", threads=threads)
    meta = {"fingerprint": fingerprint, "threads": threads, "torch_version": str(torch.__version__),
            "quick": False, "busy_networks": 0}
    save_samples(StoredSamples(stored(2).fitted, stored(2).held_out, meta), samples_path(fingerprint))
    assert main(["calibrate", "--ops", "--refit", "--format", "json"]) == 0
    capsys.readouterr()
    assert main(["predict", "resnet20", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["caveats"] == []


# -- timing again while the machine is busy ------------------------------------------------------
def test_fastest_keeps_the_fastest_attempt_whole() -> None:
    """Kernels and step from one attempt: mixing each kernel's fastest would give a kernel sum
    below every step that ran."""
    from dnncost.prediction.calibration import fastest

    s = network(random.Random(4), "n", "train")
    slow = replace(s, kernel_s=tuple(2 * t for t in s.kernel_s[:1]) + s.kernel_s[1:], step_s=0.5)
    fast = replace(s, kernel_s=s.kernel_s[:1] + tuple(3 * t for t in s.kernel_s[1:]), step_s=0.4)
    assert fastest([slow, fast]) is fast  # not kernel 0 from fast and the rest from slow
    other = replace(fast, report=replace(fast.report, records=fast.report.records[:-1]),
                    kernel_s=fast.kernel_s[:-1], step_s=0.45)
    assert fastest([slow, other]) is other


def test_a_network_timed_on_a_busy_machine_is_timed_again(monkeypatch) -> None:
    from types import SimpleNamespace

    from dnncost.prediction import calibration

    rng = random.Random(5)
    base = [network(rng, "n", "train"), network(rng, "n", "eval")]
    steps = iter([0.9, 0.3, 0.6, 0.2, 0.8])  # what successive attempts measure (step seconds)

    def measure(_net):  # noqa: ANN001, ANN202
        return [replace(s, step_s=next(steps)) for s in base]

    busy = iter([True, False])  # the first attempt busy, the second quiet
    monkeypatch.setattr(calibration, "machine_load", lambda *a, **k: SimpleNamespace(busy=next(busy)))
    samples, still = calibration.measure_quietly(None, threads=2, measure=measure)  # type: ignore[arg-type]
    assert [s.step_s for s in samples] == [0.6, 0.2] and not still  # min(0.9, 0.6), min(0.3, 0.2)
    always = iter([True] * 3)
    monkeypatch.setattr(calibration, "machine_load", lambda *a, **k: SimpleNamespace(busy=next(always)))
    steps = iter([0.9, 0.3, 0.6, 0.4, 0.8, 0.1])
    samples, still = calibration.measure_quietly(None, threads=2, retries=2, measure=measure)  # type: ignore[arg-type]
    assert [s.step_s for s in samples] == [0.6, 0.1] and still  # 3 attempts, then given up
    always = iter([True] * 3)
    monkeypatch.setattr(calibration, "machine_load", lambda *a, **k: SimpleNamespace(busy=next(always)))
    steps = iter([0.9, 0.3, 0.6, 0.4])
    samples, still = calibration.measure_quietly(None, threads=2, retries=2, until=0.0,  # type: ignore[arg-type]
                                                 measure=measure)
    assert [s.step_s for s in samples] == [0.9, 0.3] and still  # no room for a retry: 1 attempt


def test_a_network_timed_again_is_not_counted_again(monkeypatch) -> None:
    """measure_network keeps each network's count per mode: a second pass times the step against
    the first pass's count (the same records) without counting it."""
    from dnncost.prediction import calibration, kernels
    from dnncost.prediction.transfer import transfer_networks

    calls: list[str] = []
    real_count = kernels.count
    monkeypatch.setattr(kernels, "count", lambda *a, **kw: calls.append(kw["mode"]) or real_count(*a, **kw))
    net = replace(transfer_networks(larger=False, designs=("plain",))[0], batch_size=2)
    counted: dict = {}
    first = calibration.measure_network(net, counted=counted)
    assert calls == ["train", "eval"] and set(counted) == {(net.name, "train"), (net.name, "eval")}
    again = calibration.measure_network(net, counted=counted)
    assert calls == ["train", "eval"]  # not counted again
    assert [s.report for s in again] == [s.report for s in first]
    assert all(len(s.kernel_s) == len(s.report.records) for s in again)


def test_one_network_is_held_out_of_fewer_than_hold_out() -> None:
    from dnncost.prediction.calibration import HOLD_OUT, is_held_out

    assert HOLD_OUT == 4
    assert [i for i in range(9) if is_held_out(i, 9)] == [3, 7]  # every 4th
    assert [i for i in range(2) if is_held_out(i, 2)] == [1]  # of 2: the last
    assert [i for i in range(3) if is_held_out(i, 3)] == [2]
    assert not is_held_out(0, 1)  # one network: fitted, nothing to check it on


def test_calibration_times_every_network_in_passes_round_robin(monkeypatch) -> None:
    """PASSES passes: pass 1 times the transfer set, then draws and times networks; passes 2.. time
    the same ones again in the same order (T A B C T A B C ...), each network counted once; each
    network's passes are pooled and read as every measured step is (the lower quartile), with
    every pass's step time kept; the transfer set is kept apart from the networks fitted on and
    held out; a network counts as busy only when every one of its passes was."""
    from types import SimpleNamespace

    from dnncost.prediction import calibration

    rng = random.Random(11)
    names = ["transfer:t", "random0", "random1", "random2"]
    bases = {name: [network(rng, name, "train"), network(rng, name, "eval")] for name in names}
    order: list[str] = []
    # per call: a slowdown of its pass (T, 0, 1, 2 in pass 1, then pass 2, then pass 3)
    scale = iter([2.0, 3.0, 1.0, 2.0, 1.0, 1.0, 2.0, 3.0, 1.5, 2.0, 3.0, 1.0])

    def measure_quietly(net, *, threads, until, measure):  # noqa: ANN001, ANN202
        order.append(net.name)
        k = next(scale)
        busy = net.name == "random0" or (net.name == "random1" and len(order) <= 4)  # 0: every
        # pass; 1: the first
        return [replace(s, kernel_s=tuple(k * t for t in s.kernel_s), step_s=k * s.step_s,
                        step_samples=((k * s.step_s,),)) for s in bases[net.name]], busy

    monkeypatch.setattr(calibration, "sized_network",
                        lambda seed, **kw: SimpleNamespace(seed=seed, name=f"random{seed}", batch_size=1,
                                                           input_shape=(3, 8, 8), blocks=())
                        if seed < 3 else None)
    monkeypatch.setattr(calibration, "sized_transfer_set", lambda **kw: [SimpleNamespace(
        name="transfer:t", batch_size=1, input_shape=(3, 8, 8))])
    monkeypatch.setattr(calibration, "kernel_probes", lambda: [])  # this test's order: no probes
    monkeypatch.setattr(calibration, "measure_quietly", measure_quietly)
    counted: list[str] = []
    monkeypatch.setattr(calibration, "count_network",
                        lambda net: counted.append(net.name) or {(net.name, "train"): None})
    kept: list[StoredSamples] = []
    monkeypatch.setattr(calibration, "refit", lambda stored: kept.append(stored))
    calibration.calibrate_operators(budget_s=0.0, min_networks=3, passes=3)
    assert order == names * 3
    assert counted == names  # each counted once, before its first pass
    stored = kept[0]
    fitted = {s.name: s for s in stored.fitted if s.report.mode == "train"}
    # random0's passes were slowed 3x, 1x, 2x: one step each, pooled 1x, 2x, 3x, whose lower
    # quartile (position 0.25 x (3 - 1) = 0.5) is 1 + 0.5 x (2 - 1) = 1.5x; each kernel likewise
    assert fitted["random0"].step_s == pytest.approx(1.5 * bases["random0"][0].step_s)
    assert fitted["random0"].kernel_s == pytest.approx(
        tuple(1.5 * k for k in bases["random0"][0].kernel_s))
    assert fitted["random0"].pass_steps == pytest.approx(
        tuple(k * bases["random0"][0].step_s for k in (3.0, 1.0, 2.0)))
    assert len(fitted["random0"].step_samples) == 3  # every pass's steps
    # random1's passes 1x, 2x, 3x: 1.5x too
    assert fitted["random1"].step_s == pytest.approx(1.5 * bases["random1"][0].step_s)
    (transfer,) = [s for s in stored.transfer if s.report.mode == "train"]
    # the transfer network's passes 2x, 1x, 1.5x: sorted 1, 1.5, 2, lower quartile 1.25x
    assert transfer.name == "transfer:t" and transfer.step_s == pytest.approx(
        1.25 * bases["transfer:t"][0].step_s)
    assert "transfer:t" not in fitted and all(s.name != "transfer:t" for s in stored.held_out)
    assert stored.meta["passes"] == 3 and stored.meta["busy_networks"] == 1  # random0 only
    with pytest.raises(ValueError, match="passes must be a positive integer"):
        calibration.calibrate_operators(budget_s=0.0, passes=0)


def test_a_quick_calibration_times_the_probes_and_draws_at_the_anchors(monkeypatch) -> None:
    """Without a focus, a quick calibration draws every random network at the anchors in turn, at
    the full FLOPs cap (a full one: every third, at ANCHOR_FLOPS_FACTOR times it), and times the
    kernel probes as a full one does; with a focus, every network at the focus, and no probes."""
    from types import SimpleNamespace

    from dnncost.prediction import calibration

    rng = random.Random(5)
    base = {"train": network(rng, "n", "train"), "eval": network(rng, "n", "eval")}
    draws: list[tuple[int, object, float]] = []
    timed: list[str] = []

    def sized_network(seed, *, max_train_flops, focus=None):  # noqa: ANN001, ANN202
        draws.append((seed, focus, max_train_flops))
        return SimpleNamespace(seed=seed, name=f"random{seed}", batch_size=1,
                               input_shape=(3, 8, 8), blocks=()) if seed < 12 else None

    def measure_quietly(net, *, threads, until, measure):  # noqa: ANN001, ANN202
        timed.append(net.name)
        return [replace(base[m], name=net.name) for m in ("train", "eval")], False

    monkeypatch.setattr(calibration, "sized_network", sized_network)
    monkeypatch.setattr(calibration, "sized_transfer_set", lambda **kw: [])
    monkeypatch.setattr(calibration, "kernel_probes", lambda: [SimpleNamespace(
        name="probe:p", batch_size=8, input_shape=(96, 1, 1))])
    monkeypatch.setattr(calibration, "measure_quietly", measure_quietly)
    monkeypatch.setattr(calibration, "count_network", lambda net: {(net.name, "train"): None})
    monkeypatch.setattr(calibration, "refit", lambda stored: stored)
    a, b = calibration.QUICK_ANCHORS
    cap = calibration.MAX_TRAIN_FLOPS
    calibration.calibrate_operators(quick=True, budget_s=0.0, min_networks=4)
    assert timed == ["probe:p", "random0", "random1", "random2", "random3"]
    assert draws == [(0, a, cap), (1, b, cap), (2, a, cap), (3, b, cap)]
    draws.clear()
    calibration.calibrate_operators(budget_s=0.0, min_networks=12, passes=1)
    anchored = cap * calibration.ANCHOR_FLOPS_FACTOR
    first = calibration.MAP_ANCHOR
    assert draws == [(0, None, cap), (1, None, cap), (2, a, anchored), (3, None, cap), (4, None, cap),
                     (5, first, anchored), (6, None, cap), (7, None, cap), (8, b, anchored),
                     (9, None, cap), (10, None, cap), (11, first, anchored)]
    draws.clear()
    focus = calibration.Focus((3, 32, 32), 32)
    timed.clear()
    calibration.calibrate_operators(quick=True, focus=focus, budget_s=0.0, min_networks=2)
    assert draws == [(0, focus, cap), (1, focus, cap)]
    assert timed == ["random0", "random1"]


def test_an_old_pickled_model_is_refused_and_refit_from_the_stored_samples(
        tmp_path: Path, monkeypatch, capsys) -> None:
    """An old calibration (model pickled, never unpickled now): predict names the refit, and the
    refit rebuilds the model in the new format from the samples kept beside it."""
    import base64
    import pickle

    from dnncost.core.environment import machine_fingerprint
    from dnncost.measuring.calibrate import Calibration, save_calibration

    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))
    threads = torch.get_num_threads()
    fingerprint = machine_fingerprint("cpu", threads=threads)
    old = {"fingerprint": fingerprint, "threads": threads, "step_weights": [0.0] * 7,
           "regressors": base64.b64encode(pickle.dumps({"kinds": {}})).decode("ascii")}
    save_calibration(Calibration(fingerprint=fingerprint, device="cpu", threads=threads,
                                 created="2025-01-01T00:00:00+00:00", environment={})
                     .with_section("kernels", {"model": old}))
    assert main(["predict", "resnet20"]) == 2
    err = capsys.readouterr().err  # no samples kept: only a new calibration makes a model
    assert "old format" in err and "`dnncost calibrate --ops` again" in err and "--refit" not in err
    meta = {"fingerprint": fingerprint, "threads": threads, "torch_version": str(torch.__version__),
            "quick": False, "busy_networks": 0}
    save_samples(StoredSamples(stored(3).fitted, stored(3).held_out, meta), samples_path(fingerprint))
    assert main(["predict", "resnet20"]) == 2
    err = capsys.readouterr().err  # samples kept beside it: the refit is named
    assert "old format" in err and "`dnncost calibrate --ops --refit`" in err
    assert main(["calibrate", "--ops", "--refit", "--format", "json"]) == 0
    capsys.readouterr()
    assert main(["predict", "resnet20", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["predicted_step_ms"] > 0


def test_kernel_probes_are_fitted_on_but_set_no_baseline_and_no_noise() -> None:
    """A probe 100x slower per FLOP and with a wildly varying pass is fitted on (its kernels), but
    the FLOPs line's scale, the pass spreads and the step weights come from the networks alone; the
    model counts the networks, not the probes."""
    from dnncost.prediction.sampling import PROBE_PREFIX

    plain = stored(4)
    rng = random.Random(5)
    probes = tuple(replace(s, name=f"{PROBE_PREFIX}p{i}", step_s=100 * s.step_s,
                           pass_steps=(s.step_s, 9 * s.step_s))
                   for i in range(3) for s in (network(rng, f"x{i}", "train"),))
    with_probes = replace(plain, fitted=plain.fitted + probes)
    a, b = refit(plain).model, refit(with_probes).model
    assert b.baselines == a.baselines
    assert b.interval.spreads == a.interval.spreads
    # a probe's step is one kernel, not what a step costs: its row is not fitted on (a step 100x
    # the networks' would move the weights by far more); only the networks' predicted kernels,
    # which the weights are fitted beside, move with the probes, by a hair here
    assert b.step_weights == pytest.approx(a.step_weights, rel=1e-6)
    assert b.networks == a.networks == 24 and b.kernels > a.kernels



def test_refit_drops_the_retired_probes_older_samples_hold() -> None:
    """Samples kept by a calibration that still timed the large-map probes refit to the model of
    the same samples without them, and what the refit keeps has none of them."""
    from dnncost.prediction.sampling import RETIRED_PROBES, is_retired_probe

    plain = stored(4)
    rng = random.Random(7)
    retired = tuple(replace(network(rng, "x", m, slow={128: 4.0}), name=f"{RETIRED_PROBES[0]}p{i}")
                    for i in range(3) for m in ("train", "eval"))
    done = refit(replace(plain, fitted=plain.fitted + retired))
    alone = refit(plain)
    assert done.model.kernels == alone.model.kernels
    assert done.model.step_weights == pytest.approx(alone.model.step_weights)
    assert dict(done.model.held_out) == dict(alone.model.held_out)
    assert not any(is_retired_probe(s.name) for s in done.fitted)
    assert len(done.fitted) == len(plain.fitted)

def test_a_recheck_needs_networks_the_calibration_did_not_fit_on() -> None:
    """A recheck times the calibration's held-out and transfer networks again: stored samples
    without any (or a round count below one) get a one-line error naming what to run."""
    from dnncost.prediction.recheck import RecheckError, recheck
    from dnncost.prediction.samples import StoredSamples

    with pytest.raises(RecheckError, match="kept no held-out or transfer networks to time again: "
                                           "run `dnncost calibrate --ops`"):
        recheck(StoredSamples(fitted=(), held_out=()))
    with pytest.raises(RecheckError, match="at least one round, got 0"):
        recheck(StoredSamples(fitted=(), held_out=()), rounds=0)


def test_a_recheck_rebuilds_a_transfer_network_alone_as_the_calibration_built_it() -> None:
    """The recheck rebuilds each transfer network by its name, building that design alone, with
    the weights the calibration's transfer set gave it; an unknown name is a clear error."""
    from dnncost.prediction.recheck import RecheckError, rebuild_network
    from dnncost.prediction.transfer import transfer_network, transfer_networks

    every = {net.name: net for net in transfer_networks(larger=True)}
    for name, net in every.items():
        alone = transfer_network(name)
        assert alone is not None and alone.input_shape == net.input_shape
        assert all(torch.equal(a, b) for a, b in zip(alone.module.state_dict().values(),
                                                     net.module.state_dict().values(), strict=True))
    assert transfer_network("transfer:nothing@32") is None
    with pytest.raises(RecheckError, match="cannot rebuild the calibration's network 'transfer:x@32'"):
        rebuild_network("transfer:x@32", 32)
