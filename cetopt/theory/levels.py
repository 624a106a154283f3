"""Beyond bit-widths: quantisation only, low-rank only and joint allocation on one Pareto plot; the
compact mode; LLC's rank rule; and the numerical proof that series expansion converges to the FP weights
and outputs (``cetopt levels MODEL``)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from cetopt._atomic import atomic_write_text
from cetopt.builders.candidates import Levels
from cetopt.builders.modes import joint_mode, llc_ranks
from cetopt.builders.second_order import BuiltProblem, replace_weights
from cetopt.measure import Measurer
from cetopt.modelspec import ModelSpec
from cetopt.workflow import build_for
from cetopt.problem.model import Budget
from cetopt.tables import markdown_table
from cetopt.plotting import new_figure, save_figure

MODES: dict[str, Levels] = {
    "quantisation only": Levels(bits=(2, 3, 4, 5, 6, 8)),
    "low-rank only (fp32 factors)": Levels(bits=(), rank_grid=(0.03, 0.06, 0.12, 0.25, 0.5), rank_bits=(32,)),
    "low-rank only (8-bit factors)": Levels(bits=(), rank_grid=(0.03, 0.06, 0.12, 0.25, 0.5, 0.75), rank_bits=(8,)),
    "joint (bits, ranks, series)": Levels(bits=(2, 3, 4, 5, 6, 8), rank_grid=(0.06, 0.12, 0.25, 0.5, 0.75),
                                          rank_bits=(4, 8), series_bits=(2, 3), series_terms=(2,)),
}
BUDGETS = (1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0)


@dataclass(frozen=True)
class LevelPoint:
    """One solved plan: mode, budget (average bits), achieved size and measured result."""

    mode: str
    budget_bits: float | None
    avg_bits: float
    ratio: float
    predicted: float
    measured: float
    metric: float
    levels_used: str


def _measure(task: ModelSpec, built: BuiltProblem, result: Any, mode: str, budget: float | None) -> LevelPoint:
    choices = dict(result.choices)
    measured = Measurer(task).measure(built.weights_for_choices(choices), validation=False)
    used = sorted({built.problem.layer(n).choices[i].label for n, i in choices.items()})
    return LevelPoint(mode, budget, result.avg_bits, 32.0 / result.avg_bits, result.loss, measured.calibration_dloss,
                      float(measured.metric), ", ".join(used[:8]) + (" ..." if len(used) > 8 else ""))


def pareto_points(task: ModelSpec, budgets: Sequence[float] = BUDGETS,
                  modes: dict[str, Levels] = MODES) -> tuple[list[LevelPoint], dict[str, BuiltProblem]]:
    """Each mode's CET problem (g.d + 1/2 d'Hd per candidate) solved exactly at each budget and measured."""
    from cetopt.solvers.api import solve

    points, built_problems = [], {}
    for mode, levels in modes.items():
        built = build_for(task, method="cet", levels=levels, budget=Budget(avg_bits=4.0))
        built_problems[mode] = built
        for b in budgets:
            result = solve(built.problem.with_budget(Budget(avg_bits=b)), "dp")
            if result.success:
                points.append(_measure(task, built, result, mode, b))
    joint = built_problems["joint (bits, ranks, series)"]
    compact = solve(joint_mode(joint.problem, "min-size"), "dp")
    if compact.success:
        points.append(_measure(task, joint, compact, "joint, compact mode (predicted dL <= 0)", None))
    return points, built_problems


def series_convergence(task: ModelSpec, bits: Sequence[int] = (2, 3, 4), terms: Sequence[int] = (1, 2, 3, 4)
                       ) -> list[dict[str, float]]:
    """Every quantisable layer expanded into K terms: weight residual, contraction rate, output error, metric."""
    from cetopt.curvature.layers import find_layers
    from cetopt.quant.series import series_expand

    names = [r.name for r in find_layers(task.model, exclude=task.exclude)]
    from cetopt.curvature.layers import layer_weight

    batch = task.calibration[0]
    inputs = batch[0] if isinstance(batch, (tuple, list)) and isinstance(batch[0], torch.Tensor) else None
    with torch.no_grad():
        reference = task.model(inputs) if inputs is not None else None
    rows = []
    for b in bits:
        for k in terms:
            expansions = {n: series_expand(layer_weight(task.model, n), b, k) for n in names}
            weight_err = float(np.sqrt(sum(e.residual_norms[-1] ** 2 for e in expansions.values())
                                       / sum(e.residual_norms[0] ** 2 for e in expansions.values())))
            rate = float(np.median([np.mean(e.rates) for e in expansions.values()]))
            model = replace_weights(task.model, {n: e.weight for n, e in expansions.items()})
            out_err = float("nan")
            if reference is not None:
                with torch.no_grad():
                    out_err = float((model(inputs) - reference).norm() / reference.norm())
            measured = Measurer(task).measure({n: e.weight for n, e in expansions.items()}, validation=False)
            rows.append({"bits": b, "terms": k, "bits_per_weight": b * k, "weight_rel_error": weight_err,
                         "rate": rate, "output_rel_error": out_err, "metric": measured.metric,
                         "measured_dloss": measured.calibration_dloss})
    return rows


def levels_report(model: str, outdir: str | os.PathLike[str], *, budgets: Sequence[float] = BUDGETS,
                  log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Write ``outdir/report.md`` (+ pareto PNG/SVG, results.json) for zoo model ``model``."""
    start = time.perf_counter()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    from cetopt.modelspec import load_model_spec

    task = load_model_spec(model)
    metrics = task.metrics()
    if not metrics:  # the study compares modes by a measured metric, not by loss
        from cetopt.errors import ProblemError

        raise ProblemError(f"cetopt levels compares modes by a measured metric, and {task.name} has none: give its "
                           "ModelSpec an evaluate(model) -> {metric: value}", field="evaluate")
    fp_metric = float(next(iter(metrics.values())))
    points, _ = pareto_points(task, budgets)
    log(f"pareto: {len(points)} plans ({time.perf_counter() - start:.0f} s)")
    series = series_convergence(task)
    log(f"series convergence ({time.perf_counter() - start:.0f} s)")
    from cetopt.theory.xint import render_checks, xint_checks

    xint, _ = xint_checks(task)
    log("FP=xINT checks: " + ", ".join(f"{c.number} {c.verdict.value}" for c in xint))
    llc_point, llc_status, ranks = _llc_rank_rule(task)

    figures = _pareto_figure(points, fp_metric, next(iter(metrics)), model, out)
    text = "\n\n".join([
        f"# Compression levels on {model}",
        f"FP32 metric {fp_metric:.4f}. Every mode is a CET problem (each candidate's predicted change "
        "g.d + 1/2 d'Hd from exact Hessian-vector products) solved exactly by dp at an average-bits budget, "
        "applied to the model and measured. Sizes count stored values only (r(m+n) x bits for a rank-r "
        "factorisation, K x b per weight for a K-term series), the same convention for every mode.",
        *(f"![levels]({f})" for f in figures if f.endswith(".png")),
        "## Which mode wins at each budget",
        markdown_table(["avg bits", "best", "metric", *MODES], _winners(points, budgets)),
        "## Every plan",
        markdown_table(["mode", "budget", "avg bits", "x vs FP32", "predicted dL", "measured dL", "metric",
                        "levels used"],
                       [[p.mode, "-" if p.budget_bits is None else f"{p.budget_bits:g}", f"{p.avg_bits:.3f}",
                         f"{p.ratio:.1f}", p.predicted, p.measured, f"{p.metric:.4f}", p.levels_used] for p in points]),
        "## LLC's rank rule",
        _llc_section(llc_point, llc_status, ranks),
        *_series_section(series),
        render_checks(xint),
        f"Generated by `cetopt levels {model}` in {time.perf_counter() - start:.0f} s.",
    ]) + "\n"
    atomic_write_text(out / "report.md", text)
    data = {"model": model, "fp_metric": fp_metric, "points": [asdict(p) for p in points], "series": series,
            "llc_ranks": ranks, "llc": asdict(llc_point) if llc_point else None,
            "fp_xint_checks": [{"number": c.number, "title": c.title, "verdict": c.verdict.value, "value": c.value,
                                "tolerance": c.tolerance} for c in xint]}
    atomic_write_text(out / "results.json", json.dumps(data, indent=1, default=str))
    return data


def _llc_rank_rule(task: Any) -> tuple[Any, str, Any]:
    """LLC's compact rank rule on ``task``: its measured plan (None when dp finds none), dp's status, the ranks."""
    from cetopt.solvers.api import solve

    llc = build_for(task, method="llc", budget=None, levels=Levels(
        bits=(8,), rank_energies=(0.5, 0.7, 0.8, 0.9, 0.95, 0.99), rank_bits=(32,)))
    ranks = llc_ranks(llc.problem)
    result = solve(llc.problem, "dp")
    point = _measure(task, llc, result, "llc rank rule (compact)", None) if result.success else None
    return point, result.status.value, ranks


def _series_section(series: Sequence[Mapping[str, Any]]) -> list[str]:
    """The report's series-convergence heading, its reading and its table."""
    return [
        "## Series expansion converges",
        "Every quantisable layer replaced by its K-term expansion sum_k Q_b(R_k). 'rate' is the median per-term "
        "contraction ||R_{k+1}||/||R_k||; output error is ||f_K(x) - f(x)|| / ||f(x)|| on a calibration batch. "
        "Compare rows by bits per weight (K x b), never by b alone.",
        markdown_table(["bits", "terms", "bits/weight", "weight rel. error", "rate", "output rel. error", "metric",
                        "measured dL"],
                       [[r["bits"], r["terms"], r["bits_per_weight"], r["weight_rel_error"], r["rate"],
                         r["output_rel_error"], f"{r['metric']:.4f}", r["measured_dloss"]] for r in series])]


def _pareto_figure(points: Sequence[Any], fp_metric: float, metric: str, model: str, out: Path) -> list[str]:
    """Each mode's measured metric against its compression (x vs FP32), the FP32 metric dashed; the files saved."""
    fig, ax = new_figure(6.4, 4.0)
    for mode in [*MODES, "joint, compact mode (predicted dL <= 0)"]:
        pts = sorted((p.ratio, p.metric) for p in points if p.mode == mode)
        if pts:
            ax.plot(*zip(*pts), "o-" if "compact" not in mode else "*", ms=4 if "compact" not in mode else 12,
                    label=mode)
    ax.axhline(fp_metric, color="k", ls="--", lw=0.8, label="FP32")
    ax.set_xlabel("compression vs FP32 (x, values only)")
    ax.set_ylabel(metric)
    ax.set_title(f"{model}: compression levels")
    ax.legend(fontsize=7)
    return save_figure(fig, out, "levels_pareto", ("png", "svg"))


def _winners(points: Sequence[Any], budgets: Sequence[float]) -> list[list[str]]:
    """One row per budget: the best mode, its metric, and every mode's metric ("infeasible" where it has none)."""
    rows = []
    for b in budgets:
        at = [p for p in points if p.budget_bits == b]
        if at:
            best = max(at, key=lambda p: p.metric)
            rows.append([f"{b:g}", best.mode, f"{best.metric:.4f}"] +
                        [next((f"{p.metric:.4f}" for p in at if p.mode == m), "infeasible") for m in MODES])
    return rows


def _llc_section(point: Any, status: str, ranks: Mapping[str, int | None]) -> str:
    """The report's paragraph and table on LLC's rank rule (``point``: the compact plan measured, or None with
    the solve's ``status``)."""
    return ("Per layer, the smallest rank whose error lies in the lossless neighbourhood (|d| within the directional "
            "radius 2|g.d^|/(d^'H d^), g.d < 0); layers with none keep 8-bit weights. The compact solve minimises "
            "size subject to predicted dL <= 0."
            + (f" Result: {point.avg_bits:.3f} avg bits ({point.ratio:.1f}x), metric {point.metric:.4f}, "
               f"measured dL {point.measured:.4g}." if point else f" Result: {status}.")
            + "\n\n" + markdown_table(["layer", "smallest lossless rank"],
                                       [[n, "-" if r is None else r] for n, r in ranks.items()]))
