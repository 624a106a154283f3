"""A ViT-style encoder: patch embedding, LayerNorm, attention through F.scaled_dot_product_attention, GELU MLP.
The second-order passes run attention on the math kernel (the CPU flash kernel's backward has no derivative),
so extraction succeeds whatever kernel the model would pick."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from arch_check import check_architecture, image_batches


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TinyViT(nn.Module):
    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 2, stride=2)
        self.pos = nn.Parameter(torch.randn(1, 9, dim) * 0.1)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, 2)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        h = h + self.attn(self.norm1(h))
        h = h + self.fc2(F.gelu(self.fc1(self.norm2(h))))
        return self.head(h.mean(1))


@pytest.mark.parametrize("user_backend", [None, SDPBackend.FLASH_ATTENTION])
def test_a_vit_encoder_extracts_with_attention_on_a_differentiable_kernel(user_backend: SDPBackend | None) -> None:
    """Also where the user selects the flash kernel around the call (cetopt's math context sits inside it)."""
    torch.manual_seed(3)
    with sdpa_kernel(user_backend) if user_backend is not None else nullcontext():
            check_architecture(TinyViT(), image_batches(3, (3, 3, 6, 6), 4),
                           {"patch": "output", "attn.qkv": "output", "attn.proj": "output", "fc1": "output",
                            "fc2": "forward", "head": "forward"},
                           fallbacks={"patch": "norm1", "attn.qkv": "scaled_dot_product_attention",
                                      "attn.proj": "norm2", "fc1": "gelu"}, trace_estimator="shared")


def test_the_flash_kernel_would_fail_the_double_backward_without_the_math_kernel() -> None:
    """The premise: outside cetopt's context, a double backward through the CPU's default SDPA kernel fails."""
    q = torch.randn(2, 2, 5, 4, requires_grad=True)
    out = F.scaled_dot_product_attention(q, q, q)
    (g,) = torch.autograd.grad(out.pow(2).sum(), q, create_graph=True)
    if "Flash" not in type(out.grad_fn).__name__:
        pytest.skip(f"this torch picks {type(out.grad_fn).__name__} for SDPA here")
    with pytest.raises(RuntimeError, match="not implemented"):
        torch.autograd.grad(g, q, grad_outputs=torch.ones_like(q))


def test_gauss_newton_products_run_through_attention_and_are_symmetric() -> None:
    """The Gauss-Newton signal takes a forward-mode jvp through the model: the flash kernel has none, the math
    kernel does. u' G v = v' G u checks the products."""
    from cetopt.curvature import CurvatureOperator
    from cetopt.curvature.signals import ggn_vector_product

    torch.manual_seed(13)
    model = TinyViT().double().eval()
    data = image_batches(13, (3, 3, 6, 6), 4)
    op = CurvatureOperator(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), data, device="cpu")
    g = torch.Generator().manual_seed(13)
    u, v = ([torch.randn(p.shape, generator=g, dtype=torch.float64) for p in op.params] for _ in range(2))
    kwargs = {"output_fn": lambda m, b: m(b[0]), "output_loss": lambda out, b: F.cross_entropy(out, b[1])}
    gu, gv = ggn_vector_product(op, u, **kwargs), ggn_vector_product(op, v, **kwargs)
    left = sum(float((a * b).sum()) for a, b in zip(u, gv))
    right = sum(float((a * b).sum()) for a, b in zip(v, gu))
    assert abs(left - right) <= 1e-10 * max(abs(left), 1e-12) and left != 0.0
