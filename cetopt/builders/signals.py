"""Collect the curvature signals a cost model declares (``CostModel.needs``), and nothing more.

One curvature operator and one gradient pass serve every signal; the spectrum (Lanczos, Hutchinson) is
extracted only when a signal or the rounding needs it, and exact quadratic forms only when a signal, the
lossless radius or cross-layer terms need them. Each layer's signals come back as a
:class:`cetopt.costmodels.LayerSignals` of (K,) arrays, one entry per candidate.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Mapping, MutableMapping, Sequence

import numpy as np
import torch

from cetopt.builders.candidates import LayerCandidates
from cetopt.costmodels.base import LayerSignals
from cetopt.curvature.coverage import LayerPath
from cetopt.curvature.extract import CurvatureSettings, extract_curvature
from cetopt.curvature.operator import CurvatureOperator
from cetopt.curvature.quadratic import QuadraticForms, quadratic_forms
from cetopt.curvature.result import CurvatureResult
from cetopt.errors import ProblemError
from cetopt.geometry.layer import LayerQuadric

SPECTRUM_SIGNALS = frozenset({"eigen", "lossless_radius"})  # need Lanczos eigenpairs (k > 0)
TRACE_SIGNALS = frozenset({"trace_per_weight"})              # need Hutchinson traces only (k = 0 suffices)


def _rounding_needs_quadric(rounding: str | tuple[str, ...]) -> bool:
    from cetopt.quant.rounding import rounding_needs
    from cetopt.quant.rounding.base import QUADRIC

    names = (rounding,) if isinstance(rounding, str) else tuple(rounding)
    return any(QUADRIC in rounding_needs(r) for r in names)


def needs_curvature(needs: frozenset[str], rounding: str | tuple[str, ...]) -> bool:
    """Whether a CurvatureResult (traces, maybe eigenpairs) must be extracted."""
    return bool(needs & (SPECTRUM_SIGNALS | TRACE_SIGNALS)) or _rounding_needs_quadric(rounding)


def needs_eigenpairs(needs: frozenset[str], rounding: str | tuple[str, ...]) -> bool:
    return bool(needs & SPECTRUM_SIGNALS) or _rounding_needs_quadric(rounding)


def curvature_for(op: CurvatureOperator, needs: frozenset[str], rounding: str | tuple[str, ...], settings: CurvatureSettings,
                  given: CurvatureResult | None, *, cache_dir: str | None | bool, description: str
                  ) -> tuple[CurvatureResult | None, dict[str, LayerQuadric] | None]:
    """The curvature result and layer quadrics the signals and rounding need (None where not needed)."""
    if not needs_curvature(needs, rounding):
        return given, None
    curvature = given
    if curvature is None:
        wanted = settings if needs_eigenpairs(needs, rounding) else dataclasses.replace(settings, k=0)
        curvature = extract_curvature(op.source_model, op.loss_fn, op.batches_cpu, settings=wanted, layers=op.names,
                                      cache_dir=cache_dir, show_progress=False, description=description)
    missing = [n for n in op.names if n not in curvature.names]
    if missing:
        raise ProblemError(f"the curvature result lacks layers {missing[:3]}", field="curvature")
    quadrics = None
    if needs_eigenpairs(needs, rounding):
        quadrics = {n: LayerQuadric.from_curvature(curvature.layer(n)) for n in op.names}
    return curvature, quadrics


@dataclass(frozen=True)
class SignalInputs:
    """Everything signals are computed from.

    Attributes:
        op: the curvature operator (calibration data, layers); gradient: g per layer (op.names order).
        candidates: each layer's candidates (errors d = W_hat - W).
        curvature, quadrics: from :func:`curvature_for` (None when not needed).
        pairs: layer pairs whose cross terms d_a'H_ab d_b are wanted (interactions).
        llc_radius: "directional" (curvature d'Hd/|d|^2 along each error) or "lambda-max".
        validation: held-out batches (disjoint from the calibration data) for the ``linear_holdout`` signal.
        forms_cache: quadratic forms already computed on this operator's model and calibration data, keyed by
            the candidate errors and pairs (:func:`forms_key`); several cost models of one model (``cetopt
            prove`` builds four) then pay for the Hessian products once. The caller owns it and must not share
            it across models or calibration sets.
    """

    op: CurvatureOperator
    gradient: Sequence[torch.Tensor]
    candidates: Sequence[LayerCandidates]
    curvature: CurvatureResult | None = None
    quadrics: dict[str, LayerQuadric] | None = None
    pairs: Sequence[tuple[str, str]] = ()
    llc_radius: str = "directional"
    validation: Sequence[object] = ()
    forms_cache: MutableMapping[str, QuadraticForms] | None = None


def forms_key(errors: Mapping[str, Sequence[torch.Tensor]], pairs: Sequence[tuple[str, str]]) -> str:
    """A digest of the candidate errors (names, shapes, dtypes and every value) and the cross-term pairs."""
    digest = hashlib.sha256(repr(sorted(tuple(p) for p in pairs)).encode())
    for name in sorted(errors):
        for tensor in errors[name]:
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
            digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def _flat(errors: Sequence[torch.Tensor]) -> np.ndarray:
    return np.stack([e.detach().double().cpu().numpy().ravel() for e in errors])


def _forms(inputs: SignalInputs, needs: frozenset[str]) -> QuadraticForms | None:
    wants = "quadratic" in needs or inputs.pairs or ("lossless_radius" in needs and inputs.llc_radius == "directional")
    if not wants:
        return None
    errors = {c.name: c.errors() for c in inputs.candidates}
    if inputs.forms_cache is None:
        return quadratic_forms(inputs.op, errors, pairs=inputs.pairs)
    key = forms_key(errors, inputs.pairs)
    if key not in inputs.forms_cache:
        inputs.forms_cache[key] = quadratic_forms(inputs.op, errors, pairs=inputs.pairs)
    return inputs.forms_cache[key]


def _fisher(inputs: SignalInputs, needs: frozenset[str]) -> dict[str, np.ndarray] | None:
    if "fisher" not in needs:
        return None
    if inputs.op.stationary:
        raise ProblemError("the empirical Fisher (mean squared per-sample gradient) of a fidelity objective is 0 at "
                           "the FP32 weights, so every cost would be 0; use a curvature cost model (cet-upper, "
                           "hawq-v3, cet) or give ModelSpec.loss_fn", field="method")
    from cetopt.curvature.signals import fisher_diagonal

    diagonal = fisher_diagonal(inputs.op)
    return {n: f.detach().double().cpu().numpy().ravel() for n, f in zip(inputs.op.names, diagonal)}


def _provided(inputs: SignalInputs, needs: frozenset[str]) -> dict[str, dict[str, np.ndarray]]:
    """Signals computed by their own provider modules (cetopt.builders.signal_*): signal -> layer -> (K,)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    stacked = (lambda: {c.name: torch.stack(c.errors()) for c in inputs.candidates})
    if "linear_stderr" in needs:
        from cetopt.builders.signal_stderr import linear_stderr

        out["linear_stderr"] = linear_stderr(inputs.op, stacked())
    if "linear_holdout" in needs:
        from cetopt.builders.signal_holdout import linear_holdout

        out["linear_holdout"] = linear_holdout(inputs.op, inputs.validation, stacked())
    if "measured" in needs:
        from cetopt.builders.signal_measured import measured_changes

        out["measured"] = measured_changes(inputs.op, {c.name: c.weights for c in inputs.candidates})
    return out


def _layer_signals(inputs: SignalInputs, cand: LayerCandidates, needs: frozenset[str], forms: QuadraticForms | None,
                   fisher: dict[str, np.ndarray] | None, provided: dict[str, dict[str, np.ndarray]]) -> LayerSignals:
    index = inputs.op.names.index(cand.name)
    flat = _flat(cand.errors())
    grad = inputs.gradient[index].detach().double().cpu().numpy().ravel()
    energy = np.einsum("kn,kn->k", flat, flat)
    values: dict[str, object] = {"energy": energy, "linear": flat @ grad}
    if forms is not None:
        values["quadratic"] = forms.own[cand.name]
    quadric = inputs.quadrics[cand.name] if inputs.quadrics else None
    if "eigen" in needs:
        values["eigen"] = np.array([quadric.quadratic(d) for d in flat])  # type: ignore[union-attr]
    if "trace_per_weight" in needs:
        values["trace_per_weight"] = inputs.curvature.layer(cand.name).mean_eigenvalue  # type: ignore[union-attr]
    if fisher is not None:
        values["fisher"] = (flat ** 2) @ fisher[cand.name]
    for signal, per_layer in provided.items():
        values[signal] = per_layer[cand.name]
    if "lossless_radius" in needs:
        directional = (forms.own[cand.name] / np.maximum(energy, 1e-300) if forms is not None
                       else [None] * len(flat))
        values["lossless_radius"] = np.array([quadric.lossless_radius(d, k)  # type: ignore[union-attr]
                                              for d, k in zip(flat, directional)])
    return LayerSignals(name=cand.name, params=int(flat.shape[1]), **values)  # type: ignore[arg-type]


def collect_signals(inputs: SignalInputs, needs: frozenset[str]
                    ) -> tuple[dict[str, LayerSignals], dict[tuple[str, str], np.ndarray], dict[str, LayerPath]]:
    """Each layer's signals (only those in ``needs``, plus energy and g.d), the requested cross terms and how each
    layer's quadratic forms were computed (empty when none were)."""
    forms = _forms(inputs, needs)
    fisher = _fisher(inputs, needs)
    provided = _provided(inputs, needs)
    signals = {c.name: _layer_signals(inputs, c, needs, forms, fisher, provided) for c in inputs.candidates}
    return signals, (dict(forms.cross) if forms is not None else {}), (dict(forms.paths) if forms is not None else {})
