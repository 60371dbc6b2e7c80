"""dnncost.measuring.probe: the reference workload, its reading and the quiet-machine reference."""
from __future__ import annotations

import math

import pytest

from dnncost.measuring.probe import Probe, ProbeReading, load_reference, record_probe, reference_path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))


def test_probe_runs_and_returns_a_positive_time() -> None:
    assert Probe("cpu").run(reps=2) > 0


def test_reading_drift_arithmetic() -> None:
    reading = ProbeReading(before_s=1.0e-3, after_s=1.5e-3, reference_s=1.0e-3)
    assert reading.probe_s == pytest.approx(1.25e-3)  # (1.0 + 1.5) / 2
    assert reading.drift == pytest.approx(0.25)  # 1.25 / 1.0 - 1
    assert math.isnan(ProbeReading(1e-3, 1e-3, None).drift)
    assert reading.to_dict()["drift"] == pytest.approx(0.25)


def test_reference_keeps_the_fastest_probe() -> None:
    assert load_reference("cpu", threads=1) is None
    assert record_probe(2e-3, "cpu", threads=1) == 2e-3
    assert record_probe(3e-3, "cpu", threads=1) == 2e-3  # slower: the record stands
    assert record_probe(1e-3, "cpu", threads=1) == 1e-3  # faster: it becomes the record
    assert load_reference("cpu", threads=1) == 1e-3
    assert load_reference("cpu", threads=2) is None  # each thread count has its own


def test_unreadable_reference_is_none_and_replaced() -> None:
    path = reference_path("cpu", threads=1)
    path.parent.mkdir(parents=True)
    path.write_text("not json")
    assert load_reference("cpu", threads=1) is None
    assert record_probe(4e-3, "cpu", threads=1) == 4e-3
    assert load_reference("cpu", threads=1) == 4e-3
