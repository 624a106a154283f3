"""The end-to-end demo on a model: build its CET problem, solve it with every backend, apply each plan and
measure it beside the uniform and HAWQ-V3 baselines (``cetopt demo``, ``make demo``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from cetopt.modelspec import ModelSpec
from cetopt.problem.model import AllocationProblem, Budget
from cetopt.recipe import Recipe

if TYPE_CHECKING:
    from cetopt.builders.second_order import BuiltProblem
    from cetopt.measure import Measurer


def per_layer_check(spec: ModelSpec, problem: AllocationProblem, bits: dict[str, int],
                    measurer: "Measurer | None" = None, weights: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """For each layer alone at its planned bit-width: the predicted loss change (the problem's choice loss)
    next to the measured change of the mean calibration loss; a last row for the whole plan. ``weights``: the
    plan's compressed weights as priced (a rounding other than nearest: BuiltProblem.compressed_weights); default
    round-to-nearest on the problem's grid.

    The single-layer changes come from :func:`cetopt.builders.signal_measured.measured_changes` (each layer re-run
    from recorded activations where the model traces: on MobileNetV2 2.6x faster than a full forward per layer,
    same numbers)."""
    from cetopt.builders.signal_measured import measured_changes
    from cetopt.curvature.operator import CurvatureOperator
    from cetopt.measure import Measurer
    from cetopt.problem.evaluate import choices_from_bits, evaluate
    from cetopt.quant.apply import apply_plan
    from cetopt.quant.plan import Plan, problem_quantizer

    measurer = measurer if measurer is not None else Measurer(spec)
    grid = problem_quantizer(problem)  # the problem's candidates' grid: what its predictions priced
    if weights is None:
        weights = apply_plan(spec.model, Plan(bits=bits, quantizer=grid)).weights
    names = [layer.name for layer in problem.layers]
    work = measurer.model_with({})  # the measurer's copy at the original weights, restored after each swap
    device = next(work.parameters()).device
    op = CurvatureOperator(work, spec.loss_fn, spec.calibration, layers=names, device=device)
    alone = measured_changes(op, {name: [weights[name]] for name in names})
    rows = []
    for layer in problem.layers:
        choice = next(c for c in layer.choices if c.bits == bits[layer.name])
        rows.append({"layer": layer.name, "bits": choice.bits, "predicted": choice.loss,
                     "measured": float(alone[layer.name][0])})
    whole = evaluate(problem, choices_from_bits(problem, bits)).loss
    rows.append({"layer": "(whole plan)", "bits": None, "predicted": whole, "measured": measurer.calibration_dloss(weights)})
    return rows


@dataclass(frozen=True)
class DemoReport:
    """The demo's result: ``text`` as printed; ``plans``: one record per backend and baseline (status, avg_bits,
    packed_ratio, predicted_dL, gap, measured_dL and the metric; None where a plan has none); ``selected``: the plan
    `cetopt plan` would ship; ``per_layer``: the dp plan's predicted vs measured loss change per layer, then whole."""

    text: str
    model: str
    metric_name: str | None
    fp_metric: float | None
    plans: tuple[dict[str, Any], ...]
    selected: str
    per_layer: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _record(label: str, status: str, avg_bits: float | None = None, ratio: float | None = None,
            predicted: float | None = None, gap: float | None = None, measured: Any = None) -> dict[str, Any]:
    metric = None if measured is None else measured.metric
    return {"plan": label, "status": status, "avg_bits": avg_bits, "packed_ratio": ratio, "predicted_dL": predicted,
            "gap": gap, "measured_dL": None if measured is None else measured.calibration_dloss, "metric": metric}


def _row(record: dict[str, Any], fp: float | None) -> list[str]:
    if record["avg_bits"] is None:  # no plan: infeasible or no solution
        return [record["plan"], record["status"]] + ["-"] * 7
    metric, gap = record["metric"], record["gap"]
    return [record["plan"], record["status"], f"{record['avg_bits']:.3f}", f"{record['packed_ratio']:.2f}",
            f"{record['predicted_dL']:.5f}", "-" if gap is None else f"{gap:.1e}", f"{record['measured_dL']:.5f}",
            "-" if metric is None else f"{metric:.4f}", "-" if metric is None or fp is None else f"{metric - fp:+.4f}"]


def run_demo(name: str = "digits-cnn", recipe: Recipe | None = None, *, budget: Budget | None = None,
             solvers: Sequence[str] | None = None) -> str:
    """The demo table as text (see :func:`demo_report`)."""
    return demo_report(name, recipe, budget=budget, solvers=solvers).text


def demo_report(name: str = "digits-cnn", recipe: Recipe | None = None, *, budget: Budget | None = None,
                solvers: Sequence[str] | None = None) -> DemoReport:
    """The demo on ``name`` (a zoo model, ``module:function`` or ``file.py:function``) under ``recipe`` (default:
    the default recipe; its rounding is every plan's, baselines included, and its objective picks the loss) at
    ``budget`` (default: cetopt.recipe.DEFAULT_AVG_BITS average bits): every backend's plan and the baselines,
    applied and measured."""
    from cetopt.measure import Measurer
    from cetopt.modelspec import load_model_spec
    from cetopt.recipe import DEFAULT_RECIPE
    from cetopt.rerank import budget_text
    from cetopt.solvers.api import solve
    from cetopt.tables import format_table
    from cetopt.workflow import build_for

    recipe = recipe or DEFAULT_RECIPE
    spec = load_model_spec(name, objective=recipe.objective)
    measurer = Measurer(spec)
    metric_name, fp = next(iter(measurer.fp_metrics.items()), (None, None))
    built = build_for(spec, recipe, budget=budget)
    problem = built.problem
    measure = _plan_measurer(spec, built, measurer)
    records, backend_bits = _backend_records(problem, solvers, measure)
    baselines = _baseline_bits(spec, problem, recipe)
    records += _baseline_records(problem, baselines, measure)
    selection, select_line = _selection(spec, built, measurer, baselines, backend_bits)
    dp_bits = dict(solve(problem, "dp").bits)
    check = per_layer_check(spec, problem, dp_bits, measurer,
                            None if recipe.rounding == "nearest" else built.compressed_weights(dp_bits))
    check_table = format_table(["layer", "bits", "predicted_dL", "measured_dL"],
                               [[r["layer"], r["bits"] or "", f"{r['predicted']:.6f}", f"{r['measured']:.6f}"]
                                for r in check])
    header = (f"{spec.name}: metric = {metric_name} (FP32 {fp if fp is None else f'{fp:.4f}'}); "
              f"{len(problem.layers)} layers; budget {budget_text(problem)}; quantiser clipping "
              f"{recipe.quantizer.clip}; rounding {'+'.join(recipe.roundings)} (every plan); "
              f"predicted dL ({problem.metadata['method']}): {problem.metadata['cost_model']['description']}")
    table = format_table(["plan", "status", "avg_bits", "packed_ratio", "predicted_dL", "gap", "measured_dL",
                          metric_name or "metric", "vs_FP"], [_row(r, fp) for r in records])
    text = (header + "\n" + table + "\n" + select_line + "\n\nPredicted vs measured loss change of the dp plan, layer by "
            "layer (each layer quantised alone) and whole:\n" + check_table)
    return DemoReport(text=text, model=spec.name, metric_name=metric_name, fp_metric=fp, plans=tuple(records),
                      selected=selection.best.label, per_layer=tuple(check))


PlanMeasure = Callable[[dict[str, int]], tuple[float, Any]]


def _plan_measurer(spec: ModelSpec, built: "BuiltProblem", measurer: "Measurer") -> PlanMeasure:
    """(packed ratio, Measurement) of a plan's bits, each plan measured once (backends often agree): on the
    problem's grid, with the candidates' own rounded weights (what was priced, what `apply` packs)."""
    from cetopt.quant.pack import model_packed_size
    from cetopt.quant.apply import apply_plan
    from cetopt.quant.plan import Plan, problem_quantizer

    grid = problem_quantizer(built.problem)  # every plan, baselines included, on the grid the problem priced
    nearest = built.problem.metadata.get("rounding", "nearest") == "nearest"
    measured: dict[tuple[tuple[str, int], ...], tuple[float, Any]] = {}

    def apply_and_measure(bits: dict[str, int]) -> tuple[float, Any]:
        key = tuple(sorted(bits.items()))
        if key not in measured:
            if nearest:
                applied = apply_plan(spec.model, Plan(bits=bits, quantizer=grid))
                measured[key] = (applied.ratio, measurer.measure(applied.weights))
            else:
                ratio = model_packed_size(spec.model, Plan(bits=bits, quantizer=grid)).ratio
                measured[key] = (ratio, measurer.measure(built.compressed_weights(bits)))
        return measured[key]

    return apply_and_measure


def _backend_records(problem: AllocationProblem, solvers: Sequence[str] | None, measure: PlanMeasure,
                     ) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """Every installed backend's plan (but bruteforce), measured; and the plans of the backends other than dp,
    by "<method>/<backend>" (`cetopt plan` measures them too)."""
    from cetopt.solvers.api import solve
    from cetopt.solvers.registry import available_solvers

    names = solvers or [s.name for s in available_solvers() if s.installed and s.name != "bruteforce"]
    records: list[dict[str, Any]] = []
    backend_bits: dict[str, dict[str, int]] = {}
    for solver in names:
        result = solve(problem, solver, time_limit=60)
        if not result.success:
            records.append(_record(f"cet/{solver}", result.status.value))
            continue
        if solver != "dp":
            backend_bits[f"{problem.metadata['method']}/{solver}"] = dict(result.bits)
        ratio, measurement = measure(dict(result.bits))
        records.append(_record(f"cet/{solver}", result.status.value, result.avg_bits, ratio, result.objective,
                               result.gap, measurement))
    return records, backend_bits


def _baseline_bits(spec: ModelSpec, problem: AllocationProblem, recipe: Recipe) -> dict[str, Any]:
    """HAWQ-V3's dp plan on the problem's candidates (cetopt.recipe.Recipe.priced_by) at its budget, and the
    uniform plan at the widest candidate width within an average-bits budget (label -> bits, None: infeasible)."""
    from cetopt.baselines import uniform_bits
    from cetopt.builders.second_order import build
    from cetopt.solvers.api import solve

    hawq = solve(build(spec, recipe.priced_by("hawq-v3")).with_budget(problem.budget).problem, "dp")
    baselines: dict[str, Any] = {"hawq-v3/dp": dict(hawq.bits) if hawq.success else None}
    avg_bits = problem.budget.avg_bits
    uniform = None if avg_bits is None else max((b for b in recipe.bits if b <= avg_bits), default=None)
    if uniform is not None:
        baselines[f"uniform {uniform}-bit"] = uniform_bits(problem, uniform)
    return baselines


def _baseline_records(problem: AllocationProblem, baselines: Mapping[str, Any], measure: PlanMeasure
                      ) -> list[dict[str, Any]]:
    from cetopt.problem.evaluate import choices_from_bits, evaluate

    records = []
    for label, bits in baselines.items():
        if bits is None:
            records.append(_record(label, "infeasible"))
            continue
        score = evaluate(problem, choices_from_bits(problem, bits))
        ratio, measurement = measure(dict(bits))
        records.append(_record(label, "baseline", score.avg_bits, ratio, score.objective, None, measurement))
    return records


def _selection(spec: ModelSpec, built: "BuiltProblem", measurer: "Measurer", baselines: Mapping[str, Any],
               backend_bits: Mapping[str, dict[str, int]]) -> tuple[Any, str]:
    """What `cetopt plan` would ship (cetopt.rerank.select_plan, no search): the dp plan, the other backends' plans
    and the default pool's, measured (HAWQ-V3's and the backends' plans are already measured above); and its line."""
    from cetopt.rerank import DEFAULT_POOL, pool_bits, rerank, selection_measure

    measure, split = selection_measure(measurer)
    hawq = baselines["hawq-v3/dp"] if "hawq-v3" in DEFAULT_POOL else None
    pool = {**({} if hawq is None else {"hawq-v3": hawq}),
            **pool_bits(spec, built.problem, [name for name in DEFAULT_POOL if name != "hawq-v3"]), **backend_bits}
    selection = rerank(built, measure, 1, pool=pool)
    chosen = ", ".join(f"{p.label} {p.measured:+.5f}" for p in selection.plans)
    line = (f"`cetopt plan` (measured selection between the dp plan, the other backends' plans and the "
            f"pool's, {', '.join(DEFAULT_POOL)}; loss change on the {split} batches): {chosen} -> ships "
            f"{selection.best.label}")
    return selection, line
