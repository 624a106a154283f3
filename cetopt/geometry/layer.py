"""One layer's error quadric dL(d) = g.d + 1/2 d'Hd, seen through the computed part of H's spectrum.

A :class:`LayerQuadric` holds the gradient g (n,), the trace Tr(H), and m computed eigenpairs of H
(Lanczos' top-k and bottom-k, merged and sorted ascending). The spectrum not computed is modelled as
its mean, ``rest = (Tr H - sum computed) / (n - m)``, on the orthogonal complement of the computed
eigenvectors (cet-method.md, 1.3 step 4). From that model it gives the quadric's kind, the centre shift
caused by the gradient, the semi-axes of a level set, the major- and minor-axis subspaces, the
orthogonal decomposition of an error vector and its energy in the complement subspace (CET's
"complementary problem"), membership of the error subspace E(eps) = {d : dL(d) <= eps}, and LLC's
lossless radius. Numpy only: arrays in, facts out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cetopt.geometry.quadric import QuadricKind, classify


@dataclass(frozen=True)
class LayerQuadric:
    """The local loss model of one layer.

    Attributes:
        name: layer (module path).
        gradient: (n,) g, flattened weight layout.
        trace: Tr(H_ll).
        eigenvalues: (m,) computed eigenvalues, ascending.
        eigenvectors: (m, n) matching orthonormal rows.
        rtol: eigenvalues within rtol x max|lambda| of zero count as zero curvature.
    """

    name: str
    gradient: np.ndarray
    trace: float
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    rtol: float = 1e-4

    @classmethod
    def from_curvature(cls, layer: Any, *, rtol: float = 1e-4) -> "LayerQuadric":
        """From a :class:`cetopt.curvature.LayerCurvature` (anything with name, gradient, trace, eig)."""
        if layer.eig is None:
            raise ValueError(f"layer {layer.name!r} has no eigenpairs; extract curvature with k > 0")
        bottom = np.asarray(layer.eig.bottom_vectors, dtype=np.float64)
        top = np.asarray(layer.eig.top_vectors, dtype=np.float64)
        # in a small layer both ends of the spectrum overlap: keep each eigenvector once
        fresh = np.abs(top @ bottom.T).max(axis=1, initial=0.0) < 0.5
        values = np.concatenate([layer.eig.bottom_values, np.asarray(layer.eig.top_values)[fresh]]).astype(np.float64)
        vectors = np.concatenate([bottom, top[fresh]])
        order = np.argsort(values)
        return cls(name=layer.name, gradient=np.asarray(layer.gradient, dtype=np.float64).ravel(),
                   trace=float(layer.trace), eigenvalues=values[order], eigenvectors=vectors[order], rtol=rtol)

    # ------------------------------------------------------------------ spectrum
    @property
    def n(self) -> int:
        return int(self.gradient.size)

    @property
    def rest(self) -> float:
        """Mean eigenvalue of the spectrum not computed (0 when all n were computed)."""
        m = self.eigenvalues.size
        return 0.0 if m >= self.n else (self.trace - float(self.eigenvalues.sum())) / (self.n - m)

    @property
    def tolerance(self) -> float:
        return self.rtol * float(np.abs(self.eigenvalues).max(initial=abs(self.rest)))

    @property
    def kind(self) -> QuadricKind:
        """Ellipsoid, hyperbolic paraboloid or degenerate, judged on the computed eigenvalues."""
        return classify(self.eigenvalues, rtol=self.rtol)

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[-1])

    @property
    def lambda_min(self) -> float:
        return float(self.eigenvalues[0])

    @property
    def major_axis(self) -> np.ndarray:
        """(n,) the flattest computed direction (smallest eigenvalue): where error costs least."""
        return self.eigenvectors[0]

    @property
    def minor_axis(self) -> np.ndarray:
        """(n,) the steepest direction (largest eigenvalue): where error costs most."""
        return self.eigenvectors[-1]

    def major_subspace(self, k: int | None = None) -> np.ndarray:
        """(k, n) the k flattest computed eigenvectors (default: those below the median computed eigenvalue)."""
        k = self.eigenvalues.size // 2 if k is None else k
        return self.eigenvectors[:k]

    # ------------------------------------------------------------------ the model
    def coordinates(self, d: np.ndarray) -> np.ndarray:
        """(m,) principal coordinates u_i . d."""
        return self.eigenvectors @ np.asarray(d, dtype=np.float64).ravel()

    def quadratic(self, d: np.ndarray) -> float:
        """d'Hd under the model (computed pairs exactly, the rest as its mean on the complement)."""
        d = np.asarray(d, dtype=np.float64).ravel()
        y = self.coordinates(d)
        return float(self.eigenvalues @ y ** 2 + self.rest * (d @ d - y @ y))

    def change(self, d: np.ndarray) -> float:
        """dL(d) = g.d + 1/2 d'Hd under the model."""
        d = np.asarray(d, dtype=np.float64).ravel()
        return float(self.gradient @ d) + 0.5 * self.quadratic(d)

    def centre_shift(self) -> np.ndarray:
        """(n,) the quadric's centre -H^+ g: where the gradient moves the bottom of the bowl.

        Directions of (near-)zero curvature are left out (the pseudo-inverse), so the shift is finite.
        """
        tol = self.tolerance
        c = self.coordinates(self.gradient)
        curved = np.abs(self.eigenvalues) > tol
        shift = -(self.eigenvectors[curved].T @ (c[curved] / self.eigenvalues[curved]))
        if abs(self.rest) > tol:
            g_rest = self.gradient - self.eigenvectors.T @ c
            shift = shift - g_rest / self.rest
        return shift

    def semi_axes(self, eps: float) -> np.ndarray:
        """(m,) semi-axis lengths of the level set {dL = eps} along the computed eigenvectors.

        a_i = sqrt(2 (eps + sum_j c_j^2 / 2 lambda_j) / lambda_i) for lambda_i > 0 (ellipsoid directions);
        inf where lambda_i <= 0 (the quadric is open: saddle or flat).
        """
        tol = self.tolerance
        c = self.coordinates(self.gradient)
        positive = self.eigenvalues > tol
        level = eps + float(np.sum(c[positive] ** 2 / (2 * self.eigenvalues[positive])))
        axes = np.full(self.eigenvalues.size, np.inf)
        axes[positive] = np.sqrt(np.maximum(2 * level / self.eigenvalues[positive], 0.0))
        return axes

    # ------------------------------------------------------------------ decomposition
    def decompose(self, d: np.ndarray, k_major: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """d = d_major + d_complement: projection on the k flattest eigenvectors and the rest (orthogonal)."""
        d = np.asarray(d, dtype=np.float64).ravel()
        basis = self.major_subspace(k_major)
        major = basis.T @ (basis @ d)
        return major, d - major

    def complement_energy(self, d: np.ndarray, k_major: int | None = None) -> float:
        """d_c' H d_c for the complement part d_c of d: the curvature energy outside the major axes.

        At fixed |d| the quadratic term differs from this energy by the major-subspace part, whose
        eigenvalues are the smallest; minimising dL is thereby traded for minimising this energy.
        """
        _, comp = self.decompose(d, k_major)
        return self.quadratic(comp)

    def in_error_subspace(self, d: np.ndarray, eps: float) -> bool:
        """Whether d lies in E(eps) = {d : dL(d) <= eps}."""
        return self.change(d) <= eps

    def lossless_radius(self, direction: np.ndarray, curvature: float | None = None) -> float:
        """LLC's radius along a direction: the largest |d| where the first-order term still dominates.

        For a unit direction u with g.u < 0, dL(t u) = t g.u + 1/2 t^2 u'Hu <= t g.u + 1/2 t^2 kappa,
        which stays <= 0 for t <= 2 |g.u| / kappa. With kappa = lambda_max (the default) the radius holds
        for every direction of that slope (the conservative ball); with ``curvature`` = u'Hu (the
        directional curvature, e.g. from an exact quadratic form) it is the radius along u itself. A
        direction that raises the loss to first order (g.u >= 0) has radius 0.
        """
        u = np.asarray(direction, dtype=np.float64).ravel()
        norm = float(np.linalg.norm(u))
        if norm == 0:
            return 0.0
        slope = float(self.gradient @ u) / norm
        if slope >= 0:
            return 0.0
        lam = max(self.lambda_max, self.rest) if curvature is None else curvature
        return np.inf if lam <= 0 else 2 * abs(slope) / lam
