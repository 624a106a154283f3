"""CET's second-order cost g.d + 1/2 d'Hd (cet-method.md 1.3 step 4) with each ingredient a switch, so the
numerical checks can attribute what works: the gradient term, and the curvature as exact quadratic forms,
the eigenpair model (k pairs + the mean remaining eigenvalue) or the trace alone (k = 0)."""

from __future__ import annotations

from cetopt.costmodels.base import CostEstimate, CostModel, LayerSignals


class Cet(CostModel):
    name = "cet"
    description = "g.d + 1/2 d'H_ll d with exact quadratic forms (the full-eigenbasis limit)"
    needs = frozenset({"linear", "quadratic"})

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        return CostEstimate(loss=layer.require("linear") + 0.5 * layer.require("quadratic"))


class CetEigen(CostModel):
    name = "cet-eigen"
    description = "g.d + 1/2 d'Hd with k computed eigenpairs + the mean remaining eigenvalue on the complement"
    needs = frozenset({"linear", "eigen"})

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        return CostEstimate(loss=layer.require("linear") + 0.5 * layer.require("eigen"))


class CetTrace(CostModel):
    name = "cet-trace"
    description = "g.d + 1/2 Tr(H_ll)/n |d|^2 (k = 0)"
    needs = frozenset({"linear", "trace_per_weight"})

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        return CostEstimate(loss=layer.require("linear") + 0.5 * layer.require("trace_per_weight") * layer.energy)


class CetNoGrad(CostModel):
    name = "cet-nograd"
    description = "1/2 d'H_ll d exact, without the first-order term"
    needs = frozenset({"quadratic"})

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        return CostEstimate(loss=0.5 * layer.require("quadratic"))


class CetEigenNoGrad(CostModel):
    name = "cet-eigen-nograd"
    description = "1/2 d'Hd under the eigenpair model, without the first-order term"
    needs = frozenset({"eigen"})

    def estimate(self, layer: LayerSignals) -> CostEstimate:
        return CostEstimate(loss=0.5 * layer.require("eigen"))
