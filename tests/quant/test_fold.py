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


def bn_spec():  # type: ignore[no-untyped-def]
    """A small conv net with BatchNorms as a user's ``file.py:function`` spec (the CLI test loads it by path)."""
    from cetopt.modelspec import ModelSpec

    net = random_net(3).float()
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 4, (4,), generator=g)) for _ in range(2)]
    return ModelSpec(name="net", model=net, calibration=batches,
                     loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
                     evaluate=lambda m: {"loss": float(nn.functional.cross_entropy(m(batches[0][0]), batches[0][1]))})


def test_the_cli_folds_by_default_and_apply_follows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    from pathlib import Path

    from cetopt.artifact import read_packed
    from cetopt.cli import main

    target = f"{Path(__file__).resolve()}:bn_spec"
    for flag, name in (([], "folded"), (["--no-fold-bn"], "plain")):
        problem, plan, art = (tmp_path / f"{name}.json", tmp_path / f"{name}-plan.json", tmp_path / f"{name}-art")
        assert main(["extract", target, "--bits", "2,4,8", "--avg-bits", "4", "--out", str(problem), *flag]) == 0
        assert json.loads(problem.read_text())["metadata"].get("fold_bn") is (True if not flag else None)
        assert main(["solve", str(problem), "--solver", "dp", "--out", str(plan)]) == 0
        assert main(["apply", str(plan), "--model", target, "--out", str(art)]) == 0
        tensors, _ = read_packed(art)
        assert ("bn1.running_mean" in tensors) is bool(flag)  # folded: BatchNorm's entries are gone
        assert main(["evaluate", str(art), "--model", target]) == 0


def test_a_plan_made_on_the_folded_model_is_applied_to_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """extract --fold-bn records the fold; apply, load and evaluate fold the user's (unfolded) model again, so the
    artefact holds the folded state (no BatchNorm entries) and loads into the same outputs."""
    from cetopt.artifact import evaluate_artifact, load_compressed, write_artifact
    from cetopt.curvature.extract import CurvatureSettings
    from cetopt.modelspec import ModelSpec
    from cetopt.problem.model import Budget
    from cetopt.quant.fold import fold_spec
    from cetopt.quant.apply import apply_plan
    from cetopt.quant.plan import plan_from_result
    from cetopt.solvers.api import solve
    from cetopt.workflow import build_for

    net = random_net(3).float()
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 4, (4,), generator=g)) for _ in range(2)]
    spec = ModelSpec(name="net", model=net, calibration=batches,
                     loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
                     evaluate=lambda m: {"loss": float(nn.functional.cross_entropy(m(batches[0][0]), batches[0][1]))})
    folded = fold_spec(spec)
    built = build_for(folded, method="cet", bits=(2, 4, 8), budget=Budget(avg_bits=4.0), cache_dir=False,
                      settings=CurvatureSettings(k=0, max_probes=2, min_probes=2))
    assert built.problem.metadata["fold_bn"] is True
    plan = plan_from_result(built.problem, solve(built.problem, "dp"), model="net")
    assert plan.extra["fold_bn"] is True
    info = write_artifact(spec, plan, tmp_path / "art", target="net")  # the user's unfolded spec
    loaded = load_compressed(tmp_path / "art", spec)
    assert isinstance(loaded.model.bn1, nn.Identity) and "bn1.running_mean" not in loaded.model.state_dict()
    x = batches[1][0]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), apply_plan(folded.model, plan).model(x))
    assert evaluate_artifact(tmp_path / "art", spec)["file_bytes"] == info.file_bytes
