"""The AIGCQA-30K submission scripts and the submission files they write."""
import csv
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import AIGC_DB_AIGCQA30K_TEST
import AIGC_DB_AIGCQA30K_VAL
import ipce
from ipce.engine.submission import output_text, write_submission
from ipce.errors import IpceError
from tests.conftest import random_image, tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# annotation order on purpose not sorted, generators from the file names
NAMES = ["SDXL_0003.png", "DALLE3_0001.png", "MJ_0002.png", "DALLE3_0000.png"]


def aigcqa30k_layout(root, subset, names=NAMES):
    """<root>/AIGCQA-30K-Image/info_<subset>.csv (header-less name,prompt) and <subset>/ images."""
    folder = root / "AIGCQA-30K-Image"
    (folder / subset).mkdir(parents=True, exist_ok=True)
    prompts = []
    for i, name in enumerate(names):
        random_image(96 + 16 * i, 72, seed=i).save(folder / subset / name)
        prompts.append(f"a {['red', 'green', 'blue', 'grey'][i % 4]} teapot, studio light, number {i}")
    with (folder / f"info_{subset}.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(zip(names, prompts))
    return [folder / subset / n for n in names], prompts


def read_output(path):
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.split(",")[0] for line in lines], [float(line.split(",")[1]) for line in lines]


def read_readme(path):
    return dict(line.split(" : ", 1) for line in Path(path).read_text(encoding="utf-8").splitlines())


def check_zip(folder):
    with zipfile.ZipFile(folder / "submission.zip") as archive:
        assert sorted(archive.namelist()) == ["output.txt", "readme.txt"]
        for name in ("output.txt", "readme.txt"):
            assert archive.read(name).decode("utf-8") == (folder / name).read_text(encoding="utf-8")


def test_val_script_writes_the_ntire_final_ensemble(tmp_path):
    ck1 = tiny_checkpoint(tmp_path / "vitl_plain.safetensors", seed=1)
    ck2 = tiny_checkpoint(tmp_path / "vitl_generator.safetensors", seed=2)
    paths, prompts = aigcqa30k_layout(tmp_path / "data", "val")
    out = tmp_path / "sub"
    code = AIGC_DB_AIGCQA30K_VAL.main([
        "--checkpoint", str(ck1), "--checkpoint", str(ck2), "--prompt-prefix", "none", "--prompt-prefix", "generator",
        "--combine", "product", "--resize", "512", "--patches", "15", "--data-root", str(tmp_path / "data"),
        "--out", str(out), "--workers", "0", "--batch-size", "3", "--device", "cpu", "--no-progress"])
    assert code == 0
    names, scores = read_output(out / "output.txt")
    assert names == NAMES  # every image once, in the order of info_val.csv
    q1 = ipce.load_scorer(str(ck1), resize=512, patches=15).score(paths, prompts)
    q2 = ipce.load_scorer(str(ck2), resize=512, patches=15).score(
        paths, [f"{n.split('_')[0]} {p}" for n, p in zip(NAMES, prompts)])
    assert scores == pytest.approx([a * b / 5 for a, b in zip(q1, q2)], abs=2e-6)
    readme = read_readme(out / "readme.txt")
    assert list(readme) == ["runtime per image [s]", "CPU[1] / GPU[0]", "Extra Data [1] / Non-Extra Data [0]",
                            "Other description"]
    assert float(readme["runtime per image [s]"]) > 0
    assert readme["CPU[1] / GPU[0]"] == "1" and readme["Extra Data [1] / Non-Extra Data [0]"] == "0"
    description = readme["Other description"]
    for part in ("15 crops", "adaptive resize 512", "combine product (q1*q2/5)", "generator-prefixed",
                 "vitl_generator.safetensors"):
        assert part in description
    check_zip(out)


def test_test_script_defaults_to_data_and_submissions_test(tmp_path, monkeypatch):
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=5)
    aigcqa30k_layout(tmp_path / "data", "test", NAMES[:3])
    aigcqa30k_layout(tmp_path / "data", "val", NAMES[3:])  # another subset: not read
    monkeypatch.chdir(tmp_path)
    code = AIGC_DB_AIGCQA30K_TEST.main(["--checkpoint", str(ckpt), "--resize", "224", "--patches", "2",
                                        "--workers", "2", "--no-progress"])
    assert code == 0
    out = tmp_path / "submissions" / "test"
    assert read_output(out / "output.txt")[0] == NAMES[:3]
    assert all(0 <= s <= 5 for s in read_output(out / "output.txt")[1])
    assert "single model" in read_readme(out / "readme.txt")["Other description"]
    check_zip(out)


def test_submission_with_a_broken_image_is_refused(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=6)
    paths, _ = aigcqa30k_layout(tmp_path / "data", "val")
    paths[2].write_bytes(paths[2].read_bytes()[:200])  # truncated
    out = tmp_path / "sub"
    code = AIGC_DB_AIGCQA30K_VAL.main(["--checkpoint", str(ckpt), "--data-root", str(tmp_path / "data"),
                                       "--out", str(out), "--resize", "224", "--patches", "2", "--workers", "0",
                                       "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "submission refused" in err and err.count("\n") == 1
    with (out / "errors.csv").open(newline="") as f:
        errors = list(csv.DictReader(f))
    assert [Path(e["path"]).name for e in errors] == [NAMES[2]]
    assert not (out / "output.txt").exists() and not (out / "submission.zip").exists()


def test_output_refuses_duplicates_and_zip_leaves_no_temporary_files(tmp_path):
    with pytest.raises(IpceError, match="twice"):
        output_text(["a.png", "a.png"], [1.0, 2.0])
    paths = write_submission(tmp_path / "s", ["a.png", "b.png"], [1.25, 4.0], 0.5, cpu=False, description="x\ny")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["output.txt", "readme.txt", "submission.zip"]
    assert paths["output"].read_text() == "a.png,1.250000\nb.png,4.000000\n"
    assert read_readme(paths["readme"]) == {"runtime per image [s]": "0.5000", "CPU[1] / GPU[0]": "0",
                                            "Extra Data [1] / Non-Extra Data [0]": "0", "Other description": "x y"}


def test_scripts_run_as_programs():
    for script in ("AIGC_DB_AIGCQA30K_VAL.py", "AIGC_DB_AIGCQA30K_TEST.py"):
        done = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0
        for flag in ("--checkpoint", "--data-root", "--combine", "--prompt-prefix", "--precision"):
            assert flag in done.stdout


def test_backbone_names_in_the_readme_of_a_submission():
    from ipce.engine.submission import backbone_name
    from ipce.models.backbone import TINY_CONFIGS

    assert backbone_name({"backbone": "random:tiny"}) == "tiny"
    vit = {"width": 768, "layers": 12, "patch_size": 32, "image_size": 224}
    assert backbone_name({"model_config": {"vision_cfg": vit}}) == "ViT-B/32"
    # a ResNet tower's stages come back from JSON as a list
    resnet = {**TINY_CONFIGS["tiny-resnet"]["vision_cfg"], "layers": [1, 1, 1, 1]}
    assert backbone_name({"model_config": {"vision_cfg": resnet}}) == "ResNet (width 8, blocks 1-1-1-1)"
