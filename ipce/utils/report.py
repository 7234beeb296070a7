"""Tables and plots for evaluation results.

Plots are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas
directly: pyplot is never imported, so no window opens and the process-wide
backend is left alone.  Every PNG is written atomically (``ipce.utils.io``):
a reader never sees half a file and an interrupted run leaves the old file intact.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ipce.utils import io
from ipce.utils.metrics import NOT_CONVERGED, compute_metrics, fit_logistic

__all__ = [
    "PAPER_LABEL",
    "draw_scatter",
    "plot_learning_curves",
    "plot_reproduction",
    "plot_scatter",
    "split_table",
]

PAPER_LABEL = "paper (Peng et al. 2024)"

DPI = 120
_DASH = "–"  # en dash: "no value"
_NA = "n/a"  # a value that is undefined (NaN): e.g. the logistic metrics of a failed fit


# --------------------------------------------------------------------------- table


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return _DASH
    v = float(v)
    return _NA if math.isnan(v) else f"{v:.{digits}f}"


def split_table(
    per_split: list[dict],
    summary: dict,
    paper: tuple[float, float] | None = None,
    keys=("srcc", "plcc", "krcc", "rmse", "srcc_plcc_mean"),
) -> str:
    """A Markdown table of per-split metrics, their mean ± std and median (4 decimals).

    With a single split (every summary has ``n <= 1``) the table is only that split's
    row: a mean, a median and a "± 0.0000" of one value say nothing more.

    One row per split: the column ``split`` holds ``d["split"]`` or, when absent, the
    1-based position; a ``best epoch`` column appears when any dict has ``"epoch"``.
    Then the rows ``mean ± std`` and ``median`` from ``summary`` (as made by
    :func:`ipce.utils.metrics.summarize`); a cell whose summary skipped NaN values
    says how many splits it used, e.g. ``0.8000 ± 0.0100 (n=9)``.  With ``paper =
    (srcc, plcc)`` a last row ``paper (Peng et al. 2024)`` shows those two numbers
    and ``–`` elsewhere.  Missing values print as ``–``, NaN as ``n/a``.
    """
    keys = tuple(keys)
    has_epoch = any("epoch" in d for d in per_split)
    header = ["split"] + (["best epoch"] if has_epoch else []) + list(keys)
    rows = [_split_row(i, d, keys, has_epoch) for i, d in enumerate(per_split)]
    single = len(per_split) <= 1 and all(int((summary.get(k) or {}).get("n", 0)) <= 1 for k in keys)
    if not single:
        rows += _summary_rows(summary, keys, has_epoch)
    if paper is not None:
        rows.append([PAPER_LABEL] + ([_DASH] if has_epoch else []) + [
            _fmt(paper[0]) if k == "srcc" else _fmt(paper[1]) if k == "plcc" else _DASH for k in keys])
    return _markdown(header, rows)


def _split_row(i: int, d: dict, keys: tuple[str, ...], has_epoch: bool) -> list[str]:
    row = [str(d.get("split", i + 1))]
    if has_epoch:
        row.append(_DASH if d.get("epoch") is None else str(d["epoch"]))
    return row + [_fmt(d.get(k)) for k in keys]


def _summary_rows(summary: dict, keys: tuple[str, ...], has_epoch: bool) -> list[list[str]]:
    """The 'mean ± std' and 'median' rows; a cell whose summary skipped NaN values gives its n."""
    mean_row, median_row = ["mean ± std"], ["median"]
    if has_epoch:
        mean_row.append(_DASH)
        median_row.append(_DASH)
    for k in keys:
        s = summary.get(k)
        if not s:
            mean_row.append(_DASH)
            median_row.append(_DASH)
            continue
        cell = f"{_fmt(s.get('mean'))} ± {_fmt(s.get('std'))}"
        mean_row.append(cell + (f" (n={s.get('n', 0)})" if s.get("n_nan") else ""))
        median_row.append(_fmt(s.get("median")))
    return [mean_row, median_row]


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, each column as wide as its widest cell."""
    widths = [max(len(r[c]) for r in [header] + rows) for c in range(len(header))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [line(header), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [line(r) for r in rows]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- plots


def _new_figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig, path) -> Path:
    with io.atomic_file(path, fsync=True) as tmp:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=DPI)
    return Path(path)


def draw_scatter(ax, pred, mos, title: str = "") -> bool:
    """Draw predicted score (x) against MOS (y) and the fitted 4-parameter logistic on `ax`.

    SRCC and PLCC (plain) go in the legend; the curve's entry says when the fit fell
    back to a line or a constant.  A fit that is not usable (did not converge, or a
    step: ``LogisticFit.usable``) is not drawn: the legend and the title say
    "logistic fit did not converge" instead.  Returns whether the curve was drawn.
    """
    from matplotlib.lines import Line2D

    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    m = np.asarray(mos, dtype=np.float64).reshape(-1)
    metrics = compute_metrics(p, m)  # validates lengths / sample count
    fit = fit_logistic(p, m)

    ax.scatter(p, m, s=10, alpha=0.5, edgecolors="none", color="tab:blue",
               label=f"n={p.size}  SRCC={_fmt(metrics['srcc'])}  PLCC={_fmt(metrics['plcc'])}")
    finite = p[np.isfinite(p)]
    drawn = bool(finite.size) and fit.usable
    handles, _ = ax.get_legend_handles_labels()
    if drawn:
        xs = np.linspace(finite.min(), finite.max(), 256)
        curve = "4-parameter logistic" if fit.ok else f"fit fallback ({fit.fallback})"
        curve += f"  PLCC={_fmt(metrics['plcc_logistic'])}"
        (line,) = ax.plot(xs, fit(xs), color="tab:red", linewidth=2, label=curve)
        handles.append(line)
    else:
        why = "" if NOT_CONVERGED in (fit.fallback or "") else f"\n({fit.fallback})"
        note = f"{NOT_CONVERGED}: curve not drawn{why}\nlogistic PLCC/RMSE n/a"
        handles.append(Line2D([], [], linestyle="none", label=note))  # a legend entry only, not on the axes
        title = f"{title}\n{NOT_CONVERGED}" if title else NOT_CONVERGED
    ax.set_xlabel("predicted score")
    ax.set_ylabel("MOS")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, loc="best", fontsize=8)
    return drawn


def plot_scatter(pred, mos, path, title: str = "") -> Path:
    """:func:`draw_scatter` on a new figure, saved as a 720x600 PNG atomically; returns ``Path(path)``."""
    fig = _new_figure((6, 5))
    draw_scatter(fig.add_subplot(1, 1, 1), pred, mos, title=title)
    fig.tight_layout()
    return _save_png(fig, path)


def _series(history: list[dict], key: str) -> np.ndarray:
    out = []
    for h in history:
        v = h.get(key)
        out.append(float(v) if isinstance(v, (int, float, np.integer, np.floating)) else math.nan)
    return np.asarray(out)


# Learning-curve legends sit under each panel, outside the axes, so they never cover a point.
_LEGEND_BELOW = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.16), "ncol": 2, "fontsize": 8, "frameon": False}


def plot_learning_curves(history: list[dict], path, title: str = "") -> Path:
    """Two panels over epochs: training loss (and the learning rate, when the
    dicts have ``lr``, on a second axis; the preference loss ``train_pref_loss`` beside it when
    present); SRCC and PLCC (and the pairwise accuracy ``pair_accuracy`` when present), with the
    epoch of the best ``choice`` (else ``(SRCC + PLCC) / 2``) marked.  Missing values are gaps; the legends sit below the panels.  Saves a 1200x480 PNG
    atomically and returns ``Path(path)``.
    """
    if not history:
        raise ValueError("learning-curve history is empty: nothing to plot")
    epochs = _series(history, "epoch")
    if np.isnan(epochs).any():
        epochs = np.arange(1, len(history) + 1, dtype=np.float64)

    from matplotlib.ticker import MaxNLocator

    fig = _new_figure((10, 4))
    ax_loss = fig.add_subplot(1, 2, 1)
    _draw_loss_panel(ax_loss, history, epochs)
    ax_cor = fig.add_subplot(1, 2, 2)
    _draw_agreement_panel(ax_cor, history, epochs)
    for ax in (ax_loss, ax_cor):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save_png(fig, path)


def _draw_loss_panel(ax, history: list[dict], epochs: np.ndarray) -> None:
    """The training loss, the preference loss when present and the learning rate (on a second
    axis) when present, over `epochs`, with one legend below the panel."""
    loss = _series(history, "train_loss")
    if np.isfinite(loss).any():
        ax.plot(epochs, loss, marker="o", markersize=3, color="tab:blue", label="train loss (MAE)")
    if any("train_pref_loss" in h for h in history):
        ax.plot(epochs, _series(history, "train_pref_loss"), marker="^", markersize=3, color="tab:orange",
                label="train preference loss (Bradley-Terry)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    ax.set_title("loss")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if any("lr" in h for h in history):
        ax_lr = ax.twinx()
        ax_lr.plot(epochs, _series(history, "lr"), linestyle="--", color="tab:gray", label="lr")
        ax_lr.set_ylabel("learning rate")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        h2, l2 = ax_lr.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, **_LEGEND_BELOW)


def _draw_agreement_panel(ax, history: list[dict], epochs: np.ndarray) -> None:
    """SRCC, PLCC and the pairwise accuracy when present over `epochs`, the best epoch of ``choice``
    (else ``(SRCC + PLCC) / 2``) marked, with the legend below the panel."""
    srcc_, plcc_ = _series(history, "srcc"), _series(history, "plcc")
    ax.plot(epochs, srcc_, marker="o", markersize=3, label="SRCC")
    ax.plot(epochs, plcc_, marker="s", markersize=3, label="PLCC")
    if any("pair_accuracy" in h for h in history):
        ax.plot(epochs, _series(history, "pair_accuracy"), marker="^", markersize=3, label="pairwise accuracy")
    chosen, name = ((_series(history, "choice"), "choice") if any("choice" in h for h in history)
                    else ((srcc_ + plcc_) / 2, "srcc_plcc_mean"))
    if np.isfinite(chosen).any():
        best = int(np.nanargmax(chosen))
        ax.axvline(epochs[best], color="tab:green", linestyle=":",
                   label=f"best epoch {epochs[best]:g} ({name}={chosen[best]:.4f})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("correlation / accuracy")
    ax.set_title("held-out agreement")
    ax.grid(True, alpha=0.3)
    ax.legend(**_LEGEND_BELOW)


def plot_reproduction(rows: list[dict], path, title: str = "") -> Path:
    """Ours against the paper's, one line per row, SRCC and PLCC side by side: each split's value
    (grey dots), our mean ± std over splits (blue, with the std as a bar) and the paper's value (red
    diamond; none for a row the paper does not report). `rows`: dicts with ``label``, ``srcc`` and
    ``plcc`` (per-split values) and ``paper`` ((srcc, plcc) or None). Saves a PNG atomically."""
    height = 1.2 + 0.45 * len(rows)
    fig = _new_figure((10, height))
    positions = np.arange(len(rows))[::-1]
    for panel, (key, name) in enumerate((("srcc", "SRCC"), ("plcc", "PLCC"))):
        ax = fig.add_subplot(1, 2, panel + 1)
        shown: set[str] = set()

        def once(label: str) -> str | None:  # each legend entry once per panel
            if label in shown:
                return None
            shown.add(label)
            return label

        for y, row in zip(positions, rows):
            values = np.asarray([v for v in row[key] if v is not None and math.isfinite(v)], dtype=np.float64)
            if values.size:
                ax.scatter(values, np.full(values.size, y + 0.12), s=12, color="tab:gray", alpha=0.7,
                           label=once("each split"))
                std = float(values.std(ddof=1)) if values.size > 1 else 0.0
                ax.errorbar(values.mean(), y, xerr=std, fmt="o", color="tab:blue", capsize=3,
                            label=once("ours: mean ± std"))
            if row.get("paper"):
                ax.scatter(row["paper"][panel], y - 0.12, marker="D", s=28, color="tab:red", label=once(PAPER_LABEL))
        ax.set_yticks(positions)
        ax.set_yticklabels([r["label"] for r in rows] if panel == 0 else [""] * len(rows), fontsize=8)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xlabel(name)
        ax.grid(True, axis="x", alpha=0.3)
        if panel == 1:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25 / max(height / 4, 1)), ncol=3, fontsize=8,
                      frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save_png(fig, path)
