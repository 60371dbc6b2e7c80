"""dnncost.measuring.calibrate: FLOP/s and bandwidth arithmetic, storage, merging, extension sections."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import dnncost.measuring.calibrate as cal
from dnncost.core.device import quiet_cpp_extension_notice
from dnncost.core.environment import machine_fingerprint
from dnncost.core.errors import CalibrationError, InputSpecError
from dnncost.measuring.calibrate import (
    Calibration,
    ConvPeak,
    MatmulPeak,
    cache_dir,
    calibrate,
    calibration_dtype,
    calibration_path,
    load_calibration,
    measure_bandwidth,
    measure_conv,
    measure_matmul,
    save_calibration,
)
from dnncost.measuring.measurement import Measurement


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))
    return tmp_path


def fake_timer(monkeypatch: pytest.MonkeyPatch, seconds: dict[str, float]) -> list[dict]:
    """Replace the torch.utils.benchmark timing with fixed per-call times, keyed by statement."""
    calls: list[dict] = []

    def timed(stmt, tensors, *, threads, min_run_time):
        calls.append({"stmt": stmt, "threads": threads, **{k: v for k, v in tensors.items() if k != "torch"}})
        return Measurement((seconds[stmt], 3 * seconds[stmt], 2 * seconds[stmt]))  # one fast block
    monkeypatch.setattr(cal, "_timer_samples", timed)
    return calls


def test_matmul_peak_is_2n3_over_the_fastest_block_and_the_best_size_wins(monkeypatch) -> None:
    calls = fake_timer(monkeypatch, {"torch.mm(a, b)": 0.001})
    peak = measure_matmul("float32", device=torch.device("cpu"), threads=1, sizes=(32, 64))
    # same 1 ms for both sizes, so 64 wins: 2 * 64**3 / 0.001 = 524,288,000 FLOP/s
    assert (peak.size, peak.flops_per_s) == (64, 524_288_000.0)
    assert [c["a"].shape for c in calls] == [(32, 32), (64, 64)]
    assert calls[0]["a"].dtype == torch.float32
    bf16 = measure_matmul("bfloat16", device=torch.device("cpu"), threads=1, sizes=(16,))
    assert calls[-1]["b"].dtype == torch.bfloat16 and bf16.dtype == "bfloat16"


def test_bandwidth_counts_read_plus_write(monkeypatch) -> None:
    fake_timer(monkeypatch, {"dst.copy_(src)": 0.002})
    bw = measure_bandwidth(device=torch.device("cpu"), threads=1, nbytes=2**20)
    # 1 MiB read + 1 MiB written in 2 ms: 2 * 1,048,576 / 0.002 = 1,048,576,000 B/s
    assert (bw.nbytes, bw.bytes_per_s) == (2**20, 1_048_576_000.0)


CONV = "F.conv2d(x, w, padding=1)"


def test_conv_peak_is_2nc2_9hw_over_the_fastest_block_and_the_best_shape_wins(monkeypatch) -> None:
    calls = fake_timer(monkeypatch, {CONV: 0.001})
    conv = measure_conv("float32", device=torch.device("cpu"), threads=1, shapes=((2, 4, 8), (2, 8, 8)))
    # same 1 ms for both; (2, 8, 8) wins: 2 * 2 * 8 * 8 * 9 * 8 * 8 / 0.001 = 147,456,000 FLOP/s
    assert (conv.shape, conv.flops_per_s) == ((2, 8, 8), 147_456_000.0)
    assert [tuple(c["x"].shape) for c in calls] == [(2, 4, 8, 8), (2, 8, 8, 8)]
    assert tuple(calls[1]["w"].shape) == (8, 8, 3, 3) and calls[1]["x"].dtype == torch.float32


def test_no_benchmark_of_the_calibration_exceeds_its_peak(monkeypatch) -> None:
    """The peak is the fastest of the matmul and convolution benchmarks, so neither is above 100%
    of it (issue 13: a matmul-only peak put the convolution-heavy VGG-16 at 146%)."""
    fake_timer(monkeypatch, {"torch.mm(a, b)": 0.001, CONV: 0.001, "dst.copy_(src)": 0.001})
    monkeypatch.setattr(cal, "QUICK_MATMUL_SIZES", (64,))
    monkeypatch.setattr(cal, "QUICK_CONV_SHAPES", ((2, 8, 8),))
    c = calibrate("cpu", threads=1, quick=True)
    # matmul: 2 * 64**3 / 0.001 = 524,288,000; conv: 2 * 2 * 8 * 8 * 9 * 8 * 8 / 0.001 = 147,456,000
    assert c.matmul["float32"].flops_per_s == 524_288_000.0
    assert c.conv["float32"].flops_per_s == 147_456_000.0
    assert c.peak_flops_per_s("float32") == 524_288_000.0
    monkeypatch.setattr(cal, "QUICK_CONV_SHAPES", ((2, 16, 16),))  # 16x the conv's work
    c = calibrate("cpu", threads=1, quick=True)
    # conv: 2 * 2 * 16 * 16 * 9 * 16 * 16 / 0.001 = 2,359,296,000 beats the matmul
    assert c.peak_flops_per_s("float32") == 2_359_296_000.0
    for bench in (c.matmul["float32"], c.conv["float32"]):
        assert bench.flops_per_s / c.peak_flops_per_s("float32") <= 1.0


def test_a_real_quick_calibration_measures_something() -> None:
    c = calibrate("cpu", threads=1, quick=True)
    assert c.threads == 1 and c.fingerprint == machine_fingerprint("cpu", threads=1)
    assert c.peak_flops_per_s("float32") > 1e6 and c.bandwidth.bytes_per_s > 1e6
    assert c.peak_flops_per_s("float64") is None  # not measured
    peak_ = c.peak_flops_per_s("float32")
    assert max(c.matmul["float32"].flops_per_s, c.conv["float32"].flops_per_s) == peak_


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(InputSpecError, match="float8"):
        calibrate("cpu", dtypes=["float8"], quick=True)


def test_dtype_aliases_are_stored_under_their_canonical_name() -> None:
    assert calibration_dtype("fp16") == "float16" and calibration_dtype("torch.bfloat16") == "bfloat16"
    with pytest.raises(InputSpecError, match="floating dtypes only.*'int8'"):
        calibration_dtype("int8")  # a known dtype, but no matmul peak to measure


def test_the_cpp_extension_notice_is_quietened_unless_the_user_set_its_level() -> None:
    log = logging.getLogger("torch.utils.cpp_extension")
    saved = log.level
    try:
        log.setLevel(logging.NOTSET)
        quiet_cpp_extension_notice()
        assert log.level == logging.ERROR
        log.setLevel(logging.DEBUG)  # the user's choice stands
        quiet_cpp_extension_notice()
        assert log.level == logging.DEBUG
    finally:
        log.setLevel(saved)


def peak(dtype: str, flops: float) -> MatmulPeak:
    return MatmulPeak(dtype, 128, flops, Measurement((1e-3, 1.1e-3)))


def make(threads: int = 1, **kwargs) -> Calibration:
    return Calibration(machine_fingerprint("cpu", threads=threads), "cpu", threads,
                       "2025-01-01T00:00:00+00:00", {"cpu_model": "x"}, **kwargs)


def test_stored_per_fingerprint_and_absent_is_none(cache: Path) -> None:
    assert cache_dir() == cache
    assert load_calibration("cpu", threads=1) is None
    path = save_calibration(make(matmul={"float32": peak("float32", 5e10)}))
    assert path == cache / "calibration" / f"{machine_fingerprint('cpu', threads=1)}.json"
    assert path == calibration_path("cpu", threads=1)
    loaded = load_calibration("cpu", threads=1)
    assert loaded.peak_flops_per_s("float32") == 5e10
    assert loaded.matmul["float32"].measurement.samples == (1e-3, 1.1e-3)
    assert load_calibration("cpu", threads=2) is None  # another thread count, another file


def test_saving_merges_dtypes_and_keeps_extension_sections() -> None:
    first = make(matmul={"float32": peak("float32", 5e10)}).with_section(
        "operators", {"aten.convolution": {"fit": [1.0, 2.0]}})
    save_calibration(first)
    save_calibration(make(matmul={"float64": peak("float64", 2e10), "float32": peak("float32", 6e10)}))
    merged = load_calibration("cpu", threads=1)
    assert merged.peak_flops_per_s("float64") == 2e10
    assert merged.peak_flops_per_s("float32") == 6e10  # the newer measurement wins
    assert merged.sections == {"operators": {"aten.convolution": {"fit": [1.0, 2.0]}}}
    with pytest.raises(ValueError):
        make().with_section("matmul", {})


def test_conv_peaks_are_stored_and_merged_and_older_files_read_without_them(cache: Path) -> None:
    conv = ConvPeak("float32", (32, 256, 8), 3e11, Measurement((1e-2,)))
    save_calibration(make(matmul={"float32": peak("float32", 2e11)}, conv={"float32": conv}))
    loaded = load_calibration("cpu", threads=1)
    assert loaded.conv == {"float32": conv} and loaded.sections == {}
    assert loaded.peak_flops_per_s("float32") == 3e11  # the convolution was faster
    save_calibration(make(matmul={"float32": peak("float32", 2.5e11)}))  # a matmul-only update
    assert load_calibration("cpu", threads=1).conv == {"float32": conv}  # kept by the merge
    path = calibration_path("cpu", threads=1)
    data = json.loads(path.read_text())
    del data["conv"]  # as written before the convolution benchmark existed
    path.write_text(json.dumps(data))
    older = load_calibration("cpu", threads=1)
    assert older.conv == {} and older.peak_flops_per_s("float32") == 2.5e11
    with pytest.raises(ValueError):
        make().with_section("conv", {})


def test_study_measures_its_own_peak_over_a_cached_calibration_without_the_conv(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached calibration from before the convolution benchmark (or one holding only a
    per-operator model) understated the peak: the study measures a calibration instead."""
    from dnncost.study.calibration import machine_calibration
    from dnncost.study.store import open_store

    conv = ConvPeak("float32", (32, 256, 8), 3e11, Measurement((1e-2,)))
    monkeypatch.setattr(cal, "calibrate", lambda *a, **k: make(
        matmul={"float32": peak("float32", 2e11)}, conv={"float32": conv}))
    save_calibration(make(matmul={"float32": peak("float32", 1e11)}))  # matmul only
    with open_store(tmp_path / "s.sqlite") as store:
        found, _, source, _ = machine_calibration(store, "fp", torch.device("cpu"), 1)
        assert (found, source.startswith("measured by the study")) == (3e11, True)
        save_calibration(make(conv={"float32": conv}))  # now cached with the convolution
        found, _, source, _ = machine_calibration(store, "fp", torch.device("cpu"), 1)
        assert (found, source.startswith("dnncost calibrate")) == (3e11, True)


def test_study_takes_the_cached_model_through_the_one_reader_and_warns_on_an_old_one(
        cache: Path, tmp_path: Path) -> None:
    """The study stores the cached per-kernel model as the reader returns it (plain data); an old
    pickled one is warned about and left out, never unpickled."""
    from dnncost.prediction.model import OperatorModel
    from dnncost.study.calibration import machine_calibration
    from dnncost.study.store import open_store
    from test_predict import tiny_model

    conv = ConvPeak("float32", (32, 256, 8), 3e11, Measurement((1e-2,)))
    model = tiny_model(fingerprint="fp", threads=1)
    save_calibration(make(conv={"float32": conv}).with_section("kernels", {"model": model.to_dict()}))
    with open_store(tmp_path / "s.sqlite") as store:
        *_, stored = machine_calibration(store, "fp", torch.device("cpu"), 1)
        assert OperatorModel.from_dict(stored).to_dict() == model.to_dict()
        save_calibration(make(conv={"float32": conv}).with_section(
            "kernels", {"model": {"regressors": "gASVAAAA", "step_weights": []}}))
        with pytest.warns(UserWarning, match="old format"):
            *_, stored = machine_calibration(store, "fp", torch.device("cpu"), 1)
        assert stored is None


def test_unreadable_or_foreign_files_are_store_errors(cache: Path) -> None:
    path = calibration_path("cpu", threads=1)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(CalibrationError, match="unreadable"):
        load_calibration("cpu", threads=1)
    path.write_text(json.dumps({"schema": 99}))
    with pytest.raises(CalibrationError, match="schema 99"):
        load_calibration("cpu", threads=1)
    path.write_text(json.dumps({"schema": 1, "device": "cpu"}))
    with pytest.raises(CalibrationError, match="malformed"):
        load_calibration("cpu", threads=1)
    save_calibration(make(matmul={"float32": peak("float32", 1e9)}))  # a new calibration replaces it
    assert load_calibration("cpu", threads=1).peak_flops_per_s() == 1e9


def test_calibrate_ops_then_predict_from_the_cli(tmp_path, monkeypatch, capsys):
    """`dnncost calibrate --ops` fits the per-operator model that `dnncost predict` needs.

    Kept small so that a busy machine cannot stretch it to the test timeout: no time budget, so
    only the quick calibration's fewest networks (2), timed on one thread (with two, every kernel
    waits at its barrier for a thread another process holds), and the fit on FIT_THREADS."""
    import json

    from dnncost.cli import main
    from dnncost.prediction import calibration

    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(calibration, "QUICK_BUDGET_S", 0.0)
    threads = torch.get_num_threads()
    try:
        assert main(["predict", "lenet5", "--threads", "1"]) == 2
        assert "dnncost calibrate --ops" in capsys.readouterr().err
        assert main(["calibrate", "--ops", "--quick", "--threads", "1", "--format", "json"]) == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    assert main(["predict", "lenet5", "--batch-size", "8", "--threads", "1", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    # the calibration kept the machine's speed (the reference probe), set against it now
    assert payload["model_fit"]["probe_ms"] > 0 and isinstance(payload["speed_change"], float)
    # a recheck times the calibration's held-out and transfer networks again and stores the level
    # they give with the model; predictions are scaled by it from then on
    assert main(["calibrate", "--recheck"]) == 2
    assert "--recheck times the per-kernel model's networks again: give it with --ops" in \
        capsys.readouterr().err
    try:
        assert main(["calibrate", "--ops", "--recheck", "--rounds", "1", "--threads", "1",
                     "--format", "json"]) == 0
    finally:
        torch.set_num_threads(threads)
    recheck = json.loads(capsys.readouterr().out)["rechecks"][0]
    assert set(recheck["level"]) == {"train", "eval"} and all(v > 0 for v in recheck["level"].values())
    assert all(len(r) >= 1 for r in recheck["ratios"].values()) and recheck["rounds"] == 1
    assert main(["predict", "lenet5", "--batch-size", "8", "--threads", "1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_fit"]["level"] == recheck["level"]
    # the unseen protocol can measure the level alongside instead: the same networks, first in
    # every round; it needs them, so a calibration file alone is refused before anything runs
    assert main(["evaluate", "--unseen", "--recheck", "--calibration", str(tmp_path / "m.json"),
                 "--models", "shufflenet_v2_x0_5"]) == 2
    assert "a calibration file" in capsys.readouterr().err
    assert main(["evaluate", "--recheck"]) == 2
    assert "--recheck belongs to the unseen-network protocol: add --unseen" in capsys.readouterr().err
    try:
        assert main(["evaluate", "--unseen", "--quick", "--recheck", "--calibration", "stored",
                     "--models", "shufflenet_v2_x0_5", "--threads", "1", "--db",
                     str(tmp_path / "u.sqlite"), "--format", "json"]) == 0
    finally:
        torch.set_num_threads(threads)
    unseen = json.loads(capsys.readouterr().out)
    assert set(unseen["levels"]) == {"32x3x32x32 train", "32x3x32x32 eval"}
    assert all(p["level"] == unseen["levels"][f"{p['input']} {p['mode']}"] > 0
               for p in unseen["points"])
    assert {r["step"] for r in unseen["at_stored_level"]} == {"train", "eval"}  # beside it
