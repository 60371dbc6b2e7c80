"""Unseen-network results in the store (schema 6): the round trip of points and left-out networks,
the migration from schema 5, merging, the report's 'Unseen networks' section, and
``dnncost evaluate --unseen`` keeping each result as it is measured and resuming."""
from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dnncost.cli import main
from dnncost.core.environment import machine_fingerprint
from dnncost.counting.formulas import OpKind
from dnncost.measuring import timing
from dnncost.measuring.measurement import Measurement
from dnncost.prediction import fresh_process, recheck, unseen
from dnncost.prediction.interval import IntervalModel
from dnncost.prediction.kernels import STEP_FEATURES
from dnncost.prediction.model import KindRegressor, OperatorModel
from dnncost.prediction.recheck import RecheckError
from dnncost.prediction.samples import StoredSamples
from dnncost.prediction.storage import save_operator_model
from dnncost.prediction.unseen import LeftOut, UnseenPoint
from dnncost.reporting.blocks import render_markdown
from dnncost.reporting.report import write_report
from dnncost.reporting.sections import unseen_blocks
from dnncost.study.findings import study_findings
from dnncost.study.store import MIGRATIONS, SCHEMA_VERSION, Store, merge, migrate, open_store
from dnncost.study.unseen import (
    calibration_id,
    protocol_config,
    start_unseen,
    unseen_groups,
    unseen_row,
)

BASELINES = {"peak_flops_per_s": 1e11, "bytes_per_s": 1e10,  # per mode: seconds per unit
             **{f"flops_{m}": 1e-11 for m in ("train", "eval")},
             **{f"params_{m}": 1e-9 for m in ("train", "eval")},
             **{f"roofline_{m}": 2.0 for m in ("train", "eval")}}


def tiny_model(**meta: object) -> OperatorModel:
    """A per-kernel model with known coefficients (no calibration run): 10 us + FLOPs / 1e10 +
    bytes / 1e11 per kernel, 100 us + 10 us per module per step."""
    regressor = KindRegressor((1e-5, 1e-10, 1e-11))
    meta = {"fingerprint": "calibrating-machine", "threads": 2, "torch_version": "2.x",
            "created": "2026-01-02T03:04:05+00:00", "quick": True, "networks": 12,
            "kernels": 3456, "held_out": {"train": {"mape": 0.118}, "eval": {"mape": 0.149}},
            "transfer": {"train": {"n": 4.0, "mape": 0.25}},
            "baselines": BASELINES, **meta}
    return OperatorModel({k: regressor for k in OpKind}, regressor,
                         (1e-4, 1e-5) + (0.0,) * (len(STEP_FEATURES) - 2), **meta)  # type: ignore[arg-type]


def point(name: str, measured: float, predicted: float, *, mode: str = "train",
          shape: tuple[int, ...] = (3, 32, 32), batch: int = 32,
          probe_s: float | None = 1e-3) -> UnseenPoint:
    return UnseenPoint(name, shape, batch, mode, measured, (measured * 1.1, measured * 1.2),
                       {"per_kernel": predicted, "flops": 2 * measured, "params": 3 * measured,
                        "roofline": measured / 2}, 1.5,
                       samples=(measured, measured * 1.1, measured * 1.3, measured * 1.2),
                       interval_s=(measured * 0.9, measured * 1.4),
                       predicted_interval_s=(predicted * 0.9, predicted * 1.1), interval_level=0.8,
                       probe_s=probe_s, level=0.95)


def _recorder(store: Store, **config: object):
    model = tiny_model()
    settings = {"rounds": 2, "repeats": 3, "warmup": 2, "threads": 1, "max_step_gflops": 250.0,
                **config}
    return start_unseen(store, model, threads=1, config=protocol_config(model, **settings))  # type: ignore[arg-type]


# -- the store -----------------------------------------------------------------------------------
def test_points_and_left_out_networks_round_trip(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        rec = _recorder(store)
        a, b = point("net_a", 0.100, 0.110), point("net_b", 0.200, 0.150)
        rec.record(a)
        rec.record(b)
        rec.record(LeftOut("vit_x", (3, 32, 32), 32, "train", "cannot take 32x32"))
        rec.finish("complete")
        assert rec.done() == {a.key, b.key}  # a left-out network is tried again on a rerun
        (group,) = unseen_groups(store)
    assert group.result.points == (a, b)  # every field back: samples, round medians, intervals
    assert group.result.skipped == {"vit_x 32x3x32x32 train": "cannot take 32x32"}
    assert group.config["calibration_id"] == "calibrating-machine@2026-01-02T03:04:05+00:00"
    assert group.result.calibration["held_out"] == {"train": {"mape": 0.118}, "eval": {"mape": 0.149}}
    assert group.environment.get("cpu_model")  # this machine, named
    (per_kernel,) = [r for r in group.result.rows() if r["method"] == "per_kernel"]
    # |0.110 - 0.100| / 0.100 = 10%, |0.150 - 0.200| / 0.200 = 25%: mean 17.5%, one of two within 10%
    assert per_kernel["n"] == 2 and per_kernel["mape_pct"] == pytest.approx(17.5)
    assert per_kernel["within_10pct"] == pytest.approx(50.0)
    # 0.100 lies in [0.099, 0.121], 0.200 not in [0.135, 0.165]; 0.110 too slow, 0.150 too fast
    assert per_kernel["coverage_pct"] == pytest.approx(50.0)
    assert (per_kernel["too_fast_pct"], per_kernel["too_slow_pct"]) == (50.0, 50.0)
    (flops,) = [r for r in group.result.rows() if r["method"] == "flops"]
    assert flops["mape_pct"] == pytest.approx(100.0)  # 2x the measured time: 100% off
    assert flops["x_per_kernel_error"] == pytest.approx(100.0 / 17.5)


def test_a_network_measured_after_being_left_out_replaces_its_left_out_row(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        rec = _recorder(store)
        rec.record(LeftOut("net_a", (3, 32, 32), 32, "train", "failed to time"))
        rec.record(LeftOut("net_a", (3, 32, 32), 32, "train", "failed to time again"))
        assert len(store.unseen_rows()) == 1
        rec.record(point("net_a", 0.1, 0.1))
        (row,) = store.unseen_rows()
        assert row.measured_s == 0.1 and row.note == ""
        (group,) = unseen_groups(store)
    assert group.result.skipped == {}


def test_protocols_and_machines_are_kept_apart(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        one, three = _recorder(store, rounds=1), _recorder(store, rounds=3)
        one.record(point("net_a", 0.1, 0.1))
        three.record(point("net_b", 0.2, 0.2))
        assert one.config_hash != three.config_hash
        assert [p.name for p in one.result().points] == ["net_a"]
        assert [g.config["rounds"] for g in unseen_groups(store)] == [1, 3]
        # the same protocol under another calibration is another group too
        other = tiny_model(created="2026-02-02T00:00:00+00:00")
        assert calibration_id(other) != one.calibration_id


def _version_5_store(path: Path) -> None:
    """A results file exactly as dnncost with schema version 5 left it (one what-if result)."""
    v5 = Store(sqlite3.connect(str(path), isolation_level=None), path)
    assert migrate(v5, 0, migrations={v: MIGRATIONS[v] for v in range(1, 6)}) == 5
    v5.conn.executescript("""
        INSERT INTO environments VALUES ('machine-a', '{"cpu_model": "old cpu"}', NULL, NULL,
            NULL, NULL);
        INSERT INTO runs VALUES ('run1', '2026-01-01T00:00:00+00:00', NULL, 'complete',
            'dnncost whatif', '{"whatif": true}', 'cfg1', 'machine-a');
        INSERT INTO networks VALUES (1, 'lenet5', 'lenet', 'cfg1', 'machine-a', '{"whatif": true}',
            '1x28x28', 4, 'random', 'cpu', 1, 1, 'none');
        INSERT INTO whatif_results (uid, network_id, run_uid, transformation, mode, applicable,
            note, measured) VALUES ('w1', 1, 'run1', 'int8', 'train', 0, 'eval only',
            '2026-01-01T00:00:10+00:00');
        """)
    v5.close()


def test_a_version_5_store_migrates_and_takes_unseen_results(tmp_path: Path) -> None:
    path = tmp_path / "v5.sqlite"
    _version_5_store(path)
    with open_store(path, read_only=True) as store:  # read through a migrated copy: no results yet
        assert unseen_groups(store) == []
    with open_store(path, create=False) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert [w.transformation for _, w in store.whatif_rows()] == ["int8"]  # old results kept
        rec = _recorder(store)
        rec.record(point("net_a", 0.1, 0.12))
    with open_store(path, read_only=True) as store:
        (group,) = unseen_groups(store)
    assert group.result.points[0].predicted_s["per_kernel"] == 0.12


def test_a_version_8_store_gains_the_interval_columns(tmp_path: Path) -> None:
    """A result kept before intervals existed reads back without one, and the protocol's coverage
    is then '-' (no interval stated), never a number made up."""
    path = tmp_path / "v8.sqlite"
    v8 = Store(sqlite3.connect(str(path), isolation_level=None), path)
    assert migrate(v8, 0, migrations={v: MIGRATIONS[v] for v in range(1, 9)}) == 8
    v8.conn.executescript("""
        INSERT INTO environments VALUES ('machine-a', '{"cpu_model": "old cpu"}', NULL, NULL,
            NULL, NULL);
        INSERT INTO unseen_results (uid, run_uid, config_hash, fingerprint, network, input_shape,
            batch_size, mode, threads, measured_s, estimator, predicted_s, flops_s, params_s,
            roofline_s, gflops, calibration_id, calibration, note, measured)
            VALUES ('u1', 'run1', 'proto', 'machine-a', 'net_a', '3x32x32', 32, 'train', 2, 0.1,
            'fastest step', 0.12, 0.2, 0.3, 0.05, 1.5, 'cal', '{}', '', '2026-01-01T00:00:00+00:00');
        """)
    v8.close()
    with open_store(path, create=False) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        (group,) = unseen_groups(store)
        (old,) = group.result.points
        assert old.predicted_interval_s is None and old.interval_level is None
        assert old.probe_s is None and math.isnan(group.result.speed_change()["32x3x32x32 train"])
        assert old.level is None and group.result.levels() == {}  # not recorded: none made up
        (row,) = [r for r in group.result.rows() if r["method"] == "per_kernel"]
        assert math.isnan(row["coverage_pct"]) and row["too_slow_pct"] == 100.0  # 0.12 > 0.1
        rec = _recorder(store)
        rec.record(point("net_b", 0.1, 0.1))
        (new,) = [r for r in store.unseen_rows() if r.network == "net_b"]
        assert (new.predicted_low_s, new.predicted_high_s, new.interval_level) == \
            pytest.approx((0.09, 0.11, 0.8))


def test_merge_copies_unseen_results_once(tmp_path: Path) -> None:
    a, out = tmp_path / "a.sqlite", tmp_path / "out.sqlite"
    with open_store(a) as store:
        rec = _recorder(store)
        rec.record(point("net_a", 0.1, 0.12))
        rec.record(LeftOut("vit_x", (3, 32, 32), 32, "train", "cannot take 32x32"))
    assert merge([a], out)["unseen_results"] == 2
    assert merge([a], out)["unseen_results"] == 0
    with open_store(out, read_only=True) as store:
        (group,) = unseen_groups(store)
    assert [p.name for p in group.result.points] == ["net_a"]


# -- the report ------------------------------------------------------------------------------------
def _synthetic_store(path: Path) -> None:
    """Unseen results of a named machine, as a full protocol would leave them: 4 networks at two
    configurations and both modes, one left out."""
    with open_store(path) as store:
        store.put_environment("machine-x", {"cpu_model": "Test CPU 9000", "cpu_cores": 2},
                              peak_flops_per_s=None, bandwidth_bytes_per_s=None, calibration=None)
        model = tiny_model(fingerprint="machine-x", probe_s=8e-4)
        config = protocol_config(model, rounds=2, repeats=3, warmup=2, threads=2,
                                 max_step_gflops=250.0)
        run = store.start_run(command="dnncost evaluate --unseen --calibration stored",
                              config=config, config_hash="proto1", fingerprint="machine-x")
        keys = {"run_uid": run, "config_hash": "proto1", "fingerprint": "machine-x", "threads": 2,
                "calibration_id": calibration_id(model), "calibration": model.summary()}
        for shape, batch in unseen.CONFIGS:
            for mode in ("train", "eval"):
                for i, (measured, predicted) in enumerate(((0.01, 0.0105), (0.02, 0.026),
                                                           (0.04, 0.036), (0.08, 0.081))):
                    store.put_unseen(unseen_row(point(f"net_{i}", measured, predicted, mode=mode,
                                                      shape=shape, batch=batch), **keys))
        store.put_unseen(unseen_row(LeftOut("vit_x", (3, 32, 32), 32, "train",
                                            "cannot take 32x32"), **keys))
        store.finish_run(run, "complete")


def test_the_report_shows_the_unseen_networks_of_a_store(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    _synthetic_store(path)
    with open_store(path, read_only=True) as store:
        files = write_report(study_findings(store), tmp_path / "report")
    text = files.markdown.read_text()
    section = text[text.index("## Unseen networks"):]
    assert "Machine: Test CPU 9000, 2 cores, 2 threads" in section
    assert "Calibration calibrating-machine" not in section  # fingerprint given: machine-x
    assert "Calibration machine-x@2026-01-02T03:04:05+00:00: a QUICK (rough) one, 12 random " \
           "networks, 3456 timed kernels" in section
    assert "held-out MAPE on random networks it did not fit: train 11.8%, eval 14.9%; on its " \
           "transfer set of standard networks it never fitted: train 25.0%" in section
    assert "intervals stated at 80% coverage" in section
    assert "dnncost evaluate --unseen --calibration stored" in section
    # per-kernel errors 5%, 30%, 10%, 1.25%: MAPE 11.5625%, three of four within +-10%, in order;
    # predicted 0.0105, 0.026, 0.036, 0.081 against 0.01, 0.02, 0.04, 0.08: one too fast (0.036),
    # three too slow; measured / predicted 0.95, 0.77, 1.11, 0.99: two inside [0.9, 1.1]
    assert "| 32x3x32x32 | train | per-kernel | 4 | 11.6% | 75% | 1 | 1 | 25% / 75% | 50% |" in section
    assert "| 8x3x224x224 | eval | FLOPs-only | 4 | 100% | 0% | 1 | 8.6 | 0% / 100% | - |" \
        in section  # 100 / 11.5625; a baseline states no interval
    assert "Left out: vit_x 32x3x32x32 train (cannot take 32x32)" in section
    # round medians 1.1x and 1.2x the measured time: a spread of 0.1 / 1.1 = 9.1% for each network
    assert "32x3x32x32 train 9.1%" in section
    # every point's probe 1 ms against the calibration's 0.8: the machine 25% slower than calibrated
    assert "Machine speed against the calibration's" in section and "8x3x224x224 eval +25%" in section
    # every point scaled by its level (0.95 each): said with where it came from
    assert "scaled by the machine's level (the calibration's last recheck; time now / time at " \
           "calibration, median): 32x3x32x32 train x0.950" in section
    figure = tmp_path / "report" / "figures" / "unseen.png"
    assert figure in files.figures and figure.read_bytes().startswith(b"\x89PNG")
    assert "Unseen networks" in files.html.read_text()


def test_an_empty_store_says_how_to_fill_the_section(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    open_store(path).close()
    with open_store(path, read_only=True) as store:
        text = render_markdown(unseen_blocks(study_findings(store)))
    assert "no unseen-network results" in text
    assert f"dnncost evaluate --unseen --calibration stored --db {path}" in text


# -- the command -----------------------------------------------------------------------------------
@pytest.fixture
def calibration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A stored calibration file with known coefficients, a tiny input configuration, and the
    groups timed in this process, where the tests' stand-ins for the timer are (the fresh
    process's own test: tests/test_fresh_process.py)."""
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(unseen, "CONFIGS", (((3, 16, 16), 2),))
    monkeypatch.setattr(fresh_process, "FRESH", False)
    return save_operator_model(tiny_model())


def test_evaluate_unseen_keeps_each_result_and_a_rerun_measures_nothing_twice(
        tmp_path: Path, calibration: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "s.sqlite"
    args = ["evaluate", "--unseen", "--calibration", calibration, "--db", str(db), "--rounds", "1",
            "--models", "shufflenet_v2_x0_5,vit_b_16", "--format", "json"]
    assert main(args) == 0  # real timing of one small network, both steps
    capsys.readouterr()
    with open_store(db, read_only=True) as store:
        rows = store.unseen_rows()
        (group,) = unseen_groups(store)
    measured = sorted((r.network, r.mode) for r in rows if r.measured_s is not None)
    assert measured == [("shufflenet_v2_x0_5", "eval"), ("shufflenet_v2_x0_5", "train")]
    assert all(len(r.samples or ()) == unseen.REPEATS
               and r.measured_s == pytest.approx(float(np.percentile(r.samples or (), 25)))
               for r in rows if r.measured_s is not None)  # a network's measured time, as ever
    assert sorted(r.mode for r in rows if r.network == "vit_b_16") == ["eval", "train"]  # left out
    assert group.config["rounds"] == 1 and group.config["calibration_id"].startswith(
        "calibrating-machine@")

    def must_not_time(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stored result was timed again")

    monkeypatch.setattr(timing, "time_model", must_not_time)  # time_interleaved calls it
    assert main(args) == 0
    with open_store(db, read_only=True) as store:
        assert len(store.unseen_rows()) == len(rows)  # the left-out rows replaced, not added
        assert [r.status for r in store.runs()] == ["complete", "complete"]


def test_an_interrupted_evaluation_keeps_what_it_measured(
        tmp_path: Path, calibration: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []

    def fake_time_model(module: object, shape: object, options: timing.StepOptions,
                        **kw: object) -> SimpleNamespace:
        calls.append(options.mode.value)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return SimpleNamespace(measurement=Measurement((0.010, 0.012, 0.011)), probe=None)

    monkeypatch.setattr(timing, "time_model", fake_time_model)  # time_interleaved calls it
    db = tmp_path / "s.sqlite"
    args = ["evaluate", "--unseen", "--calibration", calibration, "--db", str(db), "--rounds", "1",
            "--models", "mobilenet_v3_small"]
    assert main(args) == 130
    with open_store(db, read_only=True) as store:
        # the lower quartile of 10, 12 and 11 ms: sorted 10, 11, 12 at position 0.5: 10.5 ms
        assert [(r.mode, r.measured_s) for r in store.unseen_rows()] == [("train", pytest.approx(0.0105))]
        assert [r.status for r in store.runs()] == ["interrupted"]
    assert main(args) == 0  # resumes: only the validation step is timed
    assert calls == ["train", "eval", "eval"]
    with open_store(db, read_only=True) as store:
        (group,) = unseen_groups(store)
    assert sorted(p.mode for p in group.result.points) == ["eval", "train"]
    assert "1 results measured" in capsys.readouterr().out and math.isfinite(
        group.result.points[0].measured_s)


def test_a_database_in_use_is_refused_before_calibrating(
        tmp_path: Path, calibration: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.sqlite"
    with open_store(db) as holder:
        holder.lock()
        assert main(["evaluate", "--unseen", "--db", str(db), "--quick"]) == 2
    err = capsys.readouterr().err
    assert "another dnncost run" in err and "Traceback" not in err


@dataclass(frozen=True)
class _Timed:
    """What the protocol reads of a timed repeat: its measurement and the probe around it."""

    measurement: Measurement
    probe: None


def test_unseen_networks_are_timed_round_robin_each_pass_a_fresh_build(
        calibration: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    built: list[str] = []
    real_build = unseen.build_unseen
    probes = iter((1e-3, 2e-3, 3e-3, 5e-3))  # the reference probe after each repeat, in order

    def build(name: str) -> object:
        built.append(name)
        return real_build(name)

    def fake_time_model(module: object, shape: object, options: timing.StepOptions, *,
                        name: str, **kw: object) -> _Timed:
        seen.append(name)
        return _Timed(Measurement((0.010, 0.012)), None)

    monkeypatch.setattr(unseen, "build_unseen", build)
    monkeypatch.setattr(timing, "time_model", fake_time_model)
    monkeypatch.setattr(fresh_process, "Probe", lambda device: SimpleNamespace(steady=lambda: next(probes)))
    names = ["mobilenet_v3_small", "shufflenet_v2_x0_5"]
    here = {"fingerprint": machine_fingerprint("cpu", threads=torch.get_num_threads()),
            "threads": torch.get_num_threads()}
    result = unseen.evaluate_unseen(tiny_model(probe_s=1e-3, **here), names=names, rounds=2,
                                    modes=("train",), configs=(((3, 16, 16), 2),))
    assert seen == names * 2  # A B A B: drift over the run hits both alike (not A A B B)
    assert built == names * 2  # each pass builds its network afresh: one in memory at a time
    assert sorted(p.name for p in result.points) == names
    # each round's median (0.010 + 0.012) / 2 = 0.011; the fastest step of both rounds 0.010
    assert all(p.round_medians_s == pytest.approx((0.011, 0.011)) and p.measured_s == 0.010
               for p in result.points)
    # A's probes 1 and 3 ms, B's 2 and 5: medians 2 and 3.5 ms; their median 2.75 ms against the
    # calibration's 1 ms: the machine 175% slower than while calibrated
    assert {p.name: p.probe_s for p in result.points} == pytest.approx(
        {"mobilenet_v3_small": 2e-3, "shufflenet_v2_x0_5": 3.5e-3})
    assert result.speed_change() == pytest.approx({"2x3x16x16 train": 1.75})
    # another machine's calibration: its probe is no speed of this one, so none is read
    elsewhere = unseen.evaluate_unseen(tiny_model(probe_s=1e-3), names=names[:1], rounds=1,
                                       modes=("train",), configs=(((3, 16, 16), 2),))
    assert elsewhere.points[0].probe_s is None
    assert math.isnan(elsewhere.speed_change()["2x3x16x16 train"])


def test_the_level_measured_alongside_scales_every_prediction(
        calibration: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given the calibration's timed networks, each round first times its held-out and transfer
    ones again; the median of their time now over their time at calibration replaces the model's
    stored level for every method's prediction and the interval."""
    seen: list[str] = []
    now = {"random1": 0.004, "transfer:plain@32": 0.006, "transfer:attention@32": 0.1}

    def fake_time_model(module: object, shape: object, options: timing.StepOptions, *,
                        name: str, **kw: object) -> _Timed:
        seen.append(name)
        if name == "transfer:mbconv@32":
            raise RuntimeError("out of memory")  # left out of the level, the run goes on
        step = now.get(name, 0.010)
        return _Timed(Measurement((step, step)), None)

    def sample(name: str, step_s: float) -> SimpleNamespace:
        return SimpleNamespace(name=name, step_s=step_s, report=SimpleNamespace(
            mode="train", input_shape=(3, 16, 16), batch_size=2))

    # time now / then: 0.004 / 0.002 = 2, 0.006 / 0.002 = 3, 0.1 / 0.1 = 1: median 2
    calibrated = StoredSamples(fitted=(), held_out=(sample("random1", 0.002),),  # type: ignore[arg-type]
                               transfer=(sample("transfer:plain@32", 0.002),  # type: ignore[arg-type]
                                         sample("transfer:attention@32", 0.1),
                                         sample("transfer:mbconv@32", 0.1)))
    monkeypatch.setattr(recheck, "rebuild_network", lambda name, side: torch.nn.Linear(1, 1))
    monkeypatch.setattr(timing, "time_model", fake_time_model)
    names = ["mobilenet_v3_small", "shufflenet_v2_x0_5"]
    model = replace(tiny_model(), level={"train": 1.5},  # its last recheck: x1.5
                    interval=IntervalModel({"train": (-0.2, -0.1, 0.0, 0.1, 0.2)}))
    settings = {"names": names, "rounds": 2, "modes": ("train",), "configs": (((3, 16, 16), 2),)}
    stored = unseen.evaluate_unseen(model, **settings)  # type: ignore[arg-type]
    assert seen == names * 2
    seen.clear()
    along = unseen.evaluate_unseen(model, recheck=calibrated, **settings)  # type: ignore[arg-type]
    # the level's networks first in each round; the one that failed is not tried again
    assert seen == [*now, "transfer:mbconv@32", *names, *now, *names]
    assert stored.levels() == {"2x3x16x16 train": 1.5}
    assert along.levels() == {"2x3x16x16 train": 2.0}
    for a, b in zip(stored.points, along.points, strict=True):
        assert b.predicted_s == pytest.approx({m: v * 2.0 / 1.5 for m, v in a.predicted_s.items()})
        assert a.predicted_interval_s is not None and b.predicted_interval_s == pytest.approx(
            tuple(v * 2.0 / 1.5 for v in a.predicted_interval_s))
    # the same measurements at the stored level: the predictions a user of that level would get
    back = along.at_level(model.level)
    assert back.levels() == stored.levels()
    assert [p.predicted_s for p in back.points] == pytest.approx([p.predicted_s for p in stored.points])
    # the model's own prediction at its level, the baselines too: one level for every method
    at_one = unseen._predict(names[0], (3, 16, 16), 2, "train", replace(model, level={}))
    assert stored.points[0].predicted_s == pytest.approx(
        {m: 1.5 * v for m, v in at_one.seconds.items()})
    none_ran = StoredSamples(fitted=(), held_out=(),
                             transfer=(sample("transfer:mbconv@32", 0.1),))  # type: ignore[arg-type]
    with pytest.raises(RecheckError, match="none of the calibration's 1 held-out and transfer "
                                           "networks ran alongside the train steps"):
        unseen.evaluate_unseen(model, recheck=none_ran, **settings)  # type: ignore[arg-type]


def test_evaluate_help_states_the_protocols_default_rounds() -> None:
    """The CLI builds its parser without importing torch, so --rounds' help states the default as a
    literal: it must be the protocol's."""
    from dnncost.cli import build_parser
    from dnncost.prediction import unseen

    parser = build_parser()
    evaluate = next(a for a in parser._subparsers._group_actions  # type: ignore[union-attr]
                    if a.dest == "command").choices["evaluate"]
    rounds = next(a for a in evaluate._actions if "--rounds" in a.option_strings)
    assert f"(default: {unseen.ROUNDS};" in rounds.help
