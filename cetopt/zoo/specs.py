"""The zoo's ModelSpecs: each factory returns a trained model with calibration, validation and test data.

Splits never overlap: calibration batches (curvature and costs), validation batches (what selection may
look at: re-ranking, cost validation) and the test data behind ``evaluate`` are disjoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cetopt.errors import ProblemError
from cetopt.spec import ModelSpec


def ce_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of a classifier on an (inputs, labels) batch."""
    inputs, labels = batch
    return nn.functional.cross_entropy(model(inputs), labels)


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> list[Any]:
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]


def _weights_info(name: str, seed: int, recipe: dict[str, Any]) -> dict[str, Any]:
    """Provenance of the zoo weights: the shipped file's SHA-256 and convergence report, or 'trained here'."""
    from cetopt.zoo.store import shipped_entry

    entry = shipped_entry(name, seed, recipe)
    if entry is None:
        return {"weights": "trained on this machine (not shipped)"}
    return {"weights": f"shipped cetopt/data/zoo/{entry['file']}", "weights_file_sha256": entry["sha256"],
            "final_grad_norm": float(entry["final_grad_norm"])}


@dataclass(frozen=True)
class _Draw:
    """Which training examples calibrate and validate a zoo classifier: the first ``calibration_size`` (after a
    shuffle by ``calibration_seed``, None: no shuffle), then the next ``validation_size``, in batches of
    ``batch_size``; ``seed`` is the model's (weights and split), recorded in the metadata."""

    seed: int
    calibration_size: int
    validation_size: int
    batch_size: int
    calibration_seed: int | None


def _classifier_spec(name: str, model: nn.Module, split: Any, data: str, draw: _Draw,
                     extra: dict[str, Any]) -> ModelSpec:
    from cetopt.zoo.digits import accuracy

    calibration_size, validation_size, batch_size = draw.calibration_size, draw.validation_size, draw.batch_size
    seed, calibration_seed = draw.seed, draw.calibration_seed

    n_cal = min(calibration_size, len(split.y_train))
    n_val = min(validation_size, len(split.y_train) - n_cal)
    order = (torch.arange(len(split.y_train)) if calibration_seed is None else
             torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(calibration_seed)))
    x, y = split.x_train[order], split.y_train[order]
    calibration = _batches(x[:n_cal], y[:n_cal], batch_size)
    validation = _batches(x[n_cal:n_cal + n_val], y[n_cal:n_cal + n_val], batch_size)
    drawn = "first" if calibration_seed is None else f"a random draw (calibration_seed {calibration_seed}) of"
    if calibration_seed is not None:
        extra = {**extra, "calibration_seed": calibration_seed}

    def evaluate(m: nn.Module) -> dict[str, float]:
        return {"accuracy": accuracy(m, split.x_test, split.y_test)}

    def test_outcomes(m: nn.Module) -> Any:
        """1.0 where the test example is classified correctly, shape (n_test,): for paired CIs."""
        with torch.no_grad():
            return (m(split.x_test).argmax(dim=1) == split.y_test).double().numpy()

    return ModelSpec(name=name, model=model, calibration=calibration, loss_fn=ce_loss, evaluate=evaluate,
                     test_outcomes=test_outcomes, validation=validation,
                     metadata={"seed": seed, **extra},
                     data=f"{data}: calibration = {drawn} {n_cal} training examples, validation = the next {n_val}, "
                          f"test = {len(split.y_test)} held-out examples")


def digits_cnn(*, seed: int = 0, calibration_size: int = 256, validation_size: int = 256,
               batch_size: int = 128, calibration_seed: int | None = None) -> ModelSpec:
    """The 2-conv CNN on scikit-learn's digits (shipped weights for seeds 0-4, else trained here and cached)."""
    from cetopt.zoo.digits import DIGITS_RECIPE, digits_split, trained_digits_model

    return _classifier_spec("digits-cnn", trained_digits_model("digits-cnn", seed=seed), digits_split(seed),
                            "sklearn digits",
                            _Draw(seed, calibration_size, validation_size, batch_size, calibration_seed),
                            extra=_weights_info("digits-cnn", seed, dict(DIGITS_RECIPE)))


def digits_mlp(*, seed: int = 0, calibration_size: int = 256, validation_size: int = 256,
               batch_size: int = 128, calibration_seed: int | None = None) -> ModelSpec:
    """The 3-layer MLP on scikit-learn's digits (shipped weights for seeds 0-4, else trained here and cached)."""
    from cetopt.zoo.digits import DIGITS_RECIPE, digits_split, trained_digits_model

    return _classifier_spec("digits-mlp", trained_digits_model("digits-mlp", seed=seed), digits_split(seed),
                            "sklearn digits",
                            _Draw(seed, calibration_size, validation_size, batch_size, calibration_seed),
                            extra=_weights_info("digits-mlp", seed, dict(DIGITS_RECIPE)))


def mnist1d_resnet(*, seed: int = 0, calibration_size: int = 256, validation_size: int = 256,
                   batch_size: int = 128, calibration_seed: int | None = None) -> ModelSpec:
    """The 1-D ResNet on MNIST-1D (generated offline; shipped weights for seeds 0-4, else trained here)."""
    from cetopt.zoo.mnist1d_resnet import MNIST1D_RECIPE, mnist1d_split, trained_mnist1d_resnet

    return _classifier_spec("mnist1d-resnet", trained_mnist1d_resnet(seed=seed), mnist1d_split(),
                            "MNIST-1D (generated offline)",
                            _Draw(seed, calibration_size, validation_size, batch_size, calibration_seed),
                            extra=_weights_info("mnist1d-resnet", seed, dict(MNIST1D_RECIPE)))




def mobilenetv2(*, seed: int = 0, calibration_size: int = 32, validation_size: int = 32, test_size: int = 128,
                batch_size: int = 16) -> ModelSpec:
    """torchvision's ImageNet MobileNetV2 (packaged weights). No ImageNet data exists offline: inputs are crops of
    the photos scikit-learn and scikit-image ship, labelled by the FP32 model's own top-1; calibration, validation
    and test crops come from disjoint photos (:data:`cetopt.zoo.photos.SPLITS`), and each test crop's photo is its
    cluster (``test_clusters``). The metric is top-1 agreement on ``test_size`` test crops (per crop: 1.0 when the
    compressed model's top-1 is the FP32 one)."""
    from cetopt.zoo.mobilenet import fidelity, load_mobilenet_v2
    from cetopt.zoo.photos import SPLITS, split_crops

    model = load_mobilenet_v2()
    calibration_size = min(calibration_size, 32)  # 224x224 double-backward graphs: keep memory ~1 GB
    batch_size = min(batch_size, 16)
    cal, val, test_crops = (split_crops(split, count, seed=seed) for split, count in
                            (("calibration", calibration_size), ("validation", validation_size), ("test", test_size)))

    def top1(m: nn.Module, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([m(images[i:i + 64]).argmax(dim=1) for i in range(0, len(images), 64)])

    test = test_crops.images
    test_labels = top1(model, test)

    def agreement(m: nn.Module) -> Any:
        return (top1(m, test) == test_labels).double().numpy()

    return ModelSpec(name="mobilenetv2", model=model,
                     calibration=_batches(cal.images, top1(model, cal.images), batch_size),
                     loss_fn=ce_loss, evaluate=lambda m: fidelity(model, m, test), test_outcomes=agreement,
                     test_clusters=test_crops.photos,
                     validation=_batches(val.images, top1(model, val.images), batch_size) if len(val) else (),
                     metadata={"seed": seed,  # a string, so problem files and artefacts record it (scalars only)
                               "photos": "; ".join(f"{k}: {', '.join(v)}" for k, v in SPLITS.items())},
                     data=f"crops of the photos scikit-learn and scikit-image ship, FP32 top-1 as labels, split by "
                          f"photo: {len(cal)} calibration crops of {len(SPLITS['calibration'])} photos, {len(val)} "
                          f"validation crops of {len(SPLITS['validation'])} other photos, {len(test)} test crops of "
                          f"{len(set(test_crops.photos))} further photos")


def minilm(*, seed: int = 0, test_size: int | None = None, **_: Any) -> ModelSpec:
    """The real pretrained all-MiniLM-L6-v2 (packaged), calibrated on embedding distillation.

    Splits by source (:mod:`cetopt.zoo.minilm_text`): calibration, the sentences of pairs 0-15; validation, the
    shipped prose sentences of one source in five; test, the sentences of pairs 16-31 (each pair its own cluster)
    then the prose sentences of the other sources, ``test_size`` in all (None: every one, 368)."""
    from cetopt.zoo.minilm import (SentenceSet, distillation_batches, distillation_loss, embedding_fidelity,
                                   load_minilm, text_pairs)
    from cetopt.zoo.minilm_text import split_sentences

    model, tokenizer = load_minilm()
    pairs = text_pairs()
    half = len(pairs) // 2  # calibration and test never share a sentence
    calibration = [s for pair in pairs[:half] for s in pair]
    validation = split_sentences("validation")
    prose = split_sentences("test")
    test = [s for pair in pairs[half:] for s in pair] + [s.text for s in prose]
    clusters = [f"pair-{i}" for i in range(half, len(pairs)) for _ in range(2)] + [s.source for s in prose]
    if test_size is not None:
        if not 2 <= test_size <= len(test):
            raise ProblemError(f"test_size {test_size}: choose 2 to {len(test)} test sentences", field="test_size")
        test, clusters = test[:test_size], clusters[:test_size]
    texts = SentenceSet(tokenizer, test)
    reference = texts.embed(model)  # the FP32 embeddings, before any plan touches the model

    def cosines(m: nn.Module) -> Any:
        return (reference * texts.embed(m)).sum(dim=1).double().numpy()

    from_pairs = min(len(test), 2 * len(pairs[half:]))  # the test set starts with the held-out pairs' sentences
    n_sources = len({c for c in clusters[from_pairs:]})
    return ModelSpec(name="minilm", model=model, calibration=distillation_batches(model, tokenizer, calibration),
                     loss_fn=distillation_loss, evaluate=lambda m: embedding_fidelity(reference, m, tokenizer, texts),
                     test_outcomes=cosines, test_clusters=tuple(clusters),
                     validation=distillation_batches(model, tokenizer, [s.text for s in validation]),
                     data=f"sentences split by source: {len(calibration)} calibration sentences (pairs 0-{half - 1} "
                          f"of cetopt/data/minilm_pairs.tsv; 1 - cosine to the FP32 embeddings); {len(validation)} "
                          f"validation prose sentences of {len({s.source for s in validation})} documentation "
                          f"sources; {len(test)} test sentences ({from_pairs} from pairs {half}-{len(pairs) - 1}, "
                          f"{len(test) - from_pairs} prose sentences of {n_sources} other sources, "
                          "cetopt/data/minilm_prose.tsv)",
                     exclude=("bert.pooler.dense",), metadata={"seed": seed, "test_pair_sentences": from_pairs})
