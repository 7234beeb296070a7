"""The demo's synthetic dataset: determinism, the MOS rule, defects visible in pixels, cache."""

import csv
import dataclasses
import os

import numpy as np
import pytest
from PIL import Image

from ipce.demo import synthetic as syn
from ipce.demo.synthetic import (COLOURS, SyntheticConfig, generate, make_prompt,
                                     mismatched_prompt, prompt_text, render)
from ipce.errors import IpceError

ATTRS = ("count", "colour", "shape", "background")


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def parse_defects(text):
    if text == "none":
        return {}
    return dict(item.split(":") for item in text.split(";"))


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    """200 images with the default rates (about 2 s)."""
    out = tmp_path_factory.mktemp("syn")
    ann = generate(out, SyntheticConfig(n=200, seed=1), progress=False)
    return out, read_rows(ann)


# --------------------------------------------------------------------------------- prompts

def test_prompts_pluralize_and_keep_background_distinct():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        prompt, a = make_prompt(rng)
        seen.add((a["count"], a["shape"]))
        assert a["colour"] != a["background"]
        assert prompt == prompt_text(a)
        words = prompt.split()
        assert words[0] == {1: "one", 2: "two", 3: "three"}[a["count"]]
        assert words[1] == a["colour"] and words[-2:] == [a["background"], "background"]
        assert words[2] == (a["shape"] if a["count"] == 1 else a["shape"] + "s")
    assert len(seen) == 12  # every count x shape occurs
    assert prompt_text({"count": "two", "colour": "red", "shape": "circle",
                        "background": "blue"}) == "two red circles on a blue background"
    assert prompt_text({"count": 1, "colour": "black", "shape": "star",
                        "background": "white"}) == "one black star on a white background"


def test_mismatched_prompt_differs_in_one_of_colour_shape_count():
    rng = np.random.default_rng(3)
    kinds_seen = set()
    for _ in range(200):
        own, a = make_prompt(rng)
        wrong = mismatched_prompt(a, rng)
        assert wrong != own
        w = wrong.split()
        o = own.split()
        assert w[-2] == a["background"] != w[1]  # background kept, colour still distinct
        diff = [i for i in (0, 1) if w[i] != o[i]]
        if w[2].rstrip("s") != o[2].rstrip("s"):
            diff.append(2)
        assert len(diff) == 1
        kinds_seen.add(diff[0])
    assert kinds_seen == {0, 1, 2}
    # rows read back by pandas/csv carry count as int or str: both work
    a = {"count": "3", "colour": "red", "shape": "square", "background": "white"}
    assert mismatched_prompt(a, rng) != prompt_text(a)


# --------------------------------------------------------------------------------- rendering

def nearest_colour(rgb):
    return min(COLOURS, key=lambda c: sum((np.asarray(COLOURS[c]) - rgb) ** 2))


def shape_colour(img):
    """Mean colour of the pixels that differ from the corner (background) pixel."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    bg = a[0, 0]
    mask = np.abs(a - bg).sum(axis=2) > 60
    assert mask.mean() > 0.01, "shapes should cover a visible part of the image"
    return a[mask].mean(axis=0)


def test_render_draws_prompt_colours_at_the_requested_size():
    rng = np.random.default_rng(0)
    for _ in range(20):
        _, a = make_prompt(rng)
        img = render(a, (300, 180), rng)
        assert img.size == (300, 180) and img.mode == "RGB"
        assert nearest_colour(np.asarray(img)[0, 0]) == a["background"]
        assert nearest_colour(shape_colour(img)) == a["colour"]


def test_wrong_colour_images_really_show_another_colour(tmp_path):
    cfg = SyntheticConfig(n=24, seed=5, misalign_rate=0.5, quality_rate=0.0,
                          misalign_kinds=(("colour", 1.0),), big_rate=0.0)
    rows = read_rows(generate(tmp_path, cfg, progress=False))
    n_wrong = 0
    for r in rows:
        img = Image.open(tmp_path / "images" / r["image"])
        got = nearest_colour(shape_colour(img))
        d = parse_defects(r["defects"])
        if "wrong_colour" in d:
            n_wrong += 1
            assert got == d["wrong_colour"] != r["colour"]
        else:
            assert got == r["colour"]
        assert nearest_colour(np.asarray(img.convert("RGB"))[0, 0]) == r["background"]
    assert 0 < n_wrong < len(rows)


def test_wrong_count_draws_another_number_of_shapes():
    def blobs(img):  # connected components of shape pixels (4-neighbour flood fill)
        a = np.asarray(img, dtype=np.int32)
        mask = np.abs(a - a[0, 0]).sum(axis=2) > 60
        seen = np.zeros_like(mask)
        n = 0
        for y, x in zip(*np.nonzero(mask)):
            if seen[y, x]:
                continue
            n += 1
            stack = [(y, x)]
            seen[y, x] = True
            while stack:
                cy, cx = stack.pop()
                for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                    if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] \
                            and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        return n

    rng = np.random.default_rng(1)
    for count in (1, 2, 3):
        a = {"count": count, "colour": "red", "shape": "circle", "background": "white"}
        assert blobs(render(a, (120, 90), rng)) == count
        wrong = syn.alter_attrs(a, "count", rng)
        assert wrong["count"] != count
        assert blobs(render(wrong, (120, 90), rng)) == wrong["count"]


def test_quality_defects_change_pixels_more_with_severity():
    rng = np.random.default_rng(2)
    a = {"count": 2, "colour": "blue", "shape": "star", "background": "yellow"}
    clean = render(a, (256, 256), np.random.default_rng(9))
    ref = np.asarray(clean, dtype=np.float32)
    for kind in syn.QUALITY_KINDS:
        errs = []
        for s in (0.0, 1.0):
            img, data = syn.degrade(clean, kind, s, rng)
            assert img.size == clean.size and img.mode == "RGB"
            assert (data is not None) == (kind == "jpeg")
            errs.append(np.abs(np.asarray(img, dtype=np.float32) - ref).mean())
        assert 0 < errs[0] < errs[1], kind


# --------------------------------------------------------------------------------- the set

def test_csv_reads_back_with_pandas(default_set):
    import pandas as pd  # a dependency of ipce: its absence is a failure, not a skip
    out, _ = default_set
    df = pd.read_csv(out / "annotations.csv")
    assert list(df.columns) == list(syn.COLUMNS)
    assert len(df) == 200
    assert df["mos"].dtype.kind == "f" and df["count"].dtype.kind == "i"
    assert df["defects"].notna().all()
    assert set(df["generator"]) == {"gen-a", "gen-b", "gen-c"}
    for _, r in df.iterrows():
        assert (out / "images" / r["image"]).is_file()
        assert r["image"].split("_")[0] == r["generator"]
        assert r["prompt"] == prompt_text(r)
        assert mismatched_prompt(r, np.random.default_rng(0)) != r["prompt"]


def test_mos_range_and_clean_above_defective(default_set):
    _, rows = default_set
    mos = np.array([float(r["mos"]) for r in rows])
    assert mos.min() >= 0 and mos.max() <= 5
    d = [parse_defects(r["defects"]) for r in rows]
    clean = mos[[not x for x in d]]
    mis = mos[[any(k.startswith("wrong_") for k in x) for x in d]]
    qual = mos[[any(k in syn.QUALITY_KINDS for k in x) for x in d]]
    both = mos[[len(x) == 2 for x in d]]
    assert min(len(clean), len(mis), len(qual), len(both)) >= 10
    assert clean.mean() > qual.mean() + 0.5 and clean.mean() > mis.mean() + 1.0
    assert both.mean() < min(mis.mean(), qual.mean())
    # about 40 % misaligned, 40 % degraded
    assert 0.25 < len(mis) / len(rows) < 0.55 and 0.25 < len(qual) / len(rows) < 0.55


def test_generators_differ_in_defect_rates(default_set):
    _, rows = default_set
    by_gen = {}
    for r in rows:
        by_gen.setdefault(r["generator"], []).append(float(r["mos"]))
    means = {g: np.mean(v) for g, v in by_gen.items()}
    assert means["gen-a"] > means["gen-b"] + 0.3 and means["gen-a"] > means["gen-c"] + 0.3


def test_sizes_vary_with_small_and_big_images(default_set):
    out, rows = default_set
    sizes = [Image.open(out / "images" / r["image"]).size for r in rows]
    assert any(min(s) < 224 for s in sizes)
    assert any(max(s) > 1024 for s in sizes)
    assert any(s[0] != s[1] for s in sizes) and any(s[0] == s[1] for s in sizes)
    assert all(160 <= min(s) and max(s) <= 1100 for s in sizes)
    middle = [s for s in sizes if 224 <= min(s) and max(s) <= 1024]
    assert len(middle) > 0.8 * len(sizes)


def test_size_rates_follow_the_config():
    cfg = SyntheticConfig(small_rate=0.5, big_rate=0.5, min_side=100, max_side=1200)
    rng = np.random.default_rng(0)
    sizes = [syn.draw_size(cfg, rng) for _ in range(400)]
    small = [s for s in sizes if max(s) <= 220]
    big = [s for s in sizes if min(s) >= 1025]
    assert len(small) + len(big) == 400 and 150 < len(small) < 250
    assert min(min(s) for s in small) < 120 and max(max(s) for s in big) > 1150


def test_mos_follows_the_documented_rule_without_rater_noise(tmp_path):
    cfg = SyntheticConfig(n=60, seed=2, noise_sd=0.0, big_rate=0.0)
    rows = read_rows(generate(tmp_path, cfg, progress=False))
    sev_mos = []
    for r in rows:
        expected = 4.5
        for k, v in parse_defects(r["defects"]).items():
            if k.startswith("wrong_"):
                expected -= 1.75
            else:
                expected -= 0.5 + float(v)
        assert float(r["mos"]) == pytest.approx(expected, abs=1e-3)
        d = parse_defects(r["defects"])
        if len(d) == 1 and not next(iter(d)).startswith("wrong_"):
            sev_mos.append((float(next(iter(d.values()))), float(r["mos"])))
        assert r["image"].endswith(".jpg") == ("jpeg" in d)
    sev, mos = np.array(sev_mos).T
    assert len(set(np.round(mos, 2))) > 5  # graded, not two levels
    assert np.corrcoef(sev, mos)[0, 1] < -0.99


# --------------------------------------------------------------------------------- determinism

def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    cfg = SyntheticConfig(n=12, seed=7, big_rate=0.0)
    a = generate(tmp_path / "a", cfg, progress=False)
    b = generate(tmp_path / "b", cfg, progress=False)
    c = generate(tmp_path / "c", dataclasses.replace(cfg, seed=8), progress=False)
    assert a.read_bytes() == b.read_bytes()
    for r in read_rows(a):
        assert (a.parent / "images" / r["image"]).read_bytes() == \
            (b.parent / "images" / r["image"]).read_bytes()
    assert a.read_bytes() != c.read_bytes()
    ra, rc = read_rows(a), read_rows(c)
    pa = np.asarray(Image.open(a.parent / "images" / ra[0]["image"]))
    pc = np.asarray(Image.open(c.parent / "images" / rc[0]["image"]))
    assert pa.shape != pc.shape or not np.array_equal(pa, pc)


def test_parallel_workers_give_the_same_output(tmp_path):
    cfg = SyntheticConfig(n=6, seed=3, big_rate=0.0)
    a = generate(tmp_path / "a", cfg, progress=False)
    b = generate(tmp_path / "b", cfg, progress=False, workers=2)
    assert a.read_bytes() == b.read_bytes()
    for r in read_rows(a):
        assert (a.parent / "images" / r["image"]).read_bytes() == \
            (b.parent / "images" / r["image"]).read_bytes()


# --------------------------------------------------------------------------------- cache

def test_cache_skips_same_config_and_regenerates_other(tmp_path):
    cfg = SyntheticConfig(n=10, seed=4, big_rate=0.0)
    ann = generate(tmp_path, cfg, progress=False)
    assert (tmp_path / "config.json").is_file()
    files = [ann] + sorted((tmp_path / "images").iterdir())
    before = {p: p.stat().st_mtime_ns for p in files}
    old_csv = ann.read_bytes()

    assert generate(tmp_path, cfg, progress=False) == ann
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert syn.is_cached(tmp_path, cfg)

    smaller = dataclasses.replace(cfg, n=5, misalign_rate=0.9)
    assert not syn.is_cached(tmp_path, smaller)
    generate(tmp_path, smaller, progress=False)
    rows = read_rows(ann)
    assert ann.read_bytes() != old_csv and len(rows) == 5
    # the images of the old set that the new one does not have are gone, no temp files left
    assert sorted(os.listdir(tmp_path / "images")) == sorted(r["image"] for r in rows)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_bad_config_is_a_one_line_user_error(tmp_path):
    with pytest.raises(IpceError, match="misalign_rate"):
        generate(tmp_path, SyntheticConfig(misalign_rate=1.5), progress=False)
    with pytest.raises(IpceError, match="max_side"):
        generate(tmp_path, SyntheticConfig(max_side=900), progress=False)
    assert not (tmp_path / "annotations.csv").exists()
