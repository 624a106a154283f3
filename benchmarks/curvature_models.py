"""Trained models for the curvature benchmark: every variance-based figure is measured on trained weights.

- ``digits-cnn``, ``mnist1d-resnet``: the zoo's trained models (cetopt.zoo.digits, cetopt.zoo.mnist1d_resnet;
  trained and cached on first use), with a calibration batch of 128 training examples.
- ``resnet18``: cetopt.zoo.resnet's torchvision-layout ResNet-18 (torchvision stem) trained for a few epochs on
  scikit-learn's digits upsampled to 32x32 RGB (offline data); calibration batch 16.
- ``transformer``: cetopt.zoo.transformer's 4-block encoder (d=128) trained on the digits read as 64-token
  sequences of pixel intensities (vocabulary 17); batch 16.

The two short training runs are seeded and cached in the zoo cache, so both benchmark runs see the same
weights. Each model comes with its held-out accuracy, so a reader can see that it is trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from cetopt.zoo.digits import Split, accuracy, cached_training, digits_split, train

MODELS = ("digits-cnn", "mnist1d-resnet", "resnet18", "transformer")


def ce_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of a classifier on an (inputs, labels) batch."""
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


@dataclass(frozen=True)
class BenchModel:
    """A trained model, one calibration batch, the loss, and how it was trained."""

    name: str
    model: nn.Module
    batch: Any
    loss_fn: Callable[[nn.Module, Any], torch.Tensor]
    training: str
    test_accuracy: float


def digits_rgb32(seed: int = 0) -> Split:
    """The digits split as (N, 3, 32, 32) images (bilinear upsampling, grey copied to 3 channels)."""
    base = digits_split(seed)

    def up(x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)

    return Split(up(base.x_train), base.y_train, up(base.x_test), base.y_test)


def digits_tokens(seed: int = 0) -> Split:
    """The digits split as (N, 64) token sequences: pixel intensity 0..16 is the token id."""
    base = digits_split(seed)

    def tokens(x: torch.Tensor) -> torch.Tensor:
        return torch.round(x.flatten(1) * 16).long()

    return Split(tokens(base.x_train), base.y_train, tokens(base.x_test), base.y_test)


def load_bench_model(name: str, *, seed: int = 0) -> BenchModel:
    """The trained model ``name`` (one of MODELS) with one calibration batch from its training data."""
    from cetopt.zoo.resnet import resnet18
    from cetopt.zoo.transformer import TinyTransformer

    if name == "digits-cnn":
        from cetopt.zoo.digits import trained_digits_model

        split, batch = digits_split(seed), 128
        model = trained_digits_model(name, seed=seed)
        label = "the zoo's digits-cnn (30 epochs on sklearn digits)"
    elif name == "mnist1d-resnet":
        from cetopt.zoo.mnist1d_resnet import mnist1d_split, trained_mnist1d_resnet

        split, batch = mnist1d_split(), 128
        model = trained_mnist1d_resnet(seed=seed)
        label = "the zoo's mnist1d-resnet (8 epochs on MNIST-1D)"
    elif name == "resnet18":
        split, epochs, batch = digits_rgb32(seed), 3, 16
        torch.manual_seed(seed)
        model = cached_training(f"bench-resnet18-digits32-s{seed}-e{epochs}", resnet18(num_classes=10),
                                lambda m: train(m, split, epochs=epochs, seed=seed, lr=1e-3, batch_size=32))
        label = f"{epochs} epochs of Adam (batch 32) on sklearn digits upsampled to 32x32 RGB"
    elif name == "transformer":
        split, epochs, batch = digits_tokens(seed), 12, 16
        torch.manual_seed(seed)
        fresh = TinyTransformer(vocab=17, dim=128, depth=4, heads=4, hidden=512, classes=10, max_len=64)
        model = cached_training(f"bench-transformer-digits-tokens-s{seed}-e{epochs}", fresh,
                                lambda m: train(m, split, epochs=epochs, seed=seed, lr=2e-3, batch_size=32))
        label = f"{epochs} epochs of Adam (batch 32) on sklearn digits as 64-token sequences"
    else:
        raise KeyError(f"unknown benchmark model {name!r}; use one of {', '.join(MODELS)}")
    calibration = (split.x_train[:batch], split.y_train[:batch])
    return BenchModel(name, model, calibration, ce_loss, label, accuracy(model, split.x_test, split.y_test))
