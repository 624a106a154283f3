"""Sequential rounding (GPTQ's order) against independent computations: on a 2-layer MLP the second layer's Gram
matrix is the Gram matrix of the quantised first layer's outputs, computed here by hand; with the first layer at 16
bits it is (to 16-bit precision) the FP32 one; the layers are taken in the order the model runs them, not the order
they were registered; a sequential artefact re-derives on evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cetopt.quant.adaround import layer_grams
from cetopt.quant.plan import LayerChoice, Plan, apply_plan
from cetopt.quant.quantizers import QuantizerSpec
from cetopt.quant.rounding import round_weight
from cetopt.quant.rounding.base import RoundingContext
from cetopt.quant.rounding.sequential import _gram_after_upstream, execution_order, sequential_grams


class Reversed(nn.Module):
    """fc2 is registered before fc1 but runs after it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc2 = nn.Linear(7, 3)
        self.fc1 = nn.Linear(5, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def mlp() -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = Reversed()
    x = torch.randn(96, 5) @ torch.randn(5, 5)  # correlated inputs: gptq's error feedback does something
    return model, [x[:48], x[48:]]


def run(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return model(batch)


def gram_by_hand(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return (x.T @ x / x.shape[0])[None]


def test_second_layer_gram_is_that_of_the_quantised_first_layers_outputs() -> None:
    model, batches = mlp()
    spec = QuantizerSpec()
    plan = Plan(layers={"fc2": LayerChoice(3, rounding="gptq"), "fc1": LayerChoice(3, rounding="gptq")}, quantizer=spec)
    grams = sequential_grams(model, plan, run, batches)
    x = torch.cat(batches)
    g1 = gram_by_hand(x)
    assert torch.allclose(grams["fc1"], g1, rtol=1e-12, atol=0)  # nothing upstream of fc1
    w1 = round_weight("gptq", model.fc1.weight.detach(), 3, spec, RoundingContext(gram=g1)).weight
    hidden_q = torch.relu(x @ w1.T + model.fc1.bias.detach())
    assert torch.allclose(grams["fc2"], gram_by_hand(hidden_q), rtol=1e-10, atol=1e-12)
    fp32 = gram_by_hand(torch.relu(model.fc1(x)).detach())
    assert not torch.allclose(grams["fc2"], fp32, rtol=1e-3)  # the quantisation upstream did change it
    # apply_plan with these matrices rounds fc2 on them, and leaves the model itself untouched
    applied = apply_plan(model, plan, grams=grams)
    w2 = round_weight("gptq", model.fc2.weight.detach(), 3, spec, RoundingContext(gram=gram_by_hand(hidden_q))).weight
    assert torch.equal(applied.weights["fc2"], w2.to(applied.weights["fc2"].dtype))
    assert torch.equal(model.fc1.weight, mlp()[0].fc1.weight)


def test_with_16_bit_upstream_it_is_the_independent_gram() -> None:
    model, batches = mlp()
    plan = Plan(layers={"fc1": LayerChoice(16, rounding="nearest"), "fc2": LayerChoice(3, rounding="gptq")})
    grams = sequential_grams(model, plan, run, batches)
    assert set(grams) == {"fc2"}  # only the layers whose rounding reads a Gram matrix
    independent = layer_grams(model, ["fc2"], run, batches)["fc2"]
    # a 16-bit per-channel grid moves each weight by <= max|w| / 2^16: relative change of the Gram ~1e-4 at most
    assert torch.allclose(grams["fc2"], independent, rtol=1e-4, atol=1e-6)
    assert not torch.equal(grams["fc2"], independent)  # it was recomputed on the quantised upstream
    codes_seq = apply_plan(model, plan, grams=grams).weights["fc2"]
    codes_ind = apply_plan(model, plan, grams={"fc2": independent}).weights["fc2"]
    assert torch.equal(codes_seq, codes_ind)


def test_order_is_the_order_of_execution_and_the_early_stop_changes_nothing() -> None:
    model, batches = mlp()
    order, calls = execution_order(model, ["fc2", "fc1"], run, batches[0])
    assert order == ["fc1", "fc2"] and calls == {"fc1": 1, "fc2": 1}
    stopped = _gram_after_upstream(model, "fc1", run, batches, stop=True)
    assert torch.equal(stopped, _gram_after_upstream(model, "fc1", run, batches, stop=False))


def test_a_layer_that_never_runs_is_named() -> None:
    from cetopt.errors import ProblemError

    model, batches = mlp()
    model.unused = nn.Linear(2, 2)
    with pytest.raises(ProblemError, match="'unused' never ran"):
        execution_order(model, ["fc1", "unused"], run, batches[0])


def test_a_sequential_artefact_is_recorded_and_re_derived_on_evaluation(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    from cetopt.artifact import evaluate_artifact, load_compressed, plan_grams, write_artifact
    from cetopt.modelspec import ModelSpec

    model, batches = mlp()
    y = [torch.randint(0, 3, (48,), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    spec = ModelSpec(name="seq", model=model, calibration=list(zip(batches, y)),
                     loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]))
    plan = Plan(layers={"fc1": LayerChoice(2, rounding="gptq"), "fc2": LayerChoice(2, rounding="gptq")})
    write_artifact(spec, plan, tmp_path / "out", require_fingerprint=False, sequential=True)
    stored = Plan.load(tmp_path / "out" / "plan.json")
    assert stored.extra["sequential_rounding"] is True
    sequential, independent = plan_grams(spec, stored), plan_grams(spec, plan)
    assert not torch.allclose(sequential["fc2"], independent["fc2"], rtol=1e-3)  # the stored flag is what counts
    expected = apply_plan(model, stored, grams=sequential)
    loaded = load_compressed(tmp_path / "out", spec)
    assert torch.equal(loaded.weights["fc2"], expected.weights["fc2"])
    assert not torch.equal(loaded.weights["fc2"], apply_plan(model, plan, grams=independent).weights["fc2"])
    assert torch.equal(loaded.weights["fc1"], apply_plan(model, plan, grams=independent).weights["fc1"])
    evaluate_artifact(tmp_path / "out", spec)  # re-derives the sequential codes; raises if they differ


def test_cli_apply_sequential_rounding_records_the_flag(tmp_path: Path, root: Path) -> None:
    import subprocess
    import sys

    pytest.importorskip("safetensors")
    plan = tmp_path / "plan.json"
    Plan(layers={"0": LayerChoice(2, rounding="gptq"), "2": LayerChoice(2, rounding="gptq")}).save(plan)
    code = ("import sys; sys.path.insert(0, 'tests'); from cetopt.cli import main; "
            f"sys.exit(main(['apply', {str(plan)!r}, '--model', 'test_cli:user_model', '--allow-no-fingerprint', "
            f"'--sequential-rounding', '--out', {str(tmp_path / 'out')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Plan.load(tmp_path / "out" / "plan.json").extra == {"sequential_rounding": True}
