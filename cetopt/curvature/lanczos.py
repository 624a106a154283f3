"""Top-k and bottom-k eigenpairs of every layer's Hessian block H_ll, by block Lanczos with full
reorthogonalisation, all layers advancing together (batched block-diagonal products).

The largest eigenvalues give the minor axes of the layer's error quadric (high curvature); the smallest
(possibly negative, reported as they are) give the major axes that CET says quantisation error should
follow. A block of p start vectors resolves eigenvalues of multiplicity up to p (the null space of a
softmax layer's Hessian has many); once the Krylov space fills a small layer, its spectrum is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cetopt.curvature.operator import CurvatureError, CurvatureOperator
from cetopt.curvature.progress import progress


@dataclass(frozen=True)
class Eigenpairs:
    """Extreme eigenpairs of one layer's Hessian block.

    Attributes:
        top_values: (k,) largest eigenvalues, descending.
        top_vectors: (k, n) matching unit eigenvectors (flattened weight layout).
        bottom_values: (k,) smallest eigenvalues, ascending (negative = saddle directions).
        bottom_vectors: (k, n).
        top_residuals, bottom_residuals: ||H u - theta u|| from the Lanczos recurrence.
        iterations: the Krylov dimension reached.
    """

    top_values: np.ndarray
    top_vectors: np.ndarray
    bottom_values: np.ndarray
    bottom_vectors: np.ndarray
    top_residuals: np.ndarray
    bottom_residuals: np.ndarray
    iterations: int


class _LayerRun:
    """Block Lanczos state of one layer."""

    def __init__(self, n: int, block: int, dim: int, dtype: torch.dtype, device: torch.device,
                 generator: torch.Generator) -> None:
        self.n, self.block, self.dim = n, min(block, n), min(dim, n)
        self.dtype, self.device, self.generator = dtype, device, generator
        start = self._random(self.block)
        self.current, _ = torch.linalg.qr(start)
        self.basis: list[torch.Tensor] = []
        self.diag: list[torch.Tensor] = []
        self.off: list[torch.Tensor] = []
        self.previous: torch.Tensor | None = None
        self.active = True

    def _random(self, count: int) -> torch.Tensor:
        draw = torch.randn(self.n, count, generator=self.generator, dtype=torch.float64)
        return draw.to(dtype=self.dtype, device=self.device)

    def size(self) -> int:
        return sum(b.shape[1] for b in self.basis)

    def advance(self, product: torch.Tensor, name: str, step: int) -> None:
        """One block step, given W = H Q_current (n x p)."""
        q = self.current
        self.basis.append(q)
        a = q.T @ product
        a = (a + a.T) / 2
        w = product - q @ a
        if self.previous is not None:
            w = w - self.previous @ self.off[-1].T
        stack = torch.cat(self.basis, dim=1)
        for _ in range(2):  # full reorthogonalisation, twice
            w = w - stack @ (stack.T @ w)
        if not (torch.isfinite(a).all() and torch.isfinite(w).all()):
            raise CurvatureError(f"layer {name!r}: Lanczos diverged at step {step}")
        self.diag.append(a)
        room = self.dim - self.size()
        if room <= 0:
            self.active = False
            self.off.append(torch.zeros(0, q.shape[1], dtype=q.dtype, device=q.device))
            self.residual_w = w
            return
        width = min(q.shape[1], room)
        nxt, r = torch.linalg.qr(w)
        nxt, r = nxt[:, :width], r[:width]
        scale = max(float(a.abs().max()), 1e-30)
        weak = torch.abs(torch.diagonal(r)) < 1e-10 * scale
        if weak.any():  # an invariant subspace was found: continue with fresh orthogonal directions
            fresh = self._random(int(weak.sum()))
            full = torch.cat([stack, nxt[:, ~weak]], dim=1)
            for _ in range(2):
                fresh = fresh - full @ (full.T @ fresh)
            fresh, _ = torch.linalg.qr(fresh)
            nxt = nxt.clone()
            nxt[:, weak] = fresh
            r = r.clone()
            r[weak] = 0.0
        self.off.append(r)
        self.previous = q
        self.current = nxt
        self.residual_w = w

    def ritz(self, k: int, keep: type) -> Eigenpairs:
        sizes = [b.shape[1] for b in self.basis]
        m = sum(sizes)
        t = np.zeros((m, m))
        edges = np.cumsum([0] + sizes)
        for i, a in enumerate(self.diag):
            t[edges[i]:edges[i + 1], edges[i]:edges[i + 1]] = a.double().cpu().numpy()
        for i in range(len(self.basis) - 1):
            r = self.off[i].double().cpu().numpy()  # (p_next, p_i)
            t[edges[i + 1]:edges[i + 2], edges[i]:edges[i + 1]] = r[: sizes[i + 1]]
            t[edges[i]:edges[i + 1], edges[i + 1]:edges[i + 2]] = r[: sizes[i + 1]].T
        theta, s = np.linalg.eigh(t)
        q = torch.cat(self.basis, dim=1).double().cpu().numpy()  # (n, m)
        vectors = (q @ s).T  # (m, n)
        # residual of each Ritz pair: || W_last s_last || where W_last is the unreduced remainder
        tail = s[edges[-2]:edges[-1], :]
        w_last = self.residual_w.double().cpu().numpy()
        residuals = np.linalg.norm(w_last @ tail, axis=0) if m < self.n else np.zeros(m)
        count = min(k, m)
        top = np.argsort(theta)[::-1][:count]
        bottom = np.argsort(theta)[:count]
        return Eigenpairs(
            top_values=theta[top], top_vectors=vectors[top].astype(keep), bottom_values=theta[bottom],
            bottom_vectors=vectors[bottom].astype(keep), top_residuals=residuals[top],
            bottom_residuals=residuals[bottom], iterations=m)


def lanczos_eigenpairs(operator: CurvatureOperator, *, k: int = 8, iterations: int = 32, block: int | None = None,
                       seed: int = 0, show_progress: bool = True) -> list[Eigenpairs]:
    """Extreme eigenpairs of every H_ll (see module docstring).

    Args:
        k: eigenpairs wanted at each end.
        iterations: Krylov dimension per layer (capped at the layer's size); larger is tighter.
        block: block size (default min(k, 8)): the largest eigenvalue multiplicity resolved.
        seed: start-block seed.

    Raises:
        CurvatureError: when the recurrence produces NaN/inf (a diverging run).
    """
    generator = torch.Generator().manual_seed(seed)
    params = operator.params
    width = block or max(1, min(k, 8))
    runs = [_LayerRun(p.numel(), width, max(iterations, width), p.dtype, p.device, generator) for p in params]
    steps = max(math.ceil(run.dim / run.block) for run in runs)
    bar = progress(total=steps, desc="lanczos", disable=not show_progress)
    try:
        for step in range(steps):
            live = {j: run for j, run in enumerate(runs) if run.active}
            if not live:
                break
            blocks = {j: run.current.T.reshape(run.current.shape[1], *params[j].shape) for j, run in live.items()}
            products = operator.layer_block_hvp(blocks)
            for j, run in live.items():
                run.advance(products[j].reshape(products[j].shape[0], -1).T.to(run.dtype), operator.names[j], step)
                if run.size() >= run.dim:
                    run.active = False
            bar.update(1)
    finally:
        bar.close()
    keep = np.float64 if params[0].dtype == torch.float64 else np.float32
    return [run.ritz(k, keep) for run in runs]
