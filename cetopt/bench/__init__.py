"""The quality benchmark (``cetopt bench``): problems/ x solvers/ x budgets -> one tidy table -> plots."""

from cetopt.bench.runner import BenchSpec, run_bench

__all__ = ["BenchSpec", "run_bench"]
