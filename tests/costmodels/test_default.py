"""The default cost model and quantiser grid are one name each, used by the workflow and the CLI alike."""

from __future__ import annotations

import inspect

from cetopt.cli import build_parser
from cetopt.costmodels.registry import DEFAULT_COST_MODEL, cost_model_names
from cetopt.workflow import DEFAULT_QUANTIZER, build_for


def test_default_is_registered_and_shared() -> None:
    assert DEFAULT_COST_MODEL in cost_model_names()
    assert inspect.signature(build_for).parameters["method"].default == DEFAULT_COST_MODEL
    args = build_parser().parse_args(["extract", "digits-mlp", "--out", "x.json"])
    assert args.method == DEFAULT_COST_MODEL


def test_default_grid_is_shared() -> None:
    assert inspect.signature(build_for).parameters["quantizer"].default == DEFAULT_QUANTIZER
    args = build_parser().parse_args(["extract", "digits-mlp", "--out", "x.json"])
    assert args.clip == DEFAULT_QUANTIZER.clip


def test_plan_command_shares_the_defaults() -> None:
    from cetopt.rerank import DEFAULT_POOL

    args = build_parser().parse_args(["plan", "digits-mlp", "--out", "x.json"])
    assert args.method == DEFAULT_COST_MODEL and args.clip == DEFAULT_QUANTIZER.clip
    assert tuple(n for n in args.pool.split(",") if n) == DEFAULT_POOL and args.rerank == 1
