"""Curvature against the exact Hessian of tiny models (torch.autograd.functional.hessian), in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cetopt.curvature import (CacheError, CurvatureError, CurvatureOperator, CurvatureResult, CurvatureSettings,
                              extract_curvature, hutchinson_traces, lanczos_eigenpairs, quadratic_forms)
from cetopt.curvature.signals import fisher_diagonal, ggn_traces, ggn_vector_product
from cetopt.errors import ProblemError


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def tiny_data(seed: int = 0, batches: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g))
            for _ in range(batches)]


def ce_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def exact_hessian(model: nn.Module, data: list) -> tuple[np.ndarray, list[int]]:
    """The full Hessian of the mean loss w.r.t. both weight matrices (biases fixed), and block sizes."""
    weights = [model[0].weight, model[2].weight]
    shapes = [w.shape for w in weights]
    sizes = [w.numel() for w in weights]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        w0 = flat[: sizes[0]].reshape(shapes[0])
        w2 = flat[sizes[0]:].reshape(shapes[1])
        total = 0.0
        for x, y in data:
            h = torch.tanh(x @ w0.T + model[0].bias)
            total = total + nn.functional.cross_entropy(h @ w2.T + model[2].bias, y)
        return total / len(data)

    flat = torch.cat([w.detach().reshape(-1) for w in weights])
    return torch.autograd.functional.hessian(loss_of, flat).numpy(), sizes


def blocks(hessian: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    edges = np.cumsum([0] + sizes)
    return [hessian[a:b, a:b] for a, b in zip(edges[:-1], edges[1:])]


def test_hvp_matches_the_exact_hessian_and_leaves_the_model_alone() -> None:
    model, data = tiny_model(), tiny_data()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    op = CurvatureOperator(model, ce_loss, data, device="cpu")
    hessian, sizes = exact_hessian(model, data)
    v = [torch.randn_like(p) for p in op.params]
    hv = op.hvp(v)
    np.testing.assert_allclose(torch.cat([t.reshape(-1) for t in hv]).numpy(),
                               hessian @ torch.cat([t.reshape(-1) for t in v]).numpy(), rtol=1e-10, atol=1e-12)
    batched = op.hvp([torch.stack([t, 2 * t]) for t in v], batched=True)
    np.testing.assert_allclose(batched[0][1].numpy(), 2 * hv[0].numpy(), rtol=1e-10, atol=1e-12)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("mode", ["shared", "restricted"])
def test_hutchinson_traces_are_within_their_reported_error_and_deterministic(mode: str) -> None:
    model, data = tiny_model(1), tiny_data(1)
    hessian, sizes = exact_hessian(model, data)
    op = CurvatureOperator(model, ce_loss, data, device="cpu")
    estimates = hutchinson_traces(op, max_probes=2000, min_probes=400, rtol=0.01, seed=3, show_progress=False,
                                  mode=mode)
    for block, est in zip(blocks(hessian, sizes), estimates):
        assert abs(est.trace - np.trace(block)) <= 4 * est.stderr + 1e-12, (est, np.trace(block))
        assert est.n_probes >= 400
    again = hutchinson_traces(op, max_probes=2000, min_probes=400, rtol=0.01, seed=3, show_progress=False,
                              mode=mode)
    assert again == estimates


def test_lanczos_recovers_both_ends_of_each_block_spectrum_including_negative_values() -> None:
    model, data = tiny_model(2), tiny_data(2)
    hessian, sizes = exact_hessian(model, data)
    op = CurvatureOperator(model, ce_loss, data, device="cpu")
    pairs = lanczos_eigenpairs(op, k=3, iterations=40, show_progress=False)
    for block, eig in zip(blocks(hessian, sizes), pairs):
        exact = np.linalg.eigvalsh(block)
        np.testing.assert_allclose(eig.top_values, exact[::-1][:3], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(eig.bottom_values, exact[:3], rtol=1e-8, atol=1e-10)
        for value, vector in zip(eig.top_values, eig.top_vectors):
            np.testing.assert_allclose(block @ vector, value * vector, atol=1e-8)
    assert any(eig.bottom_values[0] < 0 for eig in pairs) or all(np.linalg.eigvalsh(b).min() >= 0
                                                                  for b in blocks(hessian, sizes))


def test_quadratic_forms_and_cross_terms_are_exact() -> None:
    model, data = tiny_model(3), tiny_data(3)
    hessian, sizes = exact_hessian(model, data)
    op = CurvatureOperator(model, ce_loss, data, device="cpu")
    gen = torch.Generator().manual_seed(0)
    errors = {name: [torch.randn(p.shape, generator=gen, dtype=p.dtype) for _ in range(3)]
              for name, p in zip(op.names, op.params)}
    _, grads = op.loss_and_gradient()
    forms = quadratic_forms(op, errors, pairs=[(op.names[0], op.names[1])], gradient=grads)
    h = blocks(hessian, sizes)
    for j, name in enumerate(op.names):
        for i, e in enumerate(errors[name]):
            flat = e.reshape(-1).numpy()
            assert forms.own[name][i] == pytest.approx(flat @ h[j] @ flat, rel=1e-10, abs=1e-12)
            assert forms.linear[name][i] == pytest.approx(float((grads[j] * e).sum()), rel=1e-12)
    cross = hessian[: sizes[0], sizes[0]:]
    a, b = op.names
    for i, ea in enumerate(errors[a]):
        for k, eb in enumerate(errors[b]):
            want = ea.reshape(-1).numpy() @ cross @ eb.reshape(-1).numpy()
            assert forms.cross[(a, b)][i, k] == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_gauss_newton_and_fisher_agree_with_their_definitions() -> None:
    model, data = tiny_model(4), tiny_data(4, batches=1)
    op = CurvatureOperator(model, ce_loss, data, device="cpu")
    v = [torch.randn_like(p) for p in op.params]
    gv = ggn_vector_product(op, v, output_fn=lambda m, b: m(b[0]),
                            output_loss=lambda out, b: nn.functional.cross_entropy(out, b[1]))
    # GGN is PSD: v'Gv >= 0
    assert sum(float((a * b).sum()) for a, b in zip(v, gv)) >= 0
    fisher = fisher_diagonal(op)
    x, y = data[0]
    manual = [torch.zeros_like(p) for p in op.params]
    for i in range(len(y)):
        loss = nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        for acc, g in zip(manual, torch.autograd.grad(loss, op.params)):
            acc += g ** 2
    for f, m in zip(fisher, manual):
        torch.testing.assert_close(f, m / len(y))


def test_ggn_traces_are_within_their_error_of_the_exact_gauss_newton_trace() -> None:
    model, data = tiny_model(7), tiny_data(7, batches=1)
    op = CurvatureOperator(model, ce_loss, data, device="cpu")
    out_fn = lambda m, b: m(b[0])  # noqa: E731
    out_loss = lambda out, b: nn.functional.cross_entropy(out, b[1])  # noqa: E731
    estimates = ggn_traces(op, output_fn=out_fn, output_loss=out_loss, probes=300, seed=1)
    for j, p in enumerate(op.params):
        exact = 0.0
        for i in range(p.numel()):  # Tr G_jj from unit vectors
            basis = [torch.zeros_like(q) for q in op.params]
            basis[j].view(-1)[i] = 1.0
            exact += float(ggn_vector_product(op, basis, output_fn=out_fn, output_loss=out_loss)[j].view(-1)[i])
        assert exact > 0
        assert abs(estimates[j].trace - exact) <= 4 * estimates[j].stderr + 1e-12


def test_bad_inputs_are_named() -> None:
    model, data = tiny_model(), tiny_data()
    with pytest.raises(ProblemError, match="empty"):
        CurvatureOperator(model, ce_loss, [], device="cpu")
    with pytest.raises(ProblemError, match="no quantisable layers"):
        CurvatureOperator(nn.Sequential(nn.Tanh()), ce_loss, data, device="cpu")
    op = CurvatureOperator(model, lambda m, b: m(b[0]).sum(dim=1), data, device="cpu")
    with pytest.raises(ProblemError, match="scalar"):
        op.loss_and_gradient()
    op = CurvatureOperator(model, lambda m, b: ce_loss(m, b) * float("nan"), data, device="cpu")
    with pytest.raises(CurvatureError):
        op.loss_and_gradient()


def test_extract_caches_and_distrusts_damaged_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, data = tiny_model(5), tiny_data(5)
    settings = CurvatureSettings(max_probes=32, k=2, lanczos_iterations=10, dtype="float64")
    first = extract_curvature(model, ce_loss, data, settings=settings, cache_dir=tmp_path, show_progress=False)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    again = extract_curvature(model, ce_loss, data, settings=settings, cache_dir=tmp_path, show_progress=False)
    assert again.seconds == first.seconds  # served from the cache
    np.testing.assert_array_equal(again.layers[0].eig.top_values, first.layers[0].eig.top_values)
    with np.load(files[0]) as stored:  # tamper with one number, keep the stored checksum
        arrays = {k: stored[k].copy() for k in stored.files}
    arrays["0.gradient"][0] += 1.0
    np.savez(files[0], **arrays)
    with pytest.raises(CacheError, match="checksum"):
        CurvatureResult.load(files[0])
    files[0].write_bytes(files[0].read_bytes()[:100])  # a truncated file
    with pytest.raises(CacheError):
        CurvatureResult.load(files[0])
    fresh = extract_curvature(model, ce_loss, data, settings=settings, cache_dir=tmp_path, show_progress=False)
    assert fresh.layers[0].trace == first.layers[0].trace  # recomputed, same seed, same numbers
    CurvatureResult.load(files[0])  # rewritten intact


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu() -> None:
    model, data = tiny_model(6), tiny_data(6)
    cpu = CurvatureOperator(model, ce_loss, data, device="cpu")
    gpu = CurvatureOperator(model, ce_loss, data, device="cuda")
    v = [torch.randn_like(p) for p in cpu.params]
    for a, b in zip(cpu.hvp(v), gpu.hvp([t.cuda() for t in v])):
        torch.testing.assert_close(a, b.cpu())
