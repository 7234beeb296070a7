"""User preset files (--presets FILE, $IPCE_PRESETS): read by the one preset loader beside presets.toml."""
from __future__ import annotations

import pytest

from ipce.cli import main
from ipce.config import PRESETS_ENV, load_presets, make_config
from ipce.errors import IpceError


def test_the_environment_variable_adds_presets_and_a_later_file_wins(tmp_path, monkeypatch):
    first = tmp_path / "lab.toml"
    first.write_text('[labdata]\nannotations = "scores.csv"\nimages = "pictures"\nepochs = 7\n'
                     'mos_range = [1, 9]\n')
    second = tmp_path / "override.toml"
    second.write_text('[labdata]\nannotations = "/abs/scores.csv"\nimages = "/abs/pictures"\nepochs = 3\n')
    monkeypatch.setenv(PRESETS_ENV, str(first))
    config = make_config("labdata")
    assert (config.epochs, config.mos_range, config.dataset) == (7, (1.0, 9.0), None)
    assert config.annotations == str(tmp_path / "scores.csv") and config.images == str(tmp_path / "pictures")
    assert "agiqa3k" in load_presets()  # the bundled presets stay
    assert make_config("labdata", presets=str(second)).epochs == 3
    assert make_config("labdata", presets=str(second)).annotations == "/abs/scores.csv"
    monkeypatch.delenv(PRESETS_ENV)
    with pytest.raises(IpceError, match="unknown preset"):
        make_config("labdata")


@pytest.mark.parametrize("entry, named", [
    ('[mine]\nepoch = 3\n', "[mine] epoch: unknown setting"),
    ('[mine]\nepochs = "three"\n', "[mine] epochs = 'three': expected int"),
    ('[mine]\nflip = 1\n', "[mine] flip = 1: expected bool"),
    ('[mine]\nmos_range = 5\n', "[mine] mos_range = 5: expected tuple"),
    ('mine = 3\n', "mine: not a table"),
    ('[mine\n', "not a TOML presets file"),
])
def test_a_bad_entry_is_one_line_naming_the_file_and_key(tmp_path, capsys, entry, named):
    registry = tmp_path / "bad.toml"
    registry.write_text(entry)
    assert main(["train", "--presets", str(registry), "--preset", "mine", "--out", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(registry) in err and named in err
    assert not (tmp_path / "run").exists()


def test_a_missing_presets_file_names_itself(tmp_path, capsys):
    missing = tmp_path / "nowhere.toml"
    assert main(["train", "--presets", str(missing), "--preset", "mine"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err


def test_a_bad_environment_file_is_one_line_for_every_command(tmp_path, capsys, monkeypatch):
    registry = tmp_path / "lab.toml"
    registry.write_text('[lab]\nbatch = 4\n')
    monkeypatch.setenv(PRESETS_ENV, str(registry))
    assert main(["score", "--help"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(registry) in err and "[lab] batch: unknown setting" in err


def test_every_dataset_fact_comes_from_the_bundled_registry():
    import dataclasses

    from ipce.config import TrainConfig
    from ipce.datasets.sources import DATASETS
    from ipce.datasets.splits import DEFAULT_SEED
    from ipce.engine.reproduce import ROWS
    from ipce.models.checkpoint import ORIGINAL_DEFAULTS
    from ipce.models.views import ViewConfig
    from ipce.presets import registry

    entries = registry.bundled()
    assert list(DATASETS) == [name for name, entry in entries.items() if "data" in entry]
    for name, info in DATASETS.items():
        data = entries[name]["data"]
        assert (info.folder, info.targets, info.url) == (data["folder"], data["targets"], data["url"])
        assert entries[name]["dataset"] == name and info.default_target in info.targets
    # the reproduction's rows, each a target of its dataset; the paper's numbers only for such targets
    assert ROWS == tuple(f"{n}:{t}" for n, e in entries.items() for t in e["reproduce"])
    assert all(row.split(":")[1] in DATASETS[row.split(":")[0]].targets for row in ROWS)
    assert set(registry.paper_results()) <= {tuple(row.split(":")) for row in ROWS}
    # TrainConfig's defaults are the default preset's recipe
    default = make_config()
    recipe = registry.recipe(entries[registry.DEFAULT_PRESET])
    config = TrainConfig()
    assert all(getattr(config, k) == getattr(default, k) for k in recipe if k != "mos_range")
    assert {f.name for f in dataclasses.fields(TrainConfig)} >= set(recipe)
    assert config.seed == DEFAULT_SEED == registry.SPLIT_SEED
    assert ORIGINAL_DEFAULTS == {"resize": ViewConfig().resize, "patches": ViewConfig().patches}


def test_a_recipe_read_from_the_registry_leaves_its_facts_out():
    # TrainConfig takes no `data`, `paper`, ... keys: make_config would raise if the facts reached it
    config = make_config("aigcqa30k")
    assert (config.backbone, config.resize, config.epochs, config.flip) == ("ViT-L-14", 768, 80, False)
