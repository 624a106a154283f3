"""The default recipe (cetopt.recipe.DEFAULT_RECIPE) is the one definition of the defaults: the workflow, the
command line and the measured selection all read it."""

from __future__ import annotations

from cetopt.cli import build_parser
from cetopt.cli.recipe_flags import recipe_from_args
from cetopt.costmodels.registry import DEFAULT_COST_MODEL, cost_model_names
from cetopt.recipe import DEFAULT_RECIPE, RECIPES
from cetopt.workflow import DEFAULT_QUANTIZER


def test_default_is_registered_and_shared() -> None:
    assert DEFAULT_COST_MODEL == DEFAULT_RECIPE.cost_model and DEFAULT_COST_MODEL in cost_model_names()
    assert DEFAULT_QUANTIZER == DEFAULT_RECIPE.quantizer and DEFAULT_QUANTIZER.clip == "mse"
    assert all(r.cost_model in cost_model_names() for r in RECIPES.values())


def test_every_command_that_builds_reads_the_default_recipe() -> None:
    for argv in (["extract", "digits-mlp", "--out", "x.json"], ["plan", "digits-mlp", "--out", "x.json"],
                 ["demo", "digits-mlp"]):
        assert recipe_from_args(build_parser().parse_args(argv)) == DEFAULT_RECIPE, argv


def test_flags_change_one_field_of_the_named_recipe() -> None:
    args = build_parser().parse_args(["extract", "digits-mlp", "--recipe", "cet", "--bits", "2,4", "--clip", "mse",
                                      "--rounding", "nearest,gptq", "--interactions", "--out", "x.json"])
    recipe = recipe_from_args(args)
    assert recipe == RECIPES["cet"].replace(bits=(2, 4), quantizer=DEFAULT_QUANTIZER, rounding=("nearest", "gptq"),
                                            interactions=True)


def test_help_texts_show_the_recipe_values() -> None:
    parser = build_parser()
    extract = parser._subparsers._group_actions[0].choices["extract"]
    text = extract.format_help()
    assert DEFAULT_RECIPE.cost_model in text and ",".join(map(str, DEFAULT_RECIPE.bits)) in text


def test_plan_command_shares_the_pool() -> None:
    from cetopt.rerank import DEFAULT_POOL

    args = build_parser().parse_args(["plan", "digits-mlp", "--out", "x.json"])
    assert tuple(n for n in args.pool.split(",") if n) == DEFAULT_POOL and args.rerank == 1
