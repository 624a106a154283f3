"""AbelianAdd / AbelianMul on parameter tuples: the group axioms hold to float tolerance on random tuples
(hypothesis), a non-commutative or non-associative operation fails the check, and non-isomorphic models or a
non-invertible tuple are refused with an error naming the entry."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cetopt.errors import ProblemError
from cetopt.quant.abelian import (ADD, MUL, GroupOp, abelian_add, abelian_mul, add_identity, check_group_axioms,
                                  check_isomorphic, combine, mul_inverse, parameter_tuple)

SHAPES = {"fc.weight": (3, 4), "fc.bias": (3,), "bn.running_var": (5,)}


def _tuples(seed: int, n: int, dtype: torch.dtype, nonzero: bool) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        t = {}
        for k, shape in SHAPES.items():
            v = torch.randn(shape, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-3, 4, (), generator=g)
            if nonzero:  # bounded away from zero, both signs
                v = torch.sign(v + 0.5 * (v == 0)) * (v.abs() + 0.1)
            t[k] = v.to(dtype)
        out.append(t)
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(3, 6), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_add_and_mul_satisfy_the_abelian_group_axioms(seed: int, n: int, dtype: torch.dtype) -> None:
    for group, nonzero in ((ADD, False), (MUL, True)):
        check = check_group_axioms(group, _tuples(seed, n, dtype, nonzero))
        assert check.passed, (group.name, check.errors)
        assert check.errors["commutativity"] == 0.0  # entrywise + and * commute exactly in IEEE arithmetic


def test_the_check_fails_for_operations_that_are_not_abelian_groups() -> None:
    samples = _tuples(0, 4, torch.float64, nonzero=True)
    subtract = GroupOp("subtraction", lambda a, b: {k: a[k] - b[k] for k in a}, add_identity,
                       lambda a: dict(a))  # a - a = 0: a right inverse, but not commutative nor associative
    check = check_group_axioms(subtract, samples)
    assert not check.passed and {"commutativity", "associativity", "identity"} <= set(check.failed)
    left = GroupOp("keep the left operand", lambda a, b: dict(a), add_identity, lambda a: dict(a))
    assert "commutativity" in check_group_axioms(left, samples).failed
    # the tolerance is what separates rounding from a violation: the mul check fails at tolerance 0 only where
    # float products really do round differently, never on commutativity
    tight = check_group_axioms(MUL, samples, tolerance=0.0)
    assert "commutativity" not in tight.failed


def test_mul_inverse_refuses_a_zero_entry_by_name() -> None:
    t = _tuples(1, 1, torch.float64, nonzero=True)[0]
    t["fc.bias"][1] = 0.0
    with pytest.raises(ProblemError, match=r"parameters\['fc.bias'\].*zero"):
        mul_inverse(t)
    with pytest.raises(ProblemError, match="samples"):
        check_group_axioms(ADD, _tuples(2, 2, torch.float64, False))


def test_non_isomorphic_models_are_refused_naming_the_entry() -> None:
    a = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    b = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5))
    with pytest.raises(ProblemError, match=r"parameters\['0.weight'\].*shape \(3, 4\).*\(5, 4\)"):
        abelian_add(parameter_tuple(a), parameter_tuple(b))
    c = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ProblemError, match=r"parameters\['1.weight'\].*not isomorphic"):
        combine([a, c])
    d = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double()
    with pytest.raises(ProblemError, match="dtype"):
        check_isomorphic(parameter_tuple(a), parameter_tuple(d))
    e = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    with pytest.raises(ProblemError, match=r"parameters\['1.running_mean'\]"):
        check_isomorphic(parameter_tuple(a), parameter_tuple(e))


def test_combining_models_is_the_entrywise_sum_and_product_in_any_order() -> None:
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)) for _ in range(3)]
    for m in models:
        m[1].running_mean.normal_()
    total = combine(models)
    reordered = combine(models[::-1])
    for k, v in total.items():  # independent computation: the plain sum of the state dicts' entries
        expected = sum(m.state_dict()[k].double() for m in models)
        assert torch.allclose(v.double(), expected, rtol=1e-6, atol=1e-6)
        assert torch.allclose(v, reordered[k], rtol=1e-6, atol=1e-7)
    assert "1.num_batches_tracked" not in total  # integer bookkeeping is not part of the tuple
    prod = combine(models, abelian_mul)
    assert torch.allclose(prod["0.weight"], models[0][0].weight * models[1][0].weight * models[2][0].weight)
