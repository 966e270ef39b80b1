import pytest

from imtranslate.config import ConfigError, parse_overrides, to_dict
from imtranslate.tasks import load_config
from imtranslate.tasks import get_task, task_names


def test_defaults_resolve_for_every_task():
    for name in task_names():
        cfg = load_config(None, [f"task={name}"])
        assert cfg.task == name
        assert isinstance(cfg.model, get_task(name).Config)


def test_overrides_are_typed():
    cfg = load_config(None, ["train.steps=12", "train.lr_g=0.001", "data.flip=false", "model.level_weights=[1,2,3]"])
    assert cfg.train.steps == 12 and isinstance(cfg.train.steps, int)
    assert cfg.train.lr_g == pytest.approx(0.001)
    assert cfg.data.flip is False
    assert cfg.model.level_weights == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("bad, words", [
    (["train.stpes=3"], "did you mean train.steps"),
    (["train.steps=many"], "expected an integer"),
    (["data.flip=maybe"], "true/false"),
    (["model.nope=1"], "unknown option model.nope"),
    (["train.amp=fp8"], "not one of"),
    (["task=cyclegan"], "unknown task"),
    (["model.stage_steps=[1,2]"], "needs 3 entries"),
    (["steps"], "key=value"),
    (["data.dataset=folders"], "data.root is required"),
])
def test_bad_overrides_are_explained(bad, words):
    with pytest.raises(ConfigError, match=words):
        load_config(None, bad)


def test_yaml_file_and_base(tmp_path):
    (tmp_path / "base.yaml").write_text("task: pix2pix\ntrain: {steps: 7}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntrain: {batch_size: 3}\n")
    cfg = load_config(tmp_path / "child.yaml", ["train.seed=5"])
    assert (cfg.task, cfg.train.steps, cfg.train.batch_size, cfg.train.seed) == ("pix2pix", 7, 3, 5)
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(tmp_path / "bad.yaml")


def test_round_trip_through_dict():
    from imtranslate.tasks import resolve

    cfg = load_config(None, ["task=pix2pixhd", "model.features=false", "train.steps=9"])
    again = resolve(to_dict(cfg))
    assert to_dict(again) == to_dict(cfg)


def test_parse_overrides_nested():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


def test_every_builtin_config_builds_its_task():
    """Shipped configs must not only parse: their nets must fit their crops."""
    from pathlib import Path

    import imtranslate

    configs = sorted((Path(imtranslate.__file__).parent / "configs").glob("*.yaml"))
    assert len(configs) >= 5
    for path in configs:
        try:
            cfg = load_config(path)
        except ConfigError as e:  # configs for the user's own data say what they still need
            assert "data.root is required" in str(e)
            cfg = load_config(path, ["data.root=/some/dataset"])
        if hasattr(cfg.model, "vgg_weights"):
            cfg.model.vgg_weights = "random"
        if cfg.data.dataset == "synthetic":
            get_task(cfg.task)(cfg, "cpu")
