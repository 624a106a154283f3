"""Candidates priced after their rounding: every (bits, group size, rounding) is a candidate of its own with its
packed size (codes + scales), the plan records what was chosen, and `apply` packs exactly the codes that were
priced (bit-identical weights, through the artefact file and back)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("safetensors")

from cetopt.artifact import load_compressed, write_artifact  # noqa: E402
from cetopt.builders.candidates import quantization_candidates  # noqa: E402
from cetopt.builders.second_order import build  # noqa: E402
from cetopt.curvature.extract import CurvatureSettings  # noqa: E402
from cetopt.problem.model import Budget  # noqa: E402
from cetopt.quant.adaround import layer_grams  # noqa: E402
from cetopt.quant.plan import plan_from_result  # noqa: E402
from cetopt.quant.quantizers import QuantizerSpec, packed_size_bits  # noqa: E402
from cetopt.quant.rounding import round_weight  # noqa: E402
from cetopt.quant.rounding.base import RoundingContext  # noqa: E402
from cetopt.recipe import Recipe  # noqa: E402
from cetopt.solvers.api import solve  # noqa: E402
from tests.test_artifact import signed, small_spec  # noqa: E402


def test_joint_candidates_carry_rounding_group_and_packed_size() -> None:
    spec = small_spec()
    modules = dict(spec.model.named_modules())
    weights = {n: modules[n].weight for n in ("0", "4")}
    grams = layer_grams(spec.model, list(weights), spec.loss_fn, spec.calibration)
    cands = quantization_candidates(weights, [1, 3], quantizer=QuantizerSpec(clip="mse"), rounding=("nearest", "gptq"),
                                    grams=grams, group_sizes=(0, 32))
    linear = next(c for c in cands if c.name == "4")
    labels = [c.label for c in linear.choices]
    assert labels == ["1b/nearest", "1b/g32/nearest", "3b/nearest", "3b/gptq", "3b/g32/nearest", "3b/g32/gptq"]
    for choice, weight in zip(linear.choices, linear.weights):
        grid = QuantizerSpec(clip="mse", group_size=int(choice.group_size))
        assert choice.size_bits == packed_size_bits(tuple(weights["4"].shape), choice.bits, grid)
        truth = round_weight(choice.rounding, weights["4"], choice.bits, grid, RoundingContext(gram=grams["4"]))
        assert torch.equal(weight, truth.weight)  # the priced weight is the rounding's own


@pytest.mark.parametrize("rounding,groups", [("gptq", None), (("nearest", "adaround", "gptq"), (0, 32))])
def test_apply_packs_exactly_the_priced_codes(tmp_path: Path, rounding: object, groups: object) -> None:
    spec = small_spec()
    recipe = Recipe(cost_model="hawq-v3", bits=(2, 3, 4, 8), quantizer=QuantizerSpec(clip="mse"), rounding=rounding,
                    group_sizes=groups)
    built = build(spec, recipe, settings=CurvatureSettings(max_probes=16, k=0),
                  cache_dir=False).with_budget(Budget(avg_bits=3.5))
    result = solve(built.problem, "dp")
    plan = plan_from_result(built.problem, result, model="small")
    priced = built.weights_for_choices(result.choices)
    for name, layer in zip(plan.layers, built.problem.layers):
        c = layer.choices[result.choices[name]]
        assert plan.layers[name].rounding == (c.rounding or rounding)
        assert plan.quantizer_of(name).group_size == (c.group_size or 0)
    write_artifact(spec, signed(plan, spec), tmp_path / "art", target="small")
    loaded = load_compressed(tmp_path / "art", spec)
    modules = dict(loaded.model.named_modules())
    for name, weight in priced.items():
        assert torch.equal(modules[name].weight.detach(), weight), name


def test_a_grouped_quantiser_prices_its_scales() -> None:
    w = {"l": torch.randn(8, 64, generator=torch.Generator().manual_seed(0))}
    grouped = quantization_candidates(w, [2, 4], quantizer=QuantizerSpec(group_size=32))[0]
    assert [c.size_bits for c in grouped.choices] == [8 * 64 * b + 8 * 2 * 32 for b in (2, 4)]  # 2 fp32 scales a row
    assert all(c.size_bits is None for c in quantization_candidates(w, [2, 4])[0].choices)  # per channel: as before
