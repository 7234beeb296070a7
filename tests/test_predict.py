"""`ipce predict`: the data forms, ensembles, bad files, metrics; the same numbers as the API."""
import csv

import pytest
import torch

import ipce
from ipce.cli import main
from ipce.errors import IpceError
from tests.conftest import make_tiny_scorer, random_image, tiny_checkpoint

FAST = ["--resize", "224", "--patches", "2"]


def save_images(folder, names, size=(80, 64)):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        paths.append(folder / name)
        random_image(size[0] + 8 * i, size[1], seed=i + 10).save(paths[-1])
    return paths


def write_table(path, header, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_seed_checkpoint_with_custom_csv_reproduces_the_api(tmp_path, capsys):
    model = make_tiny_scorer(seed=7)
    ckpt = tmp_path / "seed_epoch1.pt"
    torch.save({"model_state_dict": model.clip.state_dict(), "epoch": 1}, ckpt)
    names = ["DALLE3_0001.png", "SDXL_0002.png", "MJ_0003.png", "sub/PixArt_0004.png"]
    paths = save_images(tmp_path / "imgs", names[:3]) + save_images(tmp_path / "imgs" / "sub", ["PixArt_0004.png"])
    prompts = ["a red cube on a table", "two cats, one asleep", "NA", "a castle at dusk"]
    table = write_table(tmp_path / "ann.csv", ["file", "text"], list(zip(names, prompts)))
    out = tmp_path / "out" / "scores.csv"
    code = main(["predict", "--checkpoint", str(ckpt), "--annotations", str(table), "--images", str(tmp_path / "imgs"),
                 "--image-col", "file", "--prompt-col", "text", "--out", str(out), "--batch-size", "3",
                 "--workers", "2", "--no-progress", *FAST])
    assert code == 0
    rows = read_rows(out)
    assert list(rows[0]) == ["image", "prompt", "score"]  # one model, no MOS: no extra columns
    assert [r["image"] for r in rows] == names and [r["prompt"] for r in rows] == prompts
    expected = ipce.load_scorer(str(ckpt), resize=224, patches=2).score(paths, prompts)
    assert torch.allclose(torch.tensor([float(r["score"]) for r in rows], dtype=torch.float64),
                          torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)
    assert not (tmp_path / "out" / "scores.errors.csv").exists()
    assert not (tmp_path / "out" / "scores.png").exists()  # no MOS, no plot
    printed = capsys.readouterr().out
    assert "SRCC" not in printed and "scored 4 of 4 images" in printed and "images/s" in printed


def test_scores_in_the_annotations_give_metrics_and_a_scatter_plot(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=1)
    names = [f"SD15_{i:04d}.png" for i in range(6)]
    save_images(tmp_path / "imgs", names)
    mos = [0.5, 3.25, 1.0, 4.5, 2.0, 2.75]
    table = write_table(tmp_path / "ann.csv", ["image", "prompt", "mos"],
                        [(n, f"prompt {i}", m) for i, (n, m) in enumerate(zip(names, mos))])
    out = tmp_path / "pred.csv"
    code = main(["predict", "--checkpoint", str(ckpt), "--annotations", str(table), "--images", str(tmp_path / "imgs"),
                 "--out", str(out), "--workers", "0", "--no-progress", *FAST])
    assert code == 0
    printed = capsys.readouterr().out
    for key in ("SRCC", "PLCC", "KRCC", "RMSE"):
        assert key in printed
    rows = read_rows(out)
    assert [float(r["mos"]) for r in rows] == mos
    from ipce.utils.metrics import compute_metrics

    srcc = compute_metrics([float(r["score"]) for r in rows], mos)["srcc"]
    assert f"SRCC {srcc:.4f}" in printed
    png = tmp_path / "pred.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_product_ensemble_and_generator_prefix_match_single_models(tmp_path):
    ck1 = tiny_checkpoint(tmp_path / "a.safetensors", seed=1)
    ck2 = tiny_checkpoint(tmp_path / "b.safetensors", seed=2)
    names = ["SDXL_0002.png", "DALLE3_0001.png", "MJ_0003.png"]
    save_images(tmp_path / "imgs", names)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")  # not an image extension: not listed
    prompt = "a lighthouse in a storm"
    out = tmp_path / "ens.csv"
    code = main(["predict", "--checkpoint", str(ck1), "--checkpoint", str(ck2), "--images", str(tmp_path / "imgs"),
                 "--prompt", prompt, "--prompt-prefix", "none", "--prompt-prefix", "generator",
                 "--combine", "product", "--out", str(out), "--workers", "0", "--no-progress", *FAST])
    assert code == 0
    rows = read_rows(out)
    assert list(rows[0]) == ["image", "prompt", "score", "score_1", "score_2"]
    ordered = sorted(names)
    assert [r["image"] for r in rows] == ordered  # every image file of the folder, sorted
    paths = [tmp_path / "imgs" / n for n in ordered]
    col = {k: torch.tensor([float(r[k]) for r in rows], dtype=torch.float64) for k in ("score", "score_1", "score_2")}

    def close(a, b):
        return torch.allclose(a, torch.tensor(b, dtype=torch.float64), atol=1e-6, rtol=0)

    alone1 = ipce.load_scorer(str(ck1), resize=224, patches=2).score(paths, prompt)
    second = ipce.load_scorer(str(ck2), resize=224, patches=2)
    prefixed = second.score(paths, [f"{n.split('_')[0]} {prompt}" for n in ordered])
    plain = second.score(paths, prompt)
    assert close(col["score_1"], alone1)
    assert close(col["score_2"], prefixed)  # the generator reached the text ...
    assert not close(col["score_2"], plain)  # ... and made a difference
    assert close(col["score"], (col["score_1"] * col["score_2"] / 5).tolist())
    # the Python API gives the same ensemble
    api = ipce.load_scorer([str(ck1), str(ck2)], combine="product", prompt_prefix=[None, "generator"],
                           resize=224, patches=2)
    assert close(col["score"], api.score(paths, prompt))


def test_api_and_cli_agree_on_a_name_without_a_generator(tmp_path):
    # one rule for both: the generator is the base name up to its first "_"; none there is an error,
    # never the text "foo.png {prompt}"
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=4)
    (path,) = save_images(tmp_path / "imgs", ["foo.png"])
    scorer = ipce.load_scorer(str(ckpt), prompt_prefix="generator", resize=224, patches=2)
    with pytest.raises(IpceError) as info:
        scorer.score([path], "a red square")
    assert "generator" in str(info.value)
    code = main(["predict", "--checkpoint", str(ckpt), "--images", str(tmp_path / "imgs"), "--prompt", "a red square",
                 "--prompt-prefix", "generator", "--out", str(tmp_path / "o.csv"), "--workers", "0", "--no-progress",
                 *FAST])
    assert code == 1


def test_folder_with_a_prompts_file(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=3)
    paths = save_images(tmp_path / "imgs", ["x.png", "y.jpg"])
    prompts_csv = write_table(tmp_path / "prompts.csv", ["image", "prompt"],
                              [("y.jpg", "a yellow bird"), ("x.png", "an x-ray of a hand")])
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(ckpt), "--images", str(tmp_path / "imgs"), "--prompts",
                 str(prompts_csv), "--out", str(out), "--workers", "0", "--no-progress", *FAST]) == 0
    rows = read_rows(out)
    assert [(r["image"], r["prompt"]) for r in rows] == [("y.jpg", "a yellow bird"), ("x.png", "an x-ray of a hand")]
    expected = ipce.load_scorer(str(ckpt), resize=224, patches=2).score(paths[::-1], ["a yellow bird",
                                                                                      "an x-ray of a hand"])
    assert [float(r["score"]) for r in rows] == pytest.approx(expected, abs=1e-6)


def make_broken(folder):
    """Three unreadable files named like images; returns their names."""
    (folder / "b_zero.png").write_bytes(b"")
    good = (folder / "a_good.png").read_bytes()
    (folder / "c_truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "d_text.png").write_text("this is not a picture\n")
    return ["b_zero.png", "c_truncated.png", "d_text.png"]


def test_broken_images_are_skipped_listed_and_give_exit_status_3(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=4)
    folder = tmp_path / "imgs"
    save_images(folder, ["a_good.png", "e_good.png", "f_good.png"])
    broken = make_broken(folder)
    out = tmp_path / "run.csv"
    # batches of 2 over a, b, c, d, e, f: the second batch has no readable image at all
    argv = ["predict", "--checkpoint", str(ckpt), "--images", str(folder), "--prompt", "a cat", "--out", str(out),
            "--batch-size", "2", "--workers", "2", "--no-progress", *FAST]
    assert main(argv) == 3  # partial results (2 is argparse's usage error)
    printed = capsys.readouterr().out
    assert "skipped 3 unreadable" in printed
    rows = read_rows(out)
    good = ["a_good.png", "e_good.png", "f_good.png"]
    assert [r["image"] for r in rows] == good
    expected = ipce.load_scorer(str(ckpt), resize=224, patches=2).score([folder / n for n in good], "a cat")
    assert [float(r["score"]) for r in rows] == pytest.approx(expected, abs=1e-6)
    errors = read_rows(tmp_path / "run.errors.csv")
    assert [e["path"].rsplit("/", 1)[-1] for e in errors] == broken
    assert "empty" in errors[0]["problem"] and "truncated" in errors[1]["problem"]
    assert "not an image" in errors[2]["problem"]
    # once the bad files are gone, a rerun exits 0 and the stale error list goes too
    for name in broken:
        (folder / name).unlink()
    assert main(argv) == 0
    assert not (tmp_path / "run.errors.csv").exists()


@pytest.mark.parametrize("extra, message", [
    (["--preset", "agiqa3k", "--prompt", "x"], "--preset and --prompt"),
    (["--prompt", "x"], "--images: required with --prompt"),
    (["--images", "IMGS", "--prompt", "x", "--checkpoint", "tiny", "--prompt-prefix", "none",
      "--prompt-prefix", "generator", "--prompt-prefix", "none"], "--prompt-prefix: got 3 values for 2"),
    (["--images", "IMGS", "--prompt", "x", "--prompt-prefix", "generator"], "--prompt-prefix generator needs"),
    (["--images", "IMGS", "--prompt", "x", "--resize", "100"], "--resize 100"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, capsys, extra, message):
    save_images(tmp_path / "imgs", ["nogenerator.png"])
    extra = [str(tmp_path / "imgs") if a == "IMGS" else a for a in extra]
    code = main(["predict", "--checkpoint", "tiny", "--out", str(tmp_path / "o.csv"), "--workers", "0", *extra])
    err = capsys.readouterr().err
    assert code == 1 and message in err and err.count("\n") == 1


def test_a_prompts_file_that_misses_images_says_how_many(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=3)
    save_images(tmp_path / "imgs", ["x.png", "y.jpg", "z.png", "w.png"])
    prompts_csv = write_table(tmp_path / "prompts.csv", ["image", "prompt"], [("y.jpg", "a yellow bird")])
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(ckpt), "--images", str(tmp_path / "imgs"), "--prompts",
                 str(prompts_csv), "--out", str(out), "--workers", "0", "--no-progress", *FAST]) == 0
    err = capsys.readouterr().err
    assert "3 image file(s)" in err and str(prompts_csv) in err and "not scored (e.g. w.png)" in err
    assert [r["image"] for r in read_rows(out)] == ["y.jpg"]


def test_a_folder_yields_every_image_suffix_ipce_reads(tmp_path):
    from PIL import Image

    from ipce.datasets.sources import IMAGE_EXTENSIONS
    from ipce.engine.predict import folder_records

    for i, suffix in enumerate(IMAGE_EXTENSIONS):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / f"g_{i}{suffix}")
    (tmp_path / "notes.txt").write_text("not an image")
    names = [r.name for r in folder_records(tmp_path, "a cat")]
    assert sorted(names) == sorted(f"g_{i}{s}" for i, s in enumerate(IMAGE_EXTENSIONS))
    assert "g_7.gif" in names
