"""The recipe (cetopt.recipe): one frozen, torch-free value; named recipes; JSON round trip; read back from a
problem's metadata, including problems written before they recorded one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cetopt.errors import ProblemError
from cetopt.quant.spec import QuantizerSpec
from cetopt.recipe import DEFAULT_RECIPE, RECIPES, Levels, Recipe, get_recipe, recipe_names


def test_importing_the_recipe_loads_neither_torch_nor_numpy(root: Path) -> None:
    code = ("import sys, cetopt.recipe; heavy = sorted(m for m in ('torch', 'numpy') if m in sys.modules); "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_the_named_recipes() -> None:
    assert recipe_names()[0] == "default" and get_recipe("default") is DEFAULT_RECIPE
    assert get_recipe("cet").cost_model == "cet" and get_recipe("cet").quantizer == QuantizerSpec()
    assert get_recipe("hawq-v3").cost_model == "hawq-v3" and get_recipe("hawq-v3").bits == (4, 8)
    with pytest.raises(ProblemError, match="recipe.*default, cet, hawq-v3"):
        get_recipe("nosuch")


def test_the_default_recipe_is_the_documented_default() -> None:
    assert DEFAULT_RECIPE.to_dict() == {
        "cost_model": "cet-upper", "bits": [2, 3, 4, 6, 8], "levels": None,
        "quantizer": {"symmetric": True, "per_channel": True, "clip": "mse", "clip_grid": 20, "clip_min": 0.5},
        "rounding": "nearest", "group_sizes": None, "interactions": False, "layer_eps": None, "max_loss": 0.0,
        "llc_radius": "directional", "tie_residuals": True, "activation_bits": 8, "objective": None}


recipes = st.builds(
    Recipe,
    cost_model=st.sampled_from(["cet", "cet-upper", "hawq-v3", "llc"]),
    bits=st.lists(st.integers(1, 16), min_size=1, max_size=5).map(tuple),
    levels=st.none() | st.builds(Levels, rank_grid=st.lists(st.floats(0.05, 1.0), max_size=2).map(tuple)),
    quantizer=st.builds(QuantizerSpec, clip=st.sampled_from(["none", "mse"]), symmetric=st.booleans()),
    rounding=st.sampled_from(["nearest", "mse", "gptq", ("nearest", "gptq")]),
    interactions=st.booleans(), layer_eps=st.none() | st.floats(0.0, 1.0), max_loss=st.floats(-1.0, 1.0),
    llc_radius=st.sampled_from(["directional", "lambda-max"]), tie_residuals=st.booleans(),
    activation_bits=st.integers(1, 32), objective=st.sampled_from([None, "task", "fidelity"]))


@settings(max_examples=60, deadline=None)
@given(recipes)
def test_to_dict_round_trips_through_json_and_metadata(recipe: Recipe) -> None:
    data = json.loads(json.dumps(recipe.to_dict()))
    assert Recipe.from_dict(data) == recipe
    assert Recipe.from_metadata({"method": "ignored", "bits": [8], "recipe": data}) == recipe
    hash(recipe)  # frozen values: usable as cache keys (the bench caches builds by recipe)


def test_problems_written_before_the_recipe_read_it_from_their_provenance() -> None:
    metadata = {"method": "hawq-v3", "bits": [2, 4, 8], "rounding": ["nearest", "gptq"], "interactions": 3,
                "quantizer": {"symmetric": True, "per_channel": True, "clip": "mse", "clip_grid": 20, "clip_min": 0.5},
                "group_sizes": [0, 32]}
    recipe = Recipe.from_metadata(metadata)
    assert recipe == DEFAULT_RECIPE.replace(cost_model="hawq-v3", bits=(2, 4, 8), rounding=("nearest", "gptq"),
                                            interactions=True, group_sizes=(0, 32))
    assert Recipe.from_metadata({"method": "cet", "bits": [4, 8]}).quantizer == QuantizerSpec()  # the plain grid
    with pytest.raises(ProblemError, match="metadata.recipe"):
        Recipe.from_metadata({"model": "resnet18"})  # a published problem: nothing to rebuild from


@pytest.mark.parametrize("changes, field", [
    ({"bits": (2, 0)}, "recipe.bits"), ({"bits": ()}, "recipe.bits"), ({"bits": (True,)}, "recipe.bits"),
    ({"rounding": "up"}, "recipe.rounding"), ({"llc_radius": "x"}, "recipe.llc_radius"),
    ({"objective": "speed"}, "recipe.objective"), ({"activation_bits": 0}, "recipe.activation_bits"),
    ({"group_sizes": (-1,)}, "recipe.group_sizes"), ({"quantizer": {"clip": "mse"}}, "recipe.quantizer"),
    ({"levels": Levels(), "group_sizes": (0,)}, "recipe.group_sizes"), ({"cost_model": ""}, "recipe.cost_model")])
def test_bad_fields_are_named(changes: dict, field: str) -> None:
    with pytest.raises(ProblemError) as err:
        DEFAULT_RECIPE.replace(**changes)
    assert err.value.field == field


def test_unknown_fields_are_refused_by_name() -> None:
    with pytest.raises(ProblemError, match="clipping"):
        Recipe.from_dict({**DEFAULT_RECIPE.to_dict(), "clipping": "mse"})
    with pytest.raises(ProblemError, match="clip_max"):
        Recipe.from_dict({"quantizer": {"clip_max": 2}})


def test_priced_by_keeps_the_candidates_and_drops_the_own_pricing() -> None:
    recipe = DEFAULT_RECIPE.replace(rounding="gptq", interactions=True, layer_eps=0.1, group_sizes=(0, 32))
    other = recipe.priced_by("hawq-v3")
    assert other == recipe.replace(cost_model="hawq-v3", interactions=False, layer_eps=None)
    assert all(r.cost_model for r in RECIPES.values())


def test_the_cost_model_registry_names_the_default_recipes_cost_model() -> None:
    from cetopt.costmodels.registry import DEFAULT_COST_MODEL, cost_model_names
    from cetopt.recipe import DEFAULT_RECIPE

    assert DEFAULT_COST_MODEL == DEFAULT_RECIPE.cost_model and DEFAULT_COST_MODEL in cost_model_names()
