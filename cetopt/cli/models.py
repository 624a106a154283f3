"""Model commands: extract a problem, apply a plan into a packed artefact, evaluate it, export it, run the demo
(`cetopt plan` is cetopt.cli.plan)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from cetopt.cli.args import EXIT_OK, MODEL_HELP, add_budget_flags, budget_from_args, int_in
from cetopt.cli.output import emit
from cetopt.cli.recipe_flags import add_recipe_flags, recipe_from_args
from cetopt.errors import ProblemError


def load_spec(args: argparse.Namespace, recipe: Any) -> Any:
    """The model spec of ``args.model`` with the recipe's objective, its BatchNorms folded unless --no-fold-bn."""
    from cetopt.modelspec import load_model_spec

    spec = load_model_spec(args.model, objective=recipe.objective)  # references on the unfolded model, as apply
    if getattr(args, "fold_bn", False):
        from cetopt.quant.fold import fold_spec

        spec = fold_spec(spec)  # recorded in the problem and its plans: apply folds the same way
    return spec


def cmd_extract(args: argparse.Namespace) -> int:
    from cetopt import distributed
    from cetopt.problem.io import save_problem
    from cetopt.workflow import build_for

    recipe, budget = recipe_from_args(args), budget_from_args(args)  # bad flags named before any work
    distributed.init_from_env()  # under torchrun: ranks share the calibration batches, sums are all-reduced
    problem = build_for(load_spec(args, recipe), recipe, budget=budget, target=args.model).problem
    if distributed.is_rank_zero():  # every rank holds the same problem; one writes it (atomically)
        save_problem(problem, args.out)
        print(f"wrote {args.out}: {problem.name}, {len(problem.layers)} layers, bits {list(recipe.bits)}"
              + (f" ({distributed.world_size()} ranks)" if distributed.is_distributed() else ""))
        print_coverage(problem.metadata)
        emit(args, {"out": str(args.out), "problem": problem.name, "layers": len(problem.layers),
                    "bits": list(recipe.bits), "method": recipe.cost_model, "recipe": recipe.to_dict(),
                    "budget": problem.budget.__dict__, "coverage": problem.metadata.get("coverage")})
    distributed.barrier()
    return EXIT_OK


def print_coverage(metadata: Any) -> None:
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


def cmd_demo(args: argparse.Namespace) -> int:
    from cetopt.pipeline import demo_report
    from cetopt.problem.model import Budget
    from cetopt.recipe import DEFAULT_AVG_BITS

    recipe, budget = recipe_from_args(args), budget_from_args(args) or Budget(avg_bits=DEFAULT_AVG_BITS)
    if args.rerank:
        from cetopt.rerank import rerank_report

        text = rerank_report(args.model, args.rerank, budget=budget, recipe=recipe)
        print(text)
        emit(args, {"model": args.model, "rerank": args.rerank, "avg_bits": budget.avg_bits, "report": text})
        return EXIT_OK
    report = demo_report(args.model, recipe, budget=budget)
    print(report.text)
    emit(args, report.to_dict())
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    """Register this module's subcommands on ``sub`` (argparse subparsers)."""
    for add in (_add_extract, _add_apply, _add_evaluate, _add_export, _add_demo):
        add(sub)


FOLD_HELP = ("fold eval-mode BatchNorms into the Linear/Conv before them first (default; exact; recorded, so apply "
             "folds too): on the default per-channel grid the plans and accuracy were unchanged and the file smaller, "
             "BatchNorm's four FP32 vectors becoming one bias (benchmarks/results/bn-fold.md)")


def _add_extract(sub: Any) -> None:
    from cetopt.recipe import DEFAULT_AVG_BITS

    p = sub.add_parser("extract", help="extract curvature from a model and write its problem file")
    p.add_argument("model", help=MODEL_HELP)
    add_recipe_flags(p, joint=True)
    add_budget_flags(p, f"default: {DEFAULT_AVG_BITS:g} average bits (a lossless cost model, llc: size minimised "
                        "subject to a predicted change <= 0)")
    p.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=True, help=FOLD_HELP)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_extract)


def _add_apply(sub: Any) -> None:
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


def _add_evaluate(sub: Any) -> None:
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


def _add_export(sub: Any) -> None:
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


def _add_demo(sub: Any) -> None:
    from cetopt.recipe import DEFAULT_AVG_BITS

    p = sub.add_parser("demo", help="the whole pipeline on a zoo model: extract, solve with every backend, apply, measure")
    p.add_argument("model", nargs="?", default="digits-cnn", help=MODEL_HELP)
    add_recipe_flags(p)
    add_budget_flags(p, f"default: {DEFAULT_AVG_BITS:g} average bits")
    p.add_argument("--rerank", type=int_in(1, 1000), default=0, metavar="K",
                   help="instead: dp's K best plans, each measured on the validation batches; the best measured wins")
    p.set_defaults(func=cmd_demo)
