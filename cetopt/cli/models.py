"""Model commands: extract a problem, apply a plan into a packed artefact, evaluate it, run the demo."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cetopt.cli.args import EXIT_OK, MODEL_HELP, CostModelNames, int_in, int_list
from cetopt.errors import ProblemError


def rounding_list(text: str) -> tuple[str, ...]:
    """``--rounding a,b``: registered roundings (cetopt.quant.rounding), at least one."""
    from cetopt.quant.rounding.registry import ROUNDINGS

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in ROUNDINGS]
    if not names or unknown:
        raise ProblemError(f"unknown rounding {unknown[0] if unknown else text!r}; use one or more of {ROUNDINGS}, "
                           "comma-separated", field="--rounding")
    return names


def cmd_extract(args: argparse.Namespace) -> int:
    from cetopt.modelspec import load_model_spec
    from cetopt.problem.io import save_problem
    from cetopt.problem.model import Budget
    from cetopt.workflow import build_for

    from cetopt.workflow import DEFAULT_ROUNDING

    bits = int_list(args.bits, "--bits")
    roundings = rounding_list(args.rounding) if args.rounding else (DEFAULT_ROUNDING,)  # named before any work
    groups = int_list(args.group_sizes, "--group-sizes") if args.group_sizes else None
    budget = None if args.method == "llc" else Budget(avg_bits=args.avg_bits)
    from cetopt import distributed

    distributed.init_from_env()  # under torchrun: ranks share the calibration batches, sums are all-reduced
    spec = load_model_spec(args.model)
    from cetopt.quant.quantizers import QuantizerSpec

    problem = build_for(spec, bits=bits, method=args.method, budget=budget,
                        rounding=roundings[0] if len(roundings) == 1 else roundings, group_sizes=groups,
                        interactions=args.interactions, target=args.model,
                        quantizer=QuantizerSpec(clip=args.clip)).problem
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


def cmd_plan(args: argparse.Namespace) -> int:
    from cetopt.modelspec import load_model_spec
    from cetopt.problem.model import Budget
    from cetopt.quant.plan import plan_from_choices
    from cetopt.quant.quantizers import QuantizerSpec
    from cetopt.rerank import select_plan, selection_table
    from cetopt.workflow import build_for

    pool = tuple(name for name in args.pool.split(",") if name.strip())
    spec = load_model_spec(args.model)
    built = build_for(spec, method=args.method, bits=int_list(args.bits, "--bits"), budget=Budget(avg_bits=args.avg_bits),
                      target=args.model, quantizer=QuantizerSpec(clip=args.clip), rounding=args.rounding)
    selection = select_plan(spec, built, args.rerank, pool=pool, solver=args.solver)
    best = selection.result.best
    candidates = [{"plan": p.label, "size_bits": p.size_bits, "predicted_loss": p.predicted_loss,
                   "measured_loss": p.measured} for p in selection.result.plans]
    extra = {"solver": args.solver, "predicted_loss": best.predicted_loss, "budget_size_bits": best.size_bits,
             "avg_bits": best.size_bits / built.problem.total_params, "selected": best.label,
             "selection": {"split": selection.split, "k": args.rerank, "pool": list(pool), "candidates": candidates,
                           "left_out": list(selection.left_out)}}
    plan = plan_from_choices(built.problem, best.choices, extra=extra, model=args.model)
    plan.save(args.out)
    print(selection_table(selection, built.problem.total_params))
    if pool:
        print(f"the pool's plans ({', '.join(pool)}) took {selection.pool_seconds:.0f} s to build")
    if selection.left_out:
        print(f"left out of the pool (no feasible plan at this budget): {', '.join(selection.left_out)}")
    print(f"wrote {args.out}: {best.label}, measured {selection.split} loss change {best.measured:+.6f} "
          f"(the solver's optimum {selection.result.solver_best.measured:+.6f}); `cetopt apply {args.out} --out DIR` "
          f"packs it")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from cetopt.pipeline import run_demo

    if args.rerank:
        from cetopt.rerank import rerank_report

        print(rerank_report(args.model, args.rerank, avg_bits=args.avg_bits))
        return EXIT_OK
    print(run_demo(args.model, avg_bits=args.avg_bits, rounding=args.rounding))
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    """Register this module's subcommands on ``sub`` (argparse subparsers)."""
    from cetopt.quant.rounding.registry import ROUNDINGS

    p = sub.add_parser("extract", help="extract curvature from a zoo model and write its problem file")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--bits", default="2,3,4,6,8", help="candidate bit-widths, comma-separated")
    # default = cetopt.costmodels.registry.DEFAULT_COST_MODEL, spelled out (the registry loads numpy); a test ties them
    p.add_argument("--method", choices=CostModelNames(), default="cet-upper", metavar="METHOD",
                   help="cost model (cetopt.costmodels), default cet-upper (chosen by benchmarks/cost_models.py and "
                        "benchmarks/cost_models_pretrained.py): cet and its switches, cet-shrink, llc, hawq-v3, "
                        "fisher, cet-holdout, measured, ...")
    p.add_argument("--rounding", default=None, metavar="NAME[,NAME...]",
                   help=f"candidate rounding (cetopt.quant.rounding): {', '.join(ROUNDINGS)}; default "
                        "cetopt.workflow.DEFAULT_ROUNDING; several, comma-separated: each is a candidate of its own "
                        "(joint allocation of bits x rounding)")
    p.add_argument("--group-sizes", default="", metavar="G[,G...]",
                   help="scale layouts offered as candidates: 0 = a scale per output channel, g = a scale per g "
                        "inputs (e.g. 0,32,128); each priced with its packed size (codes + scales)")
    p.add_argument("--interactions", action="store_true", help="add cross-layer terms d_a'H_ab d_b of adjacent layers")
    # default = cetopt.workflow.DEFAULT_QUANTIZER.clip, spelled out (a test ties them)
    p.add_argument("--clip", choices=("none", "mse"), default="mse",
                   help="the candidates' quantiser: the MSE-optimal clipping ratio per channel (mse, default) or range "
                        "max|w| (none); recorded in the problem, so plans and `apply` use the same grid. On the plain "
                        "grid every method lost MobileNetV2 at 3 bits (benchmarks/results/cost_models_pretrained_*.md)")
    p.add_argument("--avg-bits", type=float, default=3.0, help="the problem's size budget (llc: ignored, size minimised "
                                                                "subject to predicted dL <= 0)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("plan", help="the plan to ship for a model at a budget: the default problem's dp plan and "
                                    "HAWQ-V3's, measured on held-out data; the better measured one is written")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--avg-bits", type=float, default=4.0, help="average bits per quantised weight (size budget)")
    p.add_argument("--out", type=Path, required=True, help="plan file to write (JSON, cetopt apply reads it)")
    p.add_argument("--rerank", type=int_in(1, 1000), default=1, metavar="K",
                   help="measure the solver's K best plans of the default problem (default 1: its optimum)")
    # default = cetopt.rerank.DEFAULT_POOL, spelled out (the module loads numpy); a test ties them
    p.add_argument("--pool", default="hawq-v3", help="cost models whose plans at the same budget are measured too, "
                   "comma-separated; '' for none (default hawq-v3: benchmarks/results/selection.md)")
    p.add_argument("--method", choices=CostModelNames(), default="cet-upper", metavar="METHOD",
                   help="the problem's cost model (default cet-upper, as extract)")
    p.add_argument("--bits", default="2,3,4,6,8", help="candidate bit-widths, comma-separated")
    p.add_argument("--clip", choices=("none", "mse"), default="mse", help="the candidates' quantiser, as extract")
    p.add_argument("--solver", default="dp", help="an exact backend for the k best (cetopt solvers)")
    p.add_argument("--rounding", choices=ROUNDINGS, default=None, metavar="NAME",
                   help=f"the candidates' rounding, the pool's too: {', '.join(ROUNDINGS)} (default "
                        "cetopt.workflow.DEFAULT_ROUNDING)")
    p.set_defaults(func=cmd_plan)

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

    p = sub.add_parser("demo", help="the whole pipeline on a zoo model: extract, solve with every backend, apply, measure")
    p.add_argument("model", nargs="?", default="digits-cnn", help=MODEL_HELP)
    p.add_argument("--avg-bits", type=float, default=3.0)
    p.add_argument("--rerank", type=int_in(1, 1000), default=0, metavar="K",
                   help="instead: dp's K best plans, each measured on the validation batches; the best measured wins")
    p.add_argument("--rounding", choices=ROUNDINGS, default=None, metavar="NAME",
                   help=f"every plan's rounding, baselines included: {', '.join(ROUNDINGS)} (default "
                        "cetopt.workflow.DEFAULT_ROUNDING)")
    p.set_defaults(func=cmd_demo)
