"""Best of N: `Scorer.rank` and `ipce rank` order the images as sorting `ipce predict`'s scores does,
within each prompt; --top, the contact sheet, unreadable images."""
from __future__ import annotations

import csv

import pytest
from PIL import Image

import ipce
from ipce.cli import main
from ipce.errors import IpceError
from tests.conftest import random_image, tiny_checkpoint

FAST = ["--resize", "224", "--patches", "2"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("rank") / "m.safetensors", seed=4)


def save_images(folder, count: int) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        paths.append(folder / f"gen_{i}.png")
        random_image(96 + 8 * i, 80, seed=30 + i).save(paths[-1])
    return paths


def read_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def predicted(checkpoint, folder, tmp_path, prompt_flags) -> list[dict]:
    out = tmp_path / "predict.csv"
    assert main(["predict", "--checkpoint", str(checkpoint), "--images", str(folder), *prompt_flags, "--out", str(out),
                 "--workers", "0", "--no-progress", *FAST]) == 0
    return read_rows(out)


def test_rank_orders_as_sorting_predicts_scores_and_draws_a_sheet(checkpoint, tmp_path):
    save_images(tmp_path / "imgs", 5)
    expected = sorted(predicted(checkpoint, tmp_path / "imgs", tmp_path, ["--prompt", "a red car"]),
                      key=lambda r: -float(r["score"]))
    out, sheet = tmp_path / "ranked.csv", tmp_path / "sheet.png"
    assert main(["rank", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "imgs"), "--prompt", "a red car",
                 "--out", str(out), "--sheet", str(sheet), "--no-progress", *FAST]) == 0
    rows = read_rows(out)
    assert list(rows[0]) == ["image", "prompt", "score", "rank"]
    assert [r["image"] for r in rows] == [r["image"] for r in expected]
    assert [float(r["score"]) for r in rows] == pytest.approx([float(r["score"]) for r in expected], abs=1e-5)
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5] and {r["prompt"] for r in rows} == {"a red car"}
    with Image.open(sheet) as drawn:
        assert drawn.format == "PNG" and drawn.width > 5 * 100  # a row of five thumbnails


def test_ranks_within_each_prompt_and_keeps_the_top(checkpoint, tmp_path):
    paths = save_images(tmp_path / "imgs", 6)
    prompts = tmp_path / "prompts.csv"
    with prompts.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "prompt"])
        writer.writerows([(p.name, "a cat" if i % 2 else "a boat") for i, p in enumerate(paths)])
    scores = {r["image"]: float(r["score"]) for r in predicted(checkpoint, tmp_path / "imgs", tmp_path,
                                                              ["--prompts", str(prompts)])}
    out = tmp_path / "ranked.csv"
    assert main(["rank", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "imgs"), "--prompts", str(prompts),
                 "--top", "2", "--out", str(out), "--sheet", str(tmp_path / "s.png"), "--no-progress", *FAST]) == 0
    rows = read_rows(out)
    for prompt, names in (("a boat", ["gen_0.png", "gen_2.png", "gen_4.png"]),
                          ("a cat", ["gen_1.png", "gen_3.png", "gen_5.png"])):
        mine = [r for r in rows if r["prompt"] == prompt]
        best = sorted(names, key=lambda n: -scores[n])[:2]
        assert [r["image"] for r in mine] == best and [r["rank"] for r in mine] == ["1", "2"]
    assert (tmp_path / "s.png").stat().st_size > 5000


def test_unreadable_images_are_listed_and_the_rest_ranked(checkpoint, tmp_path, capsys):
    save_images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "gen_9.png").write_text("not a picture")
    out = tmp_path / "ranked.csv"
    code = main(["rank", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "imgs"), "--prompt", "x",
                 "--out", str(out), "--no-progress", *FAST])
    assert code == 3
    assert sorted(r["image"] for r in read_rows(out)) == ["gen_0.png", "gen_1.png", "gen_2.png"]
    errors = read_rows(tmp_path / "ranked.errors.csv")
    assert len(errors) == 1 and errors[0]["path"].endswith("gen_9.png")
    assert "gen_9.png" in capsys.readouterr().err


def test_api_rank_is_best_first_with_indices(checkpoint, tmp_path):
    paths = save_images(tmp_path / "imgs", 4)
    scorer = ipce.load_scorer(checkpoint, resize=224, patches=2)
    ranked = scorer.rank(paths, "a tree")
    scores = scorer.score(paths, "a tree")
    assert [r.index for r in ranked] == sorted(range(4), key=lambda i: -scores[i])
    assert [r.rank for r in ranked] == [1, 2, 3, 4] and [r.image for r in ranked] == [paths[r.index] for r in ranked]


def test_rank_without_a_prompt_for_a_prompt_aware_model_is_one_line(checkpoint, tmp_path, capsys):
    save_images(tmp_path / "imgs", 2)
    code = main(["rank", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "imgs"),
                 "--out", str(tmp_path / "r.csv")])
    err = capsys.readouterr().err
    assert code == 1 and "--prompt" in err and err.count("\n") == 1


def test_rank_passes_generators_to_a_generator_prefixed_model(checkpoint):
    """For PIL images a '{generator} {prompt}' model learns each generator from `generators`: the
    ranking is that of the scores with those generators, and without them it is refused."""
    scorer = ipce.load_scorer(str(checkpoint), resize=224, patches=2, prompt_prefix="generator")
    images = [random_image(96, 80, seed=50 + i) for i in range(4)]
    generators = ["DALLE2", "midjourney", "SDXL", "DALLE2"]
    scores = scorer.score(images, "a red car", generators)
    ranked = scorer.rank(images, "a red car", generators)
    assert [r.index for r in ranked] == sorted(range(4), key=lambda i: -scores[i])
    assert [r.score for r in ranked] == sorted(scores, reverse=True)
    with pytest.raises(IpceError, match="generator"):
        scorer.rank(images, "a red car")


def test_the_contact_sheet_names_each_file_under_its_thumbnail(checkpoint, tmp_path, monkeypatch):
    import ipce.utils.sheet as sheet_module

    drawn = []
    real = sheet_module.contact_sheet

    def recording(rows, path):  # the real sheet is drawn; its captions are kept to read back
        drawn.append(rows)
        return real(rows, path)

    monkeypatch.setattr(sheet_module, "contact_sheet", recording)
    save_images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "a_candidate_with_a_very_long_file_name_0042.png").write_bytes(
        (tmp_path / "imgs" / "gen_0.png").read_bytes())
    out = tmp_path / "ranked.csv"
    assert main(["rank", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "imgs"), "--prompt", "a red car",
                 "--out", str(out), "--sheet", str(tmp_path / "s.png"), "--no-progress", *FAST]) == 0
    rows = read_rows(out)
    captions = [caption for _, items in drawn[0] for _, caption in items]
    assert [c.splitlines()[0] for c in captions] == [f"#{r['rank']}  {float(r['score']):.2f}" for r in rows]
    names = [c.splitlines()[1] for c in captions]
    assert names[[r["image"] for r in rows].index("gen_1.png")] == "gen_1.png"
    long = names[[r["image"] for r in rows].index("a_candidate_with_a_very_long_file_name_0042.png")]
    assert long.startswith("a_candidat") and long.endswith("0042.png") and "..." in long and len(long) <= 22



@pytest.mark.parametrize("command", ["rank", "explain"])
def test_each_image_file_is_decoded_once(command, checkpoint, tmp_path, monkeypatch):
    paths = save_images(tmp_path / "imgs", 3)
    opened = []
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):
        opened.append(str(getattr(fp, "name", fp)))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    if command == "rank":
        given = ["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "ranked.csv")]
    else:
        given = [*map(str, paths), "--out", str(tmp_path / "maps"), "--stride", "64"]
    assert main([command, *given, "--prompt", "x", "--checkpoint", str(checkpoint), "--no-progress", *FAST]) == 0
    # the inputs each opened once (explain's drawing opens its own in-memory PNGs besides)
    assert sorted(name for name in opened if name.startswith(str(tmp_path / "imgs"))) == sorted(map(str, paths))
