"""The frozen default recipe: what `cetopt plan` does by default (every field of cetopt.recipe.DEFAULT_RECIPE: cost
model, candidate widths and grid, rounding, terms, ties, ...; and the solver, selection pool and split), recorded
with the code version it was frozen at (docs/protocol.md).

The default is chosen on the development models (the zoo) and then frozen here; results on the evaluation models
judge the recipe in ``docs/results/recipe.json``. Changing a default without re-freezing it fails
tests/results/test_recipe.py, so a default can never drift away from the one the evaluation judged. Freeze
(after choosing on development models only, before running the evaluation)::

    python -m cetopt.results.recipe --freeze
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cetopt.results.provenance import ROOT, code_version

RECIPE_FILE = ROOT / "docs" / "results" / "recipe.json"
# where the defaults are defined: their code version is recorded beside the frozen recipe
DEFINED_IN = ("cetopt/recipe.py", "cetopt/costmodels/registry.py", "cetopt/costmodels/upper.py",
              "cetopt/costmodels/shrink.py", "cetopt/rerank.py", "cetopt/solvers/api.py")


def current_recipe() -> dict[str, Any]:
    """The library's default recipe now, as plain JSON values: cetopt.recipe.DEFAULT_RECIPE (Recipe.to_dict) and the
    measured selection's solver, pool and split (a cost model's formula is identified by its name here and by the
    recorded code version of the files that define it)."""
    from cetopt.recipe import DEFAULT_RECIPE
    from cetopt.rerank import DEFAULT_POOL
    from cetopt.solvers.api import DEFAULT_SOLVER

    return {**DEFAULT_RECIPE.to_dict(), "solver": DEFAULT_SOLVER, "selection_pool": list(DEFAULT_POOL),
            "selection_backends": "every installed backend's plan of the problem (cetopt.rerank.select_plan)",
            "selection_split": "validation (never calibration or test)"}


def frozen_recipe() -> dict[str, Any]:
    """The committed frozen recipe file: {"recipe": ..., "code_version": ..., "chosen_on": ...}.

    Raises:
        FileNotFoundError: nothing frozen yet (run ``python -m cetopt.results.recipe --freeze``).
    """
    if not RECIPE_FILE.is_file():
        raise FileNotFoundError(f"{RECIPE_FILE} is missing: freeze the default with python -m cetopt.results.recipe "
                                "--freeze")
    return dict(json.loads(RECIPE_FILE.read_text()))


def drift() -> dict[str, tuple[Any, Any]]:
    """Recipe fields whose current value differs from the frozen one: field -> (frozen, current)."""
    frozen, now = frozen_recipe()["recipe"], current_recipe()
    return {k: (frozen.get(k), now.get(k)) for k in sorted(set(frozen) | set(now)) if frozen.get(k) != now.get(k)}


def main(argv: list[str] | None = None) -> int:
    """Print the drift from the frozen recipe (exit 1 when any), or ``--freeze`` the current one."""
    from cetopt._atomic import atomic_write_text

    parser = argparse.ArgumentParser(prog="python -m cetopt.results.recipe", description=__doc__.splitlines()[0])
    parser.add_argument("--freeze", action="store_true", help="record the current defaults as the frozen recipe")
    parser.add_argument("--chosen-on", default="the development models: the zoo (digits-mlp, digits-cnn, "
                        "mnist1d-resnet, mobilenetv2, minilm)", help="what the recipe was chosen on (recorded)")
    args = parser.parse_args(argv)
    if args.freeze:
        data = {"recipe": current_recipe(), "chosen_on": args.chosen_on, "code_version": code_version(DEFINED_IN)}
        atomic_write_text(RECIPE_FILE, json.dumps(data, indent=1) + "\n")
        print(f"froze the default recipe in {RECIPE_FILE}")
        return 0
    changed = drift()
    for field, (was, now) in changed.items():
        print(f"{field}: frozen {was!r}, now {now!r}")
    if not changed:
        print("the defaults are the frozen recipe")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
