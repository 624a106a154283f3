"""The seed papers' claims on one model over seeds, as checks that can fail (``cetopt prove MODEL --claims ...``):

- ``xint``: FP=xINT (arXiv 2412.06865): the series converges, AbelianAdd/Mul form groups, the granularities agree,
  "4-bit above FP accuracy" (cetopt.theory.xint_seeds);
- ``headline``: CET (arXiv 2502.15802): "nearly 11x" at FP accuracy (cetopt.theory.headline);
- ``llc-rank``: LLC (arXiv 2412.06868): automatic per-layer rank inside the lossless neighbourhood
  (cetopt.theory.llc_rank);
- ``lowrank``: joint low-rank (arXiv 2412.06867): factors optimised for the loss vs truncated SVD
  (cetopt.theory.lowrank_joint);
- ``lowrank-compact``: its compact form: the smallest model lossless on validation, optimised factors vs truncated
  SVD (cetopt.theory.lowrank_compact).

Each runs the same measuring and judging functions as benchmarks/fp_xint.py and benchmarks/seeds_headline.py
(which report several models at once) and gives one verdict per claim; cetopt.theory.seed_claim_runs.run_claims
runs them and writes ``report.md`` and ``results.json``. This module holds what both need: the claims, the
settings, the checks of bad input and the number formats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from cetopt.errors import ProblemError
from cetopt.theory.report import Verdict

SEEDS = (0, 1, 2, 3, 4)
# claim name -> (the paper's claim in a line, the code that measures and judges it; recorded with the results)
CLAIMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "xint": ("FP=xINT: the low-bit series converges to the FP model, its basis models form Abelian groups, and at "
             "4 bits it is above FP accuracy without calibration or fine-tuning",
             ("cetopt/theory/xint_seeds.py", "cetopt/theory/xint.py", "cetopt/quant/basis.py",
              "cetopt/quant/abelian.py", "cetopt/quant/series.py")),
    "headline": ("CET: nearly 11x parameter compression at FP accuracy",
                 ("cetopt/theory/headline.py", "cetopt/theory/seed_verdicts.py")),
    "llc-rank": ("LLC: the automatic per-layer rank inside the lossless neighbourhood loses no accuracy",
                 ("cetopt/theory/llc_rank.py", "cetopt/theory/seed_verdicts.py")),
    "lowrank": ("Joint low-rank: factors optimised for the loss beat truncated SVD at equal size, at FP accuracy",
                ("cetopt/theory/lowrank_joint.py", "cetopt/theory/lowrank_fit.py", "cetopt/theory/seed_verdicts.py")),
    "lowrank-compact": ("Joint low-rank, compact form: the smallest model whose optimised factors stay lossless is "
                        "smaller than truncated SVD's and keeps FP accuracy",
                        ("cetopt/theory/lowrank_compact.py", "cetopt/theory/lowrank_joint.py",
                         "cetopt/theory/lowrank_fit.py", "cetopt/theory/headline.py",
                         "cetopt/theory/seed_verdicts.py")),
}


@dataclass(frozen=True)
class ClaimSettings:
    """How each claim is measured (every field has the command line's default).

    Attributes:
        seeds: the model's seeds (the zoo ships 0-4); the verdicts pair compressed and FP32 by seed.
        budgets: headline: the average-bits budgets walked (None: cetopt.theory.headline.BUDGETS, 8 to 2 by 1/8).
        bits, terms: xint: the bit-widths and numbers of terms K expanded (4 bits is needed for "above FP").
        fractions: lowrank, lowrank-compact: ranks as fractions of min(m, n) (None: each claim's own grid,
            cetopt.theory.lowrank_joint.FRACTIONS / cetopt.theory.lowrank_compact.FRACTIONS).
    """

    seeds: tuple[int, ...] = SEEDS
    budgets: tuple[float, ...] | None = None
    bits: tuple[int, ...] = (2, 3, 4)
    terms: tuple[int, ...] = (1, 2, 3, 4)
    fractions: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ClaimResult:
    """One claim judged on one model over its seeds.

    Attributes:
        name: the claim's key in :data:`CLAIMS`; claim: the claim in words.
        verdict: pass / fail / partial / inconclusive; reason: why, in a sentence or a few.
        section: the report's markdown section; data: the measurements and verdicts as JSON values.
    """

    name: str
    claim: str
    verdict: Verdict
    reason: str
    section: str
    data: dict[str, Any] = field(default_factory=dict)


def seed_runs(model: str, seeds: Sequence[int], run: Callable[[Any, int], Any], label: str,
              log: Callable[[str], None] = lambda _: None) -> list[Any]:
    """``run(spec, seed)`` for the ModelSpec of ``model`` at each seed, in order, each logged with its seconds."""
    from cetopt.modelspec import load_model_spec

    out = []
    for seed in seeds:
        start = time.perf_counter()
        out.append(run(load_model_spec(model, seed=seed), seed))
        log(f"{label}: {model} seed {seed} ({time.perf_counter() - start:.0f} s)")
    return out


def percent(x: float) -> str:
    """A fraction as percent with two decimals."""
    return f"{100 * x:.2f}"


def ci_text(entry: dict[str, float] | None) -> str:
    """A per-seed bootstrap CI (cetopt.theory.seed_verdicts.ci_dict) in points: ``+0.28 [-0.10, +0.61]``."""
    if entry is None:
        return "-"
    return f"{100 * entry['estimate']:+.2f} [{100 * entry['low']:+.2f}, {100 * entry['high']:+.2f}]"


def check_claims(model: str, claims: Sequence[str], settings: ClaimSettings) -> None:
    """Refuse, before anything is measured, a claim name, seed list or setting the run cannot use.

    Raises:
        ProblemError: naming the flag (--claims, --seeds, --budgets, --xint-bits, --xint-terms, --fractions) and
            the fix.
    """
    from cetopt.zoo.registry import is_zoo_name

    unknown = [c for c in claims if c not in CLAIMS]
    if unknown or not claims:
        raise ProblemError((f"no claim {unknown[0]!r}; " if unknown else "no claim given; ")
                           + f"choose some of {','.join(CLAIMS)}", field="--claims")
    if not settings.seeds or len(set(settings.seeds)) != len(settings.seeds) or min(settings.seeds) < 0:
        raise ProblemError(f"expected distinct seeds >= 0, got {list(settings.seeds)}", field="--seeds")
    if not is_zoo_name(model) and len(settings.seeds) > 1:
        raise ProblemError(f"{model} is not a zoo model, so its seed cannot be chosen and every seed would measure "
                           "the same model; give one seed (--seeds 0)", field="--seeds")
    if "xint" in claims:
        from cetopt.theory.xint_seeds import LABELLED_TEST

        if model not in LABELLED_TEST:
            raise ProblemError(f"xint is tested on a labelled test set, known only for {', '.join(LABELLED_TEST)}; "
                               f"drop xint for {model}", field="--claims")
        if not settings.terms or min(settings.terms) < 1 or not settings.bits or min(settings.bits) < 2:
            raise ProblemError(f"expected bits >= 2 and terms >= 1, got bits {list(settings.bits)}, terms "
                               f"{list(settings.terms)}", field="--xint-bits/--xint-terms")
    if settings.budgets is not None and (not settings.budgets or min(settings.budgets) <= 0):
        raise ProblemError(f"expected average-bits budgets > 0, got {list(settings.budgets)}", field="--budgets")
    if settings.fractions is not None and (not settings.fractions or not all(0 < f < 1 for f in settings.fractions)):
        raise ProblemError(f"expected rank fractions in (0, 1), got {list(settings.fractions)}", field="--fractions")


def claims_code(claims: Sequence[str]) -> tuple[str, ...]:
    """The code that measures and judges ``claims``, the runner's included (what a results file records)."""
    return ("cetopt/theory/seed_claims.py", "cetopt/theory/seed_claim_runs.py",
            *dict.fromkeys(f for name in claims for f in CLAIMS[name][1]))


def command(model: str, claims: Sequence[str], settings: ClaimSettings) -> str:
    """The ``cetopt prove`` command line that runs ``claims`` with ``settings`` (the flags that differ from the
    defaults)."""
    defaults = ClaimSettings()
    flags = [("--seeds", settings.seeds, defaults.seeds), ("--budgets", settings.budgets, None),
             ("--xint-bits", settings.bits, defaults.bits), ("--xint-terms", settings.terms, defaults.terms),
             ("--fractions", settings.fractions, None)]
    given = "".join(f" {flag} {','.join(f'{v:g}' for v in value)}" for flag, value, default in flags
                    if value is not None and tuple(value) != default)
    return f"cetopt prove {model} --claims {','.join(claims)}{given} --out DIR"


def json_number(value: Any) -> Any:
    """numpy scalars and infinities as JSON can hold them."""
    import math

    number = float(value)
    return number if math.isfinite(number) else str(number)
