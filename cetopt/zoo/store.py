"""The zoo's shipped weights files in cetopt/data/zoo: the manifest, each file's SHA-256, and loading a file into
a model after checking it (a file whose hash differs from the manifest is refused with a message, never loaded).
Regenerating them is :mod:`cetopt.zoo.shipped`, which sits above the models it trains."""

from __future__ import annotations

import hashlib
import io
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from cetopt.errors import CetoptError

if TYPE_CHECKING:
    from torch import nn


MANIFEST = "manifest.json"


class ShippedWeightsError(CetoptError):
    """A shipped weights file is missing or its SHA-256 differs from the manifest."""


def zoo_data_dir() -> Path:
    """The folder holding the shipped weights and their manifest (inside the installed package)."""
    return Path(str(resources.files("cetopt") / "data" / "zoo"))


def manifest(folder: Path | None = None) -> dict[str, dict[str, Any]]:
    """``<model>-s<seed>`` -> entry (file, sha256, recipe, final_grad_norm, ...); {} when none is shipped."""
    path = (folder or zoo_data_dir()) / MANIFEST
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text()))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shipped_entry(name: str, seed: int, recipe: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The manifest entry of ``name`` at ``seed`` (None when not shipped or trained with another recipe)."""
    entry = manifest().get(f"{name}-s{seed}")
    if entry is None or (recipe is not None and dict(entry["recipe"]) != dict(recipe)):
        return None
    return entry


def load_shipped(name: str, seed: int, recipe: Mapping[str, Any], model: "nn.Module") -> bool:
    """Load the shipped weights of ``name``/``seed`` into ``model``; False when none are shipped for this
    recipe. Raises ShippedWeightsError when the file is missing or its SHA-256 differs from the manifest."""
    import torch

    entry = shipped_entry(name, seed, recipe)
    if entry is None:
        return False
    path = zoo_data_dir() / entry["file"]
    if not path.exists():
        raise ShippedWeightsError(f"{path}: listed in {MANIFEST} but missing; reinstall cetopt or regenerate with "
                                  "python -m cetopt.zoo.shipped")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise ShippedWeightsError(f"{path}: SHA-256 {digest[:16]}... differs from the manifest's "
                                  f"{entry['sha256'][:16]}...; the file is damaged or was replaced: reinstall cetopt "
                                  "or regenerate with python -m cetopt.zoo.shipped")
    model.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))
    return True
