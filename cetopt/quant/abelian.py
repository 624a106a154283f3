"""AbelianAdd / AbelianMul between isomorphic models (FP=xINT), and a numerical check of the group axioms.

FP=xINT states that its basis models combine through "AbelianAdd/Mul operations between isomorphic models ...
forming an Abelian group to ensure operation parallelism and commutativity"; the paper's own definitions could
not be read (docs/fp-xint.md). cetopt defines them on *parameter tuples*:

- A parameter tuple of a model is its ``state_dict`` restricted to floating-point entries (parameters and
  floating buffers such as BatchNorm's running statistics), in ``state_dict`` order: name -> tensor. Integer
  buffers (``num_batches_tracked``) are bookkeeping, not part of the tuple.
- Two models are *isomorphic* when their tuples have the same names in the same order, and each entry the
  same shape and dtype (:func:`check_isomorphic`; otherwise a :class:`~cetopt.errors.ProblemError` naming the
  first entry that differs).
- **AbelianAdd** ``a (+) b``: entrywise addition of every tensor. The tuples of one architecture form the group
  (R^n, +): identity all zeros, inverse the negation. This is the operation that sums the K basis models of an
  expansion back into one model (cetopt.quant.basis).
- **AbelianMul** ``a (x) b``: entrywise (Hadamard) product of every tensor. On all of R^n it is a commutative
  monoid (identity all ones); its group is the tuples with *no zero entry*, ((R \\ {0})^n, x), inverse the
  entrywise reciprocal (:func:`mul_inverse` refuses a zero entry, naming it). It is what turns a basis model
  of integer codes and a model of per-channel scales into the dequantised term s_k (x) Q_k.

Both are computed entry by entry, so the K terms of an expansion can be combined in any order and in parallel;
that is the property the paper needs. In floating point they are commutative exactly and associative only to
rounding, which is why :func:`check_group_axioms` measures each axiom against a tolerance in units of the
dtype's machine epsilon. The check can fail: an operation that is not commutative (subtraction, or "keep the
left operand") fails it (tests/quant/test_abelian.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from cetopt.errors import ProblemError

ParamTuple = dict[str, torch.Tensor]


def parameter_tuple(model: nn.Module) -> ParamTuple:
    """The model's floating-point state (parameters and floating buffers), detached, name -> tensor."""
    return {k: v.detach() for k, v in model.state_dict().items() if torch.is_floating_point(v)}


def check_isomorphic(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], *,
                     names: tuple[str, str] = ("a", "b")) -> None:
    """Raise ProblemError naming the first entry where ``a`` and ``b`` differ in name, order, shape or dtype."""
    ka, kb = list(a), list(b)
    for i, (x, y) in enumerate(zip(ka, kb)):
        if x != y:
            raise ProblemError(f"entry {i} is {x!r} in {names[0]} but {y!r} in {names[1]}: the models are not "
                               "isomorphic (same architecture, parameters in the same order)",
                               field=f"parameters[{x!r}]")
    if len(ka) != len(kb):
        longer, which = (ka, names[0]) if len(ka) > len(kb) else (kb, names[1])
        extra = longer[min(len(ka), len(kb))]
        raise ProblemError(f"only {which} has this entry ({len(ka)} vs {len(kb)} tensors): the models are not "
                           "isomorphic", field=f"parameters[{extra!r}]")
    for name in ka:
        if a[name].shape != b[name].shape:
            raise ProblemError(f"shape {tuple(a[name].shape)} in {names[0]} but {tuple(b[name].shape)} in {names[1]}: "
                               "the models are not isomorphic", field=f"parameters[{name!r}]")
        if a[name].dtype != b[name].dtype:
            raise ProblemError(f"dtype {a[name].dtype} in {names[0]} but {b[name].dtype} in {names[1]}: convert both "
                               "models to one dtype first", field=f"parameters[{name!r}]")


def abelian_add(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> ParamTuple:
    """AbelianAdd: ``a + b`` entry by entry (isomorphic tuples, else ProblemError)."""
    check_isomorphic(a, b)
    return {k: a[k] + b[k] for k in a}


def add_identity(like: Mapping[str, torch.Tensor]) -> ParamTuple:
    """The AbelianAdd identity of ``like``'s architecture: all zeros."""
    return {k: torch.zeros_like(v) for k, v in like.items()}


def add_inverse(a: Mapping[str, torch.Tensor]) -> ParamTuple:
    """The AbelianAdd inverse: ``-a``."""
    return {k: -v for k, v in a.items()}


def abelian_mul(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> ParamTuple:
    """AbelianMul: the entrywise product ``a * b`` (isomorphic tuples, else ProblemError)."""
    check_isomorphic(a, b)
    return {k: a[k] * b[k] for k in a}


def mul_identity(like: Mapping[str, torch.Tensor]) -> ParamTuple:
    """The AbelianMul identity of ``like``'s architecture: all ones."""
    return {k: torch.ones_like(v) for k, v in like.items()}


def mul_inverse(a: Mapping[str, torch.Tensor]) -> ParamTuple:
    """The AbelianMul inverse ``1 / a``; ProblemError naming the first entry with a zero (not invertible)."""
    for k, v in a.items():
        zeros = int((v == 0).sum())
        if zeros:
            raise ProblemError(f"{zeros} zero value(s): only tuples without zeros have an AbelianMul inverse",
                               field=f"parameters[{k!r}]")
    return {k: 1.0 / v for k, v in a.items()}


def combine(models: Sequence[nn.Module], op: Callable[[ParamTuple, ParamTuple], ParamTuple] = abelian_add
            ) -> ParamTuple:
    """Fold ``op`` over the parameter tuples of ``models`` (left to right; for a group operation any order gives
    the same tuple up to rounding)."""
    if not models:
        raise ProblemError("give at least one model", field="models")
    out = parameter_tuple(models[0])
    for i, m in enumerate(models[1:], start=1):
        other = parameter_tuple(m)
        check_isomorphic(out, other, names=("models[0]", f"models[{i}]"))
        out = op(out, other)
    return out


@dataclass(frozen=True)
class GroupOp:
    """A binary operation on parameter tuples with the identity and inverse it claims.

    Attributes:
        name: for reports.
        op: (a, b) -> a . b.
        identity: like -> e with e . a = a.
        inverse: a -> a^-1 with a . a^-1 = e.
        multiplicative: errors are judged relative to each entry's magnitude (products) rather than to the
            operands' largest magnitude (sums, whose results can cancel to ~0).
    """

    name: str
    op: Callable[[ParamTuple, ParamTuple], ParamTuple]
    identity: Callable[[ParamTuple], ParamTuple]
    inverse: Callable[[ParamTuple], ParamTuple]
    multiplicative: bool = False


ADD = GroupOp("AbelianAdd", abelian_add, add_identity, add_inverse)
MUL = GroupOp("AbelianMul", abelian_mul, mul_identity, mul_inverse, multiplicative=True)
AXIOMS = ("identity", "inverse", "commutativity", "associativity")


@dataclass(frozen=True)
class AxiomCheck:
    """The largest violation of each group axiom over the samples, in units of the dtype's machine epsilon.

    Attributes:
        op: the operation's name.
        samples: tuples checked (every pair for commutativity, every consecutive triple for associativity).
        errors: axiom -> max over samples of |lhs - rhs| / scale / eps (entrywise, max over entries); scale is
            max(|lhs|, |rhs|) for a multiplicative operation, else the operands' largest |value|.
        tolerance: errors above this many eps violate the axiom.
    """

    op: str
    samples: int
    errors: dict[str, float]
    tolerance: float

    @property
    def failed(self) -> tuple[str, ...]:
        """The axioms whose error exceeds the tolerance (NaN counts as a failure)."""
        return tuple(a for a in AXIOMS if not self.errors[a] <= self.tolerance)

    @property
    def passed(self) -> bool:
        return not self.failed


def _violation(lhs: ParamTuple, rhs: ParamTuple, operands: Sequence[ParamTuple], multiplicative: bool) -> float:
    worst = 0.0
    for k in lhs:
        x, y = lhs[k].double(), rhs[k].double()
        if x.shape != y.shape:
            return float("inf")
        if x.numel() == 0:
            continue
        eps = torch.finfo(lhs[k].dtype).eps
        diff = (x - y).abs()
        if multiplicative:
            scale = torch.maximum(x.abs(), y.abs()).clamp_min(torch.finfo(lhs[k].dtype).tiny)
        else:
            scale = torch.tensor(max(float(o[k].abs().max()) for o in operands) or 1.0, dtype=torch.float64)
        worst = max(worst, float((diff / scale).max()) / eps)
    return worst


def check_group_axioms(group: GroupOp, samples: Sequence[Mapping[str, torch.Tensor]], *, tolerance: float = 8.0
                       ) -> AxiomCheck:
    """Measure identity (e.a = a.e = a), inverse (a.a^-1 = a^-1.a = e), commutativity (a.b = b.a, every pair)
    and associativity ((a.b).c = a.(b.c), every consecutive triple, cyclically) on ``samples`` (>= 3 isomorphic
    tuples) to ``tolerance`` x machine epsilon of their dtype."""
    xs = [dict(s) for s in samples]
    if len(xs) < 3:
        raise ProblemError(f"the axioms need >= 3 samples (associativity is about triples), got {len(xs)}",
                           field="samples")
    for i, x in enumerate(xs[1:], start=1):
        check_isomorphic(xs[0], x, names=("samples[0]", f"samples[{i}]"))
    m = group.multiplicative
    errors = dict.fromkeys(AXIOMS, 0.0)
    e = group.identity(xs[0])
    for a in xs:
        errors["identity"] = max(errors["identity"], _violation(group.op(e, a), a, [a], m),
                                 _violation(group.op(a, e), a, [a], m))
        inv = group.inverse(a)
        for lhs in (group.op(a, inv), group.op(inv, a)):
            # a.a^-1 = e: for a sum the result is judged against the operands' size (it cancels), for a product
            # against 1
            errors["inverse"] = max(errors["inverse"], _violation(lhs, e, [a, inv], m))
    for i, a in enumerate(xs):
        for b in xs[i + 1:]:
            errors["commutativity"] = max(errors["commutativity"],
                                          _violation(group.op(a, b), group.op(b, a), [a, b], m))
    n = len(xs)
    for i in range(n):
        a, b, c = xs[i], xs[(i + 1) % n], xs[(i + 2) % n]
        errors["associativity"] = max(errors["associativity"], _violation(
            group.op(group.op(a, b), c), group.op(a, group.op(b, c)), [a, b, c, group.op(a, b), group.op(b, c)], m))
    return AxiomCheck(op=group.name, samples=n, errors=errors, tolerance=tolerance)
