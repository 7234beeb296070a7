"""Metrics against plain-Python re-derivations and known cases."""

import math

import numpy as np
import pytest

from ipce.errors import DataError
from ipce.utils import metrics
from ipce.utils.metrics import (
    METRIC_KEYS,
    compute_metrics,
    fit_logistic,
    krcc,
    logistic4,
    plcc,
    rmse,
    srcc,
    summarize,
)

# ----------------------------------------------------------------- hand formulas (no scipy)


def _pearson(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


def _avg_ranks(x):
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _kendall_a(x, y):  # no ties: tau-a == tau-b
    n = len(x)
    s = 0
    for i in range(n):
        for j in range(i + 1, n):
            prod = (x[i] - x[j]) * (y[i] - y[j])
            s += 1 if prod > 0 else -1 if prod < 0 else 0
    return s / (n * (n - 1) / 2)


PRED = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
MOS = [1.5, 1.0, 3.5, 2.5, 5.0, 4.0]


def test_known_example_against_hand_formulas():
    # Spearman without ties: 1 - 6 sum d^2 / (n (n^2 - 1)); d = rank differences.
    d2 = sum((a - b) ** 2 for a, b in zip(_avg_ranks(PRED), _avg_ranks(MOS)))
    n = len(PRED)
    assert d2 == 6.0  # ranks of MOS: 2,1,4,3,6,5
    assert srcc(PRED, MOS) == pytest.approx(1 - 6 * d2 / (n * (n * n - 1)))  # 0.828571...
    assert plcc(PRED, MOS) == pytest.approx(_pearson(PRED, MOS))
    assert krcc(PRED, MOS) == pytest.approx(_kendall_a(PRED, MOS))
    assert krcc(PRED, MOS) == pytest.approx((12 - 3) / 15)  # 3 discordant pairs of 15
    assert rmse(PRED, MOS) == pytest.approx(math.sqrt(sum((a - b) ** 2 for a, b in zip(PRED, MOS)) / n))


def test_spearman_uses_average_ranks_for_ties():
    pred = [1.0, 2.0, 2.0, 3.0, 5.0]
    mos = [2.0, 1.0, 3.0, 3.0, 4.0]
    assert srcc(pred, mos) == pytest.approx(_pearson(_avg_ranks(pred), _avg_ranks(mos)))


def test_monotone_nonlinear_prediction():
    x = [0.1, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0]
    pred = [math.exp(v) for v in x]
    assert srcc(pred, x) == pytest.approx(1.0)
    assert krcc(pred, x) == pytest.approx(1.0)
    assert plcc(pred, x) < 0.95
    assert srcc(pred, [-v for v in x]) == pytest.approx(-1.0)
    assert krcc(pred, [-v for v in x]) == pytest.approx(-1.0)


def test_compute_metrics_keys_types_and_main():
    out = compute_metrics(PRED, MOS)
    assert list(out) == list(METRIC_KEYS)
    assert all(type(v) is float for v in out.values())
    assert out["srcc_plcc_mean"] == pytest.approx((out["srcc"] + out["plcc"]) / 2)
    assert out["plcc"] == pytest.approx(_pearson(PRED, MOS))  # plain PLCC, not the logistic one
    # numpy / nested shapes are accepted
    out2 = compute_metrics(np.array(PRED)[:, None], np.array(MOS, dtype=np.float32))
    assert out2["srcc"] == pytest.approx(out["srcc"])


def test_logistic4_formula_and_sign_of_b4():
    x = np.array([-1.0, 0.0, 2.0, 7.0])
    b1, b2, b3, b4 = 4.0, 1.0, 2.0, 1.5
    hand = [(b1 - b2) / (1 + math.exp(-(v - b3) / abs(b4))) + b2 for v in x]
    np.testing.assert_allclose(logistic4(x, b1, b2, b3, b4), hand)
    np.testing.assert_allclose(logistic4(x, b1, b2, b3, -b4), hand)
    assert np.isfinite(logistic4(np.array([-1e6, 1e6]), b1, b2, b3, 1e-3)).all()  # no overflow


def _logistic_data(params, n=300, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 5.0, n)
    y = logistic4(x, *params) + rng.normal(0.0, noise, n)
    return x, y


def test_fit_recovers_known_parameters():
    true = (4.5, 0.5, 2.5, 0.6)
    x, y = _logistic_data(true)
    fit = fit_logistic(x, y)
    assert fit.ok and fit.fallback is None
    b1, b2, b3, b4 = fit  # unpacks as a 4-tuple
    assert len(fit) == 4 and all(type(v) is float for v in fit)
    np.testing.assert_allclose([b1, b2, b3, b4], true, atol=0.05)
    out = compute_metrics(x, y)
    assert out["plcc_logistic"] >= out["plcc"]
    assert out["plcc_logistic"] > 0.999
    assert out["rmse_logistic"] < out["rmse"]
    assert out["rmse_logistic"] == pytest.approx(0.02, rel=0.2)  # about the noise level


def test_fit_decreasing_relation():
    true = (0.5, 4.5, 2.5, 0.6)  # b1 < b2: MOS falls as the prediction rises
    x, y = _logistic_data(true, seed=1)
    fit = fit_logistic(x, y)
    assert fit.ok
    np.testing.assert_allclose(np.asarray(fit), true, atol=0.05)


def test_fit_failure_falls_back_to_line(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(metrics, "curve_fit", boom)
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([1.0, 1.4, 2.1, 2.4, 3.2, 3.4])
    fit = fit_logistic(x, y)
    assert not fit.ok and "linear" in fit.fallback
    slope, intercept = np.polyfit(x, y, 1)
    np.testing.assert_allclose(fit(x), slope * x + intercept, atol=1e-6)
    assert not fit.usable  # a fit that did not converge is no fit: its metrics are n/a
    out = compute_metrics(x, y)  # still complete, the logistic ones NaN
    assert math.isnan(out["plcc_logistic"]) and math.isnan(out["rmse_logistic"])
    assert out["plcc"] == pytest.approx(np.corrcoef(x, y)[0, 1])


def test_fit_few_samples_is_linear():
    fit = fit_logistic([1.0, 3.0], [2.0, 4.0])
    assert not fit.ok
    np.testing.assert_allclose(fit([1.0, 2.0, 3.0]), [2.0, 3.0, 4.0], atol=1e-6)


@pytest.mark.parametrize(
    "pred, mos, reason",
    [
        ([2.0, 2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.0], "constant predictions"),
        ([1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 3.0, 3.0, 3.0, 3.0], "constant mos"),
        ([7.0], [2.0], "constant predictions"),
        ([], [], "no finite samples"),
        ([float("nan"), float("nan")], [1.0, 2.0], "no finite samples"),
    ],
)
def test_fit_degenerate_never_raises(pred, mos, reason):
    fit = fit_logistic(pred, mos)
    assert fit.fallback == reason and not fit.ok
    if mos and np.isfinite(pred).any():
        np.testing.assert_allclose(fit(pred), np.mean(mos))


def test_constant_predictions_give_nan_not_crash():
    mos = [1.0, 2.0, 3.0, 4.0]
    out = compute_metrics([2.5] * 4, mos)
    for k in ("srcc", "plcc", "krcc", "plcc_logistic", "srcc_plcc_mean"):
        assert math.isnan(out[k]), k
    assert out["rmse"] == pytest.approx(math.sqrt((1.5**2 + 0.5**2 + 0.5**2 + 1.5**2) / 4))
    assert math.isnan(out["rmse_logistic"])  # constant predictions: no logistic fit to score
    assert all(type(v) is float for v in out.values())


def test_constant_mos_and_nan_predictions():
    out = compute_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert math.isnan(out["srcc"]) and math.isnan(out["srcc_plcc_mean"])
    assert out["rmse_logistic"] == pytest.approx(0.0)
    out = compute_metrics([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0])
    assert all(math.isnan(v) for v in out.values())


@pytest.mark.parametrize(
    "pred",
    [
        np.r_[np.zeros(20), np.ones(20)],  # a step function of the images: 2 distinct predictions
        np.full(40, 2.5),  # constant
        np.r_[1 + 1e-3 * np.random.default_rng(4).standard_normal(20),
              3 + 1e-3 * np.random.default_rng(5).standard_normal(20)],  # two tight clusters
    ],
    ids=["step", "constant", "two-clusters"],
)
def test_degenerate_fit_is_not_usable_and_logistic_metrics_are_nan(pred):
    mos = np.r_[np.random.default_rng(0).uniform(0.5, 2, 20), np.random.default_rng(1).uniform(3, 4.5, 20)]
    fit = fit_logistic(pred, mos)
    assert not fit.usable and not fit.ok, fit
    out = compute_metrics(pred, mos)
    assert math.isnan(out["plcc_logistic"]) and math.isnan(out["rmse_logistic"])
    if np.ptp(pred) > 0:  # the plain metrics are still there
        assert out["plcc"] > 0.9 and math.isfinite(out["rmse"])


def test_a_good_fit_is_usable_and_unchanged():
    x, y = _logistic_data((4.5, 0.5, 2.5, 0.6))
    fit = fit_logistic(x, y)
    assert fit.usable and fit.ok
    assert math.isfinite(compute_metrics(x, y)["plcc_logistic"])


def test_two_samples_work():
    out = compute_metrics([1.0, 2.0], [1.0, 3.0])
    assert out["srcc"] == pytest.approx(1.0) and out["plcc"] == pytest.approx(1.0)
    assert out["rmse_logistic"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "pred, mos, words",
    [
        ([1.0], [2.0], "at least 2"),
        ([], [], "at least 2"),
        ([1.0, 2.0, 3.0], [1.0, 2.0], "3 values but mos has 2"),
        ([1.0, 2.0, 3.0], [1.0, float("nan"), 2.0], "non-finite"),
    ],
)
def test_bad_input_is_a_clear_value_error(pred, mos, words):
    with pytest.raises(ValueError, match=words) as info:
        compute_metrics(pred, mos)
    assert not isinstance(info.value, DataError)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------- summarize


def test_summarize_hand_values():
    splits = [
        {"split": 1, "epoch": 3, "srcc": 0.80, "plcc": 0.85},
        {"split": 2, "epoch": 5, "srcc": 0.90, "plcc": 0.95},
        {"split": 3, "epoch": 4, "srcc": 0.70, "plcc": 0.60},
    ]
    s = summarize(splits)
    assert "split" not in s and list(s) == ["epoch", "srcc", "plcc"]
    srcc_s = s["srcc"]
    assert srcc_s["mean"] == pytest.approx(0.8)
    # sample std: sqrt((0^2 + 0.1^2 + 0.1^2) / (3 - 1)) = 0.1
    assert srcc_s["std"] == pytest.approx(0.1)
    assert srcc_s["median"] == pytest.approx(0.8)
    assert (srcc_s["min"], srcc_s["max"]) == (pytest.approx(0.7), pytest.approx(0.9))
    assert (srcc_s["n"], srcc_s["n_nan"]) == (3, 0)
    plcc_s = s["plcc"]
    assert plcc_s["mean"] == pytest.approx(0.8)
    m = 0.8
    assert plcc_s["std"] == pytest.approx(math.sqrt(((0.85 - m) ** 2 + (0.95 - m) ** 2 + (0.6 - m) ** 2) / 2))
    assert plcc_s["median"] == pytest.approx(0.85)
    assert s["epoch"]["mean"] == pytest.approx(4.0)


def test_summarize_skips_nan_and_counts():
    splits = [
        {"srcc": 0.5, "plcc": float("nan")},
        {"srcc": float("nan"), "plcc": None},
        {"srcc": 0.7, "plcc": 0.9},
        {"srcc": 0.9},
    ]
    s = summarize(splits, keys=("srcc", "plcc", "krcc"))
    assert s["srcc"]["mean"] == pytest.approx(0.7)
    assert s["srcc"]["std"] == pytest.approx(0.2)
    assert (s["srcc"]["n"], s["srcc"]["n_nan"]) == (3, 1)
    assert s["plcc"]["mean"] == pytest.approx(0.9)
    assert s["plcc"]["std"] == 0.0  # one value: std 0
    assert (s["plcc"]["n"], s["plcc"]["n_nan"]) == (1, 3)
    assert s["krcc"]["n"] == 0 and math.isnan(s["krcc"]["mean"]) and math.isnan(s["krcc"]["std"])


def test_summarize_of_compute_metrics_output():
    x, y = _logistic_data((4.5, 0.5, 2.5, 0.6), n=50)
    per = [compute_metrics(x, y), compute_metrics([1.0] * 50, y)]
    s = summarize(per)
    assert list(s) == list(METRIC_KEYS)
    assert s["srcc"]["n"] == 1 and s["srcc"]["n_nan"] == 1
    assert s["rmse"]["n"] == 2
