"""Joint low-rank (arXiv 2412.06867): factors A, B optimised for the loss, against truncated SVD at equal rank (so
at equal size) and against the knapsack over truncated-SVD ranks at equal size, tested on labelled test sets over
seeds.

The paper reformulates factorisation as "a numerical rank deficiency problem with inequality constraints" with "a
joint objective that simultaneously addresses factorization error and model performance", without fine-tuning.
Reconstructed here (its equations are not available offline, cetopt's reference notes [I]): every factorised
layer starts from its truncated SVD (A = U sqrt(S), B = sqrt(S) V'), and the factors of all factorised layers are
moved together by Adam on the mean calibration loss, nothing else trained. The inequality constraint is the
perturbation bound |A B - W|_F <= (1 + :data:`SLACK`) |W_r - W|_F per layer (W_r the SVD's rank-r matrix, the
smallest error any rank-r factorisation has): after each step a layer outside its bound is pulled back along the
segment to its SVD factors (bisection) until it is inside. A step that raises the calibration loss is undone and the
learning rate halved. The test set is never seen; the calibration loss is what is optimised.

The knapsack plan is cetopt's existing low-rank allocation (cetopt.theory.levels' "low-rank only" mode): every
layer's truncated-SVD ranks as candidates priced by g.d + 1/2 d'Hd, solved exactly by dp for the least predicted
loss at the joint plan's storage. The factors are then optimised at the knapsack's ranks too ("joint at knapsack
ranks": allocation and optimisation together, as the paper combines them), against the knapsack's SVD factors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from cetopt.errors import ProblemError
from cetopt.theory.lowrank_fit import (LEARNING_RATE, SLACK, STEPS, FactorFit, JointFit,  # noqa: F401  (re-exported)
                                       fit_factors)
from cetopt.theory.report import Verdict
from cetopt.theory.seed_verdicts import (MARGIN, Accuracy, SeedDifference, ci_dict, example_ci, graded_verdict,
                                         seed_difference, verdict_dict)

if TYPE_CHECKING:
    import torch

    from cetopt.builders.second_order import BuiltProblem
    from cetopt.modelspec import ModelSpec

FRACTIONS = (0.5,)  # rank as a fraction of min(m, n) (--fractions in benchmarks/seeds_headline.py for more)
FLOAT_BITS = 32


def ranks_at(spec: "ModelSpec", fraction: float) -> dict[str, int]:
    """Layer -> round(``fraction`` x min(m, n)) (at least 1) for every quantisable layer where those factors store
    less than the dense weight."""
    from cetopt.curvature.layers import find_layers

    if not 0 < fraction < 1:
        raise ProblemError(f"fraction must lie in (0, 1), got {fraction}", field="fraction")
    out = {}
    for ref in find_layers(spec.model, spec.quantisable_layers(), exclude=spec.exclude):
        m, n = ref.weight.shape[0], ref.weight[0].numel()
        r = max(1, round(fraction * min(m, n)))
        if r * (m + n) < m * n:
            out[ref.name] = r
    return out


def layer_storage_bits(spec: "ModelSpec", ranks: Mapping[str, int]) -> float:
    """Storage of the quantisable layers' weights when the layers in ``ranks`` are float factors and the others
    dense float32 (the allocation problem's size vocabulary: r (m + n) x 32 or m n x 32 bits)."""
    from cetopt.curvature.layers import find_layers

    total = 0.0
    for ref in find_layers(spec.model, spec.quantisable_layers(), exclude=spec.exclude):
        m, n = ref.weight.shape[0], ref.weight[0].numel()
        total += FLOAT_BITS * (ranks[ref.name] * (m + n) if ref.name in ranks else m * n)
    return total


def packed_ratio(spec: "ModelSpec", ranks: Mapping[str, int]) -> float:
    """FP32 size / packed size of the whole model (cetopt.quant.pack) when the layers in ``ranks`` are float32
    factors at those ranks and everything else is kept as it is."""
    from cetopt.quant.pack import model_packed_size
    from cetopt.quant.plan import LayerChoice, Plan

    plan = Plan(layers={n: LayerChoice(bits=FLOAT_BITS, rank=r) for n, r in ranks.items()})
    return float(model_packed_size(spec.model, plan).ratio)


def svd_knapsack_problem(spec: "ModelSpec") -> "BuiltProblem":
    """cetopt's low-rank allocation problem of ``spec``: every storage-saving truncated-SVD rank of every layer (float
    factors) as a candidate priced by g.d + 1/2 d'Hd (cost model ``cet``, exact Hessian-vector products)."""
    from cetopt.builders.candidates import Levels
    from cetopt.curvature.layers import find_layers
    from cetopt.problem.model import Budget
    from cetopt.workflow import build_for

    fractions = set()
    for ref in find_layers(spec.model, spec.quantisable_layers(), exclude=spec.exclude):
        full = min(ref.weight.shape[0], ref.weight[0].numel())
        fractions |= {r / full for r in range(1, full)}  # every rank of every layer (cetopt.builders.candidates)
    return build_for(spec, method="cet", levels=Levels(bits=(), rank_grid=tuple(sorted(fractions)),
                                                       rank_bits=(FLOAT_BITS,)), budget=Budget(avg_bits=FLOAT_BITS))


def knapsack_svd(built: "BuiltProblem", size_bits: float) -> tuple[dict[str, "torch.Tensor"], dict[str, int]]:
    """The allocation problem ``built`` (:func:`svd_knapsack_problem`) solved exactly by dp for the least predicted
    loss within ``size_bits``: layer -> truncated-SVD weight, rank.

    Raises:
        ProblemError: no allocation fits ``size_bits``.
    """
    from cetopt.problem.model import Budget
    from cetopt.solvers.api import solve

    result = solve(built.problem.with_budget(Budget(size_bits=size_bits)), "dp")
    if not result.success:
        raise ProblemError(f"{built.problem.name}: no rank allocation fits {size_bits:.0f} bits "
                           f"({result.status.value})", field="size_bits")
    choices = dict(result.choices)
    ranks = {layer.name: int(layer.choices[choices[layer.name]].rank) for layer in built.problem.layers}
    return built.weights_for_choices(choices), ranks


@dataclass(frozen=True)
class JointSeedRun:
    """One model, seed and rank fraction: truncated SVD and optimised factors at the same ranks, measured.

    Attributes:
        packed_ratio: FP32 size / packed size of either plan (same ranks, float factors: same size).
        svd_test, joint_test, fp_test: test accuracies (fractions).
        svd_val_dloss, joint_val_dloss: measured validation-loss changes vs FP32 (held-out loss).
        joint_vs_svd, joint_vs_fp: paired bootstrap CIs over test examples.
        knapsack_ranks, knapsack_ratio, knapsack_test: the knapsack over SVD ranks at the same storage;
            joint_vs_knapsack: its paired bootstrap CI.
        knapsack_joint_test, knapsack_joint_vs_knapsack: the factors optimised at the knapsack's ranks, and their
            paired CI against the knapsack's SVD factors.
    """

    model: str
    seed: int
    fraction: float
    ranks: dict[str, int]
    packed_ratio: float
    fit: JointFit
    fp_test: float
    svd_test: float
    joint_test: float
    svd_val_dloss: float | None
    joint_val_dloss: float | None
    joint_vs_svd: dict[str, float]
    joint_vs_fp: dict[str, float]
    knapsack_ranks: dict[str, int]
    knapsack_ratio: float
    knapsack_test: float
    knapsack_val_dloss: float | None
    joint_vs_knapsack: dict[str, float]
    knapsack_joint_test: float
    knapsack_joint_vs_knapsack: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def joint_seed_run(spec: "ModelSpec", fraction: float, *, model: str | None = None, seed: int = 0,
                   steps: int = STEPS, lr: float = LEARNING_RATE, slack: float = SLACK,
                   knapsack_problem: "BuiltProblem | None" = None) -> JointSeedRun:
    """Truncated SVD vs optimised factors at ranks :func:`ranks_at` (``fraction``) and at the knapsack's ranks of
    the same storage, measured on test data. ``knapsack_problem``: :func:`svd_knapsack_problem` of ``spec`` when
    already built (it does not depend on ``fraction``)."""
    from cetopt.measure import Measurer
    from cetopt.quant.lowrank import low_rank
    from cetopt.curvature.layers import layer_weight

    if spec.test_outcomes is None:
        raise ProblemError(f"{spec.name} has no per-example test outcomes (ModelSpec.test_outcomes)",
                           field="test_outcomes")
    ranks = ranks_at(spec, fraction)
    if not ranks:
        raise ProblemError(f"{spec.name}: no layer saves storage at rank fraction {fraction}", field="fraction")
    measurer = Measurer(spec)
    fp = np.asarray(spec.test_outcomes(measurer.model_with({})), dtype=np.float64)
    svd = {n: low_rank(layer_weight(spec.model, n).detach(), r).weight for n, r in ranks.items()}
    joint, fit = fit_factors(spec, ranks, steps=steps, lr=lr, slack=slack)
    built = knapsack_problem if knapsack_problem is not None else svd_knapsack_problem(spec)
    knapsack, knapsack_ranks = knapsack_svd(built, layer_storage_bits(spec, ranks))
    m_svd = measurer.measure(svd, outcomes=True)
    m_joint = measurer.measure(joint, outcomes=True)
    m_knap = measurer.measure(knapsack, outcomes=True)
    knapsack_joint, _ = fit_factors(spec, knapsack_ranks, steps=steps, lr=lr, slack=slack)
    m_kj = measurer.measure(knapsack_joint, outcomes=True, validation=False)
    o_svd, o_joint, o_knap, o_kj = (np.asarray(m.outcomes, dtype=np.float64) for m in (m_svd, m_joint, m_knap, m_kj))

    return JointSeedRun(model=model or spec.name, seed=seed, fraction=fraction, ranks=ranks,
                        packed_ratio=packed_ratio(spec, ranks), fit=fit,
                        fp_test=float(fp.mean()), svd_test=float(o_svd.mean()), joint_test=float(o_joint.mean()),
                        svd_val_dloss=m_svd.validation_dloss, joint_val_dloss=m_joint.validation_dloss,
                        joint_vs_svd=ci_dict(example_ci(o_joint, o_svd, seed=seed)),
                        joint_vs_fp=ci_dict(example_ci(o_joint, fp, seed=seed)), knapsack_ranks=knapsack_ranks,
                        knapsack_ratio=packed_ratio(spec, knapsack_ranks), knapsack_test=float(o_knap.mean()),
                        knapsack_val_dloss=m_knap.validation_dloss,
                        joint_vs_knapsack=ci_dict(example_ci(o_joint, o_knap, seed=seed)),
                        knapsack_joint_test=float(o_kj.mean()),
                        knapsack_joint_vs_knapsack=ci_dict(example_ci(o_kj, o_knap, seed=seed)))


# which ranks the factors are optimised at: (optimised test accuracy, SVD test accuracy at the same ranks, packed
# ratio) attributes of a JointSeedRun
VARIANTS = {"uniform ranks": ("joint_test", "svd_test", "packed_ratio"),
            "knapsack ranks": ("knapsack_joint_test", "knapsack_test", "knapsack_ratio")}


@dataclass(frozen=True)
class JointVerdict:
    """Optimised factors judged on one model, rank fraction and variant (:data:`VARIANTS`) over seeds.

    Attributes:
        versus_svd: (optimised - SVD at the same ranks) test accuracy, paired by seed; versus_fp: (optimised -
            FP32).
        improves: the interval of versus_svd lies above 0.
    """

    model: str
    fraction: float
    variant: str
    verdict: Verdict
    n_seeds: int
    ratio_mean: float
    versus_svd: SeedDifference
    versus_fp: SeedDifference
    improves: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return verdict_dict(self, ("versus_svd", "versus_fp"))


def judge_joint(runs: Sequence[JointSeedRun], variant: str = "uniform ranks", *,
                margin: float = MARGIN) -> JointVerdict:
    """The paper's two claims on one model, rank fraction and variant: optimised factors beat truncated SVD at equal
    rank (so equal size), and reach FP accuracy without fine-tuning.

    - fail: the optimised factors are significantly worse than SVD, or they do not beat SVD and lose accuracy vs
      FP32 beyond the margin;
    - pass: significantly better than SVD and FP accuracy held;
    - partial: one of the two;
    - inconclusive: neither established nor refuted (intervals too wide, or < 2 seeds).

    Raises:
        ValueError: no runs, runs of several models or fractions, or an unknown variant.
    """
    if not runs:
        raise ValueError("runs: at least one seed's run is needed")
    if variant not in VARIANTS:
        raise ValueError(f"variant: one of {sorted(VARIANTS)}, got {variant!r}")
    keys = {(r.model, r.fraction) for r in runs}
    if len(keys) != 1:
        raise ValueError(f"runs: one model and rank fraction at a time, got {sorted(keys)}")
    model, fraction = next(iter(keys))
    joint, svd, ratio = VARIANTS[variant]
    vs_svd = seed_difference([getattr(r, joint) for r in runs], [getattr(r, svd) for r in runs], margin=margin)
    vs_fp = seed_difference([getattr(r, joint) for r in runs], [r.fp_test for r in runs], margin=margin)
    improves = vs_svd.n_seeds > 1 and vs_svd.low > 0
    worse = vs_svd.n_seeds > 1 and vs_svd.high < 0
    held = vs_fp.outcome is Accuracy.HELD
    where = f"vs truncated SVD at the same ranks {vs_svd.describe()}, vs FP32 {vs_fp.describe()}"
    if worse or (not improves and vs_fp.outcome is Accuracy.DROP):
        verdict = Verdict.FAIL
        reason = ("the optimised factors are worse than truncated SVD: " if worse else
                  "no gain over truncated SVD and accuracy lost vs FP32: ") + where
    else:
        verdict, reason = graded_verdict(improves, held, "better than truncated SVD at equal size",
                                         "no significant gain over truncated SVD", where)
    return JointVerdict(model=model, fraction=fraction, variant=variant, verdict=verdict, n_seeds=len(runs),
                        ratio_mean=float(np.mean([getattr(r, ratio) for r in runs])), versus_svd=vs_svd,
                        versus_fp=vs_fp, improves=improves, reason=reason)


def joint_runs(model: str, seeds: Sequence[int], fractions: Sequence[float] = FRACTIONS, *,
               log: Callable[[str], None] = lambda _: None) -> tuple[dict[float, list[JointSeedRun]], list[str]]:
    """:func:`joint_seed_run` of zoo model (or target) ``model`` at every seed and rank fraction: fraction -> the
    seeds' runs, and the (seed, fraction) cells not run because no layer saves storage there (recorded, not
    dropped). One knapsack problem per seed serves every fraction."""
    import time

    from cetopt.modelspec import load_model_spec

    runs: dict[float, list[JointSeedRun]] = {}
    skipped: list[str] = []
    for seed in seeds:
        spec = load_model_spec(model, seed=seed)
        problem = svd_knapsack_problem(spec)
        for fraction in fractions:
            begin = time.perf_counter()
            try:
                run = joint_seed_run(spec, fraction, seed=seed, knapsack_problem=problem)
            except ProblemError as err:
                skipped.append(f"{model} seed {seed} at rank fraction {fraction:g}: {err}")
                continue
            runs.setdefault(float(fraction), []).append(run)
            log(f"lowrank {fraction:g}: {model} seed {seed} ({time.perf_counter() - begin:.0f} s)")
    return runs, skipped
