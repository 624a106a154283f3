"""The ``cetopt`` command line.

Exit codes: 0 success; 1 infeasible or no solution (the message gives the smallest feasible budget); 2 bad input
(problem, model, option, config: the message names the field and the fix); 3 a computation failed (NaN/inf
curvature, a diverging eigen-solver); 130 interrupted.
Results go to stdout (``--format json`` prints exactly one JSON object); logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from cetopt.cli_args import MAX_SEED, check_out_target, float_in, int_in
from cetopt.errors import CetoptError, ProblemError, SolverOptionError, SolverUnavailableError, \
    UnsupportedProblemError

EXIT_OK, EXIT_INFEASIBLE, EXIT_BAD_INPUT, EXIT_FAILED = 0, 1, 2, 3

log = logging.getLogger("cetopt")

_BUDGET_FLAGS = (("avg_bits", "--avg-bits"), ("size_bits", "--size-bits"), ("size_bytes", "--size-bytes"),
                 ("ratio", "--ratio"), ("bops", "--bops"), ("max_loss", "--max-loss"))


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_options(items: Sequence[str]) -> dict[str, Any]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SolverOptionError(f"--option expects KEY=VALUE, got {item!r}")
        options[key.strip().replace("-", "_")] = _option_value(value)
    return options


def _add_budget_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("budget overrides (replace the file's budget when any is given)")
    group.add_argument("--avg-bits", type=float_in(0.0), help="mean bits per weight")
    group.add_argument("--size-bits", type=float, help="total size in bits")
    group.add_argument("--size-bytes", type=float, help="total size in bytes")
    group.add_argument("--ratio", type=float, help="compression ratio vs FP32")
    group.add_argument("--bops", type=float, help="total bit-operations")
    group.add_argument("--max-loss", type=float, help="bound on the total predicted loss change")
    parser.add_argument("--minimize", choices=("loss", "size"), help="override what is minimised")


def _load_with_overrides(args: argparse.Namespace) -> Any:
    from cetopt.problem.io import load_problem
    from cetopt.problem.model import Budget

    problem = load_problem(args.problem)
    given = {key: getattr(args, key) for key, _ in _BUDGET_FLAGS if getattr(args, key) is not None}
    changes: dict[str, Any] = {}
    if given:
        changes["budget"] = Budget(**given)
    if args.minimize:
        changes["minimize"] = args.minimize
    return problem.with_changes(**changes) if changes else problem


def _exit_code(status: Any) -> int:
    return EXIT_OK if status.value in ("optimal", "feasible") else EXIT_INFEASIBLE


def cmd_solve(args: argparse.Namespace) -> int:
    from cetopt.solvers.api import solve
    from cetopt.solvers.result import SolveInterrupted
    from cetopt.tables import result_table

    if args.out:
        check_out_target(args.out)
    problem = _load_with_overrides(args)
    solver: Any = args.solver_config if args.solver_config else args.solver
    try:
        result = solve(problem, solver, time_limit=args.time_limit, seed=args.seed, **_parse_options(args.option))
    except SolveInterrupted as stop:  # Ctrl-C: print the incumbent (if any), then exit 130
        print(json.dumps(stop.result.to_dict(), allow_nan=False) if args.format == "json" else
              result_table(stop.result))
        raise
    if args.format == "json":
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print(result_table(result))
    if args.out and not result.success:
        print(f"no plan written to {args.out}: the solve ended {result.status.value}", file=sys.stderr)
    elif args.out:
        from cetopt.quant.plan import plan_from_result

        plan = plan_from_result(problem, result)
        plan = type(plan)(layers=plan.layers, quantizer=plan.quantizer, model=plan.model, problem=plan.problem,
                          extra={**plan.extra, "result": result.to_dict()})
        plan.save(args.out)
        print(f"wrote plan {args.out} (cetopt.plan/2; apply it with: cetopt apply {args.out} --model MODEL --out DIR)",
              file=sys.stderr)
    return _exit_code(result.status)


def _budget_rows(problem: Any, results: Sequence[Any]) -> list[list[str]]:
    """Per result: budget used and left unused (size), and the packed ratio (cetopt.quant.pack)."""
    from cetopt.quant.pack import budget_left, problem_packed_size
    from cetopt.quant.plan import plan_from_result

    rows = []
    for r in results:
        if not r.success:
            continue
        left = budget_left(problem, r.size_bits)
        packed = problem_packed_size(problem, plan_from_result(problem, r))
        rows.append([r.solver, f"{r.avg_bits:.3f}", "-" if left is None else f"{left / problem.total_params:.3f}",
                     "-" if left is None else f"{100 * left / problem.max_size_bits:.1f}%",
                     "-" if packed is None else f"{packed.ratio:.2f}"])
    return rows


def cmd_compare(args: argparse.Namespace) -> int:
    from cetopt.solvers.api import solve
    from cetopt.solvers.registry import available_solvers
    from cetopt.tables import bits_table, comparison_table

    problem = _load_with_overrides(args)
    names = args.solvers.split(",") if args.solvers else \
        [s.name for s in available_solvers() if s.installed and s.name != "bruteforce"]
    results = []
    for name in names:
        try:
            results.append(solve(problem, name, time_limit=args.time_limit, seed=args.seed))
        except UnsupportedProblemError as err:
            print(f"skipped {name}: {'; '.join(err.reasons)}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in results], allow_nan=False))
    else:
        print(f"problem {problem.name}: {len(problem.layers)} layers, {problem.total_params} params, "
              f"budget {problem.budget}")
        print(comparison_table(results))
        from cetopt.tables import format_table

        rows = _budget_rows(problem, results)
        if rows:
            print()
            print(format_table(["solver", "avg_bits", "unused_avg_bits", "unused_budget", "packed_ratio"], rows))
            print("unused budget: the size limit minus the plan's size; an optimal plan leaves budget unused when no "
                  "larger candidate lowers the objective or no swap fits. ratio above: weights at their bits only; "
                  "packed_ratio: the stored model (codes, scales, other parameters at 32 bits), as `cetopt apply` "
                  "writes it")
        if args.bits:
            print()
            print(bits_table(results, problem.layer_names))
    return EXIT_OK if results and all(r.success for r in results) else EXIT_INFEASIBLE


def cmd_solvers(args: argparse.Namespace) -> int:
    from cetopt.solvers.registry import available_solvers
    from cetopt.tables import format_table

    rows = [[s.name, "yes" if s.installed else "no", "yes" if s.exact else "no", s.description]
            for s in available_solvers()]
    print(format_table(["backend", "installed", "exact", "description"], rows))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from cetopt.problem.compiled import compile_problem
    from cetopt.problem.feasibility import budget_shortfalls, floors
    from cetopt.problem.io import load_problem

    for path in args.problems:
        problem = load_problem(path)
        compiled = compile_problem(problem)
        low = floors(compiled)
        print(f"{path}: ok: {len(problem.layers)} layers, {compiled.n_groups} groups, "
              f"{problem.total_params} params; smallest avg_bits {low.avg_bits:.4g}")
        for line in budget_shortfalls(compiled):
            print(f"  warning: {line}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from cetopt.problem.schema import PROBLEM_SCHEMA

    print(json.dumps(PROBLEM_SCHEMA, indent=1))
    return EXIT_OK


def cmd_make_problem(args: argparse.Namespace) -> int:
    from cetopt.problem.io import save_problem

    check_out_target(args.out)
    if args.kind == "hawq-v3-resnet18":
        from cetopt.problem.published import hawq_v3_resnet18

        problem = hawq_v3_resnet18(constraint=args.constraint, alpha=args.alpha)
    else:
        from cetopt.problem.synthetic import synthetic_problem

        problem = synthetic_problem(args.layers, n_choices=args.choices, seed=args.seed, avg_bits=args.avg_bits)
    save_problem(problem, args.out)
    print(f"wrote {args.out}: {problem.name}, {len(problem.layers)} layers")
    return EXIT_OK


def cmd_extract(args: argparse.Namespace) -> int:
    from cetopt.modelspec import load_model_spec
    from cetopt.problem.io import save_problem
    from cetopt.problem.model import Budget
    from cetopt.workflow import build_for

    bits = _int_list(args.bits, "--bits")
    budget = None if args.method == "llc" else Budget(avg_bits=args.avg_bits)
    from cetopt import distributed

    distributed.init_from_env()  # under torchrun: ranks share the calibration batches, sums are all-reduced
    spec = load_model_spec(args.model)
    problem = build_for(spec, bits=bits, method=args.method, budget=budget, rounding=args.rounding,
                        interactions=args.interactions, target=args.model).problem
    if distributed.is_rank_zero():  # every rank holds the same problem; one writes it (atomically)
        save_problem(problem, args.out)
        print(f"wrote {args.out}: {problem.name}, {len(problem.layers)} layers, bits {bits}"
              + (f" ({distributed.world_size()} ranks)" if distributed.is_distributed() else ""))
    distributed.barrier()
    return EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    from cetopt.quant.plan import Plan

    plan = Plan.load(args.plan)
    target = args.model or plan.model
    if not target:
        raise ProblemError("the plan names no model; pass --model (zoo name, module:function or file.py:function)",
                           field="--model")
    from cetopt.artifact import write_artifact
    from cetopt.modelspec import load_model_spec

    info = write_artifact(load_model_spec(target), plan, args.out, target=target)
    print(f"wrote {info.directory}: model.safetensors {info.file_bytes} bytes = packed size {info.predicted_bytes} "
          f"(buffers {info.buffer_bytes} included) + header {info.file_bytes - info.data_bytes}; packed ratio "
          f"{info.size.ratio:.2f} vs FP32; plan.json, manifest.json")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cetopt.artifact import evaluate_artifact, read_manifest
    from cetopt.modelspec import load_model_spec

    target = args.model or str(read_manifest(args.directory).get("target", ""))
    if not target:
        raise ProblemError("the artefact names no model; pass --model", field="--model")
    report = evaluate_artifact(args.directory, load_model_spec(target))
    if args.format == "json":
        print(json.dumps(report, allow_nan=False))
        return EXIT_OK
    metric = report["metric_name"]
    print(f"{args.directory}: {report['model']}, {report['layers']} packed layers, {report['file_bytes']} bytes on disk, "
          f"packed ratio {report['packed_ratio']:.2f} vs FP32")
    if metric is not None:
        print(f"{metric}: {report['metric']:.4f} (FP32 {report['fp_metric']:.4f})")
    print(f"calibration loss change: {report['calibration_dloss']:+.6f}")
    if report["validation_dloss"] is not None:
        print(f"validation loss change: {report['validation_dloss']:+.6f}")
    return EXIT_OK


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ProblemError(f"{option} expects comma-separated integers, got {text!r}") from None


def _float_list(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ProblemError(f"{option} expects comma-separated numbers, got {text!r}") from None


def cmd_bench(args: argparse.Namespace) -> int:
    from cetopt.bench.runner import QUICK_BUDGETS, QUICK_PROBLEMS, QUICK_SOLVERS, BenchSpec, run_bench

    budgets = _float_list(args.budgets, "--budgets") if args.budgets else list(QUICK_BUDGETS)
    if args.jobs < 1:
        raise ProblemError(f"--jobs must be >= 1, got {args.jobs}")
    spec = BenchSpec(problems=args.problems or QUICK_PROBLEMS, solvers=args.solvers or QUICK_SOLVERS, budgets=budgets,
                     baselines=[b for b in args.baselines.split(",") if b], time_limit=args.time_limit,
                     measure=not args.no_measure)
    from cetopt.bench.executor import parse_executor

    parse_executor(args.executor)  # a bad --executor fails before any cell runs
    result = run_bench(spec, args.out, jobs=args.jobs, plots=not args.no_plots, executor=args.executor)
    print(f"{result.ran} cells run, {result.reused} reused; wrote " + ", ".join(str(f) for f in result.files))
    return EXIT_OK


def cmd_levels(args: argparse.Namespace) -> int:
    from cetopt.theory.levels import levels_report

    budgets = _float_list(args.budgets, "--budgets")
    data = levels_report(args.model, args.out, budgets=budgets, log=lambda line: print(line, file=sys.stderr))
    print(f"wrote {args.out / 'report.md'}: {len(data['points'])} plans")
    return EXIT_OK


def cmd_prove(args: argparse.Namespace) -> int:
    from cetopt.theory.prove import CHECKS, prove

    checks = _int_list(args.checks, "--checks")
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ProblemError(f"--checks: no check {unknown[0]}; the checks are {sorted(CHECKS)}")
    results = prove(args.model, args.out, checks=checks, table_bits=_int_list(args.table_bits, "--table-bits"),
                    lossless_search=not args.no_lossless_search, log=lambda line: print(line, file=sys.stderr))
    print(f"wrote {args.out / 'report.md'}: " + ", ".join(f"{c.number} {c.verdict.value}" for c in results))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from cetopt.pipeline import run_demo

    if args.rerank:
        from cetopt.rerank import rerank_report

        print(rerank_report(args.model, args.rerank, avg_bits=args.avg_bits))
        return EXIT_OK
    print(run_demo(args.model, avg_bits=args.avg_bits))
    return EXIT_OK


_MODEL_HELP = ("a zoo model (digits-cnn, digits-mlp, mnist1d-resnet, mobilenetv2, minilm), module:function or "
               "path/to/file.py:function returning a cetopt.ModelSpec (see README, 'Your own model')")


class _CostModelNames:
    """argparse choices read from the cost-model registry only when checked or shown (the registry imports
    numpy; `cetopt extract nosuch` must answer before that)."""

    def _names(self) -> tuple[str, ...]:
        from cetopt.costmodels.registry import cost_model_names

        return cost_model_names()

    def __contains__(self, item: object) -> bool:
        return item in self._names()

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._names())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cetopt", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the free cores, i.e. cores minus "
                        "the load average, split among torchrun ranks on this machine)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("solve", help="solve one problem file with one backend")
    p.add_argument("problem", type=Path)
    p.add_argument("--solver", default=None, help="backend name (see 'cetopt solvers'; default: dp where it "
                                                   "applies, else highs)")
    p.add_argument("--solver-config", type=Path, help="a solvers/*.toml file (overrides --solver)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="backend option, repeatable (values parsed as JSON when they can be)")
    p.add_argument("--time-limit", type=float_in(0.0, 1e7), help="seconds (model building included)")
    p.add_argument("--seed", type=int_in(0, MAX_SEED))
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--out", type=Path, help="write the plan here (cetopt.plan/2: the choice of every layer, the full "
                                             "result under extra.result; atomically), for cetopt apply")
    _add_budget_flags(p)
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser("compare", help="solve one problem with several backends and print a table")
    p.add_argument("problem", type=Path)
    p.add_argument("--solvers", help="comma-separated backends (default: every installed one)")
    p.add_argument("--time-limit", type=float_in(0.0, 1e7))
    p.add_argument("--seed", type=int_in(0, MAX_SEED))
    p.add_argument("--bits", action="store_true", help="also print the per-layer bits of each backend")
    p.add_argument("--format", choices=("table", "json"), default="table")
    _add_budget_flags(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("solvers", help="list the registered backends")
    p.set_defaults(func=cmd_solvers)

    p = sub.add_parser("validate", help="check problem files and report unattainable budgets")
    p.add_argument("problems", type=Path, nargs="+")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("make-problem", help="write a published (HAWQ-V3) or seeded synthetic problem file")
    p.add_argument("kind", choices=("hawq-v3-resnet18", "synthetic"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--constraint", choices=("size", "bops"), default="size", help="hawq-v3: which limit")
    p.add_argument("--alpha", type=float_in(0.0, 1.0, low_open=False), default=0.5,
                   help="hawq-v3: limit = INT4 + alpha (INT8 - INT4)")
    p.add_argument("--layers", type=int_in(1, 10**7), default=50, help="synthetic: number of layers")
    p.add_argument("--choices", type=int_in(1, 8), default=6, help="synthetic: bit-widths per layer")
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="synthetic: seed")
    p.add_argument("--avg-bits", type=float_in(0.0, 64.0), default=4.0, help="synthetic: size budget")
    p.set_defaults(func=cmd_make_problem)

    p = sub.add_parser("extract", help="extract curvature from a zoo model and write its problem file")
    p.add_argument("model", help=_MODEL_HELP)
    p.add_argument("--bits", default="2,3,4,6,8", help="candidate bit-widths, comma-separated")
    # default = cetopt.costmodels.registry.DEFAULT_COST_MODEL, spelled out (the registry loads numpy); a test ties them
    p.add_argument("--method", choices=_CostModelNames(), default="cet-shrink", metavar="METHOD",
                   help="cost model (cetopt.costmodels), default cet-shrink (chosen by benchmarks/cost_models.py): "
                        "cet and its switches, llc, hawq-v3, fisher, cet-holdout, measured, ...")
    p.add_argument("--rounding", choices=("nearest", "major-axis", "major-axis-gradient"), default="nearest",
                   help="candidate rounding: nearest, or toward each layer's major axes")
    p.add_argument("--interactions", action="store_true", help="add cross-layer terms d_a'H_ab d_b of adjacent layers")
    p.add_argument("--avg-bits", type=float, default=3.0, help="the problem's size budget (llc: ignored, size minimised "
                                                                "subject to predicted dL <= 0)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("apply", help="compress a model by a plan: packed codes and scales in DIR/model.safetensors, "
                                     "with plan.json and manifest.json (fingerprints, sizes)")
    p.add_argument("plan", type=Path, help="a plan file (cetopt solve --out PLAN)")
    p.add_argument("--model", help="zoo model, module:function or path/to/file.py:function (default: the plan's)")
    p.add_argument("--out", type=Path, required=True, help="artefact directory")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("evaluate", help="load an artefact written by cetopt apply into its model and measure it")
    p.add_argument("directory", type=Path)
    p.add_argument("--model", help="the model it was applied to (default: the one its manifest names)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="benchmark problems/ x solvers/ x budgets, with baselines and measured metrics; "
                                     "writes results.csv, summary.md and plots (resumable)")
    p.add_argument("--quick", action="store_true", help="the small default set (digits, MNIST-1D, HAWQ-V3 ResNet-18, "
                                                        "synthetic; 6 solvers; 5 budgets), about a minute on 2 cores")
    p.add_argument("--problems", nargs="+", help="problem files or globs (default: the quick set)")
    p.add_argument("--solvers", nargs="+", help="solver configs (solvers/*.toml), globs or backend names")
    p.add_argument("--budgets", help="average-bits budgets, comma-separated (default 2.5,3,4,5,6)")
    p.add_argument("--baselines", default="uniform,hawq-v3", help="baseline allocations ('' for none)")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per solve")
    p.add_argument("--no-measure", action="store_true", help="do not apply plans to zoo models")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--jobs", type=int, default=1, help="cells run in parallel processes")
    p.add_argument("--executor", default="local", help="where cells run: 'local' (--jobs processes) or "
                   "dask://HOST:PORT (a Dask scheduler; pip install 'cetopt[distributed]')")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="results directory (reused to resume)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("levels", help="quantisation vs low-rank vs joint allocation on one Pareto plot, LLC's rank "
                                      "rule and the series-expansion convergence proof, on a zoo model")
    p.add_argument("model", help=_MODEL_HELP + "; digits-mlp is the smallest zoo model")
    p.add_argument("--out", type=Path, required=True, help="report directory")
    p.add_argument("--budgets", default="1.5,2,2.5,3,4,5,6", help="average-bits budgets, comma-separated")
    p.set_defaults(func=cmd_levels)

    p = sub.add_parser("prove", help="run the numerical checks of the CET geometry (and check 8, whole-plan prediction per cost model) on a zoo model; write a "
                                     "markdown report with plots")
    p.add_argument("model", help=_MODEL_HELP + "; digits-mlp is the smallest zoo model")
    p.add_argument("--out", type=Path, required=True, help="report directory (report.md, PNGs, results.json)")
    p.add_argument("--checks", default="1,2,3,4,5,6,7,8", help="which checks, comma-separated")
    p.add_argument("--table-bits", default="3,4,5", help="average bits of the equal-size table ('' for none)")
    p.add_argument("--no-lossless-search", action="store_true", help="skip the smallest-lossless-size search")
    p.set_defaults(func=cmd_prove)

    p = sub.add_parser("demo", help="the whole pipeline on a zoo model: extract, solve with every backend, apply, measure")
    p.add_argument("model", nargs="?", default="digits-cnn", help=_MODEL_HELP)
    p.add_argument("--avg-bits", type=float, default=3.0)
    p.add_argument("--rerank", type=int_in(1, 1000), default=0, metavar="K",
                   help="instead: dp's K best plans, each measured on the validation batches; the best measured wins")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("schema", help="print the JSON schema of cetopt.problem/1")
    p.set_defaults(func=cmd_schema)
    return parser


_TORCH_FREE = {"solve", "compare", "solvers", "validate", "schema", "make-problem"}


def _configure_torch(args: argparse.Namespace) -> None:
    """--threads (or the free-core default) and progress bars, for commands that run torch."""
    if args.threads is not None and args.threads < 1:
        raise ProblemError(f"must be >= 1, got {args.threads}", field="--threads")
    if args.command in _TORCH_FREE and args.threads is None:
        return
    from cetopt.curvature.progress import configure_progress
    from cetopt.curvature.threads import configure_threads

    configure_threads(args.threads)
    configure_progress(enabled=True)  # phase bars on stderr at the default verbosity (after a few seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if isinstance(getattr(args, "model", None), str):  # an unknown model is refused before torch loads
            from cetopt.modelspec import check_target

            check_target(args.model)
        _configure_torch(args)
        return int(args.func(args))
    except (ProblemError, SolverOptionError, UnsupportedProblemError, SolverUnavailableError) as err:
        print(f"cetopt: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except CetoptError as err:  # a computation failed (e.g. CurvatureError: NaN curvature), not the input
        print(f"cetopt: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("cetopt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `cetopt solve ... | head`: stdout closed early
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):
            pass
        print("cetopt: error: output pipe closed before the result was written", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:  # unwritable --out, full disk, unreadable file: the path and the reason
        where = f" {err.filename!r}" if getattr(err, "filename", None) else ""
        print(f"cetopt: error: cannot read or write{where}: {err.strerror or err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
