"""A network expanded into K low-bit basis models: the terms are b-bit integers times scales, the three
granularities agree where the maths says they must (tensor = layer for Linear/Conv; model = tensor only for a
network without non-linearities), the basis tuples AbelianAdd to the expanded model, and the batched
evaluation equals the sequential sum."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cetopt.errors import ProblemError
from cetopt.quant.abelian import ADD, abelian_add, check_group_axioms, parameter_tuple
from cetopt.quant.basis import (basis_models, expand_model, granularity_output, is_additive, layer_model, model_sum,
                                tensor_model)
from cetopt.zoo.mnist1d_resnet import ResNet1d


def _net(relu: bool) -> nn.Module:
    act = nn.ReLU() if relu else nn.Identity()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.BatchNorm1d(4), act, nn.Flatten(), nn.Linear(4 * 6, 8),
                        act, nn.Linear(8, 3))
    with torch.no_grad():
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.normal_()
    return net.double().eval()


@settings(max_examples=15, deadline=None)
@given(bits=st.integers(2, 6), terms=st.integers(1, 4))
def test_terms_are_b_bit_integers_times_scales_and_sum_to_the_expansion(bits: int, terms: int) -> None:
    net = _net(relu=True)
    e = expand_model(net, bits, terms)
    assert e.layers == ("0", "4", "6") and len(e.states) == terms
    for key, s in e.series.items():
        total = torch.zeros_like(s.parts[0].weight)
        for part in s.parts:
            assert part.codes.dtype == torch.int64
            assert int(part.codes.min()) >= 0 and int(part.codes.max()) <= 2 ** bits - 2  # symmetric b-bit grid
            signed = part.codes.double() - part.grid.zero[:, :1]
            assert signed.abs().max() <= 2 ** (bits - 1) - 1
            # independent dequantisation: code x per-channel scale
            value = (signed * part.grid.scale[:, :1]).reshape(part.weight.shape)
            assert torch.equal(value, part.weight)
            total = total + part.weight
        assert torch.allclose(total, s.weight, atol=1e-12)
        assert all(b <= a * (1 + 1e-12) for a, b in zip(s.residual_norms, s.residual_norms[1:]))  # never grows
    assert e.size_bits() == terms * sum(s.size_bits // terms for s in e.series.values())


def test_non_quantised_parameters_follow_the_stated_rule() -> None:
    net = _net(relu=True)
    e = expand_model(net, 3, 3)
    state = net.state_dict()
    assert is_additive("4.bias") and is_additive("1.running_mean") and not is_additive("1.running_var")
    for k, basis in enumerate(e.states):
        for key in ("0.bias", "4.bias", "1.bias", "1.running_mean"):
            assert torch.equal(basis[key], state[key] if k == 0 else torch.zeros_like(state[key]))
        for key in ("1.weight", "1.running_var", "1.num_batches_tracked"):
            assert torch.equal(basis[key], state[key]) and key in e.shared or key.endswith("tracked")
    # AbelianAdd of the K additive tuples (any order) is the tensor-granularity model's tuple
    expanded = parameter_tuple(tensor_model(net, e))
    for order in ([0, 1, 2], [2, 0, 1]):
        total = e.additive_tuple(order[0])
        for k in order[1:]:
            total = abelian_add(total, e.additive_tuple(k))
        for key, v in expanded.items():
            assert torch.allclose(total[key], v, atol=1e-12), key
    assert check_group_axioms(ADD, [e.additive_tuple(k) for k in range(3)]).passed


def test_layer_granularity_equals_tensor_granularity_on_linear_and_conv_layers() -> None:
    torch.manual_seed(1)
    for net, x in ((_net(relu=True), torch.randn(5, 1, 6, dtype=torch.float64)),
                   (ResNet1d().double().eval(), torch.randn(7, 40, dtype=torch.float64))):
        for bits, terms in ((2, 1), (3, 3), (4, 2)):
            e = expand_model(net, bits, terms)
            a = granularity_output(net, e, "tensor", x)
            b = granularity_output(net, e, "layer", x)
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
            with torch.no_grad():  # independent: the summed weights written into a copy by hand
                manual = _net(relu=True) if isinstance(net, nn.Sequential) else net.__class__().double()
                manual.load_state_dict(net.state_dict())
                for key, s in e.series.items():
                    manual.state_dict()[key].copy_(sum(p.weight for p in s.parts))
                assert torch.allclose(manual.eval()(x), a, rtol=1e-10, atol=1e-10)


def test_model_granularity_is_exact_only_where_the_output_is_affine_in_the_weights() -> None:
    x = torch.randn(9, 1, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    linear = _net(relu=False)
    one = expand_model(linear, 2, 3, layers=["0"])  # the first layer alone quantised, affine maps after it: exact
    assert torch.allclose(granularity_output(linear, one, "model", x), granularity_output(linear, one, "tensor", x),
                          rtol=1e-9, atol=1e-9)
    # two or more quantised layers: the sum of basis-model outputs keeps only the diagonal products, even with no
    # non-linearity; checked against that product computed by hand on a bias-free 2-layer linear network
    torch.manual_seed(4)
    chain = nn.Sequential(nn.Linear(5, 4, bias=False), nn.Linear(4, 3, bias=False)).double().eval()
    z = torch.randn(6, 5, dtype=torch.float64)
    e = expand_model(chain, 2, 3)
    w1 = [p.weight for p in e.series["0.weight"].parts]
    w2 = [p.weight for p in e.series["1.weight"].parts]
    diagonal = sum(z @ w1[k].T @ w2[k].T for k in range(3))
    assert torch.allclose(granularity_output(chain, e, "model", z), diagonal, rtol=1e-10, atol=1e-12)
    full = z @ sum(w1).T @ sum(w2).T
    assert torch.allclose(granularity_output(chain, e, "tensor", z), full, rtol=1e-10, atol=1e-12)
    assert (diagonal - full).abs().max() > 1e-3  # the cross terms are missing
    relu = _net(relu=True)
    e = expand_model(relu, 2, 3)
    gap = (granularity_output(relu, e, "model", x) - granularity_output(relu, e, "tensor", x)).abs().max()
    assert gap > 1e-3
    single = expand_model(relu, 2, 1)  # K = 1: one basis model, the three granularities coincide
    assert torch.allclose(granularity_output(relu, single, "model", x), granularity_output(relu, single, "tensor", x))


def test_batched_basis_models_equal_the_sequential_sum() -> None:
    torch.manual_seed(3)
    for net, x in ((_net(relu=True), torch.randn(4, 1, 6, dtype=torch.float64)),
                   (ResNet1d().double().eval(), torch.randn(6, 40, dtype=torch.float64))):
        e = expand_model(net, 3, 4)
        parallel = model_sum(net, e, x)
        with torch.no_grad():
            sequential = sum(m(x) for m in basis_models(net, e))
        assert torch.allclose(parallel, sequential, rtol=1e-10, atol=1e-12)
        assert torch.allclose(model_sum(net, e, x, parallel=False), sequential, rtol=1e-12, atol=1e-14)
        layered = layer_model(net, e)
        assert sum(1 for _ in layered.modules() if type(_).__name__ == "SeriesLayer") == len(e.layers)


def test_bad_granularity_and_bits_are_refused() -> None:
    net = _net(relu=True)
    e = expand_model(net, 3, 2)
    with pytest.raises(ProblemError, match="granularity"):
        granularity_output(net, e, "block", torch.zeros(1, 1, 6, dtype=torch.float64))
    with pytest.raises(ProblemError, match="bits"):
        expand_model(net, 1, 2)
    with pytest.raises(ProblemError, match="terms"):
        expand_model(net, 4, 0)
