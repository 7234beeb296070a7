"""Tables, plots, and the JSON and text writes of their results."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from ipce.presets.registry import paper_results
from ipce.utils import io
from ipce.utils.io import write_json, write_text
from ipce.utils.metrics import logistic4, summarize
from ipce.utils.report import (
    PAPER_LABEL,
    draw_scatter,
    plot_learning_curves,
    plot_scatter,
    split_table,
)

PAPER_RESULTS = paper_results()

SPLITS = [
    {"split": 1, "epoch": 7, "srcc": 0.81, "plcc": 0.84, "krcc": 0.62, "rmse": 0.50, "srcc_plcc_mean": 0.825},
    {"split": 2, "epoch": 12, "srcc": 0.83, "plcc": 0.86, "krcc": 0.64, "rmse": 0.48, "srcc_plcc_mean": 0.845},
    {"split": 3, "epoch": 3, "srcc": 0.85, "plcc": 0.88, "krcc": 0.66, "rmse": 0.46, "srcc_plcc_mean": 0.865},
]


def _rows(table):
    lines = table.strip().splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def _no_tmp_left(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]


def _readme_paper_table() -> dict:
    """(preset, target) -> (SRCC, PLCC) read off the README's "paper SRCC / PLCC" table, rows named
    "<dataset folder> (<target>)" or just "<dataset folder>" for the dataset's default target."""
    from pathlib import Path

    from ipce.datasets.sources import DATASETS

    by_folder = {info.folder: key for key, info in DATASETS.items()}
    lines = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| dataset (target) | paper SRCC / PLCC |"))
    table = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        name, numbers = (cell.strip() for cell in line.strip("|").split("|"))
        folder, _, target = name.partition(" (")
        preset = by_folder[folder]
        srcc, plcc = (float(x) for x in numbers.split(" / "))
        table[(preset, target.rstrip(")") or DATASETS[preset].default_target)] = (srcc, plcc)
    return table


def test_paper_results_are_the_readme_table():
    # two copies of the paper's table (the code's and the README's): every row of each in the other
    readme = _readme_paper_table()
    assert len(readme) == 6
    assert PAPER_RESULTS == readme


def test_paper_results_are_keyed_by_dataset_and_target_name():
    # The trainer looks rows up by (dataset preset, target name), never by column name.
    from ipce.datasets.sources import DATASETS

    for dataset, target in PAPER_RESULTS:
        assert dataset in DATASETS, dataset
        assert target in DATASETS[dataset].targets, (dataset, target)


@pytest.mark.parametrize("preset,target", sorted(PAPER_RESULTS))
def test_trainer_summary_finds_every_paper_row(tmp_path, preset, target, capsys):
    from ipce.config import make_config
    from ipce.engine.train import write_summary

    summary = write_summary(tmp_path, make_config(preset, target=target), SPLITS)
    srcc, plcc = PAPER_RESULTS[(preset, target)]
    assert summary["paper"] == {"srcc": srcc, "plcc": plcc}
    assert f"{srcc:.4f}" in (tmp_path / "summary.md").read_text()


def test_trainer_summary_finds_the_paper_row_for_the_default_target(tmp_path, capsys):
    from ipce.config import make_config
    from ipce.engine.train import write_summary

    summary = write_summary(tmp_path, make_config("aigcqa30k"), SPLITS)  # target left to the dataset's default
    assert summary["target"] == "quality" and summary["paper"] == {"srcc": 0.9076, "plcc": 0.9274}


def test_split_table_rows_and_summary():
    table = split_table(SPLITS, summarize(SPLITS), paper=PAPER_RESULTS[("agiqa3k", "quality")])
    rows = _rows(table)
    assert rows[0] == ["split", "best epoch", "srcc", "plcc", "krcc", "rmse", "srcc_plcc_mean"]
    assert set(rows[1][0]) == {"-"}  # markdown separator
    assert rows[2] == ["1", "7", "0.8100", "0.8400", "0.6200", "0.5000", "0.8250"]
    assert rows[4][:3] == ["3", "3", "0.8500"]
    mean = rows[5]
    assert mean[0] == "mean ± std" and mean[1] == "–"
    # srcc: mean 0.83, sample std sqrt((0.02^2 + 0 + 0.02^2) / 2) = 0.02
    assert mean[2] == "0.8300 ± 0.0200"
    assert mean[5] == "0.4800 ± 0.0200"
    assert rows[6] == ["median", "–", "0.8300", "0.8600", "0.6400", "0.4800", "0.8450"]
    assert rows[7] == [PAPER_LABEL, "–", "0.8841", "0.9246", "–", "–", "–"]
    assert len(rows) == 8


def test_split_table_without_paper_epoch_or_split_numbers():
    per = [{k: v for k, v in d.items() if k not in ("split", "epoch")} for d in SPLITS]
    per[1]["srcc"] = float("nan")
    rows = _rows(split_table(per, summarize(per), keys=("srcc", "plcc")))
    assert rows[0] == ["split", "srcc", "plcc"]
    assert [r[0] for r in rows[2:]] == ["1", "2", "3", "mean ± std", "median"]
    assert rows[3][1] == "n/a"
    assert rows[5][1] == "0.8300 ± 0.0283 (n=2)"  # NaN skipped, and said so
    assert not any(PAPER_LABEL in r[0] for r in rows)


def _scatter_data(n=120):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 5, n)
    return x, logistic4(x, 4.6, 0.4, 2.4, 0.7) + rng.normal(0, 0.2, n)


def test_plot_scatter_png(tmp_path):
    x, y = _scatter_data()
    target = tmp_path / "plots" / "scatter.png"
    out = plot_scatter(x, y, target, title="split 1")
    assert out == target and target.stat().st_size > 1000
    with Image.open(target) as im:
        assert im.format == "PNG" and im.size == (720, 600)
        # not a blank canvas: the points and curve put colour on it
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20)) > 10
    assert _no_tmp_left(target.parent) == []


def test_plot_scatter_degenerate_does_not_crash(tmp_path):
    target = tmp_path / "flat.png"
    plot_scatter([2.0] * 10, np.linspace(0, 5, 10), target)
    with Image.open(target) as im:
        assert im.size == (720, 600)


def _axes():
    from matplotlib.figure import Figure

    return Figure().add_subplot(1, 1, 1)


def test_scatter_draws_a_good_fit():
    ax = _axes()
    assert draw_scatter(ax, *_scatter_data()) is True
    assert len(ax.lines) == 1 and "4-parameter logistic" in ax.lines[0].get_label()


@pytest.mark.parametrize("pred", [np.r_[np.zeros(30), np.ones(30)], np.full(60, 2.0),
                                  np.r_[np.full(30, 1.0), np.full(30, 3.0)] + 1e-3 * np.sin(np.arange(60))],
                         ids=["step", "constant", "two-clusters"])
def test_scatter_does_not_draw_a_failed_fit_and_says_so(tmp_path, pred):
    mos = np.r_[np.random.default_rng(0).uniform(0.5, 2, 30), np.random.default_rng(1).uniform(3, 4.5, 30)]
    ax = _axes()
    assert draw_scatter(ax, pred, mos, title="split 1") is False
    assert len(ax.lines) == 0  # no curve on the axes
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "logistic fit did not converge" in legend and "n/a" in legend
    assert "logistic fit did not converge" in ax.get_title() and "split 1" in ax.get_title()
    plot_scatter(pred, mos, tmp_path / "failed.png")  # and the PNG is still written
    assert (tmp_path / "failed.png").stat().st_size > 1000


def test_one_split_table_has_no_spread_rows():
    one = SPLITS[:1]
    table = split_table(one, summarize(one), paper=PAPER_RESULTS[("agiqa3k", "quality")])
    assert "±" not in table and "median" not in table
    rows = _rows(table)
    assert rows[2] == ["1", "7", "0.8100", "0.8400", "0.6200", "0.5000", "0.8250"]
    assert rows[3][0] == PAPER_LABEL and len(rows) == 4


def test_nan_metrics_print_as_n_a():
    per = [dict(SPLITS[0], plcc_logistic=float("nan")), dict(SPLITS[1], plcc_logistic=float("nan"))]
    rows = _rows(split_table(per, summarize(per), keys=("srcc", "plcc_logistic")))
    assert [r[3] for r in rows[2:]] == ["n/a", "n/a", "n/a ± n/a (n=0)", "n/a"]


def test_summary_title_names_the_dataset_or_the_annotation_file(tmp_path, capsys):
    from ipce.config import make_config
    from ipce.engine.train import write_summary

    write_summary(tmp_path, make_config("agiqa3k"), SPLITS)
    assert (tmp_path / "summary.md").read_text().splitlines()[0] == "# AGIQA-3K (quality)"
    write_summary(tmp_path, make_config("agiqa3k", target="alignment"), SPLITS)
    assert (tmp_path / "summary.md").read_text().splitlines()[0] == "# AGIQA-3K (alignment)"
    custom = make_config(annotations=str(tmp_path / "my.csv"), images=str(tmp_path))
    write_summary(tmp_path, custom, SPLITS)
    assert (tmp_path / "summary.md").read_text().splitlines()[0] == "# my.csv (mos)"


def test_plot_learning_curves_png(tmp_path):
    history = [
        {"epoch": e, "train_loss": 1.0 / e, "srcc": 0.5 + 0.03 * e, "plcc": 0.55 + 0.02 * e,
         "lr": 5e-6 * (1 + math.cos(math.pi * e / 5)) / 2}
        for e in range(1, 9)
    ]
    history[3]["srcc"] = float("nan")
    target = tmp_path / "curves.png"
    assert plot_learning_curves(history, target, title="agiqa3k") == target
    with Image.open(target) as im:
        assert im.format == "PNG" and im.size == (1200, 480)
    # without lr, also fine
    plot_learning_curves([{k: v for k, v in h.items() if k != "lr"} for h in history], target)
    with Image.open(target) as im:
        assert im.size == (1200, 480)
    assert _no_tmp_left(tmp_path) == []
    with pytest.raises(ValueError, match="empty"):
        plot_learning_curves([], tmp_path / "none.png")


def test_write_json_nan_as_null_and_numpy(tmp_path):
    p = tmp_path / "m.json"
    write_json(p, {"srcc": float("nan"), "plcc": np.float32(0.5), "n": np.int64(3),
                   "per": [1.0, float("inf")], "arr": np.array([1, 2]), "ok": np.bool_(True)})
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert text.startswith('{\n  "srcc": null')  # indent 2
    assert json.loads(text) == {"srcc": None, "plcc": 0.5, "n": 3, "per": [1.0, None],
                                "arr": [1, 2], "ok": True}
    assert _no_tmp_left(tmp_path) == []


def test_write_text_atomic_replace(tmp_path):
    p = tmp_path / "sub" / "table.md"
    write_text(p, "old\n")
    write_text(p, "new ± 1\n")
    assert p.read_text(encoding="utf-8") == "new ± 1\n"
    assert _no_tmp_left(p.parent) == []


def test_failed_write_keeps_old_file_and_no_tmp(tmp_path):
    p = tmp_path / "m.json"
    write_json(p, {"a": 1})
    with pytest.raises(TypeError):
        write_json(p, {"a": object()})  # not serializable: fails before anything is renamed
    with pytest.raises(RuntimeError), io.atomic_file(p) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert json.loads(p.read_text()) == {"a": 1}
    assert _no_tmp_left(tmp_path) == []
