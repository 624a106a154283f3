"""The default recipe is frozen: a default that changes without being re-frozen fails here (docs/protocol.md)."""

from __future__ import annotations

import json

import pytest

from cetopt.results import recipe


def test_the_defaults_are_the_frozen_recipe() -> None:
    changed = recipe.drift()
    assert not changed, (f"the defaults drifted from docs/results/recipe.json: {changed}. A new default must be chosen "
                         "on the development models, frozen (python -m cetopt.results.recipe --freeze) and then judged "
                         "on the evaluation models again")


def test_the_frozen_recipe_records_its_code_version_and_what_chose_it() -> None:
    data = recipe.frozen_recipe()
    assert data["code_version"]["files"] == list(recipe.DEFINED_IN) and len(data["code_version"]["sha256"]) == 64
    assert "zoo" in data["chosen_on"]


def test_drift_names_the_field(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    frozen = {**recipe.current_recipe(), "cost_model": "hawq-v3"}
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"recipe": frozen}))
    monkeypatch.setattr(recipe, "RECIPE_FILE", path)
    assert recipe.drift() == {"cost_model": ("hawq-v3", recipe.current_recipe()["cost_model"])}
    assert recipe.main([]) == 1
