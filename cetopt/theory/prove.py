"""``cetopt prove MODEL``: run the seven checks of the CET geometry on a zoo model and write a markdown
report with plots (and the equal-size comparison table)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from cetopt._atomic import atomic_write_text
from cetopt.curvature.extract import CurvatureSettings
from cetopt.theory.allocation import (PlanMeasurement, _vs_fp, check_allocation, equal_size_figure,
                                      equal_size_table, smallest_lossless)
from cetopt.theory.axes import check_complementary, check_major_axis
from cetopt.theory.lossless import VARIANTS as LOSSLESS_VARIANTS, check_lossless
from cetopt.theory.spectra import check_quadric_types
from cetopt.theory.context import DENSE_MAX, ProofContext
from cetopt.theory.prediction import check_additivity, check_per_layer_prediction
from cetopt.theory.plan_prediction import check_plan_prediction
from cetopt.tables import markdown_table
from cetopt.theory.checkpoint import ProveCheckpoints
from cetopt.theory.report import CheckResult, render_report, text_summary

CHECKS: dict[int, Callable[..., CheckResult]] = {
    1: check_per_layer_prediction, 2: check_quadric_types, 3: check_major_axis, 4: check_complementary,
    5: check_lossless, 6: check_additivity, 7: check_allocation, 8: check_plan_prediction,
}


def _equal_size_section(ctx: ProofContext, rows: Sequence[PlanMeasurement], lossless: dict[str, PlanMeasurement | None],
                        figures: Sequence[str], lossless_note: str = "") -> str:
    fp = ctx.metric()
    table = markdown_table(
        ["avg bits", "method", "achieved bits", "packed x", "predicted dL", "measured dL", "test metric",
         "vs FP, points [95% CI]", "status"],
        [[f"{r.budget_bits:g}", r.label, f"{r.avg_bits:.3f}", f"{r.packed_ratio:.2f}",
          "-" if r.predicted is None else r.predicted, r.measured, f"{r.metric:.4f}", r.vs_fp or "-", r.status]
         for r in rows])
    smallest = markdown_table(
        ["method", "smallest avg bits with validation metric >= FP", "packed x vs FP32", "test metric",
         "test vs FP, points [95% CI]"],
        [[k, "none on the grid" if m is None else f"{m.avg_bits:.3f}",
          "-" if m is None else f"{m.packed_ratio:.2f}x", "-" if m is None else f"{m.metric:.4f}",
          "-" if m is None else (m.vs_fp or "-")] for k, m in lossless.items()])
    figs = "\n\n".join(f"![equal size]({f})" for f in figures)
    if lossless_note:
        smallest = lossless_note
    return (f"## Equal-size comparison\n\nFP32 test metric {fp:.4f}. Every plan quantises the same layers to the "
            "same average bits (uniform: every layer at that width); predicted dL is each method's own objective; "
            "'packed x' is FP32 size over the packed size of the whole model (codes, scales and every unquantised "
            "parameter, cetopt.quant.apply.apply_plan); the CI is a paired bootstrap over test examples, or over "
            f"their sources (photos, documents) when the model names them (ModelSpec.test_clusters; a tie when "
            f"it contains 0).\n\n{figs}\n\n{table}\n\n### Smallest size without loss vs FP\n\n"
            "Selected on the validation split (the grid's smallest average bits whose validation accuracy is at "
            f"least the FP model's); reported on the test set.\n\n{smallest}")


def cost_dominance(ctx: ProofContext) -> dict[str, dict[str, float]]:
    """``method [rounding, grid]`` -> its signals' effects on the prices of the problem the run built
    (cetopt.costmodels.dominance), for every cost model this run built a problem of."""
    out: dict[str, dict[str, float]] = {}
    for built in ctx.built_problems():
        meta = built.problem.metadata
        quantizer = meta.get("quantizer") if isinstance(meta.get("quantizer"), Mapping) else {}
        label = f"{meta.get('method')} [{meta.get('rounding', 'nearest')} rounding, {quantizer.get('clip', 'none')} grid]"
        out.setdefault(label, dict(meta.get("cost_signal_effects") or {}))
    return out


def _dominance_section(effects: dict[str, dict[str, float]]) -> str:
    from cetopt.costmodels.dominance import describe_effects
    from cetopt.tables import markdown_table

    rows = [[label, describe_effects(e)] for label, e in effects.items()]
    return ("## What dominates each cost model's cost\n\nFor each problem this run built: how much each signal moves "
            "the prices when it is set to zero, as a share of the prices' total size over every candidate "
            "(cetopt.costmodels.dominance; 1 = removing it moves the prices by their whole size). A cost model is "
            "what its dominant signal is on this model, whatever its name says.\n\n"
            + markdown_table(["cost model", "signal effects"], rows))


def _preamble(model: str, ctx: ProofContext, seconds: float, reused: Sequence[str] = ()) -> str:
    resumed = (f" (this run; {', '.join(reused)} read from the checkpoints of an earlier run with the same "
               "inputs)" if reused else "")
    dense = ("" if ctx.dense_max == DENSE_MAX else " no dense Hessian blocks (check 2 reads every layer's Lanczos "
             "ends);" if ctx.dense_max == 0 else f" dense Hessian blocks only for layers of <= {ctx.dense_max} weights;")
    return (f"Model **{model}** ({ctx.task.data}); {len(ctx.quadrics)} quantisable layers; calibration loss "
            f"{ctx.base_loss:.5f}; curvature: k = {ctx.settings.k} eigenpairs per end (block Lanczos, "
            f"{ctx.settings.lanczos_iterations} iterations), Hutchinson traces;{dense} candidate bits {list(ctx.bits)}; "
            f"quantiser: symmetric per-channel round-to-nearest unless stated. Measured = mean calibration loss "
            f"change. Generated by `cetopt prove {model}` in {seconds:.0f} s{resumed}.")


@dataclass(frozen=True)
class ProveSettings:
    """How thoroughly ``prove`` looks (every field has the command line's default).

    Attributes:
        table_bits: average bit-widths of the equal-size table (empty: no table).
        lossless_search: search the smallest lossless plan (needs validation batches).
        k: eigenpairs per end of every layer's spectrum; lanczos_iterations: the Lanczos steps that find them.
        dense_max: layers with at most this many weights get their exact float64 Hessian block in check 2
            (n products each; 0 for none, as large inputs need).
        lossless_variants: stochastic roundings per layer and bit-width in check 5, beside round-to-nearest.
    """

    table_bits: Sequence[int] = (3, 4, 5)
    lossless_search: bool = True
    k: int = 16
    lanczos_iterations: int = 48
    dense_max: int = DENSE_MAX
    lossless_variants: int = LOSSLESS_VARIANTS


def prove(model: str, outdir: str | os.PathLike[str], *, checks: Sequence[int] = tuple(CHECKS),
          settings: ProveSettings = ProveSettings(), resume: bool = True,
          log: Callable[[str], None] = lambda _: None) -> list[CheckResult]:
    """Run ``checks`` on zoo model ``model``; write ``outdir/report.md``, its plots and ``results.json`` (its
    ``finished`` is false, and ``not_finished`` says what is left, while the run is under way or was stopped).

    ``settings.k`` eigenpairs per end of every layer's spectrum from ``settings.lanczos_iterations`` Lanczos steps
    (the report's preamble states both; the curvature is cached per settings); the other settings as
    :class:`ProveSettings` says (check 5's roundings cost one Hessian product and one calibration pass each).
    Each finished check and each bit-width of the table is kept in ``outdir/checkpoints``
    (cetopt.theory.checkpoint) and report.md is rewritten after each: a stopped run loses only the part under
    way, and with ``resume`` a run with the same inputs reads the finished parts back (``resume=False`` computes
    everything again)."""
    table_bits, lossless_search, k = settings.table_bits, settings.lossless_search, settings.k
    lanczos_iterations, dense_max, lossless_variants = (settings.lanczos_iterations, settings.dense_max,
                                                        settings.lossless_variants)
    from cetopt.modelspec import load_model_spec

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    task = load_model_spec(model)
    lossless_note = ""
    if table_bits and lossless_search and not task.validation:
        # selection must never look at the test set, and this spec has nothing else to select on
        lossless_note = (f"Not searched: {task.name} has no validation batches, and the selection never looks at "
                         "the test set.")
        lossless_search = False
        log(f"smallest-lossless search skipped: {task.name} has no validation batches")
    from cetopt.fingerprint import fingerprint_spec

    fingerprint = fingerprint_spec(task).as_metadata()
    ctx = ProofContext.create(task, settings=CurvatureSettings(k=k, lanczos_iterations=lanczos_iterations),
                              dense_max=dense_max)
    log(f"curvature of {len(ctx.quadrics)} layers ready ({time.perf_counter() - start:.1f} s)")
    saved = ProveCheckpoints(out, {"model": model, "fingerprint": fingerprint, "k": k,
                                   "lanczos_iterations": lanczos_iterations, "bits": list(ctx.bits),
                                   "dense_max": dense_max},
                              test_key={"data": task.data, "fp_test_metric": ctx.metric()},
                              check_keys={5: {"variants": lossless_variants}})
    if not resume:
        saved.clear()
    run = _Run(model, out, task, ctx, fingerprint, start, log)
    run.run_checks(checks, saved, {5: {"variants": lossless_variants}}, table_bits)
    sections = []
    table_rows: list[PlanMeasurement] = []
    lossless: dict[str, PlanMeasurement | None] = {}
    if table_bits:
        table_rows = run.equal_size_rows(table_bits, saved)
        lossless = _smallest_lossless(ctx) if lossless_search else {}
        figures = equal_size_figure(table_rows, ctx.metric(), out, f"{model}: metric at equal size")
        sections.append(_equal_size_section(ctx, table_rows, lossless, figures, lossless_note))
    dominance = _logged_dominance(ctx, log)
    if dominance:
        sections.append(_dominance_section(dominance))
    run.finish(sections, {"equal_size": [asdict(r) for r in table_rows],
                          "smallest_lossless": {k: (asdict(v) if v else None) for k, v in lossless.items()},
                          "cost_signal_effects": dominance})
    log(text_summary(run.results))
    return run.results


@dataclass
class _Run:
    """One ``prove`` run's state: the results so far and the parts read back from checkpoints; report.md and
    results.json are rewritten after each part, so a stopped run keeps what it finished."""

    model: str
    out: Path
    task: Any
    ctx: ProofContext
    fingerprint: Mapping[str, Any]
    start: float
    log: Callable[[str], None]
    results: list[CheckResult] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)

    def checks_json(self) -> list[dict[str, object]]:
        return [{"number": c.number, "title": c.title, "verdict": c.verdict.value, "value": c.value,
                 "tolerance": c.tolerance, "data": c.data} for c in self.results]

    def _write(self, sections: Sequence[str], head: Mapping[str, Any], tail: Mapping[str, Any]) -> None:
        """report.md with ``sections`` after the checks; results.json with ``head`` after the model's name and
        ``tail`` after the checks."""
        atomic_write_text(self.out / "report.md", render_report(
            f"CET checks on {self.model}", _preamble(self.model, self.ctx, time.perf_counter() - self.start,
                                                     self.reused), self.results, sections))
        atomic_write_text(self.out / "results.json", json.dumps({
            "model": self.model, **head, "fingerprint": self.fingerprint, "resumed": self.reused,
            "weights": self.task.metadata.get("weights"), "checks": self.checks_json(), **tail},
            indent=1, default=str))

    def progress(self, note: str) -> None:
        """Keep what is done on disk (``note``: what is left) in case a later part fails or is stopped."""
        self._write([f"## Not finished\n\n{note} This report is rewritten as the run goes on."],
                    {"finished": False, "not_finished": note}, {"equal_size": [], "smallest_lossless": {}})

    def finish(self, sections: Sequence[str], tail: Mapping[str, Any]) -> None:
        self._write(sections, {"finished": True, "fp_metric": self.ctx.metric()}, tail)

    def run_checks(self, checks: Sequence[int], saved: ProveCheckpoints, options: Mapping[int, Mapping[str, Any]],
                   table_bits: Sequence[int]) -> None:
        """Each check, from its checkpoint where one is kept, else run and kept."""
        for i, number in enumerate(checks):
            mark = time.perf_counter()
            result = saved.check(number)
            if result is None:
                result = CHECKS[number](self.ctx, self.out, **options.get(number, {}))
                saved.save_check(result)
                how = f"{time.perf_counter() - mark:.1f} s"
            else:
                self.reused.append(f"check {number}")
                how = "from a checkpoint"
            self.results.append(result)
            self.log(f"check {number}: {result.verdict.value} ({how})")
            table = f" Then the equal-size table at {list(table_bits)} average bits." if table_bits else ""
            self.progress(f"Checks still to run: {list(checks[i + 1:]) or 'none'}.{table}")

    def equal_size_rows(self, table_bits: Sequence[int], saved: ProveCheckpoints) -> list[PlanMeasurement]:
        """The equal-size table's rows at each average bit-width, from checkpoints where kept."""
        table_rows: list[PlanMeasurement] = []
        for b in table_bits:
            rows = saved.table_rows(int(b))
            if rows is None:
                rows = equal_size_table(self.ctx, [b])
                saved.save_table_rows(int(b), rows)
            else:
                self.reused.append(f"the {b}-bit table rows")
            table_rows.extend(rows)
            self.log(f"equal-size table at {b} bits done")
            self.progress(f"Equal-size table: {b} bits done of {list(table_bits)}.")
        return table_rows


def _logged_dominance(ctx: ProofContext, log: Callable[[str], None]) -> dict[str, dict[str, float]]:
    """:func:`cost_dominance`, what dominates each cost model's prices, each logged in a line."""
    from cetopt.costmodels.dominance import describe_effects

    dominance = cost_dominance(ctx)
    for label, effects in dominance.items():
        log(f"what dominates {label}: {describe_effects(effects)}")
    return dominance


def _smallest_lossless(ctx: ProofContext) -> dict[str, PlanMeasurement | None]:
    """The smallest plans whose measured validation loss does not rise: CET's, CET without the gradient term with
    major-axis rounding, and LLC's (minimise size subject to predicted dL <= 0)."""
    from cetopt.solvers.api import solve

    lossless = {"cet": smallest_lossless(ctx, "cet"),
                "cet-nograd + major-axis rounding": smallest_lossless(ctx, "cet-nograd", {"rounding": "major-axis"})}
    llc = ctx.built("llc", avg_bits=None)
    r = solve(llc.problem, "dp")
    if r.success:
        weights = llc.compressed_weights(dict(r.bits))
        bits = dict(r.bits)
        lossless["llc (minimise size s.t. predicted dL <= 0)"] = PlanMeasurement(
            "llc", float("nan"), sum(ctx.weights[n].numel() * b for n, b in bits.items())
            / sum(w.numel() for w in ctx.weights.values()), r.objective, ctx.dloss(weights), ctx.metric(weights),
            r.status.value, ctx.packed_ratio(bits), ctx.validation_metric(weights), bits, _vs_fp(ctx, weights))
    return lossless
