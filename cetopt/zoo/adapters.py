"""Adapters for models users already have: a torchvision or timm model by name with a weights file they name,
any architecture with a state-dict file, and a Hugging Face transformers model from a local folder (the
MiniLM path generalised). Each returns a plain ``nn.Module`` or a ready :class:`~cetopt.spec.ModelSpec`.

Nothing is downloaded: weights come from files the user names (``pretrained``/hub access is never used;
Hugging Face loads with ``local_files_only``). Without a weights file a model is randomly initialised and a
warning says so. A missing torchvision/timm/transformers raises a ProblemError with the install command.

Example spec file (``cetopt extract my_vision.py:spec``)::

    from cetopt.zoo.adapters import torchvision_model, image_classifier_spec, sample_images
    def spec():
        model = torchvision_model("resnet18", weights="resnet18-f37072fd.pth")
        return image_classifier_spec("resnet18", model, sample_images(96))
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from cetopt.errors import ProblemError
from cetopt.spec import ModelSpec

INSTALL = {
    "torchvision": "pip install torchvision (the release built for your torch: torch 2.13 needs torchvision 0.28)",
    "timm": "pip install timm (it also needs torchvision)",
    "transformers": "pip install transformers",
}


def require(package: str) -> Any:
    """Import ``package`` or raise a ProblemError with its install command."""
    if importlib.util.find_spec(package) is None:
        raise ProblemError(f"this adapter needs {package}, which is not installed: {INSTALL[package]}",
                           field="model")
    try:
        return importlib.import_module(package)
    except Exception as err:  # installed but broken (e.g. built for another torch): say which and how to fix
        raise ProblemError(f"{package} is installed but does not import ({type(err).__name__}: {err}); "
                           f"{INSTALL[package]}", field="model") from None


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors, .pt/.pth/.bin file (tensors only: ``weights_only``), unwrapping
    ``{"state_dict": ...}`` / ``{"model": ...}`` checkpoints and a DataParallel ``module.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise ProblemError(f"weights file {path} does not exist", field="weights")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ProblemError(f"{path} is not a torch weights file ({type(err).__name__}: {err})",
                               field="weights") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ProblemError(f"{path} holds no state dict (name -> tensor)", field="weights")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, weights: str | os.PathLike[str] | None, *, label: str = "model") -> nn.Module:
    """``model`` with the state dict in ``weights`` (every key must match), in eval mode; None: keep its
    random initialisation, with a warning."""
    if weights is None:
        warnings.warn(f"{label}: no weights file given; the model is randomly initialised", stacklevel=2)
        return model.eval()
    state = read_state_dict(weights)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise ProblemError(f"{weights} does not fit {label}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
                           f"wrong shape {wrong[:3]}", field="weights")
    model.load_state_dict(state)
    return model.eval()


def torchvision_model(name: str, weights: str | os.PathLike[str] | None = None, **kwargs: Any) -> nn.Module:
    """``torchvision.models`` architecture ``name`` (e.g. "resnet18", "mobilenet_v2") with ``weights``."""
    tv = require("torchvision")
    try:
        builder = tv.models.get_model_builder(name)
    except ValueError:
        raise ProblemError(f"torchvision has no model {name!r}; known: {', '.join(tv.models.list_models()[:20])}, ...",
                           field="model") from None
    return load_weights(builder(weights=None, **kwargs), weights, label=f"torchvision {name}")


def timm_model(name: str, weights: str | os.PathLike[str] | None = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=False)`` with ``weights`` (never fetched from the hub)."""
    timm = require("timm")
    if name not in timm.list_models():
        raise ProblemError(f"timm has no model {name!r}; see timm.list_models()", field="model")
    return load_weights(timm.create_model(name, pretrained=False, **kwargs), weights, label=f"timm {name}")


def sample_images(count: int = 96, size: int = 224, seed: int = 0) -> torch.Tensor:
    """ImageNet-normalised crops of scikit-learn's sample photos (offline calibration images)."""
    from cetopt.zoo.mobilenet import sample_crops

    return sample_crops(count=count, size=size, seed=seed)


def image_classifier_spec(name: str, model: nn.Module, images: torch.Tensor, *, calibration: int = 32,
                          validation: int = 32, batch_size: int = 16, labels: torch.Tensor | None = None) -> ModelSpec:
    """A classifier's ModelSpec on ``images`` (N, C, H, W): the first ``calibration`` images calibrate, the next
    ``validation`` validate, the rest test. Without ``labels`` the FP32 model's own top-1 are the labels and
    the metric is top-1 agreement with it (and KL)."""
    from cetopt.zoo.mobilenet import fidelity
    from cetopt.zoo.specs import ce_loss

    if len(images) <= calibration + validation:
        raise ProblemError(f"need more than {calibration + validation} images (calibration + validation) to keep "
                           "some for testing", field="images")
    model.eval()
    given = labels is not None
    if labels is None:
        with torch.no_grad():
            labels = torch.cat([model(images[i:i + 64]).argmax(dim=1) for i in range(0, len(images), 64)])
    val = calibration + validation

    def batches(lo: int, hi: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(images[i:min(i + batch_size, hi)], labels[i:min(i + batch_size, hi)]) for i in range(lo, hi, batch_size)]

    test = images[val:]
    return ModelSpec(name=name, model=model, calibration=batches(0, calibration), loss_fn=ce_loss,
                     validation=batches(calibration, val), evaluate=lambda m: fidelity(model, m, test),
                     data=f"{len(images)} images: {calibration} calibration, {validation} validation, "
                          f"{len(test)} test; labels = {'given' if given else 'FP32 top-1'}")


def hf_model(path: str | os.PathLike[str], *, attn_implementation: str = "eager",
             random_init: bool = False) -> tuple[nn.Module, Any]:
    """(AutoModel, AutoTokenizer) from a local Hugging Face folder (config.json, weights, tokenizer files),
    offline. ``random_init``: build from config.json alone (no weights needed). Eager attention: second
    derivatives exist on the CPU."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ProblemError(f"{folder} is not a Hugging Face model folder (no config.json); save one with "
                           "model.save_pretrained(folder) and tokenizer.save_pretrained(folder)", field="model")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    transformers = require("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if random_init:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        model = transformers.AutoModel.from_config(config, attn_implementation=attn_implementation)
        warnings.warn(f"{folder}: model randomly initialised from config.json", stacklevel=2)
    else:
        model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True,
                                                       attn_implementation=attn_implementation)
    return model.eval(), tokenizer


def hf_encoder_spec(path: str | os.PathLike[str], sentences: Sequence[str], *, name: str | None = None,
                    batch_size: int = 16, exclude: Sequence[str] = (), random_init: bool = False) -> ModelSpec:
    """A sentence encoder's ModelSpec from a local Hugging Face folder: mean-pooled, normalised embeddings,
    calibrated on embedding distillation over ``sentences`` and judged by embedding fidelity (cosine to the
    FP32 embeddings, Spearman of pairwise similarities): the MiniLM zoo model, for any encoder."""
    from cetopt.zoo.minilm import MiniLMEncoder, distillation_batches, distillation_loss, embedding_fidelity

    if len(sentences) < 2:
        raise ProblemError("give at least two sentences", field="sentences")
    bert, tokenizer = hf_model(path, random_init=random_init)
    encoder = MiniLMEncoder(bert).eval()
    names = {n for n, _ in encoder.named_modules()}
    pooler = [n for n in ("bert.pooler.dense",) if n in names]  # unused by mean pooling: no gradient
    sentences = list(sentences)
    return ModelSpec(name=name or Path(path).name, model=encoder,
                     calibration=distillation_batches(encoder, tokenizer, sentences, batch_size),
                     loss_fn=distillation_loss, evaluate=lambda m: embedding_fidelity(encoder, m, tokenizer, sentences),
                     data=f"{len(sentences)} sentences, 1 - cosine to FP32 embeddings (calibration and evaluation "
                          "share them)", exclude=tuple(exclude) or tuple(pooler), metadata={"path": str(path)})
