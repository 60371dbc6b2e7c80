"""dnncost.prediction.interval: the signed split-conformal bounds by hand, the interval centred on
the prediction with the bias reported, the pass-to-pass noise added in quadrature, the coverage
reached on exchangeable data, and the plain-data round trip."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dnncost.prediction.errors import ModelFormatError
from dnncost.prediction.interval import IntervalModel, conformal_bounds, normal_bounds, pass_spread


def test_conformal_bounds_pick_the_order_statistics() -> None:
    # n = 19, coverage 0.8: alpha / 2 = 0.1; k_lo = floor(20 * 0.1) = 2, k_hi = ceil(20 * 0.9) = 18
    assert conformal_bounds(list(range(1, 20)), 0.8) == (2.0, 18.0, True)
    # n = 9: k_lo = floor(10 * 0.1) = 1, k_hi = ceil(10 * 0.9) = 9: the extremes, still valid
    assert conformal_bounds([5, 1, 9, 2, 8, 3, 7, 4, 6], 0.8) == (1.0, 9.0, True)
    # n = 5: k_lo = floor(6 * 0.1) = 0 and k_hi = ceil(6 * 0.9) = 6 > 5: the extremes, not guaranteed
    assert conformal_bounds([0.1, -0.2, 0.3, 0.0, 0.05], 0.8) == (-0.2, 0.3, False)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        conformal_bounds([1.0], 1.0)


def test_the_interval_is_centred_on_the_prediction_and_the_bias_reported() -> None:
    """Every network ran 20-40% slower than predicted: the interval keeps the residuals' spread
    about their median (1.2 + 0.2 * 9 / 18 = 1.3) around the prediction, and the summary reports
    that median."""
    slow = tuple(math.log(1.2 + 0.2 * i / 18) for i in range(19))
    model = IntervalModel({"train": slow})
    low, high = model.factors("train")
    # k_lo = 2: 1.2 + 0.2 / 18; k_hi = 18: 1.2 + 0.2 * 17 / 18 (no pass spreads: no widening)
    assert (low, high) == pytest.approx(((1.2 + 0.2 / 18) / 1.3, (1.2 + 0.2 * 17 / 18) / 1.3))
    assert low < 1.0 < high
    assert model.summary()["train"]["median_ratio"] == pytest.approx(1.3)  # type: ignore[index]


def test_pass_noise_widens_each_side_in_quadrature() -> None:
    residuals = tuple(np.linspace(-0.1, 0.1, 19))  # median 0, k_lo = 2 and k_hi = 18: -+0.0889
    q = 0.1 * 8 / 9
    model = IntervalModel({"eval": residuals}, {"eval": (0.05,) * 10})
    low, high = model.log_bounds("eval")
    # each side: sqrt(0.0889^2 + 0.05^2)
    assert (low, high) == pytest.approx((-math.hypot(q, 0.05), math.hypot(q, 0.05)))
    assert IntervalModel({"eval": residuals}).log_bounds("eval") == pytest.approx((-q, q))
    assert model.factors("train") is None  # no residuals of that mode: no interval


def mean_coverage(rng: np.random.Generator, *, n: int, calibrations: int, new: int) -> float:
    """The mean share of ``new`` fresh residuals inside the 80% interval of ``n`` calibration
    residuals, over ``calibrations`` draws; every residual normal (mean 0, sd 0.2)."""
    covered = []
    for _ in range(calibrations):
        low, high = IntervalModel({"train": tuple(rng.normal(0.0, 0.2, n))}).log_bounds("train")
        fresh = rng.normal(0.0, 0.2, new)
        covered.append(np.mean((low <= fresh) & (fresh <= high)))
    return float(np.mean(covered))


def test_the_stated_coverage_is_reached_on_exchangeable_residuals() -> None:
    """Residuals of an unbiased, noisy predictor (log-normal). The conformal guarantee is on
    average over calibrations: with n = 40, k_lo = floor(41 * 0.1) = 4 and k_hi = ceil(41 * 0.9)
    = 37, a new residual falls between them with probability (37 - 4) / 41 = 80.5%; the interval
    moves them by the residuals' median, about 0 here. Over 300 calibrations of 40, each checked
    on 2,000 new residuals, the mean coverage is that."""
    rng = np.random.default_rng(0)
    assert mean_coverage(rng, n=40, calibrations=300, new=2_000) == pytest.approx(33 / 41, abs=0.01)
    model = IntervalModel({"train": tuple(rng.normal(0.0, 0.2, 40))})
    low, high = model.log_bounds("train")
    wider = model.log_bounds("train", 0.95)
    assert wider[0] < low and wider[1] > high  # a higher coverage, a wider interval


def test_with_too_few_residuals_the_normal_interval_keeps_the_coverage() -> None:
    """With 5 residuals (a quick calibration's) the conformal bounds fall back on the extremes,
    which cover (5 - 1) / (5 + 1) = 67% of new residuals; the normal prediction interval, mean +-
    t(4, 0.9) s sqrt(1.2), covers 80% of normal ones, and the interval is the wider of the two."""
    residuals = (0.1, -0.2, 0.3, 0.0, 0.05)
    lo, hi = normal_bounds(residuals, 0.8)
    half = 1.5332 * float(np.std(residuals, ddof=1)) * math.sqrt(1.2)  # t(4) at 0.9: 1.5332
    assert (lo, hi) == pytest.approx((0.05 - half, 0.05 + half), abs=1e-4)
    # wider than the extremes (-0.2, 0.3); no pass spreads, so no widening in quadrature
    assert lo < -0.2 and hi > 0.3
    # about the prediction: moved by the residuals' median, 0.05
    assert IntervalModel({"train": residuals}).log_bounds("train") == pytest.approx((lo - 0.05, hi - 0.05))
    assert not IntervalModel({"train": residuals}).guaranteed("train")
    rng = np.random.default_rng(1)
    # the extremes alone: 0.67; moved by the sample median, not the mean, the normal interval
    # covers a little more than 80% of unbiased residuals (0.82 over these draws), never less
    assert 0.8 <= mean_coverage(rng, n=5, calibrations=1_000, new=500) <= 0.85
    with pytest.raises(ValueError, match="two residuals or more"):
        normal_bounds([0.1], 0.8)


def test_pass_spread_is_half_the_log_range() -> None:
    assert pass_spread((1.0, 1.21, 1.1)) == pytest.approx(math.log(1.1))  # log(1.21) / 2
    assert pass_spread((1.0,)) is None and pass_spread(()) is None


def test_round_trip_and_a_malformed_interval() -> None:
    model = IntervalModel({"train": (0.1, -0.2)}, {"train": (0.03,)})
    assert IntervalModel.from_dict(json.loads(json.dumps(model.to_dict()))) == model
    with pytest.raises(ModelFormatError, match=r"interval.residuals.train must hold numbers only"):
        IntervalModel.from_dict({"residuals": {"train": ["0.1"]}, "spreads": {}})
    with pytest.raises(ModelFormatError, match="interval lacks spreads"):
        IntervalModel.from_dict({"residuals": {}})
    summary = model.summary()
    assert summary["coverage"] == 0.8 and summary["train"]["residuals"] == 2  # type: ignore[index]
