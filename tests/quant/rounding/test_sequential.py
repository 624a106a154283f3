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
from cetopt.quant.apply import apply_plan
from cetopt.quant.plan import LayerChoice, Plan
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


def test_fp32_target_is_the_least_squares_fit_of_the_fp32_outputs() -> None:
    """W* = argmin ||W X - W* X_q||^2 (X: FP32 inputs of fc2, X_q: inputs after the quantised fc1), against lstsq."""
    import copy

    from cetopt.quant.rounding.sequential import fp32_target

    model, batches = mlp()
    work = copy.deepcopy(model)
    first, gram = fp32_target(model, work, "fc1", run, batches)
    assert torch.equal(first, model.fc1.weight.detach())  # nothing upstream: the target is the weight itself
    with torch.no_grad():
        work.fc1.weight.copy_(round_weight("nearest", model.fc1.weight.detach(), 2).weight)
    w_star, gram = fp32_target(model, work, "fc2", run, batches, damping=0.0)
    x = torch.cat(batches).double()
    fp = torch.relu(x @ model.fc1.weight.double().T + model.fc1.bias.double())
    quant = torch.relu(x @ work.fc1.weight.double().T + work.fc1.bias.double())
    truth = torch.linalg.lstsq(quant, fp @ model.fc2.weight.double().T).solution.T
    assert torch.allclose(w_star.double(), truth, rtol=1e-4, atol=1e-5)
    assert torch.allclose(gram, gram_by_hand(quant), rtol=1e-5)  # the model runs in float32
    assert not torch.allclose(truth, model.fc2.weight.double(), atol=1e-3)


def test_sequential_apply_equals_apply_plan_on_the_sequential_grams() -> None:
    from cetopt.quant.rounding.sequential import sequential_apply

    model, batches = mlp()
    plan = Plan(layers={"fc1": LayerChoice(2, rounding="gptq"), "fc2": LayerChoice(2, rounding="adaround")})
    direct = sequential_apply(model, plan, run, batches)
    via = apply_plan(model, plan, grams=sequential_grams(model, plan, run, batches)).weights
    assert all(torch.equal(direct[n].to(via[n].dtype), via[n]) for n in via)
    fitted = sequential_apply(model, plan, run, batches, target="fp32")
    assert torch.equal(fitted["fc1"], direct["fc1"]) and not torch.equal(fitted["fc2"], direct["fc2"])


def test_fp32_target_on_a_convolution_in_chunks(monkeypatch) -> None:
    """Conv2d: W* against lstsq on patches unfolded here; chunked accumulation (2 images a chunk) changes nothing."""
    import copy

    import cetopt.quant.adaround as adaround
    from cetopt.quant.rounding.sequential import fp32_target

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1))
    batches = [torch.randn(5, 2, 6, 6), torch.randn(3, 2, 6, 6)]
    work = copy.deepcopy(model)
    with torch.no_grad():
        work[0].weight.copy_(round_weight("nearest", model[0].weight.detach(), 2).weight)
    whole, _ = fp32_target(model, work, "2", run, batches, damping=0.0)
    monkeypatch.setattr(adaround, "GRAM_CHUNK_VALUES", 2 * 3 * 36 * 9)
    chunked, _ = fp32_target(model, work, "2", run, batches, damping=0.0)
    assert torch.allclose(chunked, whole, rtol=1e-9, atol=1e-12)
    x = torch.cat(batches)
    with torch.no_grad():
        fp, quant = (nn.functional.unfold(torch.relu(m[0](x)), 3, padding=1).transpose(1, 2).reshape(-1, 27).double()
                     for m in (model, work))
    w = model[2].weight.detach().double().reshape(4, 27)
    truth = torch.linalg.lstsq(quant, fp @ w.T).solution.T
    assert torch.allclose(whole.double().reshape(4, 27), truth, rtol=1e-4, atol=1e-5)
