"""Each seed paper's claim measured and judged on one model over seeds, with its report section, and
:func:`run_claims`, which runs the chosen ones and writes report.md and results.json (``cetopt prove MODEL
--claims ...``; the measuring and judging functions are the benchmarks' own)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from cetopt.errors import ProblemError
from cetopt.tables import markdown_table
from cetopt.theory.report import Verdict
from cetopt.theory.seed_claims import (CLAIMS, ClaimResult, ClaimSettings, check_claims, ci_text, command, json_number,
                                       percent, seed_runs)
from cetopt.theory.seed_verdicts import overall_verdict

Log = Callable[[str], None]


def _section(name: str, verdict: str, reason: str, parts: list[str]) -> str:
    return "\n\n".join([f"## {name}: {verdict}", f"**Claim.** {CLAIMS[name][0]}.", f"**Verdict: {verdict}.** {reason}",
                        *parts])


def run_xint(model: str, settings: ClaimSettings, log: Log) -> ClaimResult:
    """FP=xINT's four model-level claims (cetopt.theory.xint_seeds.analyse_model); the verdict is their
    :func:`overall_verdict`."""
    from cetopt.theory.xint_seeds import CLAIMS as XINT_CLAIMS, analyse_model, claim_verdicts, run_seed

    bits, terms = list(settings.bits), list(settings.terms)
    runs = seed_runs(model, settings.seeds, lambda _spec, seed: run_seed(model, seed, bits, terms), "xint", log)
    analysis = analyse_model(runs, bits, terms)
    verdicts = claim_verdicts(analysis)
    verdict = overall_verdict(verdicts)
    reason = "; ".join(f"{c.split(';')[0]}: {v}" for (c, _), v in zip(XINT_CLAIMS, verdicts))
    above = [[k, f"{4 * int(k)}", _seed_ci(a["diff"]), f"{a['seeds_above']} / {a['seeds_equal']}", a["verdict"]]
             for k, a in analysis["above_fp"].items()]
    convergence = [[b, f"{c['worst_rate']:.3f}", ", ".join(f"{c['output_rel_error'][k]:.2g}" for k in terms),
                    c["verdict"]] for b, c in zip(bits, analysis["convergence"].values())]
    parts = [f"No calibration data and no fine-tuning: every term rounds the residual to nearest on its own "
             f"per-channel grid; test accuracy on the labelled test set ({analysis['n_test']} examples), seeds "
             f"{', '.join(map(str, settings.seeds))}; K = {', '.join(map(str, terms))}.",
             markdown_table(["claim", "verdict"], [[c, v] for (c, _), v in zip(XINT_CLAIMS, verdicts)]),
             markdown_table(["bits", "worst contraction rate", "logit rel. error vs FP, per K", "verdict"],
                            convergence),
             f"Granularity: {analysis['granularity']['note']}. Axioms: worst "
             + ", ".join(f"{op} {eps:.3g} eps" for op, eps in analysis["axioms"]["worst_eps"].items()) + ".",
             "4-bit series minus FP, test accuracy, paired by seed (Student-t at "
             f"{analysis['above_fp_confidence']:.2%}, Bonferroni over the K tried):" if above else
             "'Above FP' needs 4 among the bit-widths (--xint-bits): not tested.",
             *([markdown_table(["K", "bits/weight", "accuracy - FP, points [CI]", "seeds above / equal", "verdict"],
                               above)] if above else [])]
    return ClaimResult("xint", CLAIMS["xint"][0], Verdict(verdict), reason, _section("xint", verdict, reason, parts),
                       {"verdicts": dict(zip([key for _, key in XINT_CLAIMS], verdicts)), "analysis": analysis,
                        "runs": runs, "bits": bits, "terms": terms})


def _seed_ci(s: dict[str, float]) -> str:
    return f"{100 * s['mean']:+.2f} [{100 * s['low']:+.2f}, {100 * s['high']:+.2f}]"


def run_headline(model: str, settings: ClaimSettings, log: Log) -> ClaimResult:
    """CET's headline: the largest packed ratio at FP validation accuracy per seed (walk_budgets), judged by
    judge_headline."""
    from cetopt.theory.headline import BUDGETS, FIDELITY_TOLERANCE, NEARLY, judge_headline, walk_budgets

    budgets = tuple(settings.budgets or BUDGETS)
    walks = seed_runs(model, settings.seeds, lambda spec, seed: walk_budgets(spec, budgets, model=model, seed=seed),
                      "headline", log)
    v = judge_headline(walks)
    metric, tolerance = walks[0].metric, walks[0].tolerance
    rows = []
    for w in walks:
        p = None if w.chosen is None else w.points[w.chosen]
        rows.append([w.seed, percent(w.fp_validation_accuracy), percent(w.fp_test_accuracy),
                     "-" if p is None else f"{p.budget_bits:g}", f"{w.chosen_ratio:.2f}",
                     "-" if p is None else percent(p.validation_accuracy), percent(w.chosen_test_accuracy),
                     ci_text(w.test_ci), f"{w.ceiling_ratio:.2f}"])
    at_fp = (f"whose validation {metric} is >= FP32's" if not tolerance else
             f"whose validation {metric} is >= FP32's less {tolerance:g} (a fidelity to FP32, where FP32 scores 1 "
             "by definition, so no plan can be 'above' it: the tolerance is cetopt.theory.headline."
             f"FIDELITY_TOLERANCE = {FIDELITY_TOLERANCE:g}, and the test comparison is against FP32 less it)")
    parts = [f"The default pipeline's dp plans at {len(budgets)} average-bits budgets ({max(budgets):g} down to "
             f"{min(budgets):g}), each applied and measured; per seed the plan with the largest packed ratio "
             f"{at_fp} is chosen, then its test {metric} is compared with FP32's (paired by seed; per seed, a "
             f"bootstrap over test examples, or over their sources when the model names them). 'Nearly 11x' is read "
             f"as >= {NEARLY:g}x. Chosen packed ratio over seeds {v.ratio_mean:.2f}x [{v.ratio_low:.2f}, "
             f"{v.ratio_high:.2f}]; test {metric} vs FP32{' less the tolerance' if tolerance else ''} "
             f"{v.accuracy.describe()}.",
             markdown_table(["seed", "FP32 val %", "FP32 test %", "budget", "packed x", "val %", "test %",
                             "test vs FP32, points (95% bootstrap CI)", "ceiling x"], rows),
             "Every plan of the walk (per seed: budget, average bits, packed ratio, validation and test "
             f"{metric} in %):",
             markdown_table(["seed", "budget", "avg bits", "packed x", "val %", "test %"],
                            [[w.seed, f"{p.budget_bits:g}", f"{p.avg_bits:.3f}", f"{p.packed_ratio:.2f}",
                              percent(p.validation_accuracy), percent(p.test_accuracy)] for w in walks
                             for p in w.points])]
    return ClaimResult("headline", CLAIMS["headline"][0], v.verdict, v.reason,
                       _section("headline", v.verdict.value, v.reason, parts),
                       {"judgement": v.to_dict(), "budgets": list(budgets), "walks": [w.to_dict() for w in walks]})


def run_llc(model: str, settings: ClaimSettings, log: Log) -> ClaimResult:
    """LLC's rank rule per seed (llc_seed_run), judged per reading by judge_llc; the verdict is the predicted
    neighbourhood's (LLC's own rule; the measured reading is an oracle that separates prediction misses)."""
    from cetopt.theory.llc_rank import READINGS, judge_llc, llc_seed_run

    runs = seed_runs(model, settings.seeds, lambda spec, seed: llc_seed_run(spec, model=model, seed=seed), "llc", log)
    verdicts = {r: judge_llc(runs, r) for r in READINGS}
    v = verdicts["predicted"]
    summary = [[r, x.verdict.value, f"{x.compressed_seeds}/{x.n_seeds}", f"{x.ratio_mean:.3f}", x.accuracy.describe(),
                x.reason] for r, x in verdicts.items()]
    rows = [[run.seed, reading, ", ".join(f"{n}:{k}" for n, k in p.ranks.items()) or "(none)", f"{p.packed_ratio:.3f}",
             f"{p.calibration_dloss:.3g}", percent(run.fp_test_accuracy), percent(p.test_accuracy), ci_text(p.test_ci)]
            for run in runs for reading, p in run.plans.items()]
    parts = ["Every rank of every layer's truncated SVD scanned; LLC's rank of a layer is the smallest storage-saving "
             "rank inside the lossless neighbourhood (predicted change g.d + 1/2 d'Hd <= 0); the plan of all layers "
             "is measured on the test set. The 'measured' reading picks ranks by the measured single-layer change.",
             markdown_table(["reading", "verdict", "seeds factorised", "mean packed x",
                             "test acc. vs FP32, points (95% t-CI over seeds)", "reason"], summary),
             markdown_table(["seed", "reading", "ranks (layer:rank)", "packed x", "measured cal. dL", "FP32 test %",
                             "test %", "test vs FP32, points (95% bootstrap CI)"], rows)]
    return ClaimResult("llc-rank", CLAIMS["llc-rank"][0], v.verdict, v.reason,
                       _section("llc-rank", v.verdict.value, v.reason, parts),
                       {"verdicts": {r: x.to_dict() for r, x in verdicts.items()},
                        "runs": [run.to_dict() for run in runs]})


def run_lowrank(model: str, settings: ClaimSettings, log: Log) -> ClaimResult:
    """Joint low-rank per seed and rank fraction (joint_runs), judged per (fraction, rank choice) by judge_joint;
    the verdict is their :func:`overall_verdict`."""
    from cetopt.theory.lowrank_joint import FRACTIONS, VARIANTS, joint_runs, judge_joint

    fractions = tuple(settings.fractions or FRACTIONS)
    runs, skipped = joint_runs(model, settings.seeds, fractions, log=log)
    verdicts = {(f, variant): judge_joint(rs, variant) for f, rs in runs.items() for variant in VARIANTS}
    verdict = overall_verdict([x.verdict.value for x in verdicts.values()]) if verdicts else "inconclusive"
    reason = ("; ".join(f"rank fraction {f:g}, {variant}: {x.verdict.value}" for (f, variant), x in verdicts.items())
              or "no rank fraction saves storage on this model") + (f"; not run: {len(skipped)} cells" if skipped
                                                                    else "")
    summary = [[f"{f:g}", variant, x.verdict.value, f"{x.ratio_mean:.2f}", x.versus_svd.describe(),
                x.versus_fp.describe(), x.reason] for (f, variant), x in verdicts.items()]
    parts = ["At each rank fraction, 'uniform ranks' factorises every storage-saving layer at that fraction of its "
             "rank and 'knapsack ranks' is cetopt's allocation of SVD ranks at the same storage; at each, the factors "
             "optimised for the calibration loss under the perturbation bound are compared with truncated SVD at the "
             "same ranks (equal size) and with FP32, paired by seed.",
             markdown_table(["rank fraction", "ranks", "verdict", "packed x", "optimised vs SVD, points (95% t-CI)",
                             "optimised vs FP32, points (95% t-CI)", "reason"], summary),
             *(["Not run (recorded): " + "; ".join(skipped)] if skipped else [])]
    return ClaimResult("lowrank", CLAIMS["lowrank"][0], Verdict(verdict), reason,
                       _section("lowrank", verdict, reason, parts),
                       {"verdicts": {f"{f:g}/{variant}": x.to_dict() for (f, variant), x in verdicts.items()},
                        "runs": {f"{f:g}": [r.to_dict() for r in rs] for f, rs in runs.items()},
                        "fractions": list(fractions), "skipped": skipped})


def run_compact(model: str, settings: ClaimSettings, log: Log) -> ClaimResult:
    """Joint low-rank's compact form per seed (compact_walk: the smallest model lossless on validation, optimised
    factors and truncated SVD each), judged by judge_compact under the walks' criterion (validation accuracy)."""
    from cetopt.theory.lowrank_compact import FRACTIONS, compact_walk, judge_compact

    fractions = tuple(settings.fractions or FRACTIONS)
    walks = seed_runs(model, settings.seeds, lambda spec, seed: compact_walk(spec, fractions, model=model, seed=seed),
                      "lowrank-compact", log)
    v = judge_compact(walks)
    rows = [[w.seed, percent(w.fp_test), f"{w.ratio('joint'):.3f}", f"{w.ratio('svd'):.3f}",
             ci_text(w.joint_vs_fp), ci_text(w.svd_vs_fp)] for w in walks]
    parts = [f"Rank fractions {', '.join(f'{f:g}' for f in fractions)} (bisected between the grid points); per seed "
             "and method the largest packed ratio whose validation accuracy is >= FP32's, its test accuracy against "
             "FP32's (paired bootstrap over test examples).",
             markdown_table(["seed", "FP32 test %", "optimised packed x", "SVD packed x",
                             "optimised vs FP32, points (95% bootstrap)", "SVD vs FP32, points (95% bootstrap)"],
                            rows)]
    return ClaimResult("lowrank-compact", CLAIMS["lowrank-compact"][0], v.verdict, v.reason,
                       _section("lowrank-compact", v.verdict.value, v.reason, parts),
                       {"verdict": v.to_dict(), "walks": [w.to_dict() for w in walks], "fractions": list(fractions)})


RUNNERS: dict[str, Callable[[str, ClaimSettings, Log], ClaimResult]] = {
    "xint": run_xint, "headline": run_headline, "llc-rank": run_llc, "lowrank": run_lowrank,
    "lowrank-compact": run_compact}



def _headline_ready(model: str, seed: int) -> None:
    """Refuse headline, before anything is measured, on a model whose spec has nothing to pick a plan "at FP" by
    (cetopt.theory.headline.walk_metric)."""
    from cetopt.measure import Measurer
    from cetopt.modelspec import load_model_spec
    from cetopt.theory.headline import walk_metric

    spec = load_model_spec(model, seed=seed)
    try:
        walk_metric(spec, Measurer(spec).model_with({}))
    except ProblemError as err:
        raise ProblemError(f"headline cannot run on {model}: {err}; drop headline", field="--claims") from None


def run_claims(model: str, outdir: str | os.PathLike[str], claims: Sequence[str], *,
               settings: ClaimSettings = ClaimSettings(), log: Log = lambda _: None,
               provenance: Mapping[str, Any] | None = None) -> list[ClaimResult]:
    """Measure and judge ``claims`` (keys of :data:`CLAIMS`, in that order) on ``model`` over ``settings.seeds``;
    write ``outdir/report.md`` and ``outdir/results.json`` (atomically, after each claim: ``finished`` is false
    until the last one is done). ``provenance`` (e.g. the code version of :func:`claims_code`) is recorded in
    results.json as given.

    Raises:
        ProblemError: bad claims or settings (:func:`check_claims`), or a model a claim cannot run on.
    """
    check_claims(model, claims, settings)
    if "headline" in claims:
        _headline_ready(model, settings.seeds[0])
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: list[ClaimResult] = []
    for name in claims:
        mark = time.perf_counter()
        results.append(RUNNERS[name](model, settings, log))
        log(f"{name}: {results[-1].verdict.value} ({time.perf_counter() - mark:.0f} s)")
        _write(out, (model, claims, settings), results, time.perf_counter() - start, provenance or {})
    return results


def _write(out: Path, run: tuple[str, Sequence[str], ClaimSettings], results: Sequence[ClaimResult], seconds: float,
           provenance: Mapping[str, Any]) -> None:
    """report.md and results.json of ``run`` (model, claims, settings) with the ``results`` finished so far."""
    import torch

    from cetopt._atomic import atomic_write_text

    model, claims, settings = run
    left = [c for c in claims if c not in {r.name for r in results}]
    text = "\n\n".join([
        f"# The seed papers' claims on {model}",
        f"Seeds {', '.join(map(str, settings.seeds))}; generated by `{command(model, claims, settings)}` in "
        f"{seconds:.0f} s ({torch.get_num_threads()} torch threads). Verdicts: "
        "pass / fail / partial / inconclusive as in docs/interpreting-checks.md; accuracy intervals are paired "
        "by seed (Student-t) or over test examples (bootstrap).",
        markdown_table(["claim", "verdict", "reason"], [[r.claim, f"**{r.verdict.value}**", r.reason]
                                                        for r in results]),
        *(r.section for r in results),
        *([f"## Not finished\n\nClaims still to run: {', '.join(left)}."] if left else [])]) + "\n"
    data = {"model": model, "seeds": list(settings.seeds), "finished": not left, "not_finished": left,
            "claims": {r.name: {"claim": r.claim, "verdict": r.verdict.value, "reason": r.reason, **r.data}
                       for r in results},
            "seconds": round(seconds, 1), "threads": torch.get_num_threads(), "torch": torch.__version__,
            **provenance}
    atomic_write_text(out / "report.md", text)
    atomic_write_text(out / "results.json", json.dumps(data, indent=1, default=json_number) + "\n")
