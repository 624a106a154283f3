"""Report commands: the benchmark, the compression-level study and the proofs."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from cetopt.cli.args import EXIT_OK, MODEL_HELP, float_list, int_in, int_list
from cetopt.cli.output import emit
from cetopt.errors import ProblemError


def cmd_bench(args: argparse.Namespace) -> int:
    from cetopt.bench.runner import QUICK_BUDGETS, QUICK_PROBLEMS, QUICK_SOLVERS, BenchSpec, run_bench

    budgets = float_list(args.budgets, "--budgets") if args.budgets else list(QUICK_BUDGETS)
    if args.jobs < 1:
        raise ProblemError(f"--jobs must be >= 1, got {args.jobs}")
    spec = BenchSpec(problems=args.problems or QUICK_PROBLEMS, solvers=solver_list(args.solvers) or QUICK_SOLVERS,
                     budgets=budgets,
                     baselines=[b for b in args.baselines.split(",") if b], time_limit=args.time_limit,
                     measure=not args.no_measure, models=_bench_models(args.model))
    from cetopt.bench.executor import parse_executor

    parse_executor(args.executor)  # a bad --executor fails before any cell runs
    result = run_bench(spec, args.out, jobs=args.jobs, plots=not args.no_plots, executor=args.executor)
    print(f"{result.ran} cells run, {result.reused} reused; wrote " + ", ".join(str(f) for f in result.files))
    emit(args, {"out": str(args.out), "ran": result.ran, "reused": result.reused, "files": [str(f) for f in result.files]})
    return EXIT_OK


def solver_list(items: list[str] | None) -> list[str]:
    """``--solvers a,b`` (comma-separated, as in ``cetopt compare``); the space-separated form ``--solvers a b``
    still works and is warned about."""
    if not items:
        return []
    if len(items) > 1:
        logging.getLogger(__name__).warning("`--solvers A B` (space-separated) is deprecated: use --solvers A,B "
                                            "(comma-separated, as cetopt compare)")
    return [name.strip() for item in items for name in item.split(",") if name.strip()]


def _bench_models(targets: list[str] | None) -> tuple[str, ...]:
    """The --model targets, checked (unknown zoo names and missing files refused before any cell runs) and
    normalised (a file path made absolute, as problems record it)."""
    from cetopt.modelspec import check_target, normalise_target

    out = []
    for target in targets or []:
        check_target(target)
        out.append(normalise_target(target))
    return tuple(out)


def cmd_levels(args: argparse.Namespace) -> int:
    from cetopt.theory.levels import levels_report

    budgets = float_list(args.budgets, "--budgets")
    data = levels_report(args.model, args.out, budgets=budgets, log=lambda line: print(line, file=sys.stderr))
    print(f"wrote {args.out / 'report.md'}: {len(data['points'])} plans")
    emit(args, {"report": str(args.out / "report.md"), "points": data["points"]})
    return EXIT_OK


# prove's flags of the CET geometry checks (dest, flag): refused beside --claims, which runs other checks
GEOMETRY_FLAGS = (("checks", "--checks"), ("table_bits", "--table-bits"), ("no_lossless_search", "--no-lossless-search"),
                  ("k", "--k"), ("lanczos_iterations", "--lanczos-iterations"), ("dense_max", "--dense-max"),
                  ("lossless_variants", "--lossless-variants"), ("fresh", "--fresh"))
# prove's flags of the seed papers' claims (dest, flag): used only with --claims
CLAIM_FLAGS = (("seeds", "--seeds"), ("budgets", "--budgets"), ("xint_bits", "--xint-bits"),
               ("xint_terms", "--xint-terms"), ("fractions", "--fractions"))


def cmd_prove(args: argparse.Namespace) -> int:
    if args.claims is not None:
        return _prove_claims(args)
    given = [flag for dest, flag in CLAIM_FLAGS if getattr(args, dest) is not None]
    if given:
        raise ProblemError(f"{given[0]} sets up a seed paper's claim: add --claims (e.g. --claims "
                           "xint,headline,llc-rank,lowrank) or drop it", field=given[0])
    from cetopt.theory.prove import CHECKS, ProveSettings, prove

    checks = int_list(args.checks, "--checks")
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ProblemError(f"--checks: no check {unknown[0]}; the checks are {sorted(CHECKS)}")
    if args.k < 1:
        raise ProblemError(f"--k: the checks need eigenpairs, got {args.k}; use 1 or more (default 16)")
    if args.lanczos_iterations < 2 * args.k:
        raise ProblemError(f"--lanczos-iterations: {args.lanczos_iterations} cannot resolve {args.k} eigenpairs per "
                           f"end; use at least 2 x --k = {2 * args.k}")
    settings = ProveSettings(table_bits=int_list(args.table_bits, "--table-bits"),
                             lossless_search=not args.no_lossless_search, k=args.k,
                             lanczos_iterations=args.lanczos_iterations, dense_max=args.dense_max,
                             lossless_variants=args.lossless_variants)
    results = prove(args.model, args.out, checks=checks, settings=settings, resume=not args.fresh,
                    log=lambda line: print(line, file=sys.stderr))
    print(f"wrote {args.out / 'report.md'}: " + ", ".join(f"{c.number} {c.verdict.value}" for c in results))
    emit(args, {"report": str(args.out / "report.md"), "results": str(args.out / "results.json"),
                "checks": [{"number": c.number, "title": c.title, "verdict": c.verdict.value, "value": c.value}
                           for c in results]})
    return EXIT_OK


def _prove_claims(args: argparse.Namespace) -> int:
    """``cetopt prove MODEL --claims ...``: the seed papers' claims over seeds (cetopt.theory.seed_claims). A fail
    verdict is a result, written and printed, as the geometry checks' are (exit 0)."""
    from cetopt.results.provenance import code_version
    from cetopt.theory.seed_claim_runs import run_claims
    from cetopt.theory.seed_claims import ClaimSettings, check_claims, claims_code

    given = [flag for dest, flag in GEOMETRY_FLAGS if getattr(args, dest) != args.geometry_defaults[dest]]
    if given:
        raise ProblemError("sets up the CET geometry checks, which --claims does not run: drop it, or run the "
                           "checks without --claims", field=given[0])
    defaults = ClaimSettings()
    settings = ClaimSettings(
        seeds=tuple(int_list(args.seeds, "--seeds")) if args.seeds is not None else defaults.seeds,
        budgets=tuple(float_list(args.budgets, "--budgets")) if args.budgets is not None else None,
        bits=tuple(int_list(args.xint_bits, "--xint-bits")) if args.xint_bits is not None else defaults.bits,
        terms=tuple(int_list(args.xint_terms, "--xint-terms")) if args.xint_terms is not None else defaults.terms,
        fractions=tuple(float_list(args.fractions, "--fractions")) if args.fractions is not None else None)
    claims = [c.strip() for c in args.claims.split(",") if c.strip()]
    check_claims(args.model, claims, settings)  # before claims_code reads the names
    results = run_claims(args.model, args.out, claims, settings=settings, log=lambda line: print(line, file=sys.stderr),
                         provenance={"code_version": code_version(claims_code(claims))})
    for r in results:
        print(f"{r.name}: {r.verdict.value}: {r.reason}")
    print(f"wrote {args.out / 'report.md'}")
    emit(args, {"report": str(args.out / "report.md"), "results": str(args.out / "results.json"),
                "claims": [{"name": r.name, "claim": r.claim, "verdict": r.verdict.value, "reason": r.reason}
                           for r in results]})
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    """Register this module's subcommands on ``sub`` (argparse subparsers)."""
    p = sub.add_parser("bench", help="benchmark problems/ x solvers/ x budgets, with baselines and measured metrics; "
                                     "writes results.csv, summary.md and plots (resumable)")
    p.add_argument("--quick", action="store_true", help="the small default set (digits, MNIST-1D, HAWQ-V3 ResNet-18, "
                                                        "synthetic; 6 solvers; 5 budgets), about a minute on 2 cores")
    p.add_argument("--problems", nargs="+", help="problem files or globs (default: the quick set)")
    p.add_argument("--solvers", nargs="+", metavar="NAME[,NAME...]",
                   help="solver configs (solvers/*.toml), globs or backend names, comma-separated")
    p.add_argument("--budgets", help="average-bits budgets, comma-separated (default 2.5,3,4,5,6)")
    p.add_argument("--baselines", default="uniform,hawq-v3", help="baseline allocations ('' for none)")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per solve")
    p.add_argument("--no-measure", action="store_true", help="do not apply plans to zoo models")
    p.add_argument("--model", action="append", metavar="TARGET",
                   help="a model (module:function or path/to/file.py:function) to measure the problems that record "
                        "it; repeatable. A model named inside a problem file is loaded only when it is a zoo name")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--jobs", type=int, default=1, help="cells run in parallel processes")
    p.add_argument("--executor", default="local", help="where cells run: 'local' (--jobs processes) or "
                   "dask://HOST:PORT (a Dask scheduler; pip install 'cetopt[distributed]')")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="results directory (reused to resume)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("levels", help="quantisation vs low-rank vs joint allocation on one Pareto plot, LLC's rank "
                                      "rule and the series-expansion convergence proof, on a zoo model")
    p.add_argument("model", help=MODEL_HELP + "; digits-mlp is the smallest zoo model")
    p.add_argument("--out", type=Path, required=True, help="report directory")
    p.add_argument("--budgets", default="1.5,2,2.5,3,4,5,6", help="average-bits budgets, comma-separated")
    p.set_defaults(func=cmd_levels)

    p = sub.add_parser("prove", help="run the numerical checks of the CET geometry (and check 8, whole-plan "
                                     "prediction per cost model) on a model; write a markdown report with plots")
    p.add_argument("model", help=MODEL_HELP + "; digits-mlp is the smallest zoo model")
    p.add_argument("--out", type=Path, required=True, help="report directory (report.md, PNGs, results.json)")
    p.add_argument("--checks", default="1,2,3,4,5,6,7,8", help="which checks, comma-separated")
    p.add_argument("--table-bits", default="3,4,5", help="average bits of the equal-size table ('' for none)")
    p.add_argument("--no-lossless-search", action="store_true", help="skip the smallest-lossless-size search")
    p.add_argument("--k", type=int, default=16, help="eigenpairs per end of each layer's spectrum (the quadrics' "
                   "axes); fewer is faster on large models (MobileNetV2: one Lanczos iteration is one restricted "
                   "product per layer, ~115 s at 1 thread)")
    p.add_argument("--lanczos-iterations", type=int, default=48, help="Krylov dimension per layer (>= 2 x --k)")
    p.add_argument("--dense-max", type=int_in(0, 100_000), default=1200, help="check 2 builds the exact float64 "
                   "Hessian block of layers with at most this many weights (n products each); 0 = none, for large "
                   "inputs (MobileNetV2: ~10 s a product, so an 864-weight layer would take hours)")
    p.add_argument("--lossless-variants", type=int_in(1, 1000), default=8, help="check 5: stochastic roundings per "
                   "layer and bit-width besides round-to-nearest (each costs a Hessian product and a calibration pass; "
                   "fewer on large models)")
    p.add_argument("--fresh", action="store_true", help="recompute every check and table row; by default a run "
                   "reads the finished parts of an earlier run with the same inputs from OUT/checkpoints, so a "
                   "stopped run resumes where it stopped")
    _add_claim_flags(p)
    p.set_defaults(func=cmd_prove, geometry_defaults={dest: p.get_default(dest) for dest, _ in GEOMETRY_FLAGS})


def _add_claim_flags(parser: argparse.ArgumentParser) -> None:
    """prove's flags of the seed papers' claims (:data:`CLAIM_FLAGS`)."""
    claims = parser.add_argument_group("the seed papers' claims", "--claims runs these instead of the CET geometry "
                                       "checks (cetopt.theory.seed_claims; the flags above are refused beside it): "
                                       "over seeds, one verdict per claim in OUT/report.md and OUT/results.json")
    claims.add_argument("--claims", metavar="NAME[,NAME...]", help="some of xint (FP=xINT), headline (CET's 11x at "
                        "FP accuracy), llc-rank (LLC's automatic rank), lowrank (joint low-rank vs SVD at equal rank), "
                        "lowrank-compact (joint low-rank's smallest lossless model vs SVD's)")
    claims.add_argument("--seeds", help="the model's seeds, comma-separated (default 0,1,2,3,4: the zoo's shipped "
                        "weights; a model outside the zoo takes one)")
    claims.add_argument("--budgets", help="headline: average-bits budgets walked (default 8 down to 2 by 1/8)")
    claims.add_argument("--xint-bits", help="xint: bit-widths expanded (default 2,3,4; 'above FP' needs 4)")
    claims.add_argument("--xint-terms", help="xint: numbers of terms K (default 1,2,3,4)")
    claims.add_argument("--fractions", help="lowrank, lowrank-compact: ranks as fractions of min(m, n) (default 0.5; "
                        "lowrank-compact: 0.9 down to 0.3 by 0.1, bisected between them)")
