"""Agreement between predicted scores and human MOS.

* ``srcc`` Spearman rank correlation, ``plcc`` Pearson linear correlation,
  ``krcc`` Kendall's tau-b, ``rmse`` root mean squared error (all on raw scores).
* ``plcc_logistic`` / ``rmse_logistic``: the same after mapping the predictions
  through the VQEG 4-parameter logistic fitted to the MOS (``fit_logistic``); ``nan``
  when that fit failed (``LogisticFit.usable`` is false: it did not converge, or it is
  degenerate: a step, or constant predictions).
* Preferences (``preference_metrics``), over groups of images of one prompt with human ranks
  (1 = preferred, equal ranks tie): ``pair_accuracy``, the share of untied human pairs the
  scores order the same way (the figure ImageReward, HPSv2 and PickScore report; equal scores
  count half); ``pair_accuracy_ties``, over every pair, tied ones included, each pair counting
  ``1 - |h - m|`` with the human outcome ``h`` and the scores' ``m`` in {0, 1/2, 1} (1/2 a tie);
  ``kendall_tau``, the mean over groups of Kendall's tau-b between scores and human order
  (groups whose images are all tied have none and are skipped).
* ``srcc_plcc_mean = (srcc + plcc) / 2`` with the *plain* PLCC, as Peng et al. (CVPRW 2024)
  report and as the trainer selects epochs.

NaN policy: a correlation that is undefined (constant predictions or constant
MOS) is ``nan`` rather than an error, and so is every metric when a prediction is
not finite (a diverged model should not crash an evaluation pass).  Bad *input
shape* is a ``ValueError``: lengths that differ, fewer than 2 samples, or a
non-finite MOS (that is a data bug, not a model result).

Every value returned is a plain Python ``float``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import expit

__all__ = [
    "METRIC_KEYS",
    "PREFERENCE_KEYS",
    "LogisticFit",
    "compute_metrics",
    "fit_logistic",
    "krcc",
    "logistic4",
    "plcc",
    "preference_metrics",
    "rmse",
    "srcc",
    "summarize",
]

PREFERENCE_KEYS = ("pair_accuracy", "pair_accuracy_ties", "kendall_tau")
METRIC_KEYS = ("srcc", "plcc", "krcc", "rmse", "plcc_logistic", "rmse_logistic", "srcc_plcc_mean")

_MAXFEV = 20000
# The linear fallback is written as a logistic whose scale is this many times the
# prediction range: over the data it differs from the line by < slope * range / 1e9.
_LINEAR_SCALE = 1e4
# A fitted curve is a step (degenerate) when fewer than _STEP_MIN_POINTS, or fewer than
# _STEP_MIN_FRACTION of the distinct predictions lie on its slope, i.e. map to between
# _STEP_EDGE and 1 - _STEP_EDGE of the way from b2 to b1.
_STEP_MIN_POINTS = 3
_STEP_MIN_FRACTION = 0.1
_STEP_EDGE = 0.01
NOT_CONVERGED = "logistic fit did not converge"
# Fallbacks whose curve is no fit at all: not drawn, and the logistic metrics are nan.
_UNUSABLE = ("no finite samples", "constant predictions", "linear: " + NOT_CONVERGED)


# --------------------------------------------------------------------------- input


def _to_array(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of numbers ({exc})") from None
    return arr.reshape(-1)


def _pair(pred, mos, *, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    p = _to_array(pred, "pred")
    m = _to_array(mos, "mos")
    if p.size != m.size:
        raise ValueError(f"pred has {p.size} values but mos has {m.size}; they must pair one to one")
    if p.size < min_n:
        raise ValueError(
            f"need at least {min_n} (pred, mos) pairs to compute quality metrics, got {p.size}"
        )
    bad = int(np.count_nonzero(~np.isfinite(m)))
    if bad:
        raise ValueError(f"mos has {bad} non-finite value(s) (NaN/inf); fix or drop those rows")
    return p, m


def _constant(a: np.ndarray) -> bool:
    return bool(np.ptp(a) == 0)


# --------------------------------------------------------------------------- metrics


def _correlation(test, pred, mos) -> float:
    """`test(p, m).statistic`, or ``nan`` when a prediction is not finite or either side is constant."""
    p, m = _pair(pred, mos)
    if not np.all(np.isfinite(p)) or _constant(p) or _constant(m):
        return math.nan
    return float(test(p, m).statistic)


def srcc(pred, mos) -> float:
    """Spearman rank correlation (ties get average ranks); ``nan`` if undefined."""
    return _correlation(stats.spearmanr, pred, mos)


def plcc(pred, mos) -> float:
    """Pearson linear correlation on the raw predictions; ``nan`` if undefined."""
    return _correlation(stats.pearsonr, pred, mos)


def krcc(pred, mos) -> float:
    """Kendall rank correlation, tau-b (tie-corrected); ``nan`` if undefined."""
    return _correlation(stats.kendalltau, pred, mos)


def rmse(pred, mos) -> float:
    """Root mean squared error between raw predictions and MOS; ``nan`` if a prediction is not finite."""
    p, m = _pair(pred, mos)
    if not np.all(np.isfinite(p)):
        return math.nan
    return float(np.sqrt(np.mean((p - m) ** 2)))


# --------------------------------------------------------------------------- logistic


def logistic4(x, b1, b2, b3, b4):
    """VQEG 4-parameter logistic ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``.

    Evaluated with ``expit`` so large arguments do not overflow; the sign of ``b4``
    does not matter.
    """
    x = np.asarray(x, dtype=np.float64)
    scale = max(abs(float(b4)), 1e-300)
    return (b1 - b2) * expit((x - b3) / scale) + b2


class LogisticFit(tuple):
    """``(b1, b2, b3, b4)`` for :func:`logistic4`, plus how they were obtained.

    ``fallback`` is ``None`` when ``curve_fit`` produced the parameters; otherwise a
    short reason (``"constant predictions"``, ``"constant mos"``,
    ``"linear: logistic fit did not converge"``, ...).  Even then the four numbers
    are valid logistic parameters: a constant map, or a logistic so wide that it
    equals the least-squares line over the data range.  ``ok`` is ``fallback is None``.
    ``usable`` is false when there is no fit to show or score: no finite samples,
    constant predictions, a fit that did not converge, or a degenerate one (a step:
    ``fallback`` starts with ``"degenerate"``).
    """

    fallback: str | None

    def __new__(cls, params, fallback: str | None = None):
        self = super().__new__(cls, tuple(float(v) for v in params))
        if len(self) != 4:
            raise ValueError(f"a 4-parameter logistic needs 4 parameters, got {len(self)}")
        self.fallback = fallback
        return self

    @property
    def ok(self) -> bool:
        return self.fallback is None

    @property
    def usable(self) -> bool:
        return self.fallback not in _UNUSABLE and not (self.fallback or "").startswith("degenerate")

    def __call__(self, x) -> np.ndarray:
        """Map predictions through the fitted curve."""
        return logistic4(x, *self)

    def __repr__(self) -> str:
        params = ", ".join(f"{v:.6g}" for v in self)
        return f"LogisticFit(({params}), fallback={self.fallback!r})"


def _linear_as_logistic(slope: float, intercept_at_mean: float, x_mean: float, x_range: float):
    b4 = _LINEAR_SCALE * x_range
    half = 2.0 * slope * b4  # (b1 - b2) / 2, since the slope at b3 is (b1 - b2) / (4 b4)
    return (intercept_at_mean + half, intercept_at_mean - half, x_mean, b4)


def _sse(params, p: np.ndarray, m: np.ndarray) -> float:
    with np.errstate(all="ignore"):
        r = logistic4(p, *params) - m
        return float(np.dot(r, r))


def _step_like(params, p: np.ndarray) -> bool:
    """True when too few distinct predictions lie on the curve's slope (see `_STEP_MIN_FRACTION`)."""
    b1, b2, b3, b4 = params
    xs = np.unique(p)
    with np.errstate(all="ignore"):
        z = expit((xs - b3) / max(abs(float(b4)), 1e-300))
    on_slope = int(np.count_nonzero((z > _STEP_EDGE) & (z < 1.0 - _STEP_EDGE)))
    return on_slope < max(_STEP_MIN_POINTS, _STEP_MIN_FRACTION * xs.size)


def fit_logistic(pred, mos) -> LogisticFit:
    """Fit :func:`logistic4` mapping ``pred`` to ``mos`` by least squares.

    Initial guess (the usual one): ``b1 = max(mos)``, ``b2 = min(mos)``,
    ``b3 = mean(pred)``, ``b4 = std(pred)`` (1 if that is 0); for negatively
    correlated data the guess with ``b1``/``b2`` swapped is tried as well and the
    lower squared error wins.  Pairs with a non-finite value are ignored.

    Never raises for degenerate data (only for lengths that differ): constant
    predictions or MOS give a constant map to ``mean(mos)``; when ``curve_fit``
    fails, or its optimum is worse than a straight line, the least-squares line is
    returned (as logistic parameters).  Both cases set ``.fallback``; unpacking
    still gives four floats.  A fit that did not converge, fewer than 4 distinct
    predictions (e.g. a step function of the images) among 4 or more samples, or an
    optimum that is a step (``_step_like``) is not usable (``.usable`` false).
    """
    p, m = _finite_pairs(pred, mos)
    constant = _constant_fit(p, m)
    if constant is not None:
        return constant
    slope, linear = _least_squares_line(p, m)
    if p.size < 4:
        return LogisticFit(linear, "linear: fewer than 4 samples for 4 parameters")
    distinct = int(np.unique(p).size)
    if distinct < 4:
        return LogisticFit(linear, f"degenerate: {distinct} distinct predictions for 4 parameters")

    best, best_sse = None, math.inf
    for p0 in _initial_guesses(p, m, slope):
        popt = _curve_fit(p, m, p0)
        if popt is None:
            continue
        sse = _sse(popt, p, m)
        if math.isfinite(sse) and sse < best_sse:
            best, best_sse = popt, sse

    if best is None:
        return LogisticFit(linear, "linear: " + NOT_CONVERGED)
    if best_sse > _sse(linear, p, m):
        return LogisticFit(linear, "linear: fits better than the logistic optimum found")
    if _step_like(best, p):
        return LogisticFit(best, "degenerate: the logistic collapsed into a step")
    return LogisticFit(best, None)


def _finite_pairs(pred, mos) -> tuple[np.ndarray, np.ndarray]:
    """`pred` and `mos` as float64 arrays without the pairs where either is not finite; lengths that
    differ are a ValueError."""
    p = _to_array(pred, "pred")
    m = _to_array(mos, "mos")
    if p.size != m.size:
        raise ValueError(f"pred has {p.size} values but mos has {m.size}; they must pair one to one")
    keep = np.isfinite(p) & np.isfinite(m)
    return p[keep], m[keep]


def _constant_fit(p: np.ndarray, m: np.ndarray) -> LogisticFit | None:
    """The constant map to ``mean(mos)`` when there is nothing to fit (no samples, constant predictions
    or constant MOS), else None."""
    if p.size == 0:
        return LogisticFit((math.nan, math.nan, 0.0, 1.0), "no finite samples")
    p_mean, m_mean = float(p.mean()), float(m.mean())
    p_std = float(p.std())
    if p.size < 2 or _constant(p):
        return LogisticFit((m_mean, m_mean, p_mean, p_std or 1.0), "constant predictions")
    if _constant(m):
        return LogisticFit((m_mean, m_mean, p_mean, p_std or 1.0), "constant mos")
    return None


def _least_squares_line(p: np.ndarray, m: np.ndarray) -> tuple[float, tuple[float, float, float, float]]:
    """(slope, the line as logistic parameters) of the least-squares line of ``m`` on ``p``."""
    p_mean, m_mean = float(p.mean()), float(m.mean())
    pc = p - p_mean
    slope = float(np.dot(pc, m - m_mean) / np.dot(pc, pc))
    return slope, _linear_as_logistic(slope, m_mean, p_mean, float(np.ptp(p)))


def _initial_guesses(p: np.ndarray, m: np.ndarray, slope: float) -> list[tuple[float, float, float, float]]:
    """``(max(mos), min(mos), mean(pred), std(pred) or 1)``, and the same with the first two swapped
    when the data correlate negatively."""
    p_mean, p_std = float(p.mean()), float(p.std())
    b1, b2 = float(m.max()), float(m.min())
    guesses = [(b1, b2, p_mean, p_std or 1.0)]
    if slope < 0:
        guesses.append((b2, b1, p_mean, p_std or 1.0))
    return guesses


def _curve_fit(p: np.ndarray, m: np.ndarray, p0) -> np.ndarray | None:
    """``curve_fit``'s optimum of :func:`logistic4` from ``p0`` (``b4`` made positive), or None when it
    failed, is not finite or has ``b4 == 0``; its warnings are silenced."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            with np.errstate(all="ignore"):
                popt, _ = curve_fit(logistic4, p, m, p0=p0, maxfev=_MAXFEV)
    except (RuntimeError, ValueError, TypeError, FloatingPointError, np.linalg.LinAlgError):
        return None
    popt = np.asarray(popt, dtype=np.float64)
    if not np.all(np.isfinite(popt)) or popt[3] == 0:
        return None
    popt[3] = abs(popt[3])
    return popt


# --------------------------------------------------------------------------- bundles


def compute_metrics(pred, mos) -> dict[str, float]:
    """All metrics for one set of predictions, keys ``METRIC_KEYS``, values Python floats.

    Raises ``ValueError`` (one line) for fewer than 2 pairs, differing lengths or a
    non-finite MOS; undefined values (constant predictions, ...) are ``nan``, and so are
    ``plcc_logistic`` / ``rmse_logistic`` when the logistic fit is not usable.
    """
    p, m = _pair(pred, mos)
    out = {
        "srcc": srcc(p, m),
        "plcc": plcc(p, m),
        "krcc": krcc(p, m),
        "rmse": rmse(p, m),
    }
    fit = fit_logistic(p, m) if np.all(np.isfinite(p)) else None
    if fit is not None and fit.usable:
        mapped = fit(p)
        out["plcc_logistic"] = plcc(mapped, m) if np.all(np.isfinite(mapped)) else math.nan
        out["rmse_logistic"] = rmse(mapped, m) if np.all(np.isfinite(mapped)) else math.nan
    else:
        out["plcc_logistic"] = math.nan
        out["rmse_logistic"] = math.nan
    out["srcc_plcc_mean"] = (out["srcc"] + out["plcc"]) / 2.0  # nan if either is nan
    return {k: float(out[k]) for k in METRIC_KEYS}


def _group_arrays(scores, ranks, index: int) -> tuple[np.ndarray, np.ndarray]:
    s, r = _to_array(scores, "scores"), _to_array(ranks, "ranks")
    if s.size != r.size:
        raise ValueError(f"group {index}: {s.size} scores for {r.size} ranks")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"group {index}: ranks must be finite")
    return s, r


def preference_metrics(scores, ranks) -> dict[str, float | int]:
    """Agreement of scores with human choices: ``scores`` and ``ranks`` hold one sequence per group
    (images of one prompt; rank 1 = preferred, equal ranks tie). Keys ``PREFERENCE_KEYS`` and the
    counts ``pairs`` (untied), ``tied_pairs`` and ``groups`` (with a tau). A non-finite score makes
    every metric nan; no untied pair: `pair_accuracy` is nan."""
    scores, ranks = list(scores), list(ranks)
    if len(scores) != len(ranks):
        raise ValueError(f"{len(scores)} groups of scores for {len(ranks)} groups of ranks")
    human_all, model_all, taus = [], [], []
    finite = True
    for index, (s, r) in enumerate(zip(scores, ranks)):
        s, r = _group_arrays(s, r, index)
        finite &= bool(np.all(np.isfinite(s)))
        i, j = np.triu_indices(s.size, k=1)
        human_all.append((np.sign(r[j] - r[i]) + 1) / 2)   # 1: i preferred (lower rank), 0.5: tie
        model_all.append((np.sign(s[i] - s[j]) + 1) / 2)   # 1: i scored higher
        if s.size >= 2 and not _constant(r):
            tau = 0.0 if _constant(s) else stats.kendalltau(s, -r).statistic  # constant scores: no agreement
            taus.append(float(tau))
    human = np.concatenate(human_all) if human_all else np.empty(0)
    model = np.concatenate(model_all) if model_all else np.empty(0)
    untied = human != 0.5
    credit = 1.0 - np.abs(human - model)
    out = {
        "pair_accuracy": float(credit[untied].mean()) if untied.any() else math.nan,
        "pair_accuracy_ties": float(credit.mean()) if credit.size else math.nan,
        "kendall_tau": float(np.mean(taus)) if taus else math.nan,
    }
    if not finite:
        out = {k: math.nan for k in out}
    return {**out, "pairs": int(untied.sum()), "tied_pairs": int((~untied).sum()), "groups": len(taus)}



def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def summarize(per_split: list[dict], keys=None) -> dict[str, dict[str, float | int]]:
    """Statistics across splits for each metric.

    ``keys`` defaults to every key with a numeric value in any of the dicts, in
    order of first appearance, except the bookkeeping key ``"split"``.  For each
    key: ``mean``, ``std``, ``median``, ``min``, ``max`` over the finite values,
    ``n`` (how many were used) and ``n_nan`` (how many were skipped: NaN, inf,
    ``None`` or missing).  ``std`` is the *sample* standard deviation (ddof=1)
    when ``n > 1`` and 0.0 when ``n == 1`` (``split_table`` then shows no ±); with
    ``n == 0`` every statistic is nan.
    """
    if keys is None:
        keys = []
        for d in per_split:
            for k, v in d.items():
                if k != "split" and k not in keys and _is_number(v):
                    keys.append(k)
    summary: dict[str, dict[str, float | int]] = {}
    for k in keys:
        vals, skipped = [], 0
        for d in per_split:
            v = d.get(k)
            if _is_number(v) and math.isfinite(float(v)):
                vals.append(float(v))
            else:
                skipped += 1
        if vals:
            a = np.asarray(vals)
            summary[k] = {
                "mean": float(a.mean()),
                "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
                "median": float(np.median(a)),
                "min": float(a.min()),
                "max": float(a.max()),
                "n": len(vals),
                "n_nan": skipped,
            }
        else:
            nan = math.nan
            summary[k] = {"mean": nan, "std": nan, "median": nan, "min": nan, "max": nan,
                          "n": 0, "n_nan": skipped}
    return summary
