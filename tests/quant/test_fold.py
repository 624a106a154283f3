"""BatchNorm folding: exact in float64 against the unfolded model (eval mode), only the BatchNorms that read
nothing but one layer's output folded, and the per-output-channel grid equivariant under it (the reason folding
leaves the default quantiser's codes unchanged)."""

from __future__ import annotations

import torch
from torch import nn

from cetopt.quant.fold import fold_batchnorm, foldable_pairs
from cetopt.quant.quantizers import QuantizerSpec, fake_quantize


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 6, 3, padding=1, groups=3), nn.BatchNorm2d(6)  # a bias, groups
        self.conv3, self.bn3 = nn.Conv2d(6, 6, 1), nn.BatchNorm2d(6)  # conv3's output also skips: not foldable
        self.head = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)))
        z = self.conv3(h)
        h = self.bn3(z) + z
        return self.head(h.mean((2, 3)))


def random_net(seed: int) -> Net:
    torch.manual_seed(seed)
    net = Net().double()
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(6, generator=g, dtype=torch.float64))
            m.running_var.copy_(torch.rand(6, generator=g, dtype=torch.float64) + 0.2)
            m.weight.data.copy_(torch.randn(6, generator=g, dtype=torch.float64))  # negative gains too
            m.bias.data.copy_(torch.randn(6, generator=g, dtype=torch.float64))
    return net.eval()


def test_folding_is_exact_and_only_where_the_batchnorm_owns_the_output() -> None:
    net = random_net(0)
    assert foldable_pairs(net) == [("conv1", "bn1"), ("conv2", "bn2")]
    folded, pairs = fold_batchnorm(net)
    assert pairs == (("conv1", "bn1"), ("conv2", "bn2"))
    assert isinstance(folded.bn1, nn.Identity) and isinstance(folded.bn3, nn.BatchNorm2d)
    assert isinstance(net.bn1, nn.BatchNorm2d) and net.conv1.bias is None  # the original is untouched
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-12, atol=1e-12)
    assert "conv1.bias" in folded.state_dict() and "bn1.running_mean" not in folded.state_dict()


def test_per_channel_grid_is_equivariant_to_folding() -> None:
    """Q(g_c W_c) = g_c Q(W_c) row by row (symmetric and asymmetric, MSE clipping included), so the folded layer's
    codes are the unfolded one's; a per-tensor grid is not (folding changes its errors)."""
    net = random_net(2)
    folded, _ = fold_batchnorm(net)
    gain = (folded.conv1.weight / net.conv1.weight).flatten(1)[:, 0].reshape(-1, 1, 1, 1)
    for spec in (QuantizerSpec(), QuantizerSpec(symmetric=False), QuantizerSpec(clip="mse")):
        for bits in (2, 4):
            torch.testing.assert_close(fake_quantize(folded.conv1.weight, bits, spec),
                                       gain * fake_quantize(net.conv1.weight, bits, spec), rtol=1e-6, atol=1e-7)
            # (the grid's scales are stored as float32: equal to their rounding, 6e-8 relative)
    per_tensor = QuantizerSpec(per_channel=False)
    assert not torch.allclose(fake_quantize(folded.conv1.weight, 3, per_tensor),
                              gain * fake_quantize(net.conv1.weight, 3, per_tensor))
