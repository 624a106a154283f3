"""The bench measures a problem only on the model it was built on: a problem whose recorded fingerprint
differs from the local zoo model is refused with a message, or re-extracted when asked."""

from __future__ import annotations

import json

import pytest

from cetopt.bench.cell import Cell, run_cell
from cetopt.fingerprint import FingerprintMismatchError, fingerprint_spec
from cetopt.modelspec import load_model_spec
from cetopt.problem.io import problem_to_dict
from cetopt.workflow import build_for


@pytest.fixture(scope="module")
def problem_file(tmp_path_factory):  # type: ignore[no-untyped-def]
    spec = load_model_spec("digits-mlp")
    data = problem_to_dict(build_for(spec, bits=(2, 3, 4, 8)).problem)
    path = tmp_path_factory.mktemp("fp") / "digits-mlp-cet.json"
    path.write_text(json.dumps(data))
    return path, data, fingerprint_spec(spec)


def test_matching_fingerprint_is_measured_and_recorded(problem_file) -> None:  # type: ignore[no-untyped-def]
    path, _, fp = problem_file
    row = run_cell(Cell(problem=str(path), solver="dp", budget_avg_bits=3.0))
    assert row["metric"] is not None and row["fingerprint"] == fp.short()
    hawq = run_cell(Cell(problem=str(path), solver="hawq-v3", budget_avg_bits=3.0))
    assert hawq["fingerprint"] == fp.short()  # the baseline is built on the same model


def test_other_weights_are_refused_or_reextracted(problem_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, data, fp = problem_file
    data = {**data, "metadata": {**data["metadata"], "fingerprint_weights": "0" * 64}}
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps(data))
    with pytest.raises(FingerprintMismatchError, match="fingerprint_weights"):
        run_cell(Cell(problem=str(other), solver="dp", budget_avg_bits=3.0))
    row = run_cell(Cell(problem=str(other), solver="dp", budget_avg_bits=3.0, reextract=True))
    assert row["metric"] is not None and "re-extracted" in row["fingerprint"]


@pytest.mark.parametrize("recorded", [True, False])
def test_reextraction_keeps_the_recipe(tmp_path, recorded: bool) -> None:  # type: ignore[no-untyped-def]
    """Re-extraction rebuilds a problem with its recorded recipe: rounding and interaction terms included (it used to
    keep only the cost model, candidate widths and grid). A file written before problems recorded their recipe is
    read from its older provenance keys."""
    from cetopt.bench.cell import _reextracted
    from cetopt.builders.second_order import build
    from cetopt.problem.model import Budget
    from cetopt.recipe import DEFAULT_RECIPE, Recipe

    spec = load_model_spec("digits-mlp")
    recipe = DEFAULT_RECIPE.replace(bits=(2, 4, 8), rounding="mse", interactions=True)
    original = build(spec, recipe, target="digits-mlp").with_budget(Budget(avg_bits=3.5)).problem
    data = problem_to_dict(original)
    data["metadata"] = {**data["metadata"], "fingerprint_weights": "0" * 64}
    if not recorded:
        del data["metadata"]["recipe"]
    path = tmp_path / f"mlp-mse-{recorded}.json"
    path.write_text(json.dumps(data))
    again = _reextracted(str(path), "digits-mlp")
    assert Recipe.from_metadata(again.metadata) == recipe and again.metadata["rounding"] == "mse"
    assert again.budget == original.budget and len(again.interactions) == len(original.interactions) > 0
    assert [[c.loss for c in layer.choices] for layer in again.layers] == \
        [[c.loss for c in layer.choices] for layer in original.layers]
