"""The MNIST-1D ResNet: generated offline, trained deterministically, residual adds become tie groups."""

from __future__ import annotations

import pytest

from cetopt.curvature import find_layers
from cetopt.zoo.digits import accuracy
from cetopt.zoo.graph import traced_edges
from cetopt.zoo.mnist1d_resnet import ResNet1d, mnist1d_split, trained_mnist1d_resnet


@pytest.mark.slow
def test_mnist1d_resnet_reaches_its_accuracy(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CETOPT_CACHE_DIR", str(tmp_path))
    model = trained_mnist1d_resnet()
    split = mnist1d_split()
    assert split.x_train.shape == (4000, 1, 40) and split.x_test.shape == (1000, 1, 40)
    assert accuracy(model, split.x_test, split.y_test) >= 0.85


def test_residual_adds_tie_downsample_and_main_path() -> None:
    model = ResNet1d()
    names = [r.name for r in find_layers(model)]
    ties = {(e.src, e.dst) for e in traced_edges(model, names) if e.kind.value == "adds_with"}
    assert ties == {("blocks.2.conv2", "blocks.2.downsample.0"), ("blocks.4.conv2", "blocks.4.downsample.0")}
