"""Joint low-rank's optimisation (cetopt.theory.lowrank_joint states the method and where it is a reconstruction):
the factors of every factorised layer started at their truncated SVD and moved together by Adam on the mean
calibration loss, each layer held inside its perturbation bound |A B - W|_F <= (1 + slack) |W_r - W|_F; a step that
raises the loss is undone and the learning rate halved."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from cetopt.errors import ProblemError

if TYPE_CHECKING:
    import torch

    from cetopt.modelspec import ModelSpec

SLACK = 0.25  # the bound's room over the SVD's own error (reconstruction, see cetopt.theory.lowrank_joint)
STEPS = 50
LEARNING_RATE = 3e-3


@dataclass(frozen=True)
class FactorFit:
    """One layer's optimised factors: rank, the SVD's error |W_r - W|_F, the bound, the final error."""

    layer: str
    rank: int
    svd_error: float
    bound: float
    error: float


@dataclass(frozen=True)
class JointFit:
    """The optimisation of one plan: per-layer fits, calibration loss before (SVD) and after, steps accepted."""

    layers: tuple[FactorFit, ...]
    svd_loss: float
    loss: float
    accepted: int
    steps: int


def _svd_factors(weight: "torch.Tensor", rank: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    from cetopt.quant.pack import low_rank_factors

    a, b = low_rank_factors(weight, rank)
    return a.to(weight.dtype), b.to(weight.dtype)


def fit_factors(spec: "ModelSpec", ranks: Mapping[str, int], *, steps: int = STEPS, lr: float = LEARNING_RATE,
                slack: float = SLACK) -> tuple[dict[str, "torch.Tensor"], JointFit]:
    """Optimise the factors of the layers in ``ranks`` jointly for the mean calibration loss under the perturbation
    bound; returns layer -> A B (shaped like the weight) and the fit's record.

    Raises:
        ProblemError: an empty plan, or a layer whose rank is out of range.
    """
    import torch

    from cetopt.curvature.layers import layer_weight, weight_key
    from cetopt.curvature.operator import eval_mode

    import torch

    from cetopt.curvature.operator import eval_mode

    if not ranks:
        raise ProblemError("no layer to factorise: give at least one layer -> rank", field="ranks")
    if steps < 0 or lr <= 0 or slack < 0:
        raise ProblemError(f"steps >= 0, lr > 0 and slack >= 0 are needed, got {steps}, {lr}, {slack}", field="steps")
    factors = _BoundedFactors(spec.model, ranks, slack)
    params = factors.parameters()
    optimiser = torch.optim.Adam(params, lr=lr)
    accepted = 0
    with eval_mode(spec.model):
        with torch.no_grad():
            svd_loss = float(factors.calibration_loss(spec))
        current = svd_loss
        for _ in range(steps):
            saved = [p.detach().clone() for p in params]
            optimiser.zero_grad()
            factors.calibration_loss(spec).backward()
            optimiser.step()
            with torch.no_grad():
                factors.keep_within_bounds()
                trial = float(factors.calibration_loss(spec))
            if trial <= current:
                current, accepted = trial, accepted + 1
            else:  # undo a step that raised the loss and take smaller ones
                with torch.no_grad():
                    for p, s in zip(params, saved):
                        p.copy_(s)
                for group in optimiser.param_groups:
                    group["lr"] /= 2
    return factors.result(ranks, svd_loss, current, accepted, steps)


class _BoundedFactors:
    """The factors A, B of every layer in ``ranks``, started at their truncated SVD, with each layer's perturbation
    bound (1 + slack) |W_r - W|_F."""

    def __init__(self, model: Any, ranks: Mapping[str, int], slack: float) -> None:
        from cetopt.curvature.layers import layer_weight, weight_key

        self.model = model
        self.weights = {n: layer_weight(model, n).detach() for n in ranks}
        self.keys = {n: weight_key(model, n) for n in ranks}
        self.init = {n: _svd_factors(w, ranks[n]) for n, w in self.weights.items()}
        self.svd_error = {n: self._distance(n, a @ b) for n, (a, b) in self.init.items()}
        self.bound = {n: (1 + slack) * e for n, e in self.svd_error.items()}
        self.factors = {n: (a.clone().requires_grad_(True), b.clone().requires_grad_(True))
                        for n, (a, b) in self.init.items()}

    def _distance(self, n: str, product: "torch.Tensor") -> float:
        w = self.weights[n]
        return float((product - w.reshape(w.shape[0], -1)).norm())

    def parameters(self) -> list["torch.Tensor"]:
        return [p for pair in self.factors.values() for p in pair]

    def error(self, n: str) -> float:
        import torch

        a, b = self.factors[n]
        with torch.no_grad():
            return self._distance(n, a @ b)

    def products(self) -> dict[str, "torch.Tensor"]:
        """Parameter key -> A B shaped like the weight (differentiable)."""
        return {self.keys[n]: (a @ b).reshape(self.weights[n].shape) for n, (a, b) in self.factors.items()}

    def calibration_loss(self, spec: "ModelSpec") -> "torch.Tensor":
        import torch

        replaced = self.products()
        return torch.stack([spec.loss_fn(_Swapped(self.model, replaced), batch) for batch in spec.calibration]).mean()

    def keep_within_bounds(self) -> None:
        """Move each layer outside its bound along the segment to its SVD factors (bisection) until it is inside."""
        for n, (a, b) in self.factors.items():
            if self.error(n) <= self.bound[n]:
                continue
            a0, b0 = self.init[n]
            moved_a, moved_b = a.detach().clone(), b.detach().clone()
            low, high = 0.0, 1.0
            for _ in range(30):
                t = (low + high) / 2
                a.data.copy_(a0 + t * (moved_a - a0))
                b.data.copy_(b0 + t * (moved_b - b0))
                low, high = (t, high) if self.error(n) <= self.bound[n] else (low, t)
            a.data.copy_(a0 + low * (moved_a - a0))
            b.data.copy_(b0 + low * (moved_b - b0))

    def result(self, ranks: Mapping[str, int], svd_loss: float, loss: float, accepted: int,
               steps: int) -> tuple[dict[str, "torch.Tensor"], "JointFit"]:
        import torch

        with torch.no_grad():
            out = {n: (a @ b).reshape(self.weights[n].shape).detach() for n, (a, b) in self.factors.items()}
        fits = tuple(FactorFit(layer=n, rank=int(ranks[n]), svd_error=self.svd_error[n], bound=self.bound[n],
                               error=self.error(n)) for n in self.factors)
        return out, JointFit(layers=fits, svd_loss=svd_loss, loss=loss, accepted=accepted, steps=steps)


class _Swapped:
    """``model`` called with some parameters replaced (torch.func.functional_call), for a loss_fn(model, batch)."""

    def __init__(self, model: Any, replaced: Mapping[str, Any]) -> None:
        self.model, self.replaced = model, replaced

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        return torch.func.functional_call(self.model, dict(self.replaced), args, kwargs, strict=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)
