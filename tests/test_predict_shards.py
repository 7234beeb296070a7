"""`ipce predict` over WebDataset and Parquet shards: the scores of `load_scorer(...).score`, bad
members reported by shard and key, one Parquet file per shard, --resume shard by shard."""
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
wds = pytest.importorskip("webdataset")

from ipce.api import load_scorer
from ipce.cli import main
from tests.conftest import random_image, tiny_checkpoint
from tests.test_predict_resume import env, ipce_run

FAST = ["--resize", "224", "--patches", "2", "--workers", "0", "--no-progress"]
PROMPTS = ["a cat on a mat", "two red apples on a wooden table in the morning light", "a castle"]


def png_bytes(i: int) -> bytes:
    buffer = io.BytesIO()
    random_image(72 + 8 * (i % 5), 64, seed=i).save(buffer, "PNG")
    return buffer.getvalue()


def write_shards(folder: Path, shards: int, per_shard: int, bad: dict | None = None, json_prompt: bool = False):
    """`folder/{00000..}.tar`: samples SD_<shard><i> with a png and the prompt in txt (or a json
    member's "caption"); `bad` maps (shard, i) to a replacement of the sample's members."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}  # (shard name, key) -> (image bytes, prompt)
    for s in range(shards):
        with wds.TarWriter(str(folder / f"{s:05d}.tar")) as writer:
            for i in range(per_shard):
                key, prompt, data = f"SD_{s}{i:03d}", PROMPTS[(s + i) % 3], png_bytes(s * 100 + i)
                sample = {"__key__": key, "png": data}
                sample.update({"json": {"caption": prompt, "other": 1}} if json_prompt else {"txt": prompt})
                if (s, i) in (bad or {}):
                    sample = {"__key__": key, **bad[(s, i)]}
                else:
                    expected[(f"{s:05d}.tar", key)] = (data, prompt)
                writer.write(sample)
    return expected


def direct_scores(ckpt, expected: dict) -> dict:
    """load_scorer(...).score of each image, decoded from its bytes, against its prompt."""
    from PIL import Image

    scorer = load_scorer(str(ckpt), resize=224, patches=2)
    keys = list(expected)
    images = [Image.open(io.BytesIO(expected[k][0])) for k in keys]
    return dict(zip(keys, scorer.score(images, [expected[k][1] for k in keys])))


def test_webdataset_shards_give_the_scorers_scores_and_report_a_bad_member_by_shard_and_key(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=1)
    bad = {(1, 2): {"jpg": b"this is not a jpeg", "txt": "a castle"}, (2, 0): {"txt": "a prompt, no image"}}
    expected = write_shards(tmp_path / "shards", 3, 4, bad)
    out = tmp_path / "scores"
    code = main(["predict", "--webdataset", str(tmp_path / "shards" / "{00000..00002}.tar"), "--checkpoint",
                 str(ckpt), "--out", str(out), "--batch-size", "3", *FAST])
    printed = capsys.readouterr().out
    assert code == 3  # finished, with unusable samples skipped
    assert sorted(p.name for p in out.iterdir()) == ["00000.parquet", "00001.parquet", "00002.parquet"]
    want = direct_scores(ckpt, expected)
    got = {}
    for s in range(3):
        table = pq.read_table(out / f"{s:05d}.parquet").to_pylist()
        assert [r["key"] for r in table] == [f"SD_{s}{i:03d}" for i in range(4)]  # every sample, in shard order
        for row in table:
            if row["problem"] is None:
                got[(f"{s:05d}.tar", row["key"])] = row["score"]
                assert row["prompt"] == expected[(f"{s:05d}.tar", row["key"])][1]
            else:
                assert row["score"] is None
    assert got.keys() == want.keys()
    assert max(abs(got[k] - want[k]) for k in want) < 1e-5
    errors = (tmp_path / "scores.errors.csv").read_text().splitlines()
    assert len(errors) == 3 and errors[0] == "shard,key,problem"
    assert errors[1].startswith(f"{tmp_path / 'shards' / '00001.tar'},SD_1002,") and "not an image" in errors[1]
    assert errors[2].startswith(f"{tmp_path / 'shards' / '00002.tar'},SD_2000,") and "no image member" in errors[2]
    assert "scored 10 of 12 samples in 3 shard(s)" in printed


def test_prompts_from_a_json_field_and_an_ensemble_with_level_probabilities(tmp_path):
    import torch

    from ipce.models.correspondence import score_from_probs

    ck1, ck2 = tiny_checkpoint(tmp_path / "a.safetensors", seed=1), tiny_checkpoint(tmp_path / "b.safetensors", seed=2)
    expected = write_shards(tmp_path / "shards", 1, 5, json_prompt=True)
    out = tmp_path / "one.parquet"
    assert main(["predict", "--webdataset", str(tmp_path / "shards" / "00000.tar"), "--prompt-key", "caption",
                 "--checkpoint", str(ck1), "--checkpoint", str(ck2), "--levels", "--out", str(out), *FAST]) == 0
    rows = pq.read_table(out).to_pylist()
    assert [r["prompt"] for r in rows] == [p for _, p in expected.values()]
    for m, ckpt in enumerate((ck1, ck2), start=1):
        want = direct_scores(ckpt, expected)
        assert max(abs(r[f"score_{m}"] - w) for r, w in zip(rows, want.values())) < 1e-5
        probs = torch.tensor([[r[f"p_{lv}_{m}"] for lv in ("badly", "poorly", "fairly", "well", "perfectly")]
                              for r in rows])
        assert torch.allclose(probs.sum(1), torch.ones(len(rows)), atol=1e-6)
        assert torch.allclose(score_from_probs(probs), torch.tensor([r[f"score_{m}"] for r in rows]), atol=1e-5)
    assert all(abs(r["score"] - (r["score_1"] + r["score_2"]) / 2) < 1e-6 for r in rows)


def test_parquet_with_image_bytes_paths_and_structs(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=3)
    (tmp_path / "imgs").mkdir()
    data = [png_bytes(i) for i in range(6)]
    for i in (2, 3):
        (tmp_path / "imgs" / f"x{i}.png").write_bytes(data[i])
    images = [data[0], data[1], "imgs/x2.png", str(tmp_path / "imgs" / "x3.png"), b"broken", data[5]]
    prompts = [PROMPTS[i % 3] for i in range(6)]
    for name, cells in (("bytes", [c if isinstance(c, bytes) else None for c in images]),
                        ("paths", [c if isinstance(c, str) else None for c in images])):
        pq.write_table(pa.table({"id": [f"r{i}" for i in range(6)], "caption": prompts,
                                 "img": pa.array(cells, pa.binary() if name == "bytes" else pa.string())}),
                       tmp_path / f"{name}.parquet")
    structs = pa.array([{"bytes": c, "path": None} if isinstance(c, bytes) else {"bytes": None, "path": c}
                        for c in images], pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"caption": prompts, "img": structs}), tmp_path / "structs.parquet")
    out = tmp_path / "out"
    assert main(["predict", "--parquet", str(tmp_path / "{structs,bytes}.parquet"), "--prompt-col", "caption",
                 "--image-col", "img", "--checkpoint", str(ckpt), "--out", str(out), *FAST]) == 3
    scorer = load_scorer(str(ckpt), resize=224, patches=2)
    from PIL import Image

    want = scorer.score([Image.open(io.BytesIO(d)) for d in data], prompts)
    structs_rows = pq.read_table(out / "structs.parquet").to_pylist()
    assert [r["key"] for r in structs_rows] == ["0", "1", "imgs/x2.png", str(tmp_path / "imgs" / "x3.png"), "4", "5"]
    assert "structs.parquet, key 4" in structs_rows[4]["problem"] and structs_rows[4]["score"] is None
    for i in (0, 1, 2, 3, 5):
        assert abs(structs_rows[i]["score"] - want[i]) < 1e-5
    bytes_rows = pq.read_table(out / "bytes.parquet").to_pylist()
    assert [r["problem"] is None for r in bytes_rows] == [True, True, False, False, False, True]
    assert "no image" in bytes_rows[2]["problem"]
    assert all(abs(bytes_rows[i]["score"] - want[i]) < 1e-5 for i in (0, 1, 5))
    # a column that is not there: one line naming the file and the columns it has
    assert main(["predict", "--parquet", str(tmp_path / "bytes.parquet"), "--checkpoint", str(ckpt),
                 "--out", str(tmp_path / "o2"), *FAST]) == 1


def test_resume_skips_finished_shards_and_refuses_other_settings(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=4)
    write_shards(tmp_path / "shards", 3, 2)
    out = tmp_path / "scores"
    argv = ["predict", "--webdataset", str(tmp_path / "shards" / "{00000..00002}.tar"), "--checkpoint", str(ckpt),
            "--out", str(out), *FAST]
    assert main(argv) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "00001.parquet").unlink()  # as if the run had stopped before this shard
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    assert "scoring 1 of 3 shards" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert main([*argv, "--resume"]) == 0
    assert "nothing left to score" in capsys.readouterr().out
    assert main([*argv, "--resume", "--patches", "3"]) == 1
    err = capsys.readouterr().err
    assert "--patches differs" in err and err.count("\n") == 1
    assert main([*argv, "--resume", "--levels"]) == 1
    assert "--levels differs" in capsys.readouterr().err


def test_bad_flags_are_one_line_errors(tmp_path, capsys):
    write_shards(tmp_path / "shards", 2, 1)
    base = ["predict", "--checkpoint", "tiny", *FAST]
    cases = [(["--webdataset", str(tmp_path / "shards" / "{00000..00003}.tar")], "00002.tar not found"),
             (["--webdataset", str(tmp_path / "shards" / "{00000..00001}.tar"), "--out", str(tmp_path / "x.parquet")],
              "give a folder"),
             (["--webdataset", str(tmp_path / "shards" / "00000.tar"), "--images", str(tmp_path)],
              "--images: not used with --webdataset")]
    for extra, named in cases:
        assert main([*base, *extra]) == 1
        err = capsys.readouterr().err
        assert named in err and err.count("\n") == 1, err


def shard_argv(ckpt, shards: Path, out: Path, *extra):
    return ["predict", "--webdataset", str(shards / "{00000..00005}.tar"), "--checkpoint", str(ckpt),
            "--out", str(out), "--resize", "512", "--patches", "15", "--batch-size", "2", "--workers", "0",
            "--no-progress", *extra]


@pytest.mark.slow
def test_a_run_killed_between_shards_resumes_to_the_uninterrupted_files(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", seed=5)
    write_shards(tmp_path / "shards", 6, 4, bad={(3, 1): {"webp": b"RIFF", "txt": "x"}})
    whole = ipce_run(shard_argv(ckpt, tmp_path / "shards", tmp_path / "whole"))
    assert whole.returncode == 3, whole.stderr[-2000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ipce", *shard_argv(ckpt, tmp_path / "shards", out)],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not (out / "00001.parquet").is_file():
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    done = sorted(p.name for p in out.glob("*.parquet"))
    assert 2 <= len(done) < 6 and not list(out.glob(".*.tmp"))  # whole files only
    resumed = ipce_run(shard_argv(ckpt, tmp_path / "shards", out, "--resume"))
    assert resumed.returncode == 3, resumed.stderr[-2000:]
    assert f"scoring {6 - len(done)} of 6 shards" in resumed.stdout
    files = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert files == sorted(p.name for p in out.iterdir()) and len(files) == 6
    for name in files:
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert (tmp_path / "killed.errors.csv").read_text() == (tmp_path / "whole.errors.csv").read_text()
    saved = json.loads((tmp_path / "killed.ipce.json").read_text())
    assert saved["complete"] and saved["scored"] == 23 and saved["unreadable"] == 1


def test_a_second_run_into_the_same_out_is_refused(tmp_path, capsys):
    from ipce.utils.lock import hold_lock

    write_shards(tmp_path / "shards", 1, 1)
    out = tmp_path / "scores"
    with hold_lock(out, "--out scores"):  # as a run in progress holds it
        assert main(["predict", "--webdataset", str(tmp_path / "shards" / "00000.tar"), "--checkpoint", "tiny",
                     "--out", str(out), *FAST]) == 1
    err = capsys.readouterr().err
    assert "scores" in err and err.count("\n") == 1, err
    assert not out.exists()
