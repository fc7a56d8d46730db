"""Depth metrics on hand-computed cases."""

import math

import numpy as np
import pytest

from imexdepth_train import metrics, realeval


def test_perfect_prediction():
    gt = np.array([1.0, 2.0, 4.0, 8.0])
    m = metrics.depth_metrics(gt.copy(), gt)
    for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "abs_rel_ms"):
        assert m[k] == pytest.approx(0.0, abs=1e-12)
    assert m["delta1"] == 1.0 and m["ordinal"] == 1.0 and m["spearman"] == pytest.approx(1.0)


def test_constant_prediction_by_hand():
    gt, pred = np.array([1.0, 2.0, 4.0]), np.ones(3)
    m = metrics.depth_metrics(pred, gt)
    assert m["abs_rel"] == pytest.approx((0 + 0.5 + 0.75) / 3)
    assert m["sq_rel"] == pytest.approx((0 + 1 / 2 + 9 / 4) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(10 / 3))
    assert m["rmse_log"] == pytest.approx(math.sqrt((math.log(2) ** 2 + math.log(4) ** 2) / 3))
    assert m["delta1"] == pytest.approx(1 / 3)
    # Median scaling multiplies by median(gt) / median(pred) = 2.
    assert m["abs_rel_ms"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert m["ordinal"] == 0.5  # every pair a tie
    assert m["spearman"] == 0.0


def test_scaled_prediction_deltas_and_median_scaling():
    gt = np.linspace(1, 5, 50)
    m = metrics.depth_metrics(1.5 * gt, gt)
    assert m["abs_rel"] == pytest.approx(0.5)
    assert m["rmse_log"] == pytest.approx(math.log(1.5))
    assert (m["delta1"], m["delta2"], m["delta3"]) == (0.0, 1.0, 1.0)
    assert m["abs_rel_ms"] == pytest.approx(0.0, abs=1e-12) and m["delta1_ms"] == 1.0


def test_ordinal_accuracy_by_hand():
    gt = np.array([1.0, 2.0, 4.0])
    # Orders: (0,1) right, (0,2) right, (1,2) wrong -> 2/3 over pairs drawn uniformly.
    assert metrics.ordinal_accuracy(np.array([1.0, 3.0, 2.0]), gt) == pytest.approx(2 / 3, abs=0.01)
    assert metrics.ordinal_accuracy(-gt, gt) == 0.0
    # A tie in the prediction counts one half.
    assert metrics.ordinal_accuracy(np.array([1.0, 1.0]), np.array([1.0, 2.0])) == 0.5


def test_ordinal_ignores_pairs_within_ten_percent():
    gt = np.array([1.0, 1.05, 3.0])
    pred = np.array([2.0, 1.0, 3.0])  # the 1.0/1.05 pair is misordered but does not count
    assert metrics.ordinal_accuracy(pred, gt) == 1.0
    assert math.isnan(metrics.ordinal_accuracy(np.array([1.0, 2.0]), np.array([1.0, 1.05])))


def test_spearman_by_hand():
    gt, pred = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])
    assert metrics.spearman(pred, gt) == pytest.approx(1 - 6 * 2 / (4 * 15))
    assert metrics.spearman(np.exp(gt), gt) == pytest.approx(1.0)


def test_valid_mask_and_no_valid_pixel():
    gt = np.array([1.0, 2.0, 0.0, np.nan])
    pred = np.array([1.0, 2.0, 100.0, 100.0])
    assert metrics.depth_metrics(pred, gt)["abs_rel"] == 0.0  # gt 0 and NaN are invalid
    m = metrics.depth_metrics(np.array([1.0, 9.0]), np.array([1.0, 2.0]), np.array([True, False]))
    assert m["rmse"] == 0.0
    with pytest.raises(ValueError, match="no valid"):
        metrics.depth_metrics(np.ones(2), np.zeros(2))
    with pytest.raises(ValueError, match="pixels"):
        metrics.depth_metrics(np.ones(3), np.ones(2))


def test_row_prior_on_middlebury_motorcycle():
    """The baseline figures the design notes expect (~0.82 ordinal, ~0.67 Spearman)."""
    results = realeval.evaluate({})
    prior, const = results["row_prior"], results["constant"]
    assert 0.80 < prior["ordinal"] < 0.84
    assert 0.63 < prior["spearman"] < 0.70
    assert const["ordinal"] == 0.5 and const["spearman"] == 0.0
    image, depth, valid = realeval.motorcycle()
    assert image.shape == (3, 240, 320) and depth.shape == valid.shape == (240, 320)
    assert 0.9 < valid.mean() < 1.0
    assert 1.5 < np.nanmin(depth) and np.nanmax(depth) < 6.0
