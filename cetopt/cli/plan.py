"""`cetopt plan`: build a model's problem, measure the solver's plan against the pool's and every backend's on
held-out batches (cetopt.rerank.select_plan), and write the best measured one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cetopt.cli.args import EXIT_OK, MODEL_HELP, add_budget_flags, budget_from_args, float_in, int_in
from cetopt.cli.models import FOLD_HELP, load_spec, print_coverage
from cetopt.cli.output import emit
from cetopt.cli.recipe_flags import add_recipe_flags, recipe_from_args


def cmd_plan(args: argparse.Namespace) -> int:
    from cetopt.modelspec import normalise_target
    from cetopt.problem.model import Budget
    from cetopt.quant.plan import plan_from_choices
    from cetopt.recipe import PLAN_AVG_BITS
    from cetopt.rerank import select_plan
    from cetopt.search.base import SearchBudget, SearchRequest
    from cetopt.workflow import build_for

    recipe, budget = recipe_from_args(args), budget_from_args(args) or Budget(avg_bits=PLAN_AVG_BITS)
    pool = tuple(name for name in args.pool.split(",") if name.strip())
    spec = load_spec(args, recipe)
    built = build_for(spec, recipe, budget=budget, target=args.model)
    search = None if args.search is None else SearchRequest(
        args.search, SearchBudget(forwards=args.search_forwards, seconds=args.search_seconds), progress=True)
    selection = select_plan(spec, built, args.rerank, pool=pool, solver=args.solver, backends=not args.no_backends,
                            search=search)
    extra = _plan_extra(args, built, selection, pool)
    plan = plan_from_choices(built.problem, selection.result.best.choices, extra=extra,
                             model=normalise_target(args.model))
    plan.save(args.out)
    size = _print_plan(args, spec, built, selection, plan, pool)
    best = selection.result.best
    emit(args, {"out": str(args.out), "selected": best.label, "measured_loss": best.measured,
                "split": selection.split, "packed_bytes": size.total_bytes, "packed_ratio": size.ratio, **extra})
    return EXIT_OK


def _plan_extra(args: argparse.Namespace, built: Any, selection: Any, pool: tuple[str, ...]) -> dict[str, Any]:
    """What a plan written by `cetopt plan` records beside its choices: the selection, its cost and the surrogate."""
    result, found = selection.result, selection.search
    best = result.best
    candidates = [{"plan": p.label, "size_bits": p.size_bits, "predicted_loss": p.predicted_loss,
                   "measured_loss": p.measured} for p in result.plans]
    member = best.source if best.rank is None else f"{best.source}#{best.rank}"
    cost = {"selection_seconds": selection.seconds, "pool_seconds": selection.pool_seconds,
            "backend_seconds": selection.backend_seconds, "plans_measured": len(result.plans),
            "search_forwards": found.forwards if found else 0, "search_seconds": found.seconds if found else 0.0}
    return {"solver": args.solver, "predicted_loss": best.predicted_loss, "budget_size_bits": best.size_bits,
            "avg_bits": best.size_bits / built.problem.total_params, "selected": best.label,
            "source": {"member": member, "same_as": list(best.same_as),
                       "strategy": args.search if member.startswith("search:") or
                       any(m.startswith("search:") for m in best.same_as) else None},
            "cost": cost,
            "surrogate": {"optimum": selection.surrogate_optimum, "bound": selection.surrogate_bound,
                          "measured": result.solver_best.measured, "split": selection.split},
            "selection": {"split": selection.split, "k": args.rerank, "pool": list(pool), "candidates": candidates,
                          "left_out": list(selection.left_out), "backends": list(selection.backends)},
            "coverage": built.problem.metadata.get("coverage"),
            **({"search": found.summary()} if found else {})}


def _print_plan(args: argparse.Namespace, spec: Any, built: Any, selection: Any, plan: Any, pool: tuple[str, ...]
                ) -> Any:
    """The readable lines of `cetopt plan`; returns the plan's packed size (cetopt.quant.pack.PackedSize)."""
    from cetopt.quant.pack import model_packed_size
    from cetopt.rerank import selection_table

    result, found, best = selection.result, selection.search, selection.result.best
    print_coverage(built.problem.metadata)
    print(selection_table(selection, built.problem.total_params))
    size = model_packed_size(spec.model, plan)
    print(f"packed size of the plan: codes {-(-size.code_bits // 8)} + scales {size.scale_bits // 8} + other parameters "
          f"{size.rest_bits // 8} bytes ({size.total_bytes} bytes, packed ratio {size.ratio:.2f} vs FP32; avg_bits counts "
          "codes only; the file adds its container overhead)")
    if pool:
        print(f"the pool's plans ({', '.join(pool)}) took {selection.pool_seconds:.0f} s to build")
    if selection.backends:
        print(f"the backends' plans ({', '.join(selection.backends)}) took {selection.backend_seconds:.1f} s")
    if selection.left_out:
        print(f"left out of the pool (no feasible plan at this budget): {', '.join(selection.left_out)}")
    if found:
        print(f"search {found.strategy}: {found.forwards} forward passes, {found.seconds:.0f} s (stopped: "
              f"{found.provenance['stopped']}); its plan descends from {found.provenance['descends_from']}, measured "
              f"calibration {found.calibration_dloss:+.6f}, {found.selected_on} {found.selected_value:+.6f}")
    bound = "none" if selection.surrogate_bound is None else f"{selection.surrogate_bound:.6f}"
    print(f"surrogate ({args.solver}): optimum predicted {selection.surrogate_optimum:.6f}, certified bound {bound}, "
          f"measured {selection.split} {result.solver_best.measured:+.6f}; shipped {best.label}: predicted "
          f"{best.predicted_loss:.6f}, measured {best.measured:+.6f}")
    print(f"wrote {args.out}: {best.label}, measured {selection.split} loss change {best.measured:+.6f} "
          f"(the solver's optimum {result.solver_best.measured:+.6f}); `cetopt apply {args.out} --model {args.model} "
          f"--out DIR` packs it")
    return size


def add_parsers(sub: Any) -> None:
    """Register `cetopt plan` on ``sub`` (argparse subparsers)."""
    _add_plan(sub)


def _add_plan(sub: Any) -> None:
    from cetopt.recipe import PLAN_AVG_BITS

    p = sub.add_parser("plan", help="the plan to ship for a model at a budget: the default problem's dp plan and "
                                    "HAWQ-V3's, measured on held-out data; the better measured one is written")
    p.add_argument("model", help=MODEL_HELP)
    add_recipe_flags(p)
    add_budget_flags(p, f"default: {PLAN_AVG_BITS:g} average bits")
    p.add_argument("--out", type=Path, required=True, help="plan file to write (JSON, cetopt apply reads it)")
    p.add_argument("--rerank", type=int_in(1, 1000), default=1, metavar="K",
                   help="measure the solver's K best plans of the default problem (default 1: its optimum)")
    # default = cetopt.rerank.DEFAULT_POOL, spelled out (the module loads numpy); a test ties them
    p.add_argument("--pool", default="hawq-v3", help="cost models whose plans at the same budget are measured too, "
                   "comma-separated; '' for none (default hawq-v3: benchmarks/results/selection.md)")
    p.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=True, help=FOLD_HELP)
    p.add_argument("--solver", default="dp", help="an exact backend for the k best (cetopt solvers)")
    p.add_argument("--no-backends", action="store_true",
                   help="leave the other installed backends' plans of the problem out of the measured pool")
    # choices and default = cetopt.search (registry names, DEFAULT_FORWARDS), spelled out (the package loads numpy);
    # a test ties them
    p.add_argument("--search", choices=("evopress", "local", "refit"), default=None, metavar="STRATEGY",
                   help="also run a measured search over plans (evopress, local, refit; cetopt.search) seeded by "
                        "every plan above, and measure its plan beside them (default: no search)")
    p.add_argument("--search-forwards", type=int_in(1, 10**9), default=400, metavar="N",
                   help="the search's budget in forward passes of one calibration piece (validation included)")
    p.add_argument("--search-seconds", type=float_in(0.0), default=None, metavar="S",
                   help="the search phase's wall-clock limit (default none)")
    p.set_defaults(func=cmd_plan)
