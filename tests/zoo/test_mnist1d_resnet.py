"""The MNIST-1D ResNet: generated offline, trained deterministically, residual adds become tie groups."""

from __future__ import annotations

import pytest

from cetopt.curvature import find_layers
from cetopt.zoo.digits import accuracy
from cetopt.curvature.graph import traced_edges
from cetopt.zoo.mnist1d_resnet import ResNet1d, mnist1d_split, trained_mnist1d_resnet


def test_mnist1d_resnet_ships_converged_weights_and_a_large_test_set() -> None:
    from cetopt.zoo.mnist1d_resnet import MNIST1D_RECIPE
    from cetopt.zoo.store import sha256_file, shipped_entry, zoo_data_dir

    split = mnist1d_split()
    assert split.x_train.shape == (5000, 1, 40) and split.x_test.shape == (5000, 1, 40)
    model = trained_mnist1d_resnet()  # shipped seed 0
    entry = shipped_entry("mnist1d-resnet", 0, MNIST1D_RECIPE)
    assert entry is not None and sha256_file(zoo_data_dir() / entry["file"]) == entry["sha256"]
    assert accuracy(model, split.x_test, split.y_test) == pytest.approx(entry["test_accuracy"], abs=1e-9)
    assert entry["test_accuracy"] >= 0.95


def test_residual_adds_tie_downsample_and_main_path() -> None:
    model = ResNet1d()
    names = [r.name for r in find_layers(model)]
    ties = {(e.src, e.dst) for e in traced_edges(model, names) if e.kind.value == "adds_with"}
    assert ties == {("blocks.2.conv2", "blocks.2.downsample.0"), ("blocks.4.conv2", "blocks.4.downsample.0")}
