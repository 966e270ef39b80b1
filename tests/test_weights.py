"""imtranslate.weights: one search order, one error text, safetensors first, .pth without pickle code."""
from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from imtranslate import weights as W
from imtranslate.cli import main
from imtranslate.errors import WeightsMissingError


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Empty $IMTRANSLATE_WEIGHTS and torch hub folders, so nothing on this machine is found."""
    env, torch_home = tmp_path / "env", tmp_path / "torch"
    env.mkdir()
    monkeypatch.setenv(W.WEIGHTS_ENV, str(env))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    hub = torch_home / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    return env, hub


def _tensor_file(path, value=1.0):
    state = {"w": torch.full((2, 2), value)}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def test_search_order_explicit_then_env_then_hub(dirs, tmp_path):
    env, hub = dirs
    assert W.hub_dir() == hub  # the torch hub cache honours TORCH_HOME
    assert W.locate("vgg19") is None
    in_hub = _tensor_file(hub / "vgg19-dcbb9e9d.pth")
    assert W.find("vgg19") == in_hub
    in_env = _tensor_file(env / "vgg19-dcbb9e9d.pth")
    assert W.find("vgg19") == in_env  # $IMTRANSLATE_WEIGHTS before the hub cache
    preferred = _tensor_file(env / "vgg19.safetensors")
    assert W.find("vgg19") == preferred  # .safetensors before .pth within a folder
    explicit = _tensor_file(tmp_path / "mine.pth")
    assert W.find("vgg19", explicit) == explicit  # an explicit path beats every folder
    with pytest.raises(WeightsMissingError, match="nope.pth does not exist"):
        W.find("vgg19", tmp_path / "nope.pth")  # ... and is the only candidate: no silent fallback


def test_vgg_keywords(dirs):
    env, _ = dirs
    assert W.resolve("vgg19", "random", default="imagenet") == "random"
    with pytest.raises(WeightsMissingError):
        W.resolve("vgg19", "imagenet", default="imagenet")
    path = _tensor_file(env / "vgg19.safetensors")
    assert W.resolve("vgg19", "imagenet", default="imagenet") == path
    with pytest.raises(WeightsMissingError, match="not accepted"):
        W.resolve("inception_fid", "random")  # random only where it exists today (VGG, for tests)


def test_one_error_text_names_the_file_the_folders_and_the_conversion(dirs):
    env, hub = dirs
    for name, net in W.NETWORKS.items():
        with pytest.raises(WeightsMissingError) as e:
            W.find(name)
        text = str(e.value)
        assert str(env / net.files[0]) in text and str(hub / net.files[-1]) in text, name
        assert "never downloads" in text and "imtranslate weights convert" in text and net.option in text
        assert "\n" not in text  # one line
    assert "random" in W.missing_message("vgg19") and "random" not in W.missing_message("inception_fid")


def test_unknown_network():
    with pytest.raises(WeightsMissingError, match="known: vgg19"):
        W.find("vgg91")


def test_torchvision_file_names_match_torchvision():
    """The hub-cache names are the files torchvision itself would have downloaded."""
    from torchvision.models import Inception_V3_Weights, VGG16_Weights, VGG19_Weights
    from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights

    for name, w in [("vgg19", VGG19_Weights.IMAGENET1K_V1), ("inception_fid", Inception_V3_Weights.IMAGENET1K_V1),
                    ("lpips", VGG16_Weights.IMAGENET1K_V1), ("raft_large", Raft_Large_Weights.C_T_SKHT_V2),
                    ("raft_small", Raft_Small_Weights.C_T_V2)]:
        assert W.NETWORKS[name].files[-1] == w.url.rsplit("/", 1)[1]
        assert W.NETWORKS[name].files[0].endswith(".safetensors")


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pth_is_read_with_weights_only(tmp_path, capsys):
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"module.a": torch.ones(2)}, "epoch": 3}, good)
    tensors, meta = W.read_state_dict(good)
    assert list(tensors) == ["a"] and meta == {}  # nesting unwrapped, DataParallel prefix stripped
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"a": _Evil()}, f)
    with pytest.raises(WeightsMissingError, match="evil.pth: cannot be read"):
        W.read_state_dict(evil)
    assert "pickled code ran" not in capsys.readouterr().out
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not safetensors")
    with pytest.raises(WeightsMissingError, match="broken.safetensors"):
        W.read_state_dict(broken)


def test_convert_pth_to_safetensors(tmp_path):
    w = torch.randn(3, 4)
    torch.save({"state_dict": {"a": w, "tied": w, "t": w.t()}}, tmp_path / "in.pth")  # shared and strided
    out = W.convert_to_safetensors(tmp_path / "in.pth", tmp_path / "sub" / "out.safetensors")
    got = load_file(str(out))
    assert set(got) == {"a", "tied", "t"}
    assert torch.equal(got["a"], w) and torch.equal(got["tied"], w) and torch.equal(got["t"], w.t())
    assert W.read_state_dict(out)[1]["converted_from"] == "in.pth"
    with pytest.raises(WeightsMissingError, match="must end in .safetensors"):
        W.convert_to_safetensors(tmp_path / "in.pth", tmp_path / "out.pth")


def test_every_loader_goes_through_the_search(dirs):
    """VGG, FID, LPIPS and RAFT all find their file in $IMTRANSLATE_WEIGHTS, and all say so when it is not there."""
    from imtranslate import metrics
    from imtranslate.infer.flow import find_raft_weights
    from imtranslate.nets.vgg import resolve_vgg_weights

    env, hub = dirs
    with pytest.raises(WeightsMissingError, match="vgg19.safetensors"):
        resolve_vgg_weights("imagenet")
    with pytest.raises(WeightsMissingError, match="raft_large.safetensors"):
        find_raft_weights()
    status = metrics.optional_metrics_status()
    assert not status["fid"][0] and str(env / metrics.FID_WEIGHTS_NAME) in status["fid"][1]
    for f in ("vgg19.safetensors", "raft_small_C_T_V2-01064c6d.pth"):
        _tensor_file(env / f)
    _tensor_file(hub / "inception_v3_google-0cc3c7bd.pth")
    assert resolve_vgg_weights("imagenet") == env / "vgg19.safetensors"
    assert find_raft_weights() == env / "raft_small_C_T_V2-01064c6d.pth"  # auto: large, else small
    with pytest.raises(WeightsMissingError):
        find_raft_weights(size="large")
    assert metrics.find_weights("fid") == hub / "inception_v3_google-0cc3c7bd.pth"
    assert metrics.optional_metrics_status()["fid"][0]


def test_cli_lists_every_network(dirs, capsys):
    env, hub = dirs
    found = _tensor_file(hub / "vgg19-dcbb9e9d.pth")
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    for name, net in W.NETWORKS.items():
        assert f"\n{name} " in out and ", ".join(net.files) in out
    assert str(env) in out and str(hub) in out
    assert f"found      {found}" in out and "1 of" in out
    assert main(["weights", "lpips"]) == 0
    out = capsys.readouterr().out
    assert "lpips_vgg.safetensors" in out and "vgg19" not in out
    assert main(["weights", "nonet"]) == 2
    assert "unknown network" in capsys.readouterr().err


def test_cli_convert(tmp_path, capsys):
    torch.save({"a": torch.ones(2)}, tmp_path / "x.pth")
    assert main(["weights", "convert", str(tmp_path / "x.pth"), str(tmp_path / "x.safetensors")]) == 0
    assert "wrote" in capsys.readouterr().out and torch.equal(load_file(str(tmp_path / "x.safetensors"))["a"],
                                                                 torch.ones(2))
    assert main(["weights", "convert", str(tmp_path / "x.pth")]) == 2
    assert "usage: imtranslate weights convert" in capsys.readouterr().err


def test_vgg_weights_on_a_task_without_vgg_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "pix2pix_synthetic", f"train.out_dir={tmp_path}", "--vgg-weights", str(tmp_path / "v.pth"),
                 "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --vgg-weights: task pix2pix uses no VGG network") and "pix2pixhd" in err
    assert "\n" not in err and "Traceback" not in err
    assert main(["train", "--resume", str(tmp_path), "--vgg-weights", "v.pth"]) == 2
    assert "nothing to resume from" in capsys.readouterr().err
    # a task with VGG still takes it
    assert main(["train", "multires_synthetic", f"train.out_dir={tmp_path}", "--vgg-weights", "v.pth", "--dry-run"]) == 0
    assert "vgg_weights: v.pth" in capsys.readouterr().out
