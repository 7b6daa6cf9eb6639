"""Learning-rate schedules: warmup, each decay's shape and end points."""

import math

import pytest

from studio.config import TrainConfig
from studio.train.schedule import lr_at, lr_curve


def config(schedule, **kw):
    return TrainConfig(schedule=schedule, lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110, **kw)


def test_warmup_rises_linearly_to_the_peak():
    train = config("cosine")
    lrs = [lr_at(step, train) for step in range(10)]
    assert lrs == sorted(lrs) and lrs[0] > 0
    assert lrs[-1] == pytest.approx(1e-3 * 10 / 11)
    assert lr_at(10, train) == pytest.approx(1e-3)


def test_cosine_ends_at_min_lr_and_is_half_way_in_the_middle():
    train = config("cosine")
    assert lr_at(60, train) == pytest.approx((1e-3 + 1e-4) / 2)
    assert lr_at(110, train) == pytest.approx(1e-4)


def test_linear_and_constant():
    assert lr_at(60, config("linear")) == pytest.approx((1e-3 + 1e-4) / 2)
    assert lr_at(109, config("constant")) == pytest.approx(1e-3)


def test_inverse_time_is_lr0_over_one_plus_kt():
    train = config("inverse_time", inverse_time_k=0.1)
    assert lr_at(10 + 30, train) == pytest.approx(1e-3 / (1 + 0.1 * 30))


def test_wsd_holds_then_decays_over_the_last_fraction():
    train = config("wsd", decay_fraction=0.2)  # decay over the last 22 of 110 steps
    assert lr_at(87, train) == pytest.approx(1e-3)
    assert 1e-4 < lr_at(100, train) < 1e-3
    assert lr_at(110, train) == pytest.approx(1e-4)


def test_curve_covers_the_run():
    curve = lr_curve(config("cosine"), points=11)
    assert curve[0][0] == 0 and curve[-1][0] >= 100
    assert all(not math.isnan(lr) for _, lr in curve)
