"""Curvature results as plain dataclasses of numpy arrays, saved to one ``.npz`` file (arrays plus a JSON
metadata record with a checksum of the arrays), written atomically."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cetopt._atomic import atomic_write_bytes
from cetopt.curvature.lanczos import Eigenpairs
from cetopt.errors import CetoptError

RESULT_FORMAT = "cetopt.curvature/1"


class CacheError(CetoptError):
    """A stored curvature file is unreadable, of another format, or fails its checksum."""


@dataclass(frozen=True)
class LayerCurvature:
    """First and second derivatives of the loss restricted to one layer's weight.

    Attributes:
        name: module path.
        shape: weight shape (torch layout).
        gradient: (n,) flattened gradient g_l of the mean calibration loss.
        trace: Hutchinson estimate of Tr(H_ll); trace_stderr its standard error; n_probes the probes used.
        eig: extreme eigenpairs of H_ll (None when not computed).
        fisher_diagonal: (n,) empirical Fisher diagonal (None when not computed).
    """

    name: str
    shape: tuple[int, ...]
    gradient: np.ndarray
    trace: float
    trace_stderr: float
    n_probes: int
    eig: Eigenpairs | None = None
    fisher_diagonal: np.ndarray | None = None

    @property
    def params(self) -> int:
        return int(np.prod(self.shape))

    @property
    def mean_eigenvalue(self) -> float:
        """Tr(H_ll) / n: HAWQ's normalised trace."""
        return self.trace / self.params


@dataclass(frozen=True)
class CurvatureResult:
    """Curvature of every quantisable layer of a model on its calibration data.

    Attributes:
        layers: one LayerCurvature per layer, in model order.
        loss: mean calibration loss at the current weights.
        settings: the extraction settings (probes, tolerances, Lanczos k and steps, seed, dtype).
        seconds: wall time per stage.
        device: where it ran.
        metadata: provenance (model, data, versions, cache key).
    """

    layers: tuple[LayerCurvature, ...]
    loss: float
    settings: Mapping[str, Any]
    seconds: Mapping[str, float] = field(default_factory=dict)
    device: str = "cpu"
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def layer(self, name: str) -> LayerCurvature:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no curvature for layer {name!r}")

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    # ------------------------------------------------------------------ files
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for i, layer in enumerate(self.layers):
            arrays[f"{i}.gradient"] = layer.gradient
            if layer.fisher_diagonal is not None:
                arrays[f"{i}.fisher"] = layer.fisher_diagonal
            if layer.eig is not None:
                for key in ("top_values", "top_vectors", "bottom_values", "bottom_vectors", "top_residuals",
                            "bottom_residuals"):
                    arrays[f"{i}.eig.{key}"] = getattr(layer.eig, key)
        return arrays

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write to ``path`` (.npz) atomically, with a checksum of every array."""
        arrays = self._arrays()
        meta = {
            "format": RESULT_FORMAT, "loss": self.loss, "settings": dict(self.settings), "seconds": dict(self.seconds),
            "device": self.device, "metadata": dict(self.metadata), "checksum": _checksum(arrays),
            "layers": [{"name": l.name, "shape": list(l.shape), "trace": l.trace, "trace_stderr": l.trace_stderr,
                        "n_probes": l.n_probes, "eig_iterations": l.eig.iterations if l.eig else None}
                       for l in self.layers],
        }
        buffer = io.BytesIO()
        np.savez(buffer, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "CurvatureResult":
        """Read a file written by :meth:`save`; raises CacheError if it is damaged or foreign."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["__meta__"]).decode())
                arrays = {k: data[k] for k in data.files if k != "__meta__"}
        except (OSError, ValueError, KeyError, json.JSONDecodeError, EOFError, zipfile.BadZipFile) as err:
            raise CacheError(f"cannot read curvature file {path}: {err}") from None
        if meta.get("format") != RESULT_FORMAT:
            raise CacheError(f"{path}: format {meta.get('format')!r}, expected {RESULT_FORMAT!r}")
        if meta.get("checksum") != _checksum(arrays):
            raise CacheError(f"{path}: checksum mismatch; the file is damaged")
        layers = []
        for i, info in enumerate(meta["layers"]):
            eig = None
            if f"{i}.eig.top_values" in arrays:
                eig = Eigenpairs(**{k: arrays[f"{i}.eig.{k}"] for k in (
                    "top_values", "top_vectors", "bottom_values", "bottom_vectors", "top_residuals",
                    "bottom_residuals")}, iterations=info["eig_iterations"])
            layers.append(LayerCurvature(
                name=info["name"], shape=tuple(info["shape"]), gradient=arrays[f"{i}.gradient"], trace=info["trace"],
                trace_stderr=info["trace_stderr"], n_probes=info["n_probes"], eig=eig,
                fisher_diagonal=arrays.get(f"{i}.fisher")))
        return cls(layers=tuple(layers), loss=meta["loss"], settings=meta["settings"], seconds=meta["seconds"],
                   device=meta["device"], metadata=meta["metadata"])


def _checksum(arrays: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()

