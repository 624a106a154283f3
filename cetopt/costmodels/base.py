"""The cost-model contract: per-layer signals in, each candidate's predicted loss change (and its uncertainty)
out. A cost model is one class in one module plus one line in :mod:`cetopt.costmodels.registry`::

    class MyCost(CostModel):
        name = "mine"
        description = "what it predicts, in a line"
        needs = frozenset({"linear", "quadratic"})          # LayerSignals fields it reads

        def estimate(self, layer: LayerSignals) -> CostEstimate:
            return CostEstimate(loss=layer.linear + 0.5 * layer.quadratic)

The builder computes only the signals the chosen model ``needs`` (cetopt.builders.signals) and never branches
on the model's name. Everything here is numpy: cost models never touch torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

# the signals a cost model may declare; cetopt.builders.signals computes each on demand
SIGNALS = frozenset({
    "linear",            # (K,) g.d: first-order term on the calibration data
    "linear_stderr",     # (K,) standard error of g.d over calibration samples
    "energy",            # (K,) |d|^2
    "quadratic",         # (K,) exact d'H_ll d (Hessian-vector products)
    "eigen",             # (K,) d'H_ll d under the eigenpair model (k pairs + mean rest)
    "trace_per_weight",  # scalar Tr(H_ll)/n (Hutchinson)
    "fisher",            # (K,) sum_i F_ii d_i^2 with F the empirical Fisher diagonal
    "lossless_radius",   # (K,) LLC's radius along each candidate's error (inf where unbounded)
    "linear_holdout",    # (K,) g.d with g the gradient on the held-out validation batches
    "measured",          # (K,) calibration loss change measured with the candidate swapped in alone
})


@dataclass(frozen=True)
class LayerSignals:
    """What the builder measured about one layer's K candidates (only the fields a model needs are set).

    Attributes:
        name: the layer (module path); params: its weight count n.
        energy: (K,) |d|^2 of each candidate error d = W_hat - W (always set).
        linear: (K,) g.d (always set; the gradient pass is needed anyway).
        Others: see :data:`SIGNALS`; None when not computed.
    """

    name: str
    params: int
    energy: np.ndarray
    linear: np.ndarray
    linear_stderr: np.ndarray | None = None
    quadratic: np.ndarray | None = None
    eigen: np.ndarray | None = None
    trace_per_weight: float | None = None
    fisher: np.ndarray | None = None
    lossless_radius: np.ndarray | None = None
    linear_holdout: np.ndarray | None = None
    measured: np.ndarray | None = None

    def require(self, signal: str) -> np.ndarray:
        """The (K,) array of ``signal``, raising if the builder did not compute it (a model's ``needs`` is wrong)."""
        value = getattr(self, signal)
        if value is None:
            raise ValueError(f"layer {self.name!r}: signal {signal!r} was not computed; declare it in the cost "
                             "model's `needs`")
        return np.broadcast_to(np.asarray(value, dtype=np.float64), self.energy.shape)


@dataclass(frozen=True)
class CostEstimate:
    """Each candidate's predicted loss change (K,) and, when known, its standard error (K,)."""

    loss: np.ndarray
    stderr: np.ndarray | None = None


class CostModel(ABC):
    """Base class of every cost model (see the module docstring for how to write one).

    Class attributes:
        name: registry name; description: one line for ``--help`` and docs.
        needs: the LayerSignals fields :meth:`estimate` reads.
        lossless: LLC's form: candidates outside the lossless radius are dropped and, without a size budget,
            the size is minimised subject to the predicted change <= max_loss.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    lossless: ClassVar[bool] = False

    @abstractmethod
    def estimate(self, layer: LayerSignals) -> CostEstimate:
        """Predicted loss change of each of ``layer``'s candidates."""

    def describe(self) -> dict[str, object]:
        """Provenance recorded in problem metadata."""
        return {"name": self.name, "needs": sorted(self.needs), "lossless": self.lossless,
                "description": self.description}
