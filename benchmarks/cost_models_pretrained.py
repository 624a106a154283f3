"""The default cost model on the pretrained models: MobileNetV2 (ImageNet weights) and MiniLM at 3, 4 and 5
average bits, the default cost model (cet-upper) vs HAWQ-V3 vs uniform (and cet, cet-nograd, cet-shrink) at equal
packed size, every plan on the default quantiser grid (MSE clipping; ``--clip none`` for the plain grid), with
paired bootstrap CIs over per-example outcomes.

- MobileNetV2 (zoo "mobilenetv2", seed 0): the zoo's 32 calibration and 32 validation crops; ``--crops`` test
  crops (default 384) of the zoo's test photos, which no calibration or validation crop comes from
  (cetopt.zoo.photos). Per-crop outcomes: top-1 agreement with FP32 (1/0) and KL(FP32 || quantised) in nats; CIs
  resample photos (cluster bootstrap), not crops.
- MiniLM (zoo "minilm", seed 0): pairs 0-15 of the shipped pairs (32 sentences) calibrate; validation and test
  are the zoo's splits by source: the test set is the 32 sentences of pairs 16-31 and the prose sentences of the
  test sources in cetopt/data/minilm_prose.tsv (cetopt.zoo.minilm_text). Per-sentence outcome: cosine between
  FP32 and quantised embeddings; CIs resample sources (a pair, a documentation topic group).

The curvature signals are collected once per model (one build with the union of what the compared cost models
need) and each cost model prices the same candidates from them, exactly as ``build`` would (no candidate
filter applies to these non-lossless models without ``layer_eps``). Every plan is solved with dp. Random plans
(bits from 3..8) add whole-plan prediction quality: predicted vs measured validation/calibration loss change.

Writes ``benchmarks/results/cost_models_pretrained.{json,md}``. Usage::

    OMP_NUM_THREADS=2 python benchmarks/cost_models_pretrained.py [--models mobilenetv2,minilm] [--crops 384]

The same rows for the trained zoo models (seed 0, their own test sets): ``--models digits-mlp,digits-cnn,
mnist1d-resnet --out benchmarks/results/cost_models_baselines``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

METHODS = ("cet-upper", "hawq-v3", "cet", "cet-nograd", "cet-shrink")  # [0] is DEFAULT_COST_MODEL (checked in main)
BITS = (2, 3, 4, 5, 6, 8)
CLIP = "mse"  # the candidates' clipping (--clip): "mse" (cetopt.workflow.DEFAULT_QUANTIZER) or "none" (max |w|)
AVG_BITS = (3.0, 4.0, 5.0)
RANDOM_PLANS = 8
BASELINES = ("hawq-v3", "uniform", "cet")
ALLOCATIONS = ("cet-upper", "hawq-v3", "uniform")  # the plans also re-rounded (ROUNDINGS); [0] is the default
ROUNDINGS = ("mse-clip", "adaround")  # plans re-rounded (cetopt.baselines); major-axis needs Lanczos
OUT = Path(__file__).resolve().parent / "results"
_SIGNALS: dict[str, Any] = {}


def _union_model(methods: Sequence[str]) -> str:
    """Register (once) a cost model needing the union of ``methods``' signals that records each layer's signals."""
    from cetopt.costmodels.base import CostEstimate, CostModel, LayerSignals
    from cetopt.costmodels.registry import cost_model_names, get_cost_model, register

    needs = frozenset().union(*(get_cost_model(m).needs for m in methods))

    class _Recorder(CostModel):
        name = "bench-signals"
        description = "records every signal the compared cost models need (benchmark only)"

        def estimate(self, layer: LayerSignals) -> CostEstimate:
            _SIGNALS[layer.name] = layer
            return CostEstimate(loss=np.zeros(len(layer.energy)))

    _Recorder.needs = needs
    register("bench-signals", _Recorder, replace="bench-signals" in cost_model_names())
    return "bench-signals"


def priced_problems(spec: Any, methods: Sequence[str]) -> tuple[Any, dict[str, Any], float]:
    """(the built problem's weights holder, method -> its problem, build seconds): one signal pass, each method's
    costs (and standard errors) on the same candidates."""
    from cetopt.costmodels.registry import get_cost_model
    from cetopt.problem.model import Choice
    from cetopt.workflow import build_for

    _SIGNALS.clear()
    start = time.perf_counter()
    from cetopt.quant.quantizers import QuantizerSpec

    built = build_for(spec, method=_union_model(methods), bits=BITS, quantizer=QuantizerSpec(clip=CLIP))
    seconds = time.perf_counter() - start
    problems = {}
    for method in methods:
        model = get_cost_model(method)
        layers = []
        for layer in built.problem.layers:
            estimate = model.estimate(_SIGNALS[layer.name])
            loss = np.asarray(estimate.loss, dtype=np.float64)
            stderr = None if estimate.stderr is None else np.asarray(estimate.stderr, dtype=np.float64)
            choices = tuple(Choice(bits=c.bits, loss=float(loss[i]), size_bits=c.size_bits, bops=c.bops, rank=c.rank,
                                   terms=c.terms, loss_stderr=None if stderr is None else float(stderr[i]))
                            for i, c in enumerate(layer.choices))
            layers.append(dataclasses.replace(layer, choices=choices))
        metadata = {**built.problem.metadata, "method": method, "cost_model": model.describe()}
        problems[method] = built.problem.with_changes(layers=tuple(layers), metadata=metadata)
    return built, problems, seconds


def plans(problems: Mapping[str, Any], seed: int = 0) -> dict[str, dict[str, int]]:
    """Label -> bits: each method's dp plan per budget, uniform per budget, random plans."""
    from cetopt.baselines import uniform_bits
    from cetopt.problem.model import Budget
    from cetopt.solvers.api import solve

    out: dict[str, dict[str, int]] = {}
    for method, problem in problems.items():
        for avg in AVG_BITS:
            result = solve(problem.with_budget(Budget(avg_bits=avg)), "dp")
            if result.success:
                out[f"{method}@{avg:g}"] = dict(result.bits)
    reference = next(iter(problems.values()))
    for avg in AVG_BITS:
        uniform = uniform_bits(reference, avg)
        if uniform is not None:
            out[f"uniform@{avg:g}"] = uniform
    rng = np.random.default_rng(1000 + seed)
    tied = {name: group for group in reference.ties for name in group}
    for i in range(RANDOM_PLANS):
        bits: dict[str, int] = {}
        for layer in reference.layers:  # tied layers share a bit-width, as every solved plan does
            first = tied.get(layer.name, (layer.name,))[0]
            bits[layer.name] = bits.get(first) or int(rng.choice((3, 4, 5, 6, 8)))
        out[f"random{i}"] = bits
    return out


def mobilenet_case(crops: int) -> dict[str, Any]:
    """The zoo MobileNetV2 spec and a per-crop outcome function on ``crops`` held-out crops."""
    import torch

    from cetopt.modelspec import load_model_spec
    from cetopt.zoo.photos import split_crops

    spec = load_model_spec("mobilenetv2", seed=0, test_size=32)
    test_crops = split_crops("test", crops, seed=0)  # the zoo's test photos: no calibration/validation crop's photo
    test = test_crops.images
    with torch.no_grad():
        reference = torch.cat([torch.log_softmax(spec.model(test[i:i + 32]), 1) for i in range(0, len(test), 32)])

    def outcomes(model: Any) -> dict[str, np.ndarray]:
        with torch.no_grad():
            cand = torch.cat([torch.log_softmax(model(test[i:i + 32]), 1) for i in range(0, len(test), 32)])
        agree = (cand.argmax(1) == reference.argmax(1)).double().numpy()
        kl = (reference.exp() * (reference - cand)).sum(1).double().numpy()
        return {"top1_agreement": agree, "kl": kl}

    photos = test_crops.photos
    return {"spec": spec, "outcomes": outcomes, "headline": "top1_agreement", "lower_is_better": {"kl"},
            "clusters": {"top1_agreement": photos, "kl": photos},
            "test": f"{crops} crops of {len(set(photos))} test photos (no calibration or validation crop comes from "
                    "them); CIs resample photos"}


def minilm_case() -> dict[str, Any]:
    """The zoo's MiniLM: calibrated on pairs 0-15, tested per sentence on held-out sentences (pairs 16-31 and the
    shipped prose sentences, cetopt.zoo.minilm_text)."""
    from cetopt.modelspec import load_model_spec

    spec = load_model_spec("minilm", seed=0)
    per_sentence = spec.test_outcomes
    assert per_sentence is not None  # the zoo spec defines it
    pairs = int(spec.metadata["test_pair_sentences"])  # the test set starts with the held-out pairs' sentences

    def outcomes(m: Any) -> dict[str, np.ndarray]:
        cosine = np.asarray(per_sentence(m), dtype=np.float64)
        # the paraphrase sentences alone: the calibration text's own kind (the prose is another distribution)
        return {"cosine": cosine, "cosine_pairs": cosine[:pairs]}

    clusters = spec.test_clusters
    return {"spec": spec, "outcomes": outcomes, "headline": "cosine", "lower_is_better": set(),
            "clusters": {"cosine": clusters, "cosine_pairs": None if clusters is None else clusters[:pairs]},
            "test": spec.data + f"; metric cosine_pairs: the {pairs} pair sentences alone; CIs resample sources"}


def zoo_case(name: str) -> dict[str, Any]:
    """A trained zoo model (digits-mlp, digits-cnn, mnist1d-resnet; seed 0) with its per-example test outcomes."""
    from cetopt.modelspec import load_model_spec

    spec = load_model_spec(name, seed=0)
    per_example = spec.test_outcomes
    if per_example is None:
        raise SystemExit(f"{name}: the zoo spec has no per-example test outcomes (ModelSpec.test_outcomes)")
    return {"spec": spec, "outcomes": lambda m: {"correct": np.asarray(per_example(m), dtype=np.float64)},
            "headline": "correct", "lower_is_better": set(), "test": "the zoo's test set (seed 0), accuracy"}


def packed_bits(problem: Any, bits: Mapping[str, int]) -> int:
    from cetopt.quant.pack import problem_packed_size
    from cetopt.quant.plan import Plan

    size = problem_packed_size(problem, Plan(bits=dict(bits)))
    return -1 if size is None else int(size.total_bits)


def cached_problems(spec: Any, cache: Path | None) -> tuple[Any, dict[str, Any], float]:
    """:func:`priced_problems`, kept in ``cache`` (a torch pickle, written atomically) so a rerun of the
    measurements skips the signal pass; the cache records the spec's fingerprint and is refused on a mismatch."""
    import torch

    from cetopt.fingerprint import fingerprint_spec

    from cetopt.builders.second_order import BuiltProblem
    from cetopt.problem.io import problem_from_dict, problem_to_dict

    fingerprint = fingerprint_spec(spec).as_metadata()
    if cache is not None and cache.is_file():
        saved = torch.load(cache, weights_only=False)
        # each method prices the same candidates from the same signals: the set of methods matters, not its order
        if saved["fingerprint"] == fingerprint and set(saved["methods"]) == set(METHODS) and saved["bits"] == list(BITS) \
                and saved.get("clip", "none") == CLIP:
            problems = {m: problem_from_dict(d) for m, d in saved["problems"].items()}
            built = BuiltProblem(problem=problem_from_dict(saved["problem"]), weights=saved["weights"])
            return built, problems, saved["seconds"]
        print(f"  {cache} is for other weights, data, methods, bits or clipping: rebuilding", flush=True)
    built, problems, seconds = priced_problems(spec, METHODS)
    if cache is not None:  # plain dicts and tensors (problems hold read-only mappings that do not pickle)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save({"fingerprint": fingerprint, "methods": list(METHODS), "bits": list(BITS), "clip": CLIP,
                    "problem": problem_to_dict(built.problem), "weights": dict(built.weights),
                    "problems": {m: problem_to_dict(p) for m, p in problems.items()}, "seconds": seconds}, tmp)
        tmp.replace(cache)
    return built, problems, seconds


def fp32_bits(problem: Any) -> int:
    """The uncompressed model's size in bits (every parameter at 32 bits plus buffers), -1 when unknown."""
    from cetopt.quant.pack import problem_packed_size
    from cetopt.quant.plan import Plan

    size = problem_packed_size(problem, Plan(bits={layer.name: 8 for layer in problem.layers}))
    return -1 if size is None else int(size.fp32_bits)


def run_case(name: str, case: Mapping[str, Any], cache: Path | None = None) -> dict[str, Any]:
    """Every plan of one model: outcomes (labelled plans), loss changes and each method's predictions (all)."""
    from cetopt.measure import Measurer
    from cetopt.problem.evaluate import choices_from_bits, evaluate

    built, problems, seconds = cached_problems(case["spec"], cache)
    measurer = Measurer(case["spec"])
    rows, outcomes = [], {}
    for label, bits in plans(problems).items():
        weights = built.compressed_weights(bits)
        row = {"model": name, "plan": label, "bits": bits,
               "avg_bits_used": float(evaluate(built.problem, choices_from_bits(built.problem, bits)).avg_bits),
               "packed_bits": packed_bits(built.problem, bits),
               "calibration_dloss": measurer.calibration_dloss(weights),
               "validation_dloss": measurer.validation_dloss(weights),
               "predicted": {m: float(evaluate(p, choices_from_bits(p, bits)).loss) for m, p in problems.items()}}
        if not label.startswith("random"):
            outcomes[label] = case["outcomes"](measurer.model_with(weights))
            row["metrics"] = {k: float(v.mean()) for k, v in outcomes[label].items()}
        rows.append(row)
        print(f"  {name} {label}: {row.get('metrics', '')}", flush=True)
    baseline_rows(case, built, measurer, rows, outcomes)
    return {"rows": rows, "outcomes": outcomes, "build_seconds": seconds,
            "fp32_packed_bits": fp32_bits(built.problem)}


def baseline_rows(case: Mapping[str, Any], built: Any, measurer: Any, rows: list, outcomes: dict) -> None:
    """The reviewer's baselines: the default, HAWQ-V3 and uniform plans re-rounded with MSE clipping and with
    AdaRound (same bits, same packed size; so the allocations are also compared under a better quantiser than
    round-to-nearest), FP32 itself and FP32 after one calibration gradient step (no quantisation)."""
    from cetopt.baselines import adaround_plan_weights, gradient_step, mse_clip_weights

    spec, names = case["spec"], [layer.name for layer in built.problem.layers]
    for avg in AVG_BITS:
        for allocation in ALLOCATIONS:
            plan = next((r for r in rows if r["plan"] == f"{allocation}@{avg:g}"), None)
            if plan is None:
                continue
            for kind, weights in ((ROUNDINGS[0], lambda b: mse_clip_weights(spec, b)),
                                  (ROUNDINGS[1], lambda b: adaround_plan_weights(spec, b, max_batches=1))):
                start = time.perf_counter()
                w = weights(plan["bits"])
                label = f"{allocation}+{kind}@{avg:g}"
                outcomes[label] = case["outcomes"](measurer.model_with(w))
                rows.append({**{k: plan[k] for k in ("model", "bits", "avg_bits_used", "packed_bits")}, "plan": label,
                             "calibration_dloss": measurer.calibration_dloss(w), "validation_dloss":
                             measurer.validation_dloss(w), "predicted": {}, "seconds": time.perf_counter() - start,
                             "metrics": {k: float(v.mean()) for k, v in outcomes[label].items()}})
                print(f"  {label}: {rows[-1]['metrics']}", flush=True)
    step = gradient_step(spec, names)
    for label, w in (("fp32", {}), ("fp32+step", step.weights)):
        outcomes[label] = case["outcomes"](measurer.model_with(w))
        rows.append({"model": rows[0]["model"], "plan": label, "bits": {}, "avg_bits_used": 32.0, "packed_bits": -1,
                     "calibration_dloss": measurer.calibration_dloss(w) if w else 0.0,
                     "validation_dloss": measurer.validation_dloss(w) if w else 0.0, "predicted": {},
                     "lr": step.lr if w else None,
                     "metrics": {k: float(v.mean()) for k, v in outcomes[label].items()}})
        print(f"  {label}: {rows[-1]['metrics']}", flush=True)


def comparisons(name: str, case: Mapping[str, Any], run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per (budget, method, metric): mean and the paired bootstrap CI of the difference to each baseline (over the
    case's clusters when it has them: ``case["clusters"][metric]``)."""
    from cetopt.stats import paired_ci

    clusters = case.get("clusters", {})

    used = {r["plan"]: r for r in run["rows"]}
    out = []
    for avg in AVG_BITS:
        for method in METHODS + ("uniform",) + tuple(f"{a}+{r}" for a in ALLOCATIONS for r in ROUNDINGS):
            label = f"{method}@{avg:g}"
            if label not in run["outcomes"]:
                continue
            rounding = method.partition("+")[2]  # re-rounded plans are compared with baselines rounded alike
            for metric, values in run["outcomes"][label].items():
                row: dict[str, Any] = {"model": name, "avg_bits": avg, "method": method, "metric": metric,
                                       "headline": metric == case["headline"], "mean": float(values.mean()),
                                       "n_test": int(values.size), "avg_bits_used": used[label]["avg_bits_used"],
                                       "packed_bits": used[label]["packed_bits"]}
                sign = -1.0 if metric in case["lower_is_better"] else 1.0
                for baseline in BASELINES:
                    against = f"{baseline}+{rounding}" if rounding else baseline
                    other = run["outcomes"].get(f"{against}@{avg:g}")
                    if other is None or against == method:
                        continue
                    ci = paired_ci(sign * values, sign * other[metric], clusters.get(metric), n_boot=4000, seed=0)
                    row[f"vs_{baseline}"] = {"estimate": sign * ci.estimate, "low": min(sign * ci.low, sign * ci.high),
                                             "high": max(sign * ci.low, sign * ci.high), "ci_method": ci.method,
                                             "verdict": {"a": "better", "b": "worse", "tie": "tie"}[ci.verdict]}
                out.append(row)
    for metric, values in run["outcomes"].get("fp32+step", {}).items():
        sign = -1.0 if metric in case["lower_is_better"] else 1.0
        ci = paired_ci(sign * values, sign * run["outcomes"]["fp32"][metric], clusters.get(metric), n_boot=4000, seed=0)
        out.append({"model": name, "avg_bits": 32.0, "method": "fp32+step", "metric": metric,
                    "headline": metric == case["headline"], "mean": float(values.mean()), "n_test": int(values.size),
                    "avg_bits_used": 32.0, "packed_bits": -1,
                    "vs_fp32": {"estimate": sign * ci.estimate, "low": min(sign * ci.low, sign * ci.high),
                                "high": max(sign * ci.low, sign * ci.high), "ci_method": ci.method,
                                "verdict": {"a": "better", "b": "worse", "tie": "tie"}[ci.verdict]}})
    return out


def prediction(name: str, run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per cost model: Spearman and sign agreement of predicted vs measured loss change over every plan."""
    from scipy.stats import spearmanr

    out = []
    for method in METHODS:
        entry: dict[str, Any] = {"model": name, "method": method,
                                 "plans": sum(1 for r in run["rows"] if r["predicted"])}
        for target in ("validation_dloss", "calibration_dloss"):
            rows = [r for r in run["rows"] if r[target] is not None and r["predicted"]]
            if len(rows) < 3:
                continue
            p = np.array([r["predicted"][method] for r in rows])
            m = np.array([r[target] for r in rows])
            entry[target] = {"spearman": float(spearmanr(p, m).statistic),
                             "sign_agreement": float(np.mean(np.sign(p) == np.sign(m)))}
        out.append(entry)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    global METHODS, CLIP
    import torch

    from cetopt._atomic import atomic_write_text
    from cetopt.costmodels.registry import DEFAULT_COST_MODEL
    from cost_models_pretrained_report import markdown, verdicts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenetv2,minilm")
    parser.add_argument("--crops", type=int, default=384, help="MobileNetV2 test crops")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default="", help="keep each model's priced problems here (reruns skip the build)")
    parser.add_argument("--out", default=str(OUT / "cost_models_pretrained"), help="output path without extension")
    parser.add_argument("--clip", choices=("none", "mse"), default=CLIP,
                        help="the candidates' quantiser for every method and plan (cetopt extract --clip): mse (the "
                             "default grid) puts all plans, baselines included, on the MSE-clipped grid with costs "
                             "priced there; none: the plain max|w| grid")
    parser.add_argument("--extra-methods", default="", help="more registered cost models to compare, comma-separated "
                        "(e.g. measured)")
    args = parser.parse_args(argv)
    CLIP = args.clip
    METHODS = METHODS + tuple(m for m in args.extra_methods.split(",") if m and m not in METHODS)
    if METHODS[0] != DEFAULT_COST_MODEL or ALLOCATIONS[0] != DEFAULT_COST_MODEL:
        raise SystemExit(f"METHODS[0] is {METHODS[0]!r} and ALLOCATIONS[0] is {ALLOCATIONS[0]!r}, but the default "
                         f"cost model is {DEFAULT_COST_MODEL!r}: both must name it")
    from cetopt.curvature import keep_freed_memory

    keep_freed_memory()  # as the CLI does: large activations without page faults (cetopt.curvature.allocator)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    summary: dict[str, Any] = {"comparisons": [], "prediction": []}
    cases_meta, rows = {}, []
    for name in [m for m in args.models.split(",") if m]:
        t0 = time.perf_counter()
        case = (mobilenet_case(args.crops) if name == "mobilenetv2" else minilm_case() if name == "minilm"
                else zoo_case(name))
        run = run_case(name, case, Path(args.cache_dir) / f"{name}-signals.pt" if args.cache_dir else None)
        summary["comparisons"] += comparisons(name, case, run)
        summary["prediction"] += prediction(name, run)
        rows += run["rows"]
        cases_meta[name] = {"test": case["test"], "build_seconds": run["build_seconds"],
                            "fp32_packed_bits": run["fp32_packed_bits"], "seconds": time.perf_counter() - t0}
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    summary["verdicts"] = verdicts(summary["comparisons"], DEFAULT_COST_MODEL)
    meta = {"command": "python benchmarks/cost_models_pretrained.py" + ("".join(" " + a for a in argv) if argv else ""),
            "default": DEFAULT_COST_MODEL, "methods": list(METHODS), "bits": list(BITS), "avg_bits": list(AVG_BITS),
            "random_plans": RANDOM_PLANS, "clip": CLIP,
            "cases": cases_meta, "seconds": time.perf_counter() - start, "torch_threads": args.threads}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from cetopt.results.provenance import record_for

    version = record_for(out.with_suffix(".json").resolve(), "benchmarks/cost_models_pretrained.py")
    atomic_write_text(out.with_suffix(".json"), json.dumps({"meta": meta, **summary, "plans": rows,
                                                            "code_version": version}, indent=1, sort_keys=True))
    atomic_write_text(out.with_suffix(".md"), markdown(summary, meta))
    print(markdown(summary, meta))
    return 0


if __name__ == "__main__":

    raise SystemExit(main(sys.argv[1:]))
