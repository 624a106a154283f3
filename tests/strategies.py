"""Hypothesis strategies: small random allocation problems covering every constraint kind."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from cetopt.problem.compiled import compile_problem
from cetopt.problem.feasibility import floors
from cetopt.problem.model import AllocationProblem, Budget, Choice, Interaction, Layer, Minimize

BITS = (1, 2, 3, 4, 5, 6, 8)


@st.composite
def problems(draw: st.DrawFn, *, max_layers: int = 7, interactions: bool | None = None, ties: bool | None = None,
             minimize: Minimize | None = None, bops: bool | None = None, bounds: bool | None = None,
             feasible_bias: bool = True) -> AllocationProblem:
    """A random problem of 1..max_layers layers with 1..4 choices each and any mix of constraints.

    Budgets are drawn between the smallest and largest achievable totals, so most are feasible and
    some are not. Losses may be negative (LLC's signed costs).
    """
    n = draw(st.integers(1, max_layers))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    use_ties = draw(st.booleans()) if ties is None else ties
    use_bounds = draw(st.booleans()) if bounds is None else bounds
    use_bops = draw(st.booleans()) if bops is None else bops
    shared_bits = sorted(rng.choice(BITS, size=int(rng.integers(2, 5)), replace=False).tolist())
    layers = []
    for i in range(n):
        bits = shared_bits if (use_ties and i < 2) else \
            sorted(rng.choice(BITS, size=int(rng.integers(1, 6)), replace=False).tolist())
        params = int(rng.integers(1, 2000))
        scale = float(np.exp(rng.normal(-3, 2)))
        signed = rng.random() < 0.2
        choices = tuple(Choice(bits=b, loss=float(scale * params * 4.0 ** (-b) * rng.uniform(0.5, 1.5)
                                                  - (scale * rng.uniform(0, 0.2) if signed else 0.0)))
                        for b in bits)
        kwargs: dict = {"macs": int(params * rng.integers(1, 50))}
        if use_bounds and rng.random() < 0.4:
            kwargs["min_bits"] = int(bits[0] if rng.random() < 0.5 else bits[len(bits) // 2])
        layers.append(Layer(name=f"l{i}", params=params, choices=choices, **kwargs))
    tie_groups = (("l0", "l1"),) if use_ties and n >= 2 else ()
    terms = []
    want_inter = draw(st.booleans()) if interactions is None else interactions
    if want_inter and n >= 2:
        for i in range(n - 1):
            if rng.random() < 0.7:
                a, b = layers[i], layers[i + 1]
                matrix = rng.normal(0, 0.3, (len(a.choices), len(b.choices))) * abs(a.choices[0].loss) ** 0.5 * 0.1
                terms.append(Interaction(a=a.name, b=b.name, loss=tuple(map(tuple, matrix.tolist()))))
    objective = minimize if minimize is not None else draw(st.sampled_from([Minimize.LOSS, Minimize.LOSS, Minimize.SIZE]))
    base = AllocationProblem(name="h", layers=tuple(layers), budget=Budget(max_loss=1e300), minimize=Minimize.SIZE,
                             ties=tie_groups, interactions=tuple(terms))
    compiled = compile_problem(base)
    low = floors(compiled)
    high_size = float(sum(g.size.max() for g in compiled.groups))
    total = base.total_params
    frac = draw(st.floats(-0.1 if feasible_bias else -1.0, 1.0))
    avg_bits = max((low.size_bits + frac * (high_size - low.size_bits)) / total, 0.05)
    budget: dict = {}
    if objective is Minimize.LOSS:
        budget["avg_bits"] = avg_bits
        if use_bops:
            low_b = float(sum(layer.macs * min(c.bits for c in layer.choices) * 8 for layer in layers))
            high_b = float(sum(layer.macs * max(c.bits for c in layer.choices) * 8 for layer in layers))
            budget["bops"] = max(low_b + draw(st.floats(0.0, 1.0)) * (high_b - low_b), 1.0)
    else:
        high_loss = float(sum(g.loss.max() for g in compiled.groups) + sum(p.matrix.max() for p in compiled.pairs))
        budget["max_loss"] = low.loss + draw(st.floats(-0.05, 1.0)) * (high_loss - low.loss)
        if use_bops:
            budget["avg_bits"] = avg_bits + 2.0
    return base.with_changes(budget=Budget(**budget), minimize=objective)
