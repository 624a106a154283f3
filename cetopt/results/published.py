"""The README's example of every exact backend on HAWQ-V3's published ResNet-18 problem
(problems/hawq-v3/resnet18-size0.5.json), solved when the section is generated. Times are left out (they belong
to the speed section, which measures them properly), so the section is the same on every run."""

from __future__ import annotations

from pathlib import Path

from cetopt.tables import markdown_table

PROBLEM = Path(__file__).resolve().parents[2] / "problems" / "hawq-v3" / "resnet18-size0.5.json"
BACKENDS = ("dp", "highs", "ortools-mip", "ortools", "greedy", "cvxpy")


def published_section() -> str:
    """Status, objective, certified bound and gap of each backend on the published problem."""
    from cetopt.problem.io import load_problem
    from cetopt.solvers.api import solve

    problem = load_problem(PROBLEM)
    rows = []
    for name in BACKENDS:
        r = solve(problem, name, time_limit=60)
        rows.append([f"`{name}`", r.status.value, f"{r.objective:.8g}" if r.objective is not None else "-",
                     f"{r.bound:.8g}" if r.bound is not None else "-", f"{r.gap:.1e}" if r.gap is not None else "-",
                     f"{r.avg_bits:.3f}" if r.avg_bits is not None else "-"])
    return "\n\n".join([
        f"HAWQ-V3's published ResNet-18 problem ({len(problem.layers)} layers, size budget {problem.budget.avg_bits:g} "
        "average bits; `cetopt compare problems/hawq-v3/resnet18-size0.5.json` prints the same with times):",
        markdown_table(["backend", "status", "objective", "certified bound", "gap", "avg bits"], rows)])
