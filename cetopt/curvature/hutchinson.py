"""Per-layer Hessian traces by Hutchinson's estimator, with standard errors and adaptive stopping.

Two estimators (``mode``):

- ``shared``: one Rademacher probe v over all layer weights and one product H v give, for every layer l
  at once, the sample v_l . (H v)_l, whose mean is Tr(H_ll). The cross-layer terms v_l' H_lm v_m average
  out but add variance: benchmarks/curvature.py measures 2x (a trained MLP) to 49x (a random-init
  transformer) the variance of a layer-restricted probe.
- ``restricted``: each layer gets its own probe, zero elsewhere, and all layers' products go through one
  batched backward pass (one pass per layer where torch cannot batch): no cross-layer variance.

Rounds continue until every layer's relative standard error is under ``rtol`` or ``max_probes`` is
reached; in the second case a warning names the layers still above ``rtol`` and their errors, since a trace
stopped at the cap can be far less precise than ``rtol`` asks. Negative estimates are reported as they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from cetopt.curvature.operator import CurvatureOperator, check_finite
from cetopt.curvature.progress import progress
from cetopt.errors import ProblemError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson estimate of Tr(H_ll) for one layer.

    Attributes:
        trace: the mean of the probe samples (loss units per weight^2, summed over the layer).
        stderr: standard error of that mean (sample std / sqrt(n)).
        n_probes: number of probes used.
    """

    trace: float
    stderr: float
    n_probes: int

    @property
    def relative_error(self) -> float:
        return self.stderr / abs(self.trace) if self.trace else float("inf")


def rademacher_like(tensors: list[torch.Tensor], count: int, generator: torch.Generator) -> list[torch.Tensor]:
    """``count`` Rademacher (+-1) probes shaped like each tensor, drawn on the CPU so seeds are portable."""
    out = []
    for t in tensors:
        draw = torch.randint(0, 2, (count, *t.shape), generator=generator, dtype=torch.int8)
        out.append((draw.to(t.dtype) * 2 - 1).to(t.device))
    return out


def hutchinson_traces(operator: CurvatureOperator, *, max_probes: int = 256, min_probes: int = 16,
                      block: int | None = None, rtol: float = 0.05, seed: int = 0, show_progress: bool = True,
                      mode: str = "shared") -> list[TraceEstimate]:
    """Per-layer trace estimates with standard errors, sharing probes across layers.

    Args:
        operator: the curvature operator of a model and its calibration data.
        max_probes, min_probes: bounds on the number of probes.
        block: probes per batched backward pass (default: 1 on the CPU, where torch's vmapped backward costs
            more per probe than a loop, as benchmarks/curvature.py measures; 8 on CUDA).
        rtol: stop once every layer's stderr / |trace| is below this.
        seed: the probes' seed (same seed, same numbers on the CPU).
        mode: "shared" or "restricted" (see the module docstring).

    Returns:
        One TraceEstimate per layer.
    """
    if mode not in ("shared", "restricted"):
        raise ProblemError(f"mode must be 'shared' or 'restricted', got {mode!r}", field="mode")
    if mode == "restricted":
        return _restricted_traces(operator, max_probes=max_probes, min_probes=min_probes, rtol=rtol, seed=seed,
                                  show_progress=show_progress)
    generator = torch.Generator().manual_seed(seed)
    if block is None:
        block = 8 if operator.device.type == "cuda" else 1
    samples: list[list[float]] = [[] for _ in operator.params]
    done = 0
    bar = progress(total=max_probes, desc="hutchinson", disable=not show_progress)
    try:
        while done < max_probes:
            count = min(block, max_probes - done)
            probes = rademacher_like(operator.params, count, generator)
            if count == 1:  # unbatched: on the CPU a vmapped backward costs more per probe than a loop
                products = [t.unsqueeze(0) for t in operator.hvp([q[0] for q in probes])]
            else:
                products = operator.hvp(probes, batched=True)
            for j, (v, hv) in enumerate(zip(probes, products)):
                values = (v * hv).reshape(count, -1).sum(dim=1)
                check_finite(operator.names[j], "Hessian-vector product", values)
                samples[j].extend(values.double().cpu().tolist())
            done += count
            bar.update(count)
            if done >= min_probes:
                if all(e.relative_error < rtol for e in _estimates(samples)):
                    break
    finally:
        bar.close()
    estimates = _estimates(samples)
    warn_if_capped(operator.names, estimates, rtol=rtol, max_probes=max_probes)
    return estimates


def warn_if_capped(names: list[str], estimates: list[TraceEstimate], *, rtol: float, max_probes: int) -> list[str]:
    """Log a warning naming the layers whose relative standard error is still >= ``rtol`` after the cap of
    ``max_probes`` probes; returns their names (empty when every layer met ``rtol``)."""
    over = [(n, e) for n, e in zip(names, estimates) if not e.relative_error < rtol]
    if over:
        worst = sorted(over, key=lambda item: -item[1].relative_error)
        listed = ", ".join(f"{n} ({e.relative_error:.0%})" for n, e in worst[:10])
        more = f" and {len(over) - 10} more" if len(over) > 10 else ""
        median = float(np.median([e.relative_error for e in estimates]))
        log.warning("Hutchinson traces hit the cap of %d probes before the relative standard error reached "
                    "%.3g for %d of %d layers: %s%s (median over all layers %.1f%%); raise max_probes or use "
                    "trace_mode='restricted'", max_probes, rtol, len(over), len(names), listed, more, 100 * median)
    return [n for n, _ in over]


def _restricted_traces(operator: CurvatureOperator, *, max_probes: int, min_probes: int, rtol: float, seed: int,
                       show_progress: bool) -> list[TraceEstimate]:
    generator = torch.Generator().manual_seed(seed)
    samples: list[list[float]] = [[] for _ in operator.params]
    bar = progress(total=max_probes, desc="hutchinson (restricted)", disable=not show_progress)
    try:
        for done in range(1, max_probes + 1):
            probes = [p[0] for p in rademacher_like(operator.params, 1, generator)]
            products = operator.layer_hvp(probes)
            stop = add_probe(operator.names, samples, [(v * hv).sum() for v, hv in zip(probes, products)],
                             "Hessian-vector product", done=done, min_probes=min_probes, rtol=rtol)
            bar.update(1)
            if stop:
                break
    finally:
        bar.close()
    return finished(operator.names, samples, rtol=rtol, max_probes=max_probes)


def add_probe(names: list[str], samples: list[list[float]], values: list[torch.Tensor], what: str, *, done: int,
              min_probes: int, rtol: float) -> bool:
    """Append one probe's per-layer samples (checked finite, ``what`` names them in the error); True when the run
    may stop: ``done`` >= ``min_probes`` probes and every layer's relative standard error below ``rtol``."""
    for name, layer_samples, value in zip(names, samples, values):
        check_finite(name, what, value)
        layer_samples.append(float(value))
    return done >= min_probes and all(e.relative_error < rtol for e in _estimates(samples))


def finished(names: list[str], samples: list[list[float]], *, rtol: float, max_probes: int) -> list[TraceEstimate]:
    """The per-layer estimates of ``samples``, warning (:func:`warn_if_capped`) about layers short of ``rtol``."""
    estimates = _estimates(samples)
    warn_if_capped(names, estimates, rtol=rtol, max_probes=max_probes)
    return estimates


def _estimates(samples: list[list[float]]) -> list[TraceEstimate]:
    out = []
    for values in samples:
        arr = np.asarray(values)
        n = len(arr)
        stderr = float(arr.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
        out.append(TraceEstimate(trace=float(arr.mean()) if n else float("nan"), stderr=stderr, n_probes=n))
    return out
