"""The default cost model is one name, used by the workflow and the CLI alike, and it is registered."""

from __future__ import annotations

import inspect

from cetopt.cli import build_parser
from cetopt.costmodels.registry import DEFAULT_COST_MODEL, cost_model_names
from cetopt.workflow import build_for


def test_default_is_registered_and_shared() -> None:
    assert DEFAULT_COST_MODEL in cost_model_names()
    assert inspect.signature(build_for).parameters["method"].default == DEFAULT_COST_MODEL
    args = build_parser().parse_args(["extract", "digits-mlp", "--out", "x.json"])
    assert args.method == DEFAULT_COST_MODEL
