"""Model commands: extract a problem, apply a plan into a packed artefact, evaluate it, run the demo."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from cetopt.cli.args import EXIT_OK, MODEL_HELP, CostModelNames, float_in, int_in, int_list
from cetopt.cli.output import emit
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
    spec = load_model_spec(args.model, objective=args.objective)  # references on the unfolded model, as apply
    if args.fold_bn:
        from cetopt.quant.fold import fold_spec

        spec = fold_spec(spec)  # recorded in the problem and its plans: apply folds the same way
    from cetopt.quant.quantizers import QuantizerSpec

    problem = build_for(spec, bits=bits, method=args.method, budget=budget,
                        rounding=roundings[0] if len(roundings) == 1 else roundings, group_sizes=groups,
                        interactions=args.interactions, target=args.model,
                        quantizer=QuantizerSpec(clip=args.clip)).problem
    if args.activation_bits != problem.activation_bits:
        problem = problem.with_changes(activation_bits=args.activation_bits)
    if distributed.is_rank_zero():  # every rank holds the same problem; one writes it (atomically)
        save_problem(problem, args.out)
        print(f"wrote {args.out}: {problem.name}, {len(problem.layers)} layers, bits {bits}"
              + (f" ({distributed.world_size()} ranks)" if distributed.is_distributed() else ""))
        _print_coverage(problem.metadata)
        emit(args, {"out": str(args.out), "problem": problem.name, "layers": len(problem.layers), "bits": bits,
                    "method": args.method, "coverage": problem.metadata.get("coverage")})
    distributed.barrier()
    return EXIT_OK


def _print_coverage(metadata: Any) -> None:
    """The coverage report recorded in a problem's metadata (cetopt.curvature.coverage), one line each."""
    from cetopt.curvature.coverage import coverage_lines

    for line in coverage_lines(metadata.get("coverage")):
        print(f"coverage: {line}")


def cmd_apply(args: argparse.Namespace) -> int:
    from cetopt.modelspec import choose_model, normalise_target
    from cetopt.quant.plan import Plan

    plan = Plan.load(args.plan)
    target = choose_model(args.model, plan.model, what=f"plan {args.plan}",
                          allow_mismatch=args.allow_model_mismatch)
    from cetopt.artifact import write_artifact
    from cetopt.modelspec import load_model_spec, objective_of

    spec = load_model_spec(target, objective=objective_of(plan.extra))
    info = write_artifact(spec, plan, args.out, target=normalise_target(target),
                          require_fingerprint=not args.allow_no_fingerprint, activation_bits=args.activation_bits,
                          observer=args.observer, sequential=args.sequential_rounding)
    print(f"wrote {info.directory}: model.safetensors {info.file_bytes} bytes = codes {info.code_bytes} + scales "
          f"{info.scale_bytes} + other parameters {info.other_bytes} (buffers {info.buffer_bytes} included) + "
          f"container overhead {info.overhead_bytes}; packed size {info.predicted_bytes} (all but the overhead), "
          f"packed ratio {info.size.ratio:.2f} vs FP32; plan.json, manifest.json")
    if info.activations:
        print(f"{len(info.activations)} layer inputs quantised to {args.activation_bits} bits per tensor ({args.observer} "
              f"ranges from the calibration batches; recorded in the artefact, cetopt export reuses them)")
    print(bops_line(info.bops))
    emit(args, {"directory": str(info.directory), "file_bytes": info.file_bytes, "code_bytes": info.code_bytes,
                "scale_bytes": info.scale_bytes, "other_bytes": info.other_bytes, "buffer_bytes": info.buffer_bytes,
                "overhead_bytes": info.overhead_bytes, "packed_bytes": info.predicted_bytes,
                "packed_ratio": info.size.ratio, "bops": info.bops,
                "activation_bits": args.activation_bits if info.activations else None})
    return EXIT_OK


def bops_line(bops: Any) -> str:
    """The artefact's BOPs beside the plan's (cetopt.artifact.artifact_bops), one line."""
    if not bops or bops.get("total") is None:
        return "BOPs: not known (a planned layer never ran on the calibration batch)"
    kind = "float32" if bops["activation_bits"] == 32 else f"{bops['activation_bits']}-bit"
    line = f"BOPs {bops['total']:.4g} per sample with {kind} activations"
    if bops.get("plan_total") is None:
        return line + " (the plan records no BOPs)"
    if bops.get("plan_activation_bits") == bops["activation_bits"]:
        return line + f" (the plan's: {bops['plan_total']:.4g}, same activation bits)"
    return line + (f"; the plan's {bops['plan_total']:.4g} assumed {bops['plan_activation_bits']}-bit activations "
                   f"(apply with --activation-bits {bops['plan_activation_bits']} to match it)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cetopt.artifact import evaluate_artifact, read_manifest
    from cetopt.modelspec import choose_model, load_model_spec

    if args.directory.is_file():  # an ONNX file written by cetopt export
        return _evaluate_onnx(args)
    target = choose_model(args.model, read_manifest(args.directory).get("target"), what=f"artefact {args.directory}",
                          allow_mismatch=args.allow_model_mismatch)
    report = evaluate_artifact(args.directory, load_model_spec(target, objective=_artifact_objective(args.directory)))
    if args.format == "json":
        print(json.dumps(report, allow_nan=False))
        return EXIT_OK
    metric = report["metric_name"]
    print(f"{args.directory}: {report['model']}, {report['layers']} packed layers, {report['file_bytes']} bytes on disk, "
          f"packed ratio {report['packed_ratio']:.2f} vs FP32")
    if metric is not None:
        print(f"{metric}: {report['metric']:.4f} (FP32 {report['fp_metric']:.4f})")
        others = {k: v for k, v in report["metrics"].items() if k != metric}
        if others:  # e.g. an inputs-only spec's fidelity to FP32: kl, cosine, mse beside the agreement
            print("also: " + ", ".join(f"{k} {v:.6g}" for k, v in others.items()))
    if report["activations"]:
        acts = report["activations"]
        print(f"{acts['inputs']} layer inputs fake-quantised to {acts['bits']} bits per tensor ({acts['observer']} "
              "ranges recorded by cetopt apply)")
    if report["bops"]:
        print(bops_line(report["bops"]))
    print(f"calibration loss change: {report['calibration_dloss']:+.6f}")
    if report["validation_dloss"] is not None:
        print(f"validation loss change: {report['validation_dloss']:+.6f}")
    return EXIT_OK


def _artifact_objective(directory: Path) -> str | None:
    """The objective the plan inside an artefact was made for (its plan.json records a fidelity objective; None: the
    spec's own), so the artefact is measured on the batches its fingerprint was taken on."""
    from cetopt.modelspec import objective_of
    from cetopt.quant.plan import Plan

    plan_file = directory / "plan.json"
    return objective_of(Plan.load(plan_file).extra) if plan_file.is_file() else None


def _evaluate_onnx(args: argparse.Namespace) -> int:
    from cetopt.export.onnx_eval import evaluate_onnx, onnx_props
    from cetopt.modelspec import load_model_spec

    if not args.model:
        raise ProblemError("evaluating an ONNX file needs the model it was exported from: pass --model",
                           field="--model")
    recorded = args.artifact if args.artifact is not None else onnx_props(args.directory).get("artifact")
    objective = _artifact_objective(Path(recorded)) if recorded else None  # the batches its plan was made on
    report = evaluate_onnx(args.directory, load_model_spec(args.model, objective=objective), artifact=args.artifact,
                           int8_matmul=args.int8_matmul)
    if args.format == "json":
        print(json.dumps(report.to_dict(), allow_nan=False))
        return EXIT_OK
    print(f"{args.directory}: {report.model} in onnxruntime, {report.file_bytes} bytes on disk (the artefact's packed "
          f"size: {report.packed_bytes} bytes)")
    for name, value in report.metrics.items():
        print(f"{name}: {value:.4f} (torch artefact {report.artifact_metrics[name]:.4f}, FP32 "
              f"{report.fp_metrics[name]:.4f})")
    agreement = "" if report.argmax_agreement is None else f", argmax equal on {report.argmax_agreement:.2%} of rows"
    print(f"outputs vs the unpacked torch artefact: max relative error {report.max_relative_error:.2e} over "
          f"{report.compared_calls} calls{agreement}")
    print(f"calibration loss change: {report.calibration_dloss:+.6f}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from cetopt.export.onnx_export import export_onnx
    from cetopt.modelspec import load_model_spec

    if args.format == "onnx":  # the file format's old spelling: --format now selects the output, as everywhere
        logging.getLogger(__name__).warning("`cetopt export --format onnx` is deprecated: the file format is --to "
                                            "onnx (the default); --format selects table or json output")

    info = export_onnx(args.directory, load_model_spec(args.model, objective=_artifact_objective(args.directory)),
                       args.out, activation_bits=args.activation_bits,
                       observer=args.observer)
    kinds: dict[str, int] = {}
    for storage in info.storage.values():
        kinds[storage] = kinds.get(storage, 0) + 1
    exact = sum(1 for e in info.weight_error.values() if e == 0.0)
    print(f"wrote {info.path}: {info.file_bytes} bytes = codes {info.code_bytes} + scales {info.scale_bytes} + other "
          f"parameters {info.other_bytes} + container overhead {info.overhead_bytes} (the artefact's packed size: "
          f"{info.packed_bytes} bytes)")
    print(f"{len(info.storage)} layers with integer weights ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); "
          f"{exact} dequantise to exactly the artefact's weights, the largest relative difference is "
          f"{max(info.weight_error.values(), default=0.0):.2e}")
    print(padding_line(info))
    if info.activations:
        bits = next(iter(info.activations.values())).bits
        where = "recorded in the artefact" if info.activation_source == "artifact" else \
            f"{args.observer} ranges calibrated in onnxruntime"
        print(f"{len(info.activations)} activation inputs quantised to {bits} bits per tensor "
              f"(QuantizeLinear/DequantizeLinear, {where})")
    emit(args, {"path": str(info.path), "format": args.to, "file_bytes": info.file_bytes, "code_bytes": info.code_bytes,
                "scale_bytes": info.scale_bytes, "other_bytes": info.other_bytes,
                "overhead_bytes": info.overhead_bytes, "packed_bytes": info.packed_bytes, "storage": info.storage,
                "weight_error": info.weight_error, "padding_bytes": info.padding_bytes,
                "activation_bits": next(iter(info.activations.values())).bits if info.activations else None})
    return EXIT_OK


def padding_line(info: Any) -> str:
    """What ONNX's 2/4/8/16-bit containers add to the codes, per plan bit-width (cetopt.export.OnnxExport)."""
    parts = [f"{b}-bit {p.packed_bytes} -> {p.onnx_bytes} as {p.container} ({p.ratio:.2f}x)"
             for b, p in info.padding.items()]
    padded = sorted(b for b, p in info.padding.items() if p.padding_bytes > 0)
    line = (f"container padding {info.padding_bytes} bytes ({info.padding_bytes / info.file_bytes:.1%} of the file); "
            f"codes packed -> in the file: {'; '.join(parts) or 'none'}")
    if padded:
        names = ", ".join(f"{b}-" for b in padded[:-1]) + (" and " if len(padded) > 1 else "") + f"{padded[-1]}-bit"
        line += (f". ONNX stores integers at 2, 4, 8 or 16 bits, so the {names} codes are padded: plan with "
                 "container-exact widths (cetopt plan ... --bits 2,4,8) to avoid it")
    return line


def cmd_plan(args: argparse.Namespace) -> int:
    from cetopt.modelspec import load_model_spec
    from cetopt.problem.model import Budget
    from cetopt.quant.plan import plan_from_choices
    from cetopt.quant.quantizers import QuantizerSpec
    from cetopt.rerank import select_plan, selection_table
    from cetopt.search.base import SearchBudget
    from cetopt.workflow import build_for

    pool = tuple(name for name in args.pool.split(",") if name.strip())
    spec = load_model_spec(args.model, objective=args.objective)  # references on the unfolded model, as apply
    if args.fold_bn:
        from cetopt.quant.fold import fold_spec

        spec = fold_spec(spec)  # recorded in the problem and its plans: apply folds the same way
    built = build_for(spec, method=args.method, bits=int_list(args.bits, "--bits"), budget=Budget(avg_bits=args.avg_bits),
                      target=args.model, quantizer=QuantizerSpec(clip=args.clip), rounding=args.rounding)
    budget = SearchBudget(forwards=args.search_forwards, seconds=args.search_seconds)
    selection = select_plan(spec, built, args.rerank, pool=pool, solver=args.solver, backends=not args.no_backends,
                            search=args.search, search_budget=budget, progress=True)
    result, found = selection.result, selection.search
    best = result.best
    candidates = [{"plan": p.label, "size_bits": p.size_bits, "predicted_loss": p.predicted_loss,
                   "measured_loss": p.measured} for p in result.plans]
    member = best.source if best.rank is None else f"{best.source}#{best.rank}"
    cost = {"selection_seconds": selection.seconds, "pool_seconds": selection.pool_seconds,
            "backend_seconds": selection.backend_seconds, "plans_measured": len(result.plans),
            "search_forwards": found.forwards if found else 0, "search_seconds": found.seconds if found else 0.0}
    extra = {"solver": args.solver, "predicted_loss": best.predicted_loss, "budget_size_bits": best.size_bits,
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
    from cetopt.modelspec import normalise_target

    problem = built.problem if args.activation_bits == built.problem.activation_bits else \
        built.problem.with_changes(activation_bits=args.activation_bits)  # what the plan's BOPs assume
    plan = plan_from_choices(problem, best.choices, extra=extra, model=normalise_target(args.model))
    plan.save(args.out)
    _print_coverage(built.problem.metadata)
    print(selection_table(selection, built.problem.total_params))
    from cetopt.quant.pack import model_packed_size

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
    emit(args, {"out": str(args.out), "selected": best.label, "measured_loss": best.measured,
                "split": selection.split, "packed_bytes": size.total_bytes, "packed_ratio": size.ratio, **extra})
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from cetopt.pipeline import demo_report

    if args.rerank:
        from cetopt.rerank import rerank_report

        text = rerank_report(args.model, args.rerank, avg_bits=args.avg_bits)
        print(text)
        emit(args, {"model": args.model, "rerank": args.rerank, "avg_bits": args.avg_bits, "report": text})
        return EXIT_OK
    report = demo_report(args.model, avg_bits=args.avg_bits, rounding=args.rounding, objective=args.objective)
    print(report.text)
    emit(args, report.to_dict())
    return EXIT_OK


def add_objective(p: argparse.ArgumentParser) -> None:
    """``--objective task|fidelity`` (cetopt.modelspec.OBJECTIVES) on a command that builds a problem."""
    from cetopt.modelspec import OBJECTIVES  # torch-free at import

    p.add_argument("--objective", choices=OBJECTIVES, default=None,
                   help="what the problem minimises: the spec's own loss_fn (task) or the fidelity to the model's FP32 "
                        "outputs with the labels dropped (fidelity: cetopt.losses; KL for logits). Default: the spec's "
                        "own (fidelity for an inputs-only spec); recorded in the plan, so apply and evaluate follow it")


def add_parsers(sub: Any) -> None:
    """Register this module's subcommands on ``sub`` (argparse subparsers)."""
    from cetopt.quant.rounding.registry import ROUNDINGS

    p = sub.add_parser("extract", help="extract curvature from a zoo model and write its problem file")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--bits", default="2,3,4,6,8", help="candidate bit-widths, comma-separated")
    p.add_argument("--activation-bits", type=int_in(1, 32), default=8, metavar="A",
                   help="activation width the problem's BOPs assume (macs x weight bits x A; default 8; cetopt "
                        "apply --activation-bits A makes the artefact match)")
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
    add_objective(p)
    p.add_argument("--interactions", action="store_true", help="add cross-layer terms d_a'H_ab d_b of adjacent layers")
    p.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=True,
                   help="fold eval-mode BatchNorms into the Linear/Conv before them first (default; exact; recorded, "
                        "so apply folds too): on the default per-channel grid the plans and accuracy were unchanged "
                        "and the file smaller, BatchNorm's four FP32 vectors becoming one bias "
                        "(benchmarks/results/bn-fold.md)")
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
    p.add_argument("--activation-bits", type=int_in(1, 32), default=8, metavar="A",
                   help="activation width the problem's BOPs assume (macs x weight bits x A; default 8; cetopt "
                        "apply --activation-bits A makes the artefact match)")
    p.add_argument("--clip", choices=("none", "mse"), default="mse", help="the candidates' quantiser, as extract")
    p.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=True,
                   help="fold BatchNorms first (default), as extract")
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
    p.add_argument("--rounding", choices=ROUNDINGS, default=None, metavar="NAME",
                   help=f"the candidates' rounding, the pool's too: {', '.join(ROUNDINGS)} (default "
                        "cetopt.workflow.DEFAULT_ROUNDING)")
    add_objective(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("apply", help="compress a model by a plan: packed codes and scales in DIR/model.safetensors, "
                                     "with plan.json and manifest.json (fingerprints, sizes)")
    p.add_argument("plan", type=Path, help="a plan file (cetopt solve --out PLAN)")
    p.add_argument("--model", help="zoo model, module:function or path/to/file.py:function (default: the plan's model "
                   "when it is a zoo name; a target recorded in a file is compared, never imported)")
    p.add_argument("--allow-model-mismatch", action="store_true",
                   help="accept a --model other than the plan's recorded one (renamed or moved; warned)")
    p.add_argument("--allow-no-fingerprint", action="store_true",
                   help="apply a plan that records no weights fingerprint (hand-written; warned): nothing then ties "
                        "it to the model's weights")
    p.add_argument("--out", type=Path, required=True, help="artefact directory: new, empty, or an artefact to replace "
                                                            "(built beside it and swapped in whole)")
    p.add_argument("--activation-bits", type=int, choices=(4, 8), help="also quantise the input of every planned "
                   "layer but embeddings (per tensor, static, calibrated on the calibration batches, recorded in the "
                   "artefact; evaluate and export use it); default: weights only, BOPs counted at float32 activations")
    p.add_argument("--observer", choices=("minmax", "percentile"), default="minmax",
                   help="activation ranges: min..max of the calibration values, or their 0.01..99.99 percentiles")
    p.add_argument("--sequential-rounding", action="store_true", help="round adaround/gptq layers in GPTQ's order, "
                   "each on the inputs of the model with its upstream layers already quantised (recorded in the plan)")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("evaluate", help="load an artefact written by cetopt apply into its model and measure it, or "
                                        "run an ONNX file written by cetopt export in onnxruntime")
    p.add_argument("directory", type=Path, help="an artefact directory, or an ONNX file from cetopt export")
    p.add_argument("--model", help="the model it was applied to (default: the manifest's model when it is a zoo "
                   "name; a target recorded in a file is compared, never imported)")
    p.add_argument("--allow-model-mismatch", action="store_true",
                   help="accept a --model other than the manifest's recorded one (renamed or moved; warned)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--artifact", type=Path, help="for an ONNX file: the artefact it was exported from (default: the "
                                                 "directory recorded in the file)")
    p.add_argument("--int8-matmul", action="store_true", help="for an ONNX file: let onnxruntime quantise the inputs "
                   "of MatMuls it fuses with DequantizeLinear to int8 (onnxruntime's own default, which moves outputs by about "
                   "1e-3 relative; cetopt's default keeps them float32)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="write an artefact as a file a runtime executes: ONNX with int4/int8 weights and "
                                      "DequantizeLinear (cetopt evaluate FILE.onnx --model SPEC runs it)")
    p.add_argument("directory", type=Path, help="an artefact directory written by cetopt apply")
    p.add_argument("--model", required=True, help="the model the artefact was applied to: " + MODEL_HELP)
    p.add_argument("--to", choices=("onnx",), default="onnx", help="file format (onnx: opset 25)")
    p.add_argument("--format", choices=("table", "json", "onnx"), default="table",
                   help="table or json output, as every command ('onnx', the file format's old spelling, is "
                        "accepted with a warning: use --to)")
    p.set_defaults(_generic_format=True)
    p.add_argument("--out", type=Path, required=True, help="the file to write (atomically)")
    p.add_argument("--activation-bits", type=int, choices=(4, 8), help="also quantise the activation input of every "
                   "quantised Conv/Gemm/MatMul (per tensor, static, calibrated on the calibration batches in "
                   "onnxruntime); default: weights only, or the grids an artefact applied with --activation-bits "
                   "records (reused, not recalibrated)")
    p.add_argument("--observer", choices=("minmax", "percentile"), default="minmax",
                   help="activation ranges: min..max of the calibration values, or their 0.01..99.99 percentiles")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="the whole pipeline on a zoo model: extract, solve with every backend, apply, measure")
    p.add_argument("model", nargs="?", default="digits-cnn", help=MODEL_HELP)
    p.add_argument("--avg-bits", type=float, default=3.0)
    p.add_argument("--rerank", type=int_in(1, 1000), default=0, metavar="K",
                   help="instead: dp's K best plans, each measured on the validation batches; the best measured wins")
    p.add_argument("--rounding", choices=ROUNDINGS, default=None, metavar="NAME",
                   help=f"every plan's rounding, baselines included: {', '.join(ROUNDINGS)} (default "
                        "cetopt.workflow.DEFAULT_ROUNDING)")
    add_objective(p)
    p.set_defaults(func=cmd_demo)
