"""The markdown summary of a bench run: solvers against each other (time ratios vs a reference MILP
solver measured in the same run, gaps), and methods against each other on the zoo's measured metric."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from cetopt._atomic import atomic_write_text
from cetopt.bench.store import number as _num
from cetopt.solvers.result import relative_gap
from cetopt.tables import markdown_table

REFERENCE_SOLVER = "highs"  # a general MILP solver, as HAWQ-V3 solves its ILP (PuLP/CBC); ratios are vs it


def solver_table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Per solver: cells, statuses, median seconds, median time ratio vs the reference, worst gap and
    worst objective excess over the best objective found in the same cell."""
    best: dict[tuple[str, float], float] = {}
    ref: dict[tuple[str, float], float] = {}
    for r in rows:
        if r["kind"] != "solver" or _num(r["objective"]) is None:
            continue
        key = (r["problem"], float(r["budget_avg_bits"]))
        best[key] = min(best.get(key, float("inf")), float(r["objective"]))
        if r["solver"] == REFERENCE_SOLVER and _num(r["seconds"]):
            ref[key] = float(r["seconds"])
    by_solver: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "solver":
            by_solver[r["solver"]].append(r)
    table = []
    for solver, items in sorted(by_solver.items()):
        statuses = defaultdict(int)
        for r in items:
            statuses[r["status"]] += 1
        seconds = [float(r["seconds"]) for r in items if _num(r["seconds"]) is not None]
        ratios = [float(r["seconds"]) / ref[(r["problem"], float(r["budget_avg_bits"]))] for r in items
                  if _num(r["seconds"]) and ref.get((r["problem"], float(r["budget_avg_bits"])))]
        gaps = [float(r["gap"]) for r in items if _num(r["gap"]) is not None]
        excess = [relative_gap(float(r["objective"]), best[(r["problem"], float(r["budget_avg_bits"]))])
                  for r in items if _num(r["objective"]) is not None]
        table.append([solver, len(items), ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
                      f"{statistics.median(seconds):.4f}" if seconds else "-",
                      f"{statistics.median(ratios):.3g}x" if ratios else "-",
                      f"{max(gaps):.2e}" if gaps else "-", f"{max(excess):.2e}" if excess else "-"])
    return (["solver", "cells", "statuses", "median solver s", f"median solver time / {REFERENCE_SOLVER}", "worst gap",
             "worst gap to best found"], table)


def _paired(a: dict[str, Any], b: dict[str, Any] | None) -> str:
    """CET minus a baseline on the same test examples, with its 95% paired bootstrap CI ("tie" when it holds 0)."""
    from cetopt.bench.store import decode_outcomes
    from cetopt.stats import paired_bootstrap_ci

    if b is None:
        return "-"
    x, y = decode_outcomes(a.get("outcomes")), decode_outcomes(b.get("outcomes"))
    if x is None or y is None or x.shape != y.shape:
        return f"{float(a['metric']) - float(b['metric']):+.4f} (no CI)" if _num(b.get("metric")) is not None else "-"
    ci = paired_bootstrap_ci(x, y)
    verdict = "tie" if ci.low <= 0.0 <= ci.high else ("ahead" if ci.low > 0 else "behind")
    return f"{ci.estimate:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}] {verdict}"


def quality_table(rows: Sequence[dict[str, Any]], solver: str = "dp") -> tuple[list[str], list[list[Any]]]:
    """Per zoo problem and budget: the measured metric of the plan (``solver``), HAWQ-V3 and uniform, and the
    plan's paired differences to both with 95% bootstrap CIs over the test examples."""
    cells: dict[tuple[str, float], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        if _num(r.get("metric")) is not None:
            cells[(r["problem"], float(r["budget_avg_bits"]))][r["solver"]] = r
    table = []
    for (problem, budget), by in sorted(cells.items()):
        if solver not in by:
            continue
        cet = by[solver]
        fp = float(cet["fp_metric"])

        def metric(name: str) -> str:
            return f"{float(by[name]['metric']):.4f}" if name in by else "-"

        table.append([problem, cet.get("method") or "-", f"{budget:g}", cet["metric_name"], f"{fp:.4f}",
                      metric(solver), metric("hawq-v3"), metric("uniform"), _paired(cet, by.get("hawq-v3")),
                      _paired(cet, by.get("uniform")), f"{float(cet['packed_ratio']):.2f}x"])
    return (["problem", "cost model", "avg bits", "metric", "FP32", f"plan ({solver})", "HAWQ-V3", "uniform",
             "plan - HAWQ-V3 [95% CI]", "plan - uniform [95% CI]", "packed vs FP32"], table)


def write_summary(out: Path, rows: Sequence[dict[str, Any]], command: str = "cetopt bench") -> Path:
    """Write ``summary.md`` (and return its path)."""
    versions = json.loads(rows[0]["versions"]) if rows else {}
    solver_header, solver_rows = solver_table(rows)
    quality_header, quality_rows = quality_table(rows)
    problems = sorted({r["problem"] for r in rows})
    text = "\n\n".join([
        "# cetopt bench summary",
        f"{len(rows)} cells over {len(problems)} problems ({', '.join(problems)}). Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + f". Regenerate: `{command}`; rows: results.csv.",
        "## Measured quality at equal size (zoo models)",
        "plan = the problem file's own cost model (its name in the second column) solved exactly by dp; HAWQ-V3 = "
        "Hessian trace x |d|^2 at the same budget, on the same model (fingerprints checked); uniform = every layer at "
        "the budget's bit-width. Metric: test accuracy (digits, MNIST-1D), top-1 agreement with FP32 (MobileNetV2), "
        "cosine to FP32 embeddings (MiniLM). Differences carry a 95% paired bootstrap CI over the same test examples "
        "(cetopt.stats, 2,000 resamples); 'tie' when the CI holds 0.",
        markdown_table(quality_header, quality_rows) if quality_rows else "(no zoo problems in this run)",
        f"## Solvers (solver time, SolveResult.seconds; ratios vs {REFERENCE_SOLVER} in the same run)",
        markdown_table(solver_header, solver_rows),
    ]) + "\n"
    return atomic_write_text(out / "summary.md", text)
