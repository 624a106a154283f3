"""The recipe flags of the commands that build a problem (extract, plan, demo): a named recipe and the fields a
user may change, each defaulting to the recipe's value and saying it in its help (cetopt.recipe, torch- and
numpy-free, so ``cetopt extract --help`` stays fast)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from cetopt.cli.args import CostModelNames, int_in, int_list
from cetopt.errors import ProblemError
from cetopt.recipe import DEFAULT_RECIPE, Recipe, get_recipe, recipe_names


def _listed(values: Any) -> str:
    return ",".join(str(v) for v in values)


def rounding_list(text: str) -> tuple[str, ...]:
    """``--rounding a,b``: registered roundings (cetopt.quant.rounding), at least one."""
    from cetopt.quant.rounding.registry import ROUNDINGS

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in ROUNDINGS]
    if not names or unknown:
        raise ProblemError(f"unknown rounding {unknown[0] if unknown else text!r}; use one or more of {ROUNDINGS}, "
                           "comma-separated", field="--rounding")
    return names


def add_recipe_flags(parser: argparse.ArgumentParser, *, joint: bool = False) -> None:
    """``--recipe`` and the recipe fields a user may change on ``parser``; with ``joint`` also several roundings,
    group sizes and interaction terms (choices the exact backends of ``cetopt solve`` take, not a single plan's
    measured selection). Every flag defaults to None: the named recipe's value (:func:`recipe_from_args`)."""
    from cetopt.modelspec import OBJECTIVES
    from cetopt.quant.rounding.registry import ROUNDINGS

    d = DEFAULT_RECIPE
    group = parser.add_argument_group("recipe", "how the problem is built (cetopt.recipe); each flag changes one field "
                                                "of the named recipe")
    group.add_argument("--recipe", choices=recipe_names(), default="default",
                       help="the named recipe the flags below change: default (cost model, grid and rounding chosen by "
                            "measurement: docs/decisions.md), cet (the theory's), hawq-v3 (HAWQ-V3's)")
    group.add_argument("--method", choices=CostModelNames(), default=None, metavar="METHOD",
                       help=f"cost model (cetopt.costmodels; default: the recipe's, {d.cost_model}): cet and its "
                            "switches, cet-upper, cet-shrink, llc, hawq-v3, fisher, cet-holdout, measured, ...")
    group.add_argument("--bits", default=None, metavar="B[,B...]",
                       help=f"candidate bit-widths, comma-separated (default: the recipe's, {_listed(d.bits)})")
    group.add_argument("--clip", choices=("none", "mse"), default=None,
                       help=f"the candidates' quantiser: the MSE-optimal clipping ratio per channel (mse) or range max|w| "
                            f"(none); default: the recipe's ({d.quantizer.clip}); recorded in the problem, so plans and "
                            "`apply` use the same grid")
    several = "; several, comma-separated: each is a candidate of its own (joint allocation of bits x rounding)"
    group.add_argument("--rounding", default=None, metavar="NAME[,NAME...]" if joint else "NAME",
                       choices=None if joint else ROUNDINGS,
                       help=f"the candidates' rounding (cetopt.quant.rounding): {', '.join(ROUNDINGS)}; default: the "
                            f"recipe's ({'+'.join(d.roundings)})" + (several if joint else ""))
    if joint:
        group.add_argument("--group-sizes", default=None, metavar="G[,G...]",
                           help="scale layouts offered as candidates: 0 = a scale per output channel, g = a scale per g "
                                "inputs (e.g. 0,32,128); each priced with its packed size (codes + scales)")
        group.add_argument("--interactions", action="store_true", default=None,
                           help="add cross-layer terms d_a'H_ab d_b of adjacent layers")
    group.add_argument("--objective", choices=OBJECTIVES, default=None,
                       help="what the problem minimises: the spec's own loss_fn (task) or the fidelity to the model's "
                            "FP32 outputs with the labels dropped (fidelity: cetopt.losses; KL for logits). Default: "
                            "the spec's own (fidelity for an inputs-only spec); recorded in the plan, so apply and "
                            "evaluate follow it")
    group.add_argument("--activation-bits", type=int_in(1, 32), default=None, metavar="A",
                       help=f"activation width the problem's BOPs assume (macs x weight bits x A; default: the "
                            f"recipe's, {d.activation_bits}; cetopt apply --activation-bits A makes the artefact match)")


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The named recipe (``--recipe``) with the given recipe flags applied (absent flags leave its values).

    Raises:
        ProblemError: a bad list or value, naming the flag.
    """
    recipe = get_recipe(getattr(args, "recipe", "default"))
    changes: dict[str, Any] = {}
    if getattr(args, "method", None) is not None:
        changes["cost_model"] = args.method
    if getattr(args, "bits", None) is not None:
        changes["bits"] = tuple(int_list(args.bits, "--bits"))
    if getattr(args, "clip", None) is not None:
        changes["quantizer"] = replace(recipe.quantizer, clip=args.clip)
    if getattr(args, "rounding", None) is not None:
        names = rounding_list(args.rounding)
        changes["rounding"] = names[0] if len(names) == 1 else names
    if getattr(args, "group_sizes", None):
        changes["group_sizes"] = tuple(int_list(args.group_sizes, "--group-sizes"))
    for key in ("interactions", "objective", "activation_bits"):
        if getattr(args, key, None) is not None:
            changes[key] = getattr(args, key)
    try:
        return recipe.replace(**changes) if changes else recipe
    except ProblemError as err:  # name the flag the user typed, not the recipe field behind it
        field = (err.field or "").removeprefix("recipe.")
        flag = {"cost_model": "--method", "quantizer": "--clip"}.get(field, "--" + field.replace("_", "-"))
        raise ProblemError(err.reason, field=flag) from None
