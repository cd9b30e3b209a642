import json

import pytest

from pdediff.learning.config import Config


def test_yaml_json_round_trip():
    c = Config(name="x")
    c.model.network_kwargs = {"model_channels": 8, "channel_mult": [1, 2]}
    c.train.steps = 7
    assert Config.from_yaml(c.to_yaml()) == c
    assert Config.from_json(c.to_json()) == c
    assert json.loads(c.to_json())["train"]["steps"] == 7


def test_shipped_configs_load(repo_root):
    for path in sorted((repo_root / "configs").rglob("*.yaml")):
        c = Config.load(path)
        assert Config.from_yaml(c.to_yaml()) == c


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match=r"config.train has unknown key\(s\) \['stepz'\]"):
        Config.from_dict({"train": {"stepz": 3}})


def test_missing_config_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        Config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2")
    with pytest.raises(ValueError, match="not valid YAML"):
        Config.load(bad)


@pytest.mark.parametrize("section, key, value, match", [
    ("model", "precond", "v", r"model.precond='v' is invalid; expected 'edm' or 'x0'"),
    ("model", "sigma_min", 100.0, r"model.sigma_min=100.0 must be below model.sigma_max"),
    ("model", "steps", 0, r"model.steps=0 is invalid"),
    ("train", "ema_decay", 1.0, r"train.ema_decay=1.0 is invalid"),
    ("train", "lr_decay", "step", r"train.lr_decay='step' is invalid"),
    ("train", "lr", -1.0, r"train.lr=-1.0 is invalid"),
])
def test_validate_names_the_bad_setting(section, key, value, match):
    config = Config()
    setattr(getattr(config, section), key, value)
    with pytest.raises(ValueError, match=match):
        config.validate()
