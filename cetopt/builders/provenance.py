"""A built problem's name and the provenance of its model: which model and data, the objective, the parameters
left out of the plan, and the fingerprints that tie the problem to these weights and calibration batches."""

from __future__ import annotations

from typing import Any

from cetopt.modelspec import ModelSpec
from cetopt.recipe import Recipe


def problem_name(model: str, recipe: Recipe) -> str:
    """``<model>-<cost model>[-<rounding>[+<rounding>...]]``: distinct per cost model and rounding, so problem files
    of one model never collide."""
    text = "+".join(recipe.roundings)
    return f"{model}-{recipe.cost_model}" + ("" if text == "nearest" else f"-{text}")


def objective_name(spec: ModelSpec) -> str:
    """What the spec's problems minimise, for their metadata: the fidelity objective and why it was chosen, or
    the user's ``loss_fn`` by name."""
    describe = getattr(spec.loss_fn, "describe", None)
    if spec.fidelity and callable(describe):
        return str(describe())
    fn = spec.loss_fn
    return f"loss_fn {getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def spec_metadata(spec: ModelSpec, target: str | None = None) -> dict[str, Any]:
    """The model's provenance in a problem's metadata: model, data, cetopt version, ``model_target`` (how the model
    was named: zoo name, module:function, file.py:function, made absolute; default the spec's name) so bench, apply
    and evaluate can load it again, the parameters and buffers outside the plan, the objective, the spec's own
    scalar metadata and the weights/calibration fingerprints."""
    from cetopt._versions import __version__
    from cetopt.curvature.layers import find_layers
    from cetopt.fingerprint import fingerprint_spec
    from cetopt.modelspec import normalise_target
    from cetopt.quant.pack import buffer_bits

    layers = find_layers(spec.model, spec.quantisable_layers(), exclude=spec.exclude)
    other = sum(p.numel() for p in spec.model.parameters()) - sum(r.weight.numel() for r in layers)
    return {"model": spec.name, "data": spec.data, "cetopt_version": __version__,
            "model_target": normalise_target(target or spec.name), "other_params": int(other),
            "buffer_bits": buffer_bits(spec.model), "objective": objective_name(spec),
            **{k: v for k, v in spec.metadata.items() if isinstance(v, (str, int, float, bool))},
            **fingerprint_spec(spec).as_metadata()}  # ties the file to these weights and calibration data
