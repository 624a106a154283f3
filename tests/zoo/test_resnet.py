"""torchvision-layout ResNets: parameter counts equal torchvision's, and state dicts load from a file."""

from __future__ import annotations

import pytest
import torch

from cetopt.errors import ProblemError
from cetopt.zoo.resnet import load_resnet, resnet18, resnet34, resnet50


@pytest.mark.parametrize("build, count", [(resnet18, 11_689_512), (resnet34, 21_797_672), (resnet50, 25_557_032)])
def test_parameter_counts_match_torchvision(build, count: int) -> None:  # type: ignore[no-untyped-def]
    assert sum(p.numel() for p in build().parameters()) == count


def test_torchvision_key_names() -> None:
    keys = set(resnet18().state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight", "layer4.1.bn2.num_batches_tracked",
                "fc.bias"):
        assert key in keys


def test_weights_load_from_a_file_and_mismatches_are_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = resnet18()
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    loaded = load_resnet("resnet18", str(tmp_path / "r18.pth"))
    for a, b in zip(source.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ProblemError, match="not a torchvision resnet34"):
        load_resnet("resnet34", str(tmp_path / "r18.pth"))
    with pytest.warns(UserWarning, match="random weights"):
        load_resnet("resnet50")
