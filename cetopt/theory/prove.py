"""``cetopt prove MODEL``: run the seven checks of the CET geometry on a zoo model and write a markdown
report with plots (and the equal-size comparison table)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from cetopt._atomic import atomic_write_text
from cetopt.curvature.extract import CurvatureSettings
from cetopt.theory.allocation import (PlanMeasurement, _vs_fp, check_allocation, equal_size_figure,
                                      equal_size_table, smallest_lossless)
from cetopt.theory.axes import check_complementary, check_major_axis
from cetopt.theory.lossless import check_lossless
from cetopt.theory.spectra import check_quadric_types
from cetopt.theory.context import ProofContext
from cetopt.theory.prediction import check_additivity, check_per_layer_prediction
from cetopt.theory.plan_prediction import check_plan_prediction
from cetopt.tables import markdown_table
from cetopt.theory.report import CheckResult, render_report, text_summary

CHECKS: dict[int, Callable[..., CheckResult]] = {
    1: check_per_layer_prediction, 2: check_quadric_types, 3: check_major_axis, 4: check_complementary,
    5: check_lossless, 6: check_additivity, 7: check_allocation, 8: check_plan_prediction,
}


def _equal_size_section(ctx: ProofContext, rows: Sequence[PlanMeasurement], lossless: dict[str, PlanMeasurement | None],
                        figures: Sequence[str]) -> str:
    fp = ctx.metric()
    table = markdown_table(
        ["avg bits", "method", "achieved bits", "packed x", "predicted dL", "measured dL", "test metric",
         "vs FP, points [95% CI]", "status"],
        [[f"{r.budget_bits:g}", r.label, f"{r.avg_bits:.3f}", f"{r.packed_ratio:.2f}",
          "-" if r.predicted is None else r.predicted, r.measured, f"{r.metric:.4f}", r.vs_fp or "-", r.status]
         for r in rows])
    smallest = markdown_table(
        ["method", "smallest avg bits with validation metric >= FP", "packed x vs FP32", "test metric",
         "test vs FP, points [95% CI]"],
        [[k, "none on the grid" if m is None else f"{m.avg_bits:.3f}",
          "-" if m is None else f"{m.packed_ratio:.2f}x", "-" if m is None else f"{m.metric:.4f}",
          "-" if m is None else (m.vs_fp or "-")] for k, m in lossless.items()])
    figs = "\n\n".join(f"![equal size]({f})" for f in figures)
    return (f"## Equal-size comparison\n\nFP32 test metric {fp:.4f}. Every plan quantises the same layers to the "
            "same average bits (uniform: every layer at that width); predicted dL is each method's own objective; "
            "'packed x' is FP32 size over the packed size of the whole model (codes, scales and every unquantised "
            "parameter, cetopt.quant.plan.apply_plan); the CI is a paired bootstrap over test examples (a tie when "
            f"it contains 0).\n\n{figs}\n\n{table}\n\n### Smallest size without loss vs FP\n\n"
            "Selected on the validation split (the grid's smallest average bits whose validation accuracy is at "
            f"least the FP model's); reported on the test set.\n\n{smallest}")


def prove(model: str, outdir: str | os.PathLike[str], *, checks: Sequence[int] = tuple(CHECKS),
          table_bits: Sequence[int] = (3, 4, 5), lossless_search: bool = True, k: int = 16,
          lanczos_iterations: int = 48, log: Callable[[str], None] = lambda _: None) -> list[CheckResult]:
    """Run ``checks`` on zoo model ``model``; write ``outdir/report.md``, its plots and ``results.json``.

    ``k`` eigenpairs per end of every layer's spectrum from ``lanczos_iterations`` Lanczos steps (the report's
    preamble states both; the curvature is cached per settings)."""
    from cetopt.modelspec import load_model_spec

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    task = load_model_spec(model)
    ctx = ProofContext.create(task, settings=CurvatureSettings(k=k, lanczos_iterations=lanczos_iterations))
    log(f"curvature of {len(ctx.quadrics)} layers ready ({time.perf_counter() - start:.1f} s)")
    results = []
    for number in checks:
        mark = time.perf_counter()
        results.append(CHECKS[number](ctx, out))
        log(f"check {number}: {results[-1].verdict.value} ({time.perf_counter() - mark:.1f} s)")
    sections = []
    table_rows: list[PlanMeasurement] = []
    lossless: dict[str, PlanMeasurement | None] = {}
    if table_bits:
        table_rows = equal_size_table(ctx, table_bits)
        if lossless_search:
            lossless = {"cet": smallest_lossless(ctx, "cet"),
                        "cet-nograd + major-axis rounding": smallest_lossless(ctx, "cet-nograd", {"rounding": "major-axis"})}
            from cetopt.solvers.api import solve

            llc = ctx.built("llc", avg_bits=None)
            r = solve(llc.problem, "dp")
            if r.success:
                weights = llc.compressed_weights(dict(r.bits))
                bits = dict(r.bits)
                lossless["llc (minimise size s.t. predicted dL <= 0)"] = PlanMeasurement(
                    "llc", float("nan"), sum(ctx.weights[n].numel() * b for n, b in bits.items())
                    / sum(w.numel() for w in ctx.weights.values()), r.objective, ctx.dloss(weights), ctx.metric(weights),
                    r.status.value, ctx.packed_ratio(bits), ctx.validation_metric(weights), bits, _vs_fp(ctx, weights))
        figures = equal_size_figure(table_rows, ctx.metric(), out, f"{model}: metric at equal size")
        sections.append(_equal_size_section(ctx, table_rows, lossless, figures))
    preamble = (f"Model **{model}** ({task.data}); {len(ctx.quadrics)} quantisable layers; calibration loss "
                f"{ctx.base_loss:.5f}; curvature: k = {ctx.settings.k} eigenpairs per end (block Lanczos, "
                f"{ctx.settings.lanczos_iterations} iterations), Hutchinson traces; candidate bits {list(ctx.bits)}; "
                f"quantiser: symmetric per-channel round-to-nearest unless stated. Measured = mean calibration loss "
                f"change. Generated by `cetopt prove {model}` in {time.perf_counter() - start:.0f} s.")
    atomic_write_text(out / "report.md", render_report(f"CET checks on {model}", preamble, results, sections))
    from cetopt.fingerprint import fingerprint_spec

    atomic_write_text(out / "results.json", json.dumps({
        "model": model, "fp_metric": ctx.metric(), "fingerprint": fingerprint_spec(task).as_metadata(),
        "weights": task.metadata.get("weights"), "checks": [{"number": c.number, "title": c.title, "verdict": c.verdict.value, "value": c.value,
                                     "tolerance": c.tolerance, "data": c.data} for c in results],
        "equal_size": [asdict(r) for r in table_rows],
        "smallest_lossless": {k: (asdict(v) if v else None) for k, v in lossless.items()}}, indent=1, default=str))
    log(text_summary(results))
    return results
