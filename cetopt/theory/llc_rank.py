"""LLC's automatic rank (arXiv 2412.06868: decomposition "automatically determining the rank for each layer"
inside the lossless neighbourhood), searched over every rank and tested on labelled test sets over seeds.

Per layer and every rank r < min(m, n): the truncated-SVD error d_r = A_r B_r - W (floating-point factors, as the
paper decomposes), its predicted change g.d + 1/2 d'Hd (exact Hessian-vector products, cetopt.curvature) and its
measured change of the calibration loss with that layer alone factorised. The lossless neighbourhood is the
existing definition (cetopt.theory.lossless, cetopt.costmodels.llc): predicted change <= 0, i.e. g.d < 0 and
|d| within the directional radius 2|g.d^|/(d^'H d^). LLC's rank of a layer is the smallest rank inside whose
factors store less than the dense weight (r (m + n) < m n); a layer with none stays dense FP32. The layers'
ranks make one model plan, measured on the test set against FP32, paired by seed.

The same plan with the neighbourhood read from the measured changes (measured <= 0) is reported beside it: it
says whether a miss comes from the second-order prediction or from the rule itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from cetopt.errors import ProblemError
from cetopt.theory.report import Verdict
from cetopt.theory.seed_verdicts import (MARGIN, Accuracy, SeedDifference, ci_dict, example_ci, seed_difference,
                                         verdict_dict)

if TYPE_CHECKING:
    from cetopt.modelspec import ModelSpec

FLOAT_BITS = 32
READINGS = ("predicted", "measured")


@dataclass(frozen=True)
class RankPoint:
    """One rank of one layer.

    Attributes:
        rank: r; size_bits: r (m + n) x 32 (float factors); saves: size_bits < the dense weight's m n x 32.
        linear: g.d; quadratic: d'Hd; predicted: g.d + 1/2 d'Hd; measured: calibration loss change, this layer
            alone factorised (nats).
    """

    rank: int
    size_bits: int
    saves: bool
    linear: float
    quadratic: float
    predicted: float
    measured: float

    def inside(self, reading: str) -> bool:
        """Inside the lossless neighbourhood by the ``reading`` ("predicted" or "measured") change."""
        return (self.predicted if reading == "predicted" else self.measured) <= 0.0


@dataclass(frozen=True)
class LayerScan:
    """Every rank of one layer (m x n: out x in x kernel)."""

    name: str
    rows: int
    cols: int
    points: tuple[RankPoint, ...]

    def lossless_rank(self, reading: str = "predicted") -> int | None:
        """The smallest storage-saving rank inside the neighbourhood (None: the layer stays dense)."""
        inside = [p.rank for p in self.points if p.saves and p.inside(reading)]
        return min(inside) if inside else None

    def inside_ranks(self, reading: str = "predicted") -> list[int]:
        """Every rank inside the neighbourhood, saving storage or not."""
        return [p.rank for p in self.points if p.inside(reading)]


@dataclass(frozen=True)
class RankPlan:
    """The model plan of one reading on one seed, measured.

    Attributes:
        ranks: layer -> rank (factorised layers only).
        packed_ratio: FP32 size / packed size (cetopt.quant.pack).
        predicted: sum of the chosen ranks' predicted changes; calibration_dloss, validation_dloss: measured.
        test_accuracy: fraction; test_ci: paired bootstrap CI of (plan - FP32) over test examples.
    """

    reading: str
    ranks: dict[str, int]
    packed_ratio: float
    predicted: float
    calibration_dloss: float
    validation_dloss: float | None
    test_accuracy: float
    test_ci: dict[str, float]


@dataclass(frozen=True)
class LlcSeedRun:
    """One model and seed: every layer's rank scan and the plans of both readings."""

    model: str
    seed: int
    fp_test_accuracy: float
    layers: tuple[LayerScan, ...]
    plans: dict[str, RankPlan]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LlcVerdict:
    """LLC's automatic rank judged on one model's seeds (one reading).

    Attributes:
        compressed_seeds: seeds on which at least one layer was factorised.
        ratio_mean: mean packed ratio over seeds.
        loss_kept: seeds whose measured validation loss change is <= 0 (LLC's "loss unchanged or lower" on data
            the neighbourhood was not computed on); calibration_loss_kept: the same on the calibration batches.
        accuracy: (plan - FP32) test accuracy, paired by seed.
    """

    model: str
    reading: str
    verdict: Verdict
    n_seeds: int
    compressed_seeds: int
    ratio_mean: float
    loss_kept: int
    calibration_loss_kept: int
    accuracy: SeedDifference
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return verdict_dict(self)


def scan_ranks(spec: "ModelSpec", *, layers: Sequence[str] | None = None) -> tuple[LayerScan, ...]:
    """Every rank 1..min(m, n) - 1 of every quantisable layer of ``spec``: predicted and measured changes.

    Args:
        layers: restrict to these layers (default: the spec's quantisable layers).
    """
    from cetopt.builders.signal_measured import measured_changes
    from cetopt.curvature.operator import CurvatureOperator
    from cetopt.curvature.quadratic import quadratic_forms
    from cetopt.quant.lowrank import low_rank

    op = CurvatureOperator(spec.model, spec.loss_fn, spec.calibration,
                           layers=layers if layers is not None else spec.quantisable_layers(), exclude=spec.exclude)
    _, gradient = op.loss_and_gradient(show_progress=False)
    candidates: dict[str, list[Any]] = {}
    for name, param in zip(op.names, op.params):
        weight = param.detach()
        full = min(weight.shape[0], weight[0].numel())
        candidates[name] = [low_rank(weight, r) for r in range(1, full)]
    candidates = {n: c for n, c in candidates.items() if c}  # a layer of rank 1 has nothing to truncate
    if not candidates:
        raise ProblemError(f"{spec.name}: no layer has a rank to truncate (every weight has min(m, n) = 1)",
                           field="layers")
    errors = {n: [c.weight - p.detach() for c in candidates[n]] for n, p in zip(op.names, op.params) if n in candidates}
    forms = quadratic_forms(op, errors, gradient=gradient, show_progress=False)
    measured = measured_changes(op, {n: [c.weight for c in cands] for n, cands in candidates.items()})
    scans = []
    for name, param in zip(op.names, op.params):
        if name not in candidates:
            continue
        m, n = param.shape[0], param[0].numel()
        grad = gradient[op.names.index(name)].detach().double().reshape(-1)
        points = []
        for k, cand in enumerate(candidates[name]):
            linear = float(grad @ errors[name][k].double().reshape(-1))
            quad = float(forms.own[name][k])
            points.append(RankPoint(rank=cand.rank, size_bits=cand.size_bits, saves=cand.size_bits < FLOAT_BITS * m * n,
                                    linear=linear, quadratic=quad, predicted=linear + 0.5 * quad,
                                    measured=float(measured[name][k])))
        scans.append(LayerScan(name=name, rows=int(m), cols=int(n), points=tuple(points)))
    return tuple(scans)


def plan_ranks(scans: Sequence[LayerScan], reading: str) -> dict[str, int]:
    """Layer -> LLC's rank under ``reading`` (factorised layers only)."""
    if reading not in READINGS:
        raise ProblemError(f"reading must be one of {READINGS}, got {reading!r}", field="reading")
    ranks = {s.name: s.lossless_rank(reading) for s in scans}
    return {n: r for n, r in ranks.items() if r is not None}


def measure_rank_plan(spec: "ModelSpec", scans: Sequence[LayerScan], ranks: Mapping[str, int], reading: str, *,
                      fp_outcomes: np.ndarray, measurer: Any, seed: int = 0) -> RankPlan:
    """Apply the factorisations ``ranks`` (float factors) and measure them against FP32."""
    from cetopt.curvature.layers import layer_weight
    from cetopt.quant.lowrank import low_rank
    from cetopt.quant.pack import model_packed_size
    from cetopt.quant.plan import LayerChoice, Plan

    weights = {n: low_rank(layer_weight(spec.model, n).detach(), r).weight for n, r in ranks.items()}
    plan = Plan(layers={n: LayerChoice(bits=FLOAT_BITS, rank=r) for n, r in ranks.items()})
    predicted = sum(p.predicted for s in scans for p in s.points if ranks.get(s.name) == p.rank)
    measurement = measurer.measure(weights, outcomes=True)
    outcomes = np.asarray(measurement.outcomes, dtype=np.float64)
    return RankPlan(reading=reading, ranks=dict(ranks), packed_ratio=float(model_packed_size(spec.model, plan).ratio),
                    predicted=float(predicted), calibration_dloss=float(measurement.calibration_dloss),
                    validation_dloss=measurement.validation_dloss, test_accuracy=float(outcomes.mean()),
                    test_ci=ci_dict(example_ci(outcomes, fp_outcomes, seed=seed)))


def llc_seed_run(spec: "ModelSpec", *, model: str | None = None, seed: int = 0) -> LlcSeedRun:
    """Scan every rank of ``spec``'s layers and measure both readings' plans against FP32.

    Raises:
        ProblemError: the spec has no per-example test outcomes.
    """
    from cetopt.measure import Measurer

    if spec.test_outcomes is None:
        raise ProblemError(f"{spec.name} has no per-example test outcomes (ModelSpec.test_outcomes): LLC's rank is "
                           "judged by paired test accuracy", field="test_outcomes")
    scans = scan_ranks(spec)
    measurer = Measurer(spec)
    fp_outcomes = np.asarray(spec.test_outcomes(measurer.model_with({})), dtype=np.float64)
    plans = {reading: measure_rank_plan(spec, scans, plan_ranks(scans, reading), reading, fp_outcomes=fp_outcomes,
                                        measurer=measurer, seed=seed) for reading in READINGS}
    return LlcSeedRun(model=model or spec.name, seed=seed, fp_test_accuracy=float(fp_outcomes.mean()),
                      layers=scans, plans=plans)


def judge_llc(runs: Sequence[LlcSeedRun], reading: str = "predicted", *, margin: float = MARGIN) -> LlcVerdict:
    """LLC's claim (compression with the loss unchanged or lower, so no accuracy lost) on one model's seeds:

    - inconclusive: no layer was factorised on any seed (the rule compressed nothing, so nothing was tested), or
      the accuracy interval is too wide (or < 2 seeds);
    - fail: test accuracy significantly below FP32 by a plausible margin (:data:`MARGIN`);
    - partial: significantly below FP32 by less than the margin; or accuracy held but the whole plan's measured
      calibration loss (the loss the neighbourhood was computed on, LLC's own criterion) rose on a seed that
      factorised a layer;
    - pass: accuracy held and the calibration loss not raised on any seed.

    Raises:
        ValueError: no runs, runs of several models, or an unknown reading.
    """
    if not runs:
        raise ValueError("runs: at least one seed's run is needed")
    if reading not in READINGS:
        raise ValueError(f"reading: one of {READINGS}, got {reading!r}")
    models = {r.model for r in runs}
    if len(models) != 1:
        raise ValueError(f"runs: one model at a time, got {sorted(models)}")
    plans = [r.plans[reading] for r in runs]
    compressed = sum(1 for p in plans if p.ranks)
    ratio = float(np.mean([p.packed_ratio for p in plans]))
    kept = sum(1 for p in plans if p.validation_dloss is not None and p.validation_dloss <= 0)
    cal_kept = sum(1 for p in plans if p.calibration_dloss <= 0)
    cal_kept_factorised = sum(1 for p in plans if p.ranks and p.calibration_dloss <= 0)
    accuracy = seed_difference([p.test_accuracy for p in plans], [r.fp_test_accuracy for r in runs], margin=margin)
    where = (f"{compressed} of {len(runs)} seeds factorise a layer, mean packed ratio {ratio:.3f}x, validation loss "
             f"not raised on {kept} (calibration loss on {cal_kept}); test accuracy {accuracy.describe()}")
    if compressed == 0:
        verdict, reason = Verdict.INCONCLUSIVE, ("no storage-saving rank of any layer lies inside the lossless "
                                                 "neighbourhood on any seed: the rule keeps every layer dense, so "
                                                 "the claim was not tested; " + where)
    elif accuracy.outcome is Accuracy.DROP:
        verdict, reason = Verdict.FAIL, f"accuracy lost beyond the {margin * 100:g}-point margin: {where}"
    elif accuracy.outcome is Accuracy.UNCLEAR:
        verdict, reason = Verdict.INCONCLUSIVE, f"the accuracy interval is too wide to judge: {where}"
    elif accuracy.outcome is Accuracy.SMALL_DROP:
        verdict, reason = Verdict.PARTIAL, f"a significant drop within {margin * 100:g} points: {where}"
    elif compressed > cal_kept_factorised:
        verdict, reason = Verdict.PARTIAL, (f"accuracy held, but the whole plan raised the calibration loss on "
                                            f"{compressed - cal_kept_factorised} of the {compressed} seeds that "
                                            f"factorise (each layer's rank is inside alone; the cross-layer terms "
                                            f"are not): {where}")
    else:
        verdict, reason = Verdict.PASS, f"accuracy held and the calibration loss not raised: {where}"
    return LlcVerdict(model=next(iter(models)), reading=reading, verdict=verdict, n_seeds=len(runs),
                      compressed_seeds=compressed, ratio_mean=ratio, loss_kept=kept,
                      calibration_loss_kept=cal_kept, accuracy=accuracy, reason=reason)
