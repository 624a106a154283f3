"""SHA-256 fingerprints that tie a problem, plan or bench row to the weights and data it came from.

A problem file's curvature belongs to one set of weights. Measuring its plan on other weights (a model
trained on another machine, another seed) compares two different models, so every problem records

- ``fingerprint_weights``: SHA-256 of the full state dict (every parameter and buffer),
- ``fingerprint_layers``: SHA-256 of the quantised layers' weights only,
- ``fingerprint_calibration``: SHA-256 of the calibration batches,

and applying, measuring or benchmarking it on a model whose fingerprint differs raises
:class:`FingerprintMismatchError` naming what differs and how to fix it (re-extract the problem on this
model). Hashes cover dtype, shape and raw little-endian bytes of each tensor, in name order, so they are
equal on any machine that holds the same numbers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from cetopt.errors import CetoptError

if TYPE_CHECKING:
    from torch import nn

    from cetopt.spec import ModelSpec

KEYS = ("fingerprint_weights", "fingerprint_layers", "fingerprint_calibration")


class FingerprintMismatchError(CetoptError):
    """A problem or plan was built on other weights or data than the model it is applied to."""

    def __init__(self, message: str, *, fields: Sequence[str]) -> None:
        self.fields = tuple(fields)
        super().__init__(message)


def _update_array(h: "hashlib._Hash", value: Any) -> None:
    import numpy as np

    array = np.ascontiguousarray(value)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())


def _update(h: "hashlib._Hash", value: Any) -> None:
    """Feed ``value`` (tensor, array, number, string, or nested tuple/list/dict of those) into ``h``."""
    import numpy as np

    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        tensor = value.detach().cpu().contiguous()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        _update_array(h, tensor.numpy())
    elif isinstance(value, np.ndarray):
        _update_array(h, value)
    elif isinstance(value, Mapping):
        h.update(b"{")
        for key in sorted(value, key=str):
            h.update(str(key).encode() + b":")
            _update(h, value[key])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(f"[{len(value)}".encode())
        for item in value:
            _update(h, item)
        h.update(b"]")
    elif value is None or isinstance(value, (bool, int, float, str, bytes)):
        h.update(repr(value).encode())
    else:
        raise TypeError(f"cannot fingerprint a {type(value).__name__}; calibration batches must hold tensors, "
                        "arrays, numbers, strings or tuples/lists/dicts of those")


def sha256_of(value: Any) -> str:
    """SHA-256 (hex) of tensors/arrays/numbers nested in tuples, lists and dicts (dtype, shape, bytes)."""
    h = hashlib.sha256()
    _update(h, value)
    return h.hexdigest()


def weights_sha256(model: "nn.Module", layers: Iterable[str] | None = None) -> str:
    """SHA-256 of ``model``'s full state dict, or of the named layers' ``weight`` tensors only."""
    if layers is None:
        return sha256_of(dict(model.state_dict()))
    from cetopt.curvature.layers import layer_weight

    return sha256_of({name: layer_weight(model, name) for name in sorted(layers)})


@dataclass(frozen=True)
class Fingerprint:
    """The three SHA-256 digests (hex) of one model spec: full weights, quantised layers, calibration data."""

    weights: str
    layers: str
    calibration: str

    def as_metadata(self) -> dict[str, str]:
        return dict(zip(KEYS, (self.weights, self.layers, self.calibration)))

    def short(self) -> str:
        """``weights 1a2b3c4d, calibration 5e6f7a8b`` (12 hex digits each) for tables."""
        return f"weights {self.weights[:12]}, calibration {self.calibration[:12]}"


def fingerprint_spec(spec: "ModelSpec", layers: Iterable[str] | None = None) -> Fingerprint:
    """The fingerprint of ``spec``; ``layers`` default to the spec's quantisable layers."""
    from cetopt.curvature.layers import find_layers

    names = list(layers) if layers is not None else (
        spec.quantisable_layers() or [ref.name for ref in find_layers(spec.model, exclude=spec.exclude)])
    return Fingerprint(weights=weights_sha256(spec.model), layers=weights_sha256(spec.model, names),
                       calibration=sha256_of(list(spec.calibration)))


def recorded(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The fingerprint keys present in a problem's or plan's metadata."""
    return {k: str(metadata[k]) for k in KEYS if isinstance(metadata.get(k), str)}


def check_fingerprint(metadata: Mapping[str, Any], spec: "ModelSpec", *, what: str = "problem",
                      layers: Iterable[str] | None = None, require: bool = False) -> Fingerprint:
    """Compare the fingerprints recorded in ``metadata`` with ``spec``'s; return the spec's fingerprint.

    Raises:
        FingerprintMismatchError: a recorded digest differs (the message names which, both values and the
            fix), or ``require`` is set and ``metadata`` records none.
    """
    current = fingerprint_spec(spec, layers)
    have = recorded(metadata)
    if not have:
        if require:
            raise FingerprintMismatchError(
                f"the {what} records no weights fingerprint, so nothing ties it to the model {spec.name!r} it would "
                f"be measured on; re-extract it (cetopt extract {spec.name} ...) to record one", fields=KEYS)
        return current
    now = current.as_metadata()
    differ = [k for k, v in have.items() if now[k] != v]
    if differ:
        detail = "; ".join(f"{k}: {what} {have[k][:12]}... vs model {now[k][:12]}..." for k in differ)
        raise FingerprintMismatchError(
            f"the {what} was built on other weights or data than the model {spec.name!r} it is applied to "
            f"({detail}); its costs describe another model. Re-extract it on this model (cetopt extract "
            f"{spec.name} ...), or ask the bench to re-extract (reextract=True)", fields=differ)
    return current
