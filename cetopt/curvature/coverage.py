"""What ran for each layer, and which weights a plan covers: the coverage report of ``extract`` and ``plan``.

For every quantisable layer: the graph its quadratic forms ran on (prefix cached, or the full graph), how
they were taken (forward mode, double backward from the layer's output, or double backward in its weight),
the trace estimator, and for each fallback the node or module that caused it. For the model: the weights the
plan covers against those kept in FP32 (count, bytes, share), naming the largest kept ones.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from torch import nn

log = logging.getLogger(__name__)

FORWARD = "forward mode"
OUTPUT_BACKWARD = "double backward from the output"
WEIGHT_BACKWARD = "double backward in the weight"
PREFIX = "prefix cached"
FULL = "full graph"
HOOKED = "hooked outputs (full forward)"


@dataclass(frozen=True)
class LayerPath:
    """How one layer's quadratic forms were computed.

    Attributes:
        name: the layer (module path).
        graph: :data:`PREFIX`, :data:`HOOKED` (the model does not trace: the layer's output recorded with a
            forward hook) or :data:`FULL`.
        forms: :data:`FORWARD`, :data:`OUTPUT_BACKWARD` or :data:`WEIGHT_BACKWARD`.
        fallback: what kept the layer off the fastest path (a node, a module, a trace error); None on it.
    """

    name: str
    graph: str
    forms: str
    fallback: str | None = None


@dataclass(frozen=True)
class WeightCoverage:
    """The model's floating-point parameters: planned (quantisable layers' weights) vs kept in FP32.

    Attributes:
        planned_count, planned_bytes: weights in the plan (numbers, bytes at their stored dtype).
        kept_count, kept_bytes: every other floating-point parameter (biases, norms, embeddings, ...).
        largest_kept: up to five (parameter name, module type, count) of the largest kept parameters.
    """

    planned_count: int
    planned_bytes: int
    kept_count: int
    kept_bytes: int
    largest_kept: tuple[tuple[str, str, int], ...] = ()

    @property
    def planned_share(self) -> float:
        """planned / all floating-point parameters (by count)."""
        total = self.planned_count + self.kept_count
        return self.planned_count / total if total else 0.0


def weight_coverage(model: nn.Module, planned: Sequence[str]) -> WeightCoverage:
    """Split ``model``'s floating-point parameters into the ``planned`` layers' weights and the rest (shared
    parameters counted once)."""
    from cetopt.curvature.layers import layer_weight

    modules = dict(model.named_modules())
    planned_ids = {id(layer_weight(model, n)) for n in planned}
    seen: set[int] = set()
    counts = {"planned": [0, 0], "kept": [0, 0]}
    kept: list[tuple[str, str, int]] = []
    for name, param in model.named_parameters():
        if id(param) in seen or not param.is_floating_point():
            continue
        seen.add(id(param))
        side = "planned" if id(param) in planned_ids else "kept"
        counts[side][0] += param.numel()
        counts[side][1] += param.numel() * param.element_size()
        if side == "kept":
            owner = modules.get(name.rpartition(".")[0], model)
            kept.append((name, type(owner).__name__, int(param.numel())))
    kept.sort(key=lambda item: -item[2])
    return WeightCoverage(planned_count=counts["planned"][0], planned_bytes=counts["planned"][1],
                          kept_count=counts["kept"][0], kept_bytes=counts["kept"][1], largest_kept=tuple(kept[:5]))


def table_rows_seen(model: nn.Module, planned: Sequence[str], run: Any, batches: Sequence[Any]
                    ) -> tuple[tuple[str, int, int], ...]:
    """(name, rows looked up, rows) of each planned nn.Embedding over ``batches`` (``run(model, batch)`` does
    the forward pass): rows no batch looks up carry no measured curvature."""
    import torch

    modules = dict(model.named_modules())
    tables = [n for n in planned if isinstance(modules.get(n), nn.Embedding)]
    seen: dict[str, set[int]] = {n: set() for n in tables}
    from cetopt._hooks import observe_inputs

    observe_inputs(model, {n: (lambda m, a, n=n: seen[n].update(torch.unique(a[0]).tolist())) for n in tables},
                   batches, run)
    return tuple((n, len(seen[n]), int(modules[n].num_embeddings)) for n in tables)


@dataclass(frozen=True)
class Coverage:
    """The coverage report: per-layer paths (empty when no quadratic forms ran), the trace estimator (None when
    no traces were taken) and why it is not the output-space one, the weights covered, and for each planned
    Embedding table the rows the calibration batches look up (:func:`table_rows_seen`)."""

    layers: tuple[LayerPath, ...]
    trace_estimator: str | None
    trace_fallback: str | None
    weights: WeightCoverage
    tables: tuple[tuple[str, int, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (the problem's ``metadata["coverage"]``)."""
        weights = asdict(self.weights)
        weights["largest_kept"] = [list(item) for item in self.weights.largest_kept]
        weights["planned_share"] = self.weights.planned_share
        return {"layers": {p.name: {"graph": p.graph, "forms": p.forms, "fallback": p.fallback} for p in self.layers},
                "trace_estimator": self.trace_estimator, "trace_fallback": self.trace_fallback, "weights": weights,
                **({"tables": {n: {"rows_seen": s, "rows": r} for n, s, r in self.tables}} if self.tables else {})}

    def lines(self) -> list[str]:
        """The report as text lines (:func:`coverage_lines`)."""
        return coverage_lines(self.to_dict())

    def log(self) -> None:
        """Log :meth:`lines` at INFO."""
        for line in self.lines():
            log.info("coverage: %s", line)


def coverage_report(model: nn.Module, planned: Sequence[str], paths: Mapping[str, LayerPath],
                    trace_estimator: str | None = None, trace_fallback: str | None = None,
                    tables: tuple[tuple[str, int, int], ...] = ()) -> Coverage:
    """The :class:`Coverage` of a build: ``paths`` from :class:`cetopt.curvature.quadratic.QuadraticForms`,
    the trace estimator from the curvature result's metadata, ``tables`` from :func:`table_rows_seen`."""
    return Coverage(layers=tuple(paths[n] for n in planned if n in paths), trace_estimator=trace_estimator,
                    trace_fallback=trace_fallback, weights=weight_coverage(model, planned), tables=tables)


def coverage_lines(record: Mapping[str, Any] | None) -> list[str]:
    """A coverage record (:meth:`Coverage.to_dict`, as stored in a problem's metadata) as text: a summary of the
    layers' paths, one line per layer off the fastest path with the reason, the trace estimator, the weights.
    [] for None (a problem written before the record existed)."""
    if not record:
        return []
    out = []
    layers = record.get("layers", {})
    if layers:
        cached = sum(p["graph"] == PREFIX for p in layers.values())
        forward = sum(p["forms"] == FORWARD for p in layers.values())
        out.append(f"quadratic forms: {cached} of {len(layers)} layers prefix cached, {forward} by forward mode")
        out += [f"  {name}: {p['graph']}, {p['forms']} ({p['fallback']})" for name, p in layers.items()
                if p["fallback"] is not None]
    if record.get("trace_estimator") is not None:
        fallback = record.get("trace_fallback")
        out.append(f"traces: {record['trace_estimator']}" + (f" ({fallback})" if fallback else ""))
    for name, t in record.get("tables", {}).items():
        out.append(f"embedding table {name}: {t['rows_seen']} of {t['rows']} rows looked up by the calibration "
                   "batches (the others carry no measured curvature: calibrate on text like the deployment's)")
    w = record["weights"]
    kept = ", ".join(f"{n} ({t}, {c})" for n, t, c in w["largest_kept"])
    out.append(f"weights: {w['planned_count']} planned ({w['planned_bytes']} bytes, {w['planned_share']:.1%} of the "
               f"parameters), {w['kept_count']} kept in FP32 ({w['kept_bytes']} bytes)"
               + (f"; largest kept: {kept}" if kept else ""))
    return out
