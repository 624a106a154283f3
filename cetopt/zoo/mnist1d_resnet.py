"""A small 1-D ResNet on MNIST-1D, generated offline by the mnist1d package's own generator
(``make_dataset``; its ``get_dataset`` would download). Residual adds with 1x1 downsample convs give the
problem real tie groups. Seeds 0-4 ship trained (cetopt/data/zoo); other seeds train here and are cached."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from cetopt.zoo.digits import Split, cached_training, train


class Block1d(nn.Module):
    def __init__(self, inp: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm1d(out)
        self.conv2 = nn.Conv1d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(out)
        self.downsample = None
        if stride != 1 or inp != out:
            self.downsample = nn.Sequential(nn.Conv1d(inp, out, 1, stride, bias=False), nn.BatchNorm1d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + identity)


class ResNet1d(nn.Module):
    """stem conv -> 3 stages of 2 residual blocks (8, 16, 32 channels) -> pooled linear head."""

    def __init__(self, classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, width, 5, 1, 2, bias=False)
        self.bn1 = nn.BatchNorm1d(width)
        stages = []
        channels = width
        for i, out in enumerate((width, width * 2, width * 4)):
            stages += [Block1d(channels, out, 1 if i == 0 else 2), Block1d(out, out, 1)]
            channels = out
        self.blocks = nn.Sequential(*stages)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x.reshape(x.shape[0], 1, -1))))
        return self.fc(self.blocks(x).mean(dim=2))


MNIST1D_SAMPLES = 10_000  # 5,000 train / 5,000 test: a test set large enough for paired confidence intervals
MNIST1D_RECIPE = {"epochs": 40, "lr": 3e-3, "batch_size": 128, "schedule": "cosine"}


@lru_cache(maxsize=2)
def mnist1d_split(seed: int = 42, samples: int = MNIST1D_SAMPLES) -> Split:
    """MNIST-1D sequences of length 40 (half train, half test), generated offline by mnist1d's generator
    (generation takes seconds, so the split is kept in memory; treat the tensors as read-only)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    args.num_samples = samples
    args.train_split = 0.5
    data = make_dataset(args)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)[:, None]  # noqa: E731
    return Split(as_x(data["x"]), torch.tensor(data["y"]).long(), as_x(data["x_test"]), torch.tensor(data["y_test"]).long())


def trained_mnist1d_resnet(*, seed: int = 0, epochs: int = int(MNIST1D_RECIPE["epochs"]), use_cache: bool = True,
                           shipped: bool = True) -> nn.Module:
    """The trained 1-D ResNet: shipped weights (SHA-256 checked) for seeds 0-4, else trained here and cached.

    The recipe (40 epochs, cosine decay to zero) trains to convergence; the manifest records the final
    full-training-set gradient norm (cetopt/data/zoo/manifest.json)."""
    from cetopt.zoo.store import load_shipped

    torch.manual_seed(seed)
    model = ResNet1d()
    recipe = {**MNIST1D_RECIPE, "epochs": epochs}
    if shipped and load_shipped("mnist1d-resnet", seed, recipe, model):
        return model.eval()
    return cached_training(f"mnist1d-resnet-s{seed}-e{epochs}-cos-n{MNIST1D_SAMPLES}", model,
                           lambda m: train(m, mnist1d_split(), seed=seed, **recipe),  # type: ignore[arg-type]
                           use_cache=use_cache)
