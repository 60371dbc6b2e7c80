"""Cost vs work on synthetic steps with known answers: an exact affine law (fixed cost + FLOPs at one
speed) is recovered, time turns linear where the fixed part falls under 10%, per-sample time and
achieved FLOP/s follow, and the series are split by axis."""
from __future__ import annotations

import math

import pytest

from dnncost.study.work import FIXED_SHARE_MAX, WorkAxis, WorkPoint, cost_vs_work

FIXED_S = 2e-3  # a 2 ms fixed cost per step
SPEED = 1e10  # 10 GFLOP/s for the part that grows with work
PER_SAMPLE = 1e6  # FLOPs per sample at input 32


def _step(batch: int, size: int) -> WorkPoint:
    flops = PER_SAMPLE * batch * (size / 32) ** 2  # work grows with batch and with pixels
    return WorkPoint("net", batch, size, FIXED_S + flops / SPEED, flops)


def _grid() -> list[WorkPoint]:
    return [_step(b, 32) for b in (1, 2, 4, 8, 16, 32, 64, 128)] + [_step(32, s) for s in (64, 128)]


def test_affine_law_recovered_on_both_axes():
    series = {(s.axis, s.held): s for s in cost_vs_work(_grid())}
    assert set(series) == {(WorkAxis.BATCH, 32), (WorkAxis.INPUT, 32)}
    batch = series[(WorkAxis.BATCH, 32)]
    assert batch.fixed_s == pytest.approx(FIXED_S, rel=1e-6)
    assert batch.marginal_flops_per_s == pytest.approx(SPEED, rel=1e-6)
    assert batch.r_squared == pytest.approx(1.0)
    assert batch.fixed_ci[0] <= FIXED_S <= batch.fixed_ci[1]
    inputs = series[(WorkAxis.INPUT, 32)]
    assert [p.input_size for p in inputs.points] == [32, 64, 128]
    assert inputs.fixed_s == pytest.approx(FIXED_S, rel=1e-6)


def test_linear_from_where_fixed_part_is_small():
    batch = next(s for s in cost_vs_work(_grid()) if s.axis is WorkAxis.BATCH)
    # fixed share = 2 ms / (2 ms + b * 0.1 ms): b = 1 -> 0.95; b = 128 -> 2 / 14.8 = 0.135; never
    # <= 10% within batch 128, so not linear in the range.
    assert batch.fixed_share(batch.points[0]) == pytest.approx(2 / 2.1)
    assert batch.linear_from_flops is None
    # a 10x cheaper fixed cost: share at b = 32 is 0.2 / (0.2 + 3.2) = 0.059 <= 10%,
    # at b = 16 it is 0.2 / 1.8 = 0.111 > 10%: linear from batch 32 on
    cheap = [WorkPoint("net", b, 32, 2e-4 + PER_SAMPLE * b / SPEED, PER_SAMPLE * b)
             for b in (1, 4, 16, 32, 128)]
    (series,) = cost_vs_work(cheap)
    assert series.linear_from_flops == pytest.approx(PER_SAMPLE * 32)
    assert FIXED_SHARE_MAX == 0.1


def test_rows_per_sample_speed_and_local_slope():
    batch = next(s for s in cost_vs_work(_grid()) if s.axis is WorkAxis.BATCH)
    rows = batch.rows()
    first, last = rows[0], rows[-1]
    assert first["ms_per_sample"] == pytest.approx(2.1)  # (2 ms + 0.1 ms) / 1 sample
    assert last["ms_per_sample"] == pytest.approx((2 + 12.8) / 128)
    assert last["gflops_per_s"] == pytest.approx(128e6 / 14.8e-3 / 1e9)
    assert math.isnan(first["local_slope"])
    # from batch 64 (8.4 ms) to 128 (14.8 ms): log(14.8 / 8.4) / log 2
    assert last["local_slope"] == pytest.approx(math.log(14.8 / 8.4) / math.log(2))
    assert "GFLOP/s" in batch.summary


def test_single_points_and_bad_points_make_no_series():
    assert cost_vs_work([_step(1, 32)]) == []
    assert cost_vs_work([WorkPoint("x", 1, 32, 0.0, 1e6), WorkPoint("x", 2, 32, 1e-3, 2e6)]) == []


def test_one_warm_up_default_for_every_timer() -> None:
    from dnncost.core.kinds import DEFAULT_WARMUP
    from dnncost.measuring.timing import StepOptions
    from dnncost.study.config import StudyConfig
    from dnncost.study.work import WORK_STEP

    assert StepOptions().warmup == StudyConfig().warmup == WORK_STEP.warmup == DEFAULT_WARMUP == 2
