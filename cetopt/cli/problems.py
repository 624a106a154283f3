"""Problem-file commands: solve, compare, solvers, validate, schema, make-problem (no torch)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from cetopt.cli.args import (AVG_BITS, EXIT_INFEASIBLE, EXIT_OK, MAX_SEED, add_budget_flags, check_out_target,
                            exit_code, float_in, int_in, load_with_overrides, parse_options)
from cetopt.cli.output import emit
from cetopt.errors import UnsupportedProblemError


OUTPUT_SECONDS_PER_LAYER = 1e-5  # writing the result: its JSON, table or plan (measured ~0.25 s per 20,000 layers
OUTPUT_SECONDS = 0.1             # on a loaded 2-core machine, so twice that), plus a fixed part


def _process_clock(problem: Any) -> float:
    """Where ``--time-limit`` counts from: the process's start (start-up, imports and reading the problem count),
    moved earlier by a reserve for writing the result, so the whole process ends within the limit."""
    from cetopt.solvers.deadline import process_started

    return process_started() - (OUTPUT_SECONDS + OUTPUT_SECONDS_PER_LAYER * len(problem.layers))


def cmd_solve(args: argparse.Namespace) -> int:
    from cetopt.solvers.api import solve
    from cetopt.solvers.result import SolveInterrupted
    from cetopt.tables import result_table

    if args.out:
        check_out_target(args.out)
    problem = load_with_overrides(args)
    solver: Any = args.solver_config if args.solver_config else args.solver
    try:
        result = solve(problem, solver, time_limit=args.time_limit, seed=args.seed, started=_process_clock(problem),
                       **parse_options(args.option))
    except SolveInterrupted as stop:  # Ctrl-C: print the incumbent (if any), then exit 130
        print(json.dumps(stop.result.to_dict(), allow_nan=False) if args.format == "json" else
              result_table(stop.result))
        raise
    if args.format == "json":
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print(result_table(result))
    if result.success and result.choices:
        from cetopt.negatives import warn_if_negative

        warn_if_negative(problem, result.choices)  # a WARNING on stderr naming the layers and the remedy
    # column-form layers carry no shapes, so there is no packed ratio to print (and building the plan would
    # make 10^6 Layer objects for nothing)
    if result.success and args.format != "json" and problem.columns is None:
        from cetopt.quant.plan import plan_from_result

        line = packed_ratio_line(problem, plan_from_result(problem, result))
        if line:
            print(line)
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
    return exit_code(result.status)


def packed_ratio_line(problem: Any, plan: Any) -> str | None:
    """'packed ratio ...': FP32 size / the size of the file `cetopt apply` writes for ``plan`` (codes, scales, every
    parameter left in FP32 and the buffers: cetopt.quant.pack.problem_packed_size); None when the problem does not
    describe its model's other parameters."""
    from cetopt.quant.pack import problem_packed_size

    packed = problem_packed_size(problem, plan)
    if packed is None:
        return None
    return (f"packed ratio {packed.ratio:.2f} vs FP32 (the stored model as `cetopt apply` writes it: codes, scales, "
            f"{problem.metadata['other_params']} other parameters in FP32, buffers; ratio_vs_fp32 above counts the "
            f"planned weights alone)")


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

    problem = load_with_overrides(args)
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
    # the worst outcome decides: a backend that failed (status error) is exit 3, one that found no plan exit 1
    return max((exit_code(r.status) for r in results), default=EXIT_INFEASIBLE, key=_severity)


def _severity(code: int) -> int:
    """Order of exit codes by how bad they are: success < infeasible < a failed computation."""
    return {EXIT_OK: 0, EXIT_INFEASIBLE: 1}.get(code, 2)


def cmd_solvers(args: argparse.Namespace) -> int:
    from cetopt.solvers.registry import available_solvers
    from cetopt.tables import format_table

    rows = [[s.name, "yes" if s.installed else "no", "yes" if s.exact else "no", s.description]
            for s in available_solvers()]
    print(format_table(["backend", "installed", "exact", "description"], rows))
    emit(args, [{"backend": s.name, "installed": s.installed, "exact": s.exact, "description": s.description}
                for s in available_solvers()])
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from cetopt.problem.compiled import compile_problem
    from cetopt.problem.feasibility import budget_shortfalls, floors
    from cetopt.problem.io import load_problem

    checked = []
    for path in args.problems:
        problem = load_problem(path)
        compiled = compile_problem(problem)
        low = floors(compiled)
        warnings = list(budget_shortfalls(compiled))
        print(f"{path}: ok: {len(problem.layers)} layers, {compiled.n_groups} groups, "
              f"{problem.total_params} params; smallest avg_bits {low.avg_bits:.4g}")
        for line in warnings:
            print(f"  warning: {line}")
        checked.append({"path": str(path), "ok": True, "layers": len(problem.layers), "groups": compiled.n_groups,
                        "params": problem.total_params, "smallest_avg_bits": low.avg_bits, "warnings": warnings})
    emit(args, checked)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from cetopt.problem.schema import PROBLEM_SCHEMA

    emit(args, PROBLEM_SCHEMA)
    if args.format == "table":  # the schema is JSON either way; indented for reading
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
    save_problem(problem, args.out, columnar=args.columnar)
    print(f"wrote {args.out}: {problem.name}, {len(problem.layers)} layers")
    emit(args, {"out": str(args.out), "problem": problem.name, "layers": len(problem.layers)})
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    """Register this module's subcommands on ``sub`` (argparse subparsers)."""
    p = sub.add_parser("solve", help="solve one problem file with one backend")
    p.add_argument("problem", type=Path)
    p.add_argument("--solver", default=None, help="backend name (see 'cetopt solvers'; default: dp where it "
                                                   "applies, else highs)")
    p.add_argument("--solver-config", type=Path, help="a solvers/*.toml file (overrides --solver)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="backend option, repeatable (values parsed as JSON when they can be)")
    p.add_argument("--time-limit", type=float_in(0.0, 1e7), help="seconds for the whole process: start-up, reading "
                   "the problem, model building, solving and writing the result")
    p.add_argument("--seed", type=int_in(0, MAX_SEED))
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--out", type=Path, help="write the plan here (cetopt.plan/2: the choice of every layer, the full "
                                             "result under extra.result; atomically), for cetopt apply")
    add_budget_flags(p, "replace the file's budget when any is given")
    p.add_argument("--minimize", choices=("loss", "size"), help="override what is minimised")
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser("compare", help="solve one problem with several backends and print a table")
    p.add_argument("problem", type=Path)
    p.add_argument("--solvers", help="comma-separated backends (default: every installed one)")
    p.add_argument("--time-limit", type=float_in(0.0, 1e7))
    p.add_argument("--seed", type=int_in(0, MAX_SEED))
    p.add_argument("--bits", action="store_true", help="also print the per-layer bits of each backend")
    p.add_argument("--format", choices=("table", "json"), default="table")
    add_budget_flags(p, "replace the file's budget when any is given")
    p.add_argument("--minimize", choices=("loss", "size"), help="override what is minimised")
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
    p.add_argument("--avg-bits", type=AVG_BITS, default=4.0, help="synthetic: size budget")
    p.add_argument("--columnar", action="store_true", help="write the layers as columns (name, params, macs, bits, "
                   "loss): a 100,000-layer file loads in a fraction of a second instead of seconds")
    p.set_defaults(func=cmd_make_problem)

    p = sub.add_parser("schema", help="print the JSON schema of cetopt.problem/1")
    p.set_defaults(func=cmd_schema)
