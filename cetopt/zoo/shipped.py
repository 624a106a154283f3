"""Regenerating the zoo's shipped weights: small trained models stored in cetopt/data/zoo with their SHA-256
(:mod:`cetopt.zoo.store` reads and checks them).

Training is deterministic on one machine but not across CPUs and thread settings, so the models every
result is measured on are trained once and shipped (tens to a hundred KB each). ``manifest.json`` records,
per ``<model>-s<seed>``: the file, its SHA-256, the training recipe, the final full-training-set gradient
norm (the convergence report), the training loss and the test accuracy.

Regenerate (one thread, so the run is repeatable on this machine)::

    python -m cetopt.zoo.shipped --models digits-mlp digits-cnn mnist1d-resnet --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cetopt._atomic import atomic_write_bytes, atomic_write_text
from cetopt.zoo.store import MANIFEST, manifest, zoo_data_dir

if TYPE_CHECKING:
    from torch import nn


def _trainers() -> dict[str, tuple[Callable[[], "nn.Module"], Callable[[int], Any], dict[str, Any]]]:
    """model name -> (architecture, split of a seed, recipe)."""
    from cetopt.zoo.digits import ARCHITECTURES, DIGITS_RECIPE, digits_split
    from cetopt.zoo.mnist1d_resnet import MNIST1D_RECIPE, ResNet1d, mnist1d_split

    table: dict[str, tuple[Callable[[], "nn.Module"], Callable[[int], Any], dict[str, Any]]] = {
        name: (arch, digits_split, dict(DIGITS_RECIPE)) for name, arch in ARCHITECTURES.items()}
    table["mnist1d-resnet"] = (ResNet1d, lambda _seed: mnist1d_split(), dict(MNIST1D_RECIPE))
    return table


def train_and_ship(name: str, seed: int, folder: Path | None = None) -> dict[str, Any]:
    """Train ``name`` at ``seed`` with its zoo recipe, write its weights and update the manifest."""
    import torch

    from cetopt.zoo.digits import accuracy, gradient_norm, mean_loss, train

    architecture, split_of, recipe = _trainers()[name]
    folder = folder or zoo_data_dir()
    split = split_of(seed)
    torch.manual_seed(seed)
    model = architecture()
    with torch.random.fork_rng():
        train(model, split, seed=seed, **recipe)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    file_name = f"{name}-s{seed}.pt"
    atomic_write_bytes(folder / file_name, buffer.getvalue())
    entry = {"file": file_name, "sha256": hashlib.sha256(buffer.getvalue()).hexdigest(), "model": name, "seed": seed,
             "recipe": recipe, "final_grad_norm": gradient_norm(model, split),
             "train_loss": mean_loss(model, split.x_train, split.y_train),
             "test_accuracy": accuracy(model, split.x_test, split.y_test), "test_examples": int(len(split.y_test)),
             "trained_with": {"torch": torch.__version__, "threads": torch.get_num_threads()}}
    entries = manifest(folder)
    entries[f"{name}-s{seed}"] = entry
    atomic_write_text(folder / MANIFEST, json.dumps(dict(sorted(entries.items())), indent=1) + "\n")
    return entry


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(prog="python -m cetopt.zoo.shipped", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits-mlp", "digits-cnn", "mnist1d-resnet"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=None, help="folder (default: the package's data/zoo)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.models:
        for seed in args.seeds:
            e = train_and_ship(name, seed, args.out)
            print(f"{name} seed {seed}: test accuracy {e['test_accuracy']:.4f}, train loss {e['train_loss']:.2e}, "
                  f"final gradient norm {e['final_grad_norm']:.2e}, sha256 {e['sha256'][:16]}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
