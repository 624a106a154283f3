"""Write and execute the notebooks (their sources live here, so a diff shows what changed).

    python notebooks/build.py            # write 0*.ipynb and execute them in place with outputs
    python notebooks/build.py --no-run   # only write the sources

tests/test_notebooks.py executes every notebook again, top to bottom, so none can rot.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from cetopt._atomic import atomic_write_text

HERE = Path(__file__).resolve().parent

SWAP = [
    new_markdown_cell("# 01 Swap solvers\n\nOne problem from the zoo (a 1-D ResNet on MNIST-1D, CET losses "
                      "g.d + 1/2 d'Hd from exact Hessian-vector products), solved by every backend with one line "
                      "each. Every answer is re-scored by `cetopt.solve`, so the objectives are comparable."),
    new_code_cell("from cetopt import load_problem, solve\n"
                  "from cetopt.problem.model import Budget\n"
                  "problem = load_problem('../problems/mnist1d/mnist1d-resnet-cet-avg3.json')\n"
                  "print(problem.name, len(problem.layers), 'layers,', len(problem.ties), 'tie groups, budget', problem.budget)"),
    new_markdown_cell("## One line per backend"),
    new_code_cell("dp = solve(problem, 'dp')\n"
                  "highs = solve(problem, 'highs')\n"
                  "cpsat = solve(problem, 'ortools', time_limit=10)\n"
                  "mip = solve(problem, 'ortools-mip')\n"
                  "greedy = solve(problem, 'greedy')\n"
                  "relaxed = solve(problem, 'cvxpy')\n"
                  "water = solve(problem, 'waterfilling')\n"
                  "from_config = solve(problem, '../solvers/ortools-10s.toml')  # a solver-zoo config file"),
    new_code_cell("from cetopt.tables import format_table\n"
                  "results = [dp, highs, cpsat, mip, greedy, relaxed, water, from_config]\n"
                  "print(format_table(['solver', 'status', 'objective', 'bound', 'gap', 'avg bits', 'seconds'],\n"
                  "    [[r.solver, r.status.value, f'{r.objective:.6f}', '-' if r.bound is None else f'{r.bound:.6f}',\n"
                  "      '-' if r.gap is None else f'{r.gap:.1e}', f'{r.avg_bits:.3f}', f'{r.seconds:.3f}'] for r in results]))\n"
                  "exact = [r.objective for r in (dp, highs, cpsat, mip)]\n"
                  "assert max(exact) - min(exact) <= 1e-6 * max(1, abs(dp.objective)), exact\n"
                  "assert greedy.bound <= dp.objective + 1e-9 and relaxed.bound <= dp.objective + 1e-9"),
    new_markdown_cell("The exact backends agree; the greedy walk and the convex relaxation give lower bounds "
                      "below the optimum (their certificates), and the water-filling relaxation is a model with no "
                      "bound. Where the plans differ, bit by bit:"),
    new_code_cell("import matplotlib.pyplot as plt\n"
                  "fig, ax = plt.subplots(figsize=(8, 3))\n"
                  "for r in (dp, greedy, water):\n"
                  "    ax.step(range(len(problem.layers)), [r.bits[l.name] for l in problem.layers], where='mid', label=r.solver)\n"
                  "ax.set_xlabel('layer'); ax.set_ylabel('bits'); ax.legend(); plt.show()"),
    new_markdown_cell("## A budget sweep and a new backend in a few lines\n\nA backend is a class with `run()`; "
                      "registering it makes it a solver name like any other."),
    new_code_cell("import numpy as np\n"
                  "from cetopt.solvers.base import Solver, Capabilities\n"
                  "from cetopt.solvers.result import Outcome, Status\n"
                  "from cetopt.solvers.registry import register, unregister\n\n"
                  "class MostPrecise(Solver):\n"
                  "    '''Every layer at its most precise option (a strawman to show the contract).'''\n"
                  "    name = 'most-precise'\n"
                  "    capabilities = Capabilities(interactions=True)\n"
                  "    def run(self, compiled, options, *, time_limit, seed):\n"
                  "        option = np.array([int(np.argmax(g.size)) for g in compiled.groups])\n"
                  "        return Outcome(Status.FEASIBLE, choice_index=option)\n\n"
                  "unregister('most-precise'); register('most-precise', MostPrecise)\n"
                  "for avg in (3, 4, 6, 8):\n"
                  "    r = solve(problem.with_budget(Budget(avg_bits=avg)), 'most-precise')\n"
                  "    print(avg, r.status.value, r.message[:80])"),
    new_markdown_cell("`cetopt.solve` re-checks every answer: the strawman's plan breaks the smaller budgets, so "
                      "it is reported as an error, not as a plan."),
    new_markdown_cell("## Your own model, shipped\n\nThe README's 'Your own model' in Python: a ModelSpec (model, "
                      "calibration batches, loss, evaluation), its problem, a plan, and a packed artefact "
                      "(model.safetensors + plan.json + manifest.json) loaded back and measured."),
    new_code_cell("import tempfile, torch\n"
                  "from sklearn.datasets import load_wine\n"
                  "from cetopt import (Budget, ModelSpec, build_for, evaluate_artifact, load_compressed,\n"
                  "                    plan_from_result, solve, write_artifact)\n"
                  "torch.manual_seed(0)\n"
                  "x, y = load_wine(return_X_y=True)\n"
                  "order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))\n"
                  "x, y = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)[order], torch.tensor(y)[order]\n"
                  "model = torch.nn.Sequential(torch.nn.Linear(13, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))\n"
                  "opt = torch.optim.Adam(model.parameters(), 1e-2)\n"
                  "for _ in range(200):  # your own training\n"
                  "    opt.zero_grad(); torch.nn.functional.cross_entropy(model(x[:128]), y[:128]).backward(); opt.step()\n"
                  "spec = ModelSpec(name='wine-mlp', model=model.eval(),\n"
                  "                 calibration=[(x[i:i + 32], y[i:i + 32]) for i in range(0, 128, 32)],\n"
                  "                 loss_fn=lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]),\n"
                  "                 evaluate=lambda m: {'accuracy': float((m(x[128:]).argmax(1) == y[128:]).float().mean())})\n"
                  "built = build_for(spec, budget=Budget(avg_bits=4))\n"
                  "plan = plan_from_result(built.problem, solve(built.problem, 'dp'))\n"
                  "out = tempfile.mkdtemp()\n"
                  "info = write_artifact(spec, plan, out)\n"
                  "print({n: c.label for n, c in plan.layers.items()})\n"
                  "print(f'{info.file_bytes} bytes on disk = packed {info.predicted_bytes} + header '\n"
                  "      f'{info.file_bytes - info.data_bytes}; packed ratio {info.size.ratio:.2f}')\n"
                  "loaded = load_compressed(out, spec).model\n"
                  "with torch.no_grad():\n"
                  "    fake = built.apply(spec.model, plan.bits)  # the candidates the problem scored\n"
                  "    print('max |loaded - fake-quantised| =', float((loaded(x) - fake(x)).abs().max()))\n"
                  "evaluate_artifact(out, spec)"),
]

PROOFS = [
    new_markdown_cell("# 02 Reproduce the allocation proofs\n\nThe numerical checks of the CET geometry and the "
                      "whole-plan prediction check (`cetopt prove`), on the digits MLP (the smallest zoo model: "
                      "shipped weights, SHA-256 checked). Each "
                      "check states the claim, the statistic, the tolerance and the verdict."),
    new_code_cell("import tempfile\n"
                  "from IPython.display import Image, Markdown, display\n"
                  "from cetopt.modelspec import load_model_spec\n"
                  "from cetopt.theory.context import ProofContext\n"
                  "from cetopt.theory.prove import CHECKS\n"
                  "ctx = ProofContext.create(load_model_spec('digits-mlp'))\n"
                  "figures = tempfile.mkdtemp()\n"
                  "for name, q in ctx.quadrics.items():\n"
                  "    print(f'{name}: {q.kind.value}, lambda in [{q.lambda_min:.2e}, {q.lambda_max:.2e}], mean rest {q.rest:.2e}')"),
    new_code_cell("results = {}\n"
                  "for number, check in CHECKS.items():\n"
                  "    results[number] = c = check(ctx, figures)\n"
                  "    display(Markdown(f'**{c.number}. {c.title}: {c.verdict.value}.** {c.claim}  \\n'\n"
                  "                     f'{c.statistic} = {c.value} (tolerance {c.tolerance})'))\n"
                  "    for f in c.figures:\n"
                  "        display(Image(filename=f'{figures}/{f}', width=420))"),
    new_markdown_cell("## The equal-size comparison\n\nUniform precision, HAWQ-V3, each CET switch, LLC and major-axis "
                      "rounding at the same average bits, measured on the test set."),
    new_code_cell("from cetopt.theory.allocation import equal_size_table\n"
                  "from cetopt.tables import format_table\n"
                  "rows = equal_size_table(ctx, (3, 4))\n"
                  "fp = ctx.metric()\n"
                  "print(f'FP32 accuracy {fp:.4f}')\n"
                  "print(format_table(['bits', 'method', 'achieved', 'measured dL', 'accuracy', 'vs FP'],\n"
                  "    [[f'{r.budget_bits:g}', r.label, f'{r.avg_bits:.3f}', f'{r.measured:.5f}', f'{r.metric:.4f}',\n"
                  "      f'{r.metric - fp:+.4f}'] for r in rows]))"),
    new_markdown_cell("Full reports with every table: docs/results/cet-checks/ (digits-mlp, digits-cnn, "
                      "mnist1d-resnet), regenerated by `cetopt prove MODEL --out DIR`."),
]

BENCH = [
    new_markdown_cell("# 03 Benchmark the zoo\n\nA small `cetopt bench`: the digits and MNIST-1D problems and a "
                      "synthetic one, four solvers, four budgets, with uniform and HAWQ-V3 baselines measured on the "
                      "models. The full quick run (`cetopt bench --quick --out docs/bench`) is in docs/bench."),
    new_code_cell("import tempfile\n"
                  "import pandas as pd\n"
                  "from IPython.display import Image, Markdown, display\n"
                  "from cetopt.bench import BenchSpec, run_bench\n"
                  "spec = BenchSpec(problems=['../problems/digits/*.json', '../problems/mnist1d/*.json',\n"
                  "                           '../problems/synthetic/synthetic-50x6-s0.json'],\n"
                  "                 solvers=['../solvers/dp.toml', '../solvers/greedy.toml', '../solvers/highs.toml', 'waterfilling'],\n"
                  "                 budgets=[2.5, 3, 4, 6], time_limit=30)\n"
                  "out = tempfile.mkdtemp()\n"
                  "result = run_bench(spec, out, show_progress=False)\n"
                  "print(result.ran, 'cells')"),
    new_code_cell("table = pd.read_csv(f'{out}/results.csv')\n"
                  "table[['problem', 'budget_avg_bits', 'solver', 'status', 'objective', 'gap', 'seconds', 'metric']].head(12)"),
    new_code_cell("display(Markdown(open(f'{out}/summary.md').read()))"),
    new_code_cell("for name in ('pareto', 'solve_time', 'predicted_vs_measured', 'bits_along_depth'):\n"
                  "    display(Image(filename=f'{out}/{name}.png', width=700))"),
]

NOTEBOOKS = {"01_swap_solvers.ipynb": SWAP, "02_reproduce_proofs.ipynb": PROOFS, "03_benchmark_zoo.ipynb": BENCH}


def execute(path: Path, timeout: int = 900) -> nbformat.NotebookNode:
    """Run a notebook top to bottom in its folder (raises on the first failing cell)."""
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-run", action="store_true")
    args = parser.parse_args(argv)
    for name, cells in NOTEBOOKS.items():
        notebook = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                      "language": "python"}})
        path = HERE / name
        atomic_write_text(path, nbformat.writes(notebook))
        if not args.no_run:
            executed = execute(path)
            atomic_write_text(path, nbformat.writes(executed))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
