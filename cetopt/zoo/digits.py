"""Small classifiers on scikit-learn's digits (1,797 8x8 images, shipped with the package: no download).

The trained weights of seeds 0-4 ship with the package (cetopt/data/zoo, SHA-256 checked on load; see
cetopt.zoo.store), so every machine measures the same model. Other seeds train here in seconds
(deterministic on one machine and thread setting) and are cached by name, seed and cetopt version."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from cetopt._atomic import atomic_write_bytes


@dataclass(frozen=True)
class Split:
    """Train/test tensors: images (N, 1, 8, 8) scaled to [0, 1], labels (N,)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def digits_split(seed: int = 0, test_fraction: float = 0.2) -> Split:
    """A stratified train/test split of scikit-learn's digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(x, data.target, test_size=test_fraction, random_state=seed,
                                              stratify=data.target)
    return Split(torch.from_numpy(x_tr), torch.from_numpy(y_tr).long(), torch.from_numpy(x_te),
                 torch.from_numpy(y_te).long())


class DigitsMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {"digits-mlp": DigitsMLP, "digits-cnn": DigitsCNN}


def train(model: nn.Module, split: Split, *, epochs: int = 30, seed: int = 0, lr: float = 2e-3,
          batch_size: int = 64, schedule: str = "constant") -> nn.Module:
    """Adam on cross-entropy with a seeded shuffle; deterministic on one CPU and thread setting.

    ``schedule``: "constant" learning rate, or "cosine" (decays to zero over the run, so the last epochs
    settle into a minimum: the zoo's recipe, see :func:`gradient_norm`).
    """
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule: unknown {schedule!r}, use 'constant' or 'cosine'")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(split.y_train)
    steps = epochs * ((n + batch_size - 1) // batch_size)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
                 if schedule == "cosine" else None)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(model(split.x_train[idx]), split.y_train[idx])
            loss.backward()
            optimiser.step()
            if scheduler is not None:
                scheduler.step()
    model.eval()
    return model


def gradient_norm(model: nn.Module, split: Split) -> float:
    """Euclidean norm of the full-training-set mean cross-entropy gradient (eval mode): the convergence report."""
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    loss = nn.functional.cross_entropy(model(split.x_train), split.y_train)
    grads = torch.autograd.grad(loss, params)
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))


def cache_dir() -> Path:
    return Path(os.environ.get("CETOPT_CACHE_DIR", Path.home() / ".cache" / "cetopt")) / "zoo"


def cached_training(key: str, model: nn.Module, fit: Callable[[nn.Module], object], *,
                    use_cache: bool = True) -> nn.Module:
    """``model`` with weights from the zoo cache file ``<key>-v<version>.pt``, or trained by ``fit`` (under
    a forked RNG, so the caller's random state is untouched) and then cached atomically. A damaged or
    stale cache file is retrained and overwritten, never trusted."""
    import io

    from cetopt._versions import __version__

    path = cache_dir() / f"{key}-v{__version__}.pt"
    if use_cache and path.exists():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval()
        except (RuntimeError, OSError, EOFError, ValueError) as err:
            logging.getLogger(__name__).warning("zoo cache %s is unreadable (%s); retraining", path, err)
    with torch.random.fork_rng():
        fit(model)
    if use_cache:
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        atomic_write_bytes(path, buffer.getvalue())
    return model.eval()


DIGITS_RECIPE = {"epochs": 60, "lr": 2e-3, "batch_size": 64, "schedule": "cosine"}


def trained_digits_model(name: str, *, seed: int = 0, epochs: int = int(DIGITS_RECIPE["epochs"]),
                         use_cache: bool = True, shipped: bool = True) -> nn.Module:
    """The trained model ``name`` ("digits-mlp" or "digits-cnn").

    Shipped weights (cetopt/data/zoo, SHA-256 checked) are used when they exist for this seed and recipe and
    ``shipped`` is true; otherwise the model is trained here (and cached unless ``use_cache`` is false).
    """
    from cetopt.zoo.store import load_shipped

    if name not in ARCHITECTURES:
        raise KeyError(f"unknown digits model {name!r}; known: {sorted(ARCHITECTURES)}")
    torch.manual_seed(seed)
    model = ARCHITECTURES[name]()
    recipe = {**DIGITS_RECIPE, "epochs": epochs}
    if shipped and load_shipped(name, seed, recipe, model):
        return model.eval()
    return cached_training(f"{name}-s{seed}-e{epochs}-cos", model,
                           lambda m: train(m, digits_split(seed), seed=seed, **recipe),  # type: ignore[arg-type]
                           use_cache=use_cache)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(x), y))
