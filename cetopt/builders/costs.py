"""Cost models: the predicted loss change of each candidate, with every ingredient of the CET
reconstruction a switch (cet-method.md 1.3 step 4), so the numerical checks decide what works.

=============  =========  ===============================================================================
method         gradient   curvature
=============  =========  ===============================================================================
cet            g.d        exact d'H_ll d (Hessian-vector products; the full-eigenbasis limit)
cet-eigen      g.d        k computed eigenpairs + the mean remaining eigenvalue on the complement
cet-trace      g.d        Tr(H_ll)/n |d|^2 (k = 0)
cet-nograd     -          exact d'H_ll d
cet-eigen-nograd -        eigenpairs + rest
llc            g.d        exact d'H_ll d, candidates outside the lossless radius removed, size minimised
hawq-v3        -          Tr(H_ll)/n |d|^2, without the 1/2 (HAWQ-V3's Omega; same ranking)
=============  =========  ===============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cetopt.errors import ProblemError

ROUNDINGS = ("nearest", "major-axis", "major-axis-gradient")  # how candidates are rounded (builders.candidates)


@dataclass(frozen=True)
class CostModel:
    """How a candidate's loss change is predicted.

    Attributes:
        gradient: include g.d.
        curvature: "exact", "eigen", "trace" or "none".
        half: multiply the quadratic term by 1/2 (Taylor) or not (HAWQ-V3's Omega).
        lossless: LLC: drop candidates outside the lossless radius, minimise size under a loss budget.
    """

    gradient: bool = True
    curvature: str = "exact"
    half: bool = True
    lossless: bool = False

    @property
    def needs_quadratic_forms(self) -> bool:
        return self.curvature == "exact"

    @property
    def needs_spectrum(self) -> bool:
        return self.curvature in ("eigen", "trace") or self.lossless


COST_MODELS: dict[str, CostModel] = {
    "cet": CostModel(),
    "cet-eigen": CostModel(curvature="eigen"),
    "cet-trace": CostModel(curvature="trace"),
    "cet-nograd": CostModel(gradient=False),
    "cet-eigen-nograd": CostModel(gradient=False, curvature="eigen"),
    "llc": CostModel(lossless=True),
    "hawq-v3": CostModel(gradient=False, curvature="trace", half=False),
}


def cost_model(method: str) -> CostModel:
    """The cost model named ``method`` (one of COST_MODELS)."""
    if method not in COST_MODELS:
        raise ProblemError(f"unknown method {method!r}; use one of {', '.join(COST_MODELS)}", field="method")
    return COST_MODELS[method]


def predicted_change(model: CostModel, *, linear: np.ndarray, energy: np.ndarray, exact: np.ndarray | None,
                     eigen: np.ndarray | None, trace_per_weight: float) -> np.ndarray:
    """Per-candidate predicted loss change (K,) of one layer.

    Args:
        linear: (K,) g.d per candidate.
        energy: (K,) |d|^2.
        exact: (K,) d'H_ll d (exact), when computed.
        eigen: (K,) d'H_ll d under the eigenpair model, when computed.
        trace_per_weight: Tr(H_ll)/n.
    """
    if model.curvature == "exact":
        quad = exact
    elif model.curvature == "eigen":
        quad = eigen
    elif model.curvature == "trace":
        quad = trace_per_weight * energy
    else:
        quad = np.zeros_like(energy)
    if quad is None:
        raise ProblemError(f"curvature {model.curvature!r} was not computed", field="method")
    out = (0.5 if model.half else 1.0) * np.asarray(quad, dtype=np.float64)
    return out + linear if model.gradient else out
