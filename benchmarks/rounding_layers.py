"""Per-layer loss change of each rounding vs round-to-nearest (issue 29, measurement a).

One layer at a time, every quantisable layer of each model is rounded at 2, 3 and 4 bits, with one scale per output
channel and with one per group of 32 inputs, by every registered rounding on the plain max|w| grid (nearest, mse,
major-axis, adaround, gptq) and by gptq on the MSE-clipped grid; the rest of the model stays FP32. The measured
loss change on the spec's validation batches (held out from the calibration batches that the roundings' Gram
matrices and quadrics come from) and on the calibration batches is divided by nearest's on the same layout; the
table gives the median ratio over layers (layers where nearest's change is <= 0 are left out and counted) with a
percentile bootstrap 95% CI over layers (cetopt.stats.bootstrap_ci, 2000 resamples). For each candidate both
quadrics are recorded: CET's 1/2 d'H_ll d through the layer's computed eigenpairs (cetopt.geometry.LayerQuadric)
and the layer-input Gram energy sum_r d_r' (X'X/N) d_r that adaround and gptq minimise, with their Spearman
correlation with the measured change. Each model's rows go to ``benchmarks/results/rounding-layers/<model>.json``
(one model per run keeps a run short); the summary ``benchmarks/results/rounding-layers.{json,md}`` is rebuilt from
every model file present. On the large models (MobileNetV2, MiniLM) ``--max-layers N`` measures N layers evenly
spaced in the model's order (first and last included) and ``--skip major-axis`` leaves out the rounding whose
curvature extraction and flips do not fit a run; what each model file covers is recorded in it and listed in the
summary's "Coverage" table::

    OMP_NUM_THREADS=2 python benchmarks/rounding_layers.py --models digits-mlp
    flock /tmp/cetopt-heavy.lock env OMP_NUM_THREADS=2 timeout 900 python benchmarks/rounding_layers.py \
        --models mobilenetv2 --max-layers 12 --skip major-axis
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("digits-mlp", "digits-cnn", "mnist1d-resnet")
BITS = (2, 3, 4)
GROUPS = (0, 32)
VARIANTS = (("nearest", "none"), ("mse", "none"), ("major-axis", "none"), ("adaround", "none"), ("gptq", "none"),
            ("gptq", "mse"))
OUT = Path(__file__).resolve().parent / "results" / "rounding-layers"


def label(rounding: str, clip: str) -> str:
    return rounding if clip == "none" else f"{rounding}@{clip}-grid"


def spaced(names: list[str], count: int | None) -> list[str]:
    """``count`` of ``names`` evenly spaced in their order, first and last included (all when None or enough)."""
    if count is None or count >= len(names):
        return names
    if count < 1:
        raise SystemExit("--max-layers must be >= 1")
    picks = sorted({round(i * (len(names) - 1) / max(count - 1, 1)) for i in range(count)})
    return [names[i] for i in picks]


def model_rows(model: str, skip: tuple[str, ...] = (), bits: tuple[int, ...] = BITS, groups: tuple[int, ...] = GROUPS,
               max_layers: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """One row per (layer, bits, group size, rounding variant) of ``model``; roundings in ``skip`` left out (without
    major-axis no curvature is extracted, and the CET quadric column is then absent); ``max_layers``: that many
    layers evenly spaced in the model's order (:func:`spaced`). Returns (rows, quantisable layers of the model)."""
    from cetopt.curvature.extract import extract_curvature
    from cetopt.curvature.layers import find_layers
    from cetopt.geometry.layer import LayerQuadric
    from cetopt.measure import Measurer
    from cetopt.modelspec import load_model_spec
    from cetopt.quant.adaround import layer_grams
    from cetopt.quant.major_axis import model_value
    from cetopt.quant.quantizers import QuantizerSpec
    from cetopt.quant.rounding import get_rounding
    from cetopt.quant.rounding.base import RoundingContext, gram_energy

    spec = load_model_spec(model)
    every = [r.name for r in find_layers(spec.model, spec.quantisable_layers(), exclude=spec.exclude)]
    layers = spaced(every, max_layers)
    grams = layer_grams(spec.model, layers, spec.loss_fn, spec.calibration)
    variants = [(r, c) for r, c in VARIANTS if r not in skip]
    quadrics: dict[str, Any] = {}
    if "major-axis" not in skip:
        curvature = extract_curvature(spec.model, spec.loss_fn, spec.calibration, layers=layers, show_progress=False,
                                      description=spec.name)
        quadrics = {n: LayerQuadric.from_curvature(curvature.layer(n)) for n in layers}
    measurer = Measurer(spec)
    modules = dict(spec.model.named_modules())
    rows = []
    for name in layers:
        weight = modules[name].weight.detach()
        context = RoundingContext(quadric=quadrics.get(name), gram=grams[name])
        for b in bits:
            for group in groups:
                for rounding, clip in variants:
                    grid = QuantizerSpec(clip=clip, group_size=group)
                    start = time.perf_counter()
                    out = get_rounding(rounding).round(weight, b, grid, context)
                    seconds = time.perf_counter() - start
                    d = (out.weight.double() - weight.double()).reshape(weight.shape[0], -1)
                    rows.append({"model": model, "layer": name, "params": int(weight.numel()), "bits": b,
                                 "group": group, "rounding": label(rounding, clip), "seconds": seconds,
                                 "validation_dloss": measurer.validation_dloss({name: out.weight}),
                                 "calibration_dloss": measurer.calibration_dloss({name: out.weight}),
                                 "quadric_model": model_value(d.reshape(-1).numpy(), quadrics[name])
                                 if name in quadrics else None,
                                 "gram_energy": gram_energy(d, grams[name].double())})
        print(f"{model} {name}: done", file=sys.stderr, flush=True)
    return rows, len(every)


def summarise(rows: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """Median over layers of (dL of a rounding) / (dL of nearest), same model, bits and layout, with its CI."""
    from cetopt.stats import bootstrap_ci

    nearest = {(r["model"], r["layer"], r["bits"], r["group"]): r[split] for r in rows if r["rounding"] == "nearest"}
    out = []
    keys = sorted({(r["model"], r["bits"], r["group"], r["rounding"]) for r in rows if r["rounding"] != "nearest"})
    for model, bits, group, rounding in keys:
        ratios, dropped = [], 0
        for r in rows:
            if (r["model"], r["bits"], r["group"], r["rounding"]) != (model, bits, group, rounding):
                continue
            base = nearest[(model, r["layer"], bits, group)]
            if base is None or base <= 0:
                dropped += 1
                continue
            ratios.append(r[split] / base)
        if not ratios:
            continue
        low, high = bootstrap_ci(ratios, statistic="median") if len(ratios) > 1 else (ratios[0], ratios[0])
        out.append({"model": model, "bits": bits, "group": group, "rounding": rounding, "layers": len(ratios),
                    "left_out": dropped, "median_ratio": float(np.median(ratios)), "ci_low": low, "ci_high": high,
                    "better_than_nearest": int(sum(x < 1 for x in ratios))})
    return out


def proxy_correlations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spearman correlation, over every candidate of a model, of each quadric with the measured validation change."""
    from scipy.stats import spearmanr

    out = []
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model and r["validation_dloss"] is not None]
        measured = [r["validation_dloss"] for r in mine]
        for proxy in ("quadric_model", "gram_energy"):
            if any(r[proxy] is None for r in mine):
                continue
            rho = spearmanr([r[proxy] for r in mine], measured).statistic
            out.append({"model": model, "proxy": proxy, "candidates": len(mine), "spearman": float(rho)})
    return out


def coverage(rows: list[dict[str, Any]], options: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """Per model: layers measured (of all), bits, layouts, roundings, run seconds, from its rows and options."""
    out = []
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        opt = options.get(model, {})
        total = opt.get("layers_total")
        layers = len({r["layer"] for r in mine})
        out.append([model, f"{layers}/{total}" if total else f"{layers} (all)",
                    ",".join(map(str, sorted({r["bits"] for r in mine}))),
                    ",".join(map(str, sorted({r["group"] for r in mine}))),
                    ", ".join(sorted({r["rounding"] for r in mine})),
                    f"{opt['seconds']:.0f}" if "seconds" in opt else "not recorded"])
    return out


def read_model_file(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows, options) of a model file: a list of rows (older runs, every layer) or {"options", "rows"}."""
    data = json.loads(path.read_text())
    return (data, {}) if isinstance(data, list) else (data["rows"], data["options"])


def write(rows: list[dict[str, Any]], command: str, options: dict[str, dict[str, Any]] | None = None) -> None:
    """The summary of ``rows`` (every model file present) as JSON and markdown; ``options``: model -> what its run
    covered (layers_total, max_layers, bits, groups, skip, seconds)."""
    from cetopt._atomic import atomic_write_text
    from cetopt.tables import format_table

    options = options or {}

    summary = {split: summarise(rows, split) for split in ("validation_dloss", "calibration_dloss")}
    proxies = proxy_correlations(rows)
    atomic_write_text(OUT.with_suffix(".json"), json.dumps({"command": command, "options": options, "rows": rows,
                                                            "summary": summary, "proxies": proxies}, indent=1) + "\n")
    lines = ["# Per-layer loss change of each rounding vs round-to-nearest", "",
             f"Written by `{command}` (benchmarks/rounding_layers.py; its docstring says how). One layer rounded at a "
             "time, the rest FP32; ratio = loss change of the rounding / loss change of nearest on the same layout "
             "(group 0 = a scale per output channel, 32 = a scale per 32 inputs), median over layers with a "
             "bootstrap 95% CI over layers; 'below 1' counts layers where the rounding beat nearest.", "",
             "## Coverage", "",
             "What each model's run measured (layers: measured / quantisable, evenly spaced in the model's order when "
             "not all; a rounding absent from a model was skipped for that run).", "",
             format_table(["model", "layers", "bits", "groups", "roundings", "run seconds"], coverage(rows, options)),
             ""]
    for split, title in (("validation_dloss", "validation batches (held out from the roundings' data)"),
                         ("calibration_dloss", "calibration batches")):
        lines += [f"## Loss change on the {title}", "",
                  format_table(["model", "bits", "group", "rounding", "layers", "median ratio", "95% CI", "below 1"],
                               [[s["model"], s["bits"], s["group"], s["rounding"], s["layers"],
                                 f"{s['median_ratio']:.3f}", f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]",
                                 f"{s['better_than_nearest']}/{s['layers']}"] for s in summary[split]]), ""]
    lines += ["## Which quadric tracks the measured change", "",
              "Spearman correlation over every candidate of a model (all layers, bits, layouts, roundings) between the "
              "measured validation loss change and CET's 1/2 d'H_ll d (computed eigenpairs + mean of the rest) or the "
              "layer-input Gram energy sum_r d_r' G d_r (unnormalised across layers: it ignores how much each layer's "
              "output matters to the loss).", "",
              format_table(["model", "quadric", "candidates", "Spearman"],
                           [[p["model"], p["proxy"], p["candidates"], f"{p['spearman']:.3f}"] for p in proxies]), ""]
    atomic_write_text(OUT.with_suffix(".md"), "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--skip", default="", help="roundings left out, comma-separated (major-axis: no curvature)")
    parser.add_argument("--max-layers", type=int, help="measure this many layers, evenly spaced (default: all)")
    parser.add_argument("--bits", default=",".join(map(str, BITS)))
    parser.add_argument("--groups", default=",".join(map(str, GROUPS)), help="0 = a scale per output channel")
    parser.add_argument("--report-only", action="store_true", help="rebuild the summary from the model files")
    args = parser.parse_args(argv)
    import torch

    from cetopt._atomic import atomic_write_text

    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    skip = tuple(r for r in args.skip.split(",") if r)
    bits, groups = tuple(int(b) for b in args.bits.split(",")), tuple(int(g) for g in args.groups.split(","))
    for model in ([] if args.report_only else args.models.split(",")):
        start = time.perf_counter()
        rows, total = model_rows(model, skip, bits, groups, args.max_layers)
        options = {"layers_total": total, "max_layers": args.max_layers, "bits": list(bits),
                   "groups": list(groups), "skip": list(skip), "seconds": time.perf_counter() - start}
        atomic_write_text(OUT / f"{model}.json", json.dumps({"options": options, "rows": rows}, indent=1) + "\n")
    files = {path.stem: read_model_file(path) for path in sorted(OUT.glob("*.json"))}
    write([r for rows, _ in files.values() for r in rows],
          "python benchmarks/rounding_layers.py --models MODEL [--skip major-axis] [--max-layers N], once per model "
          "file in benchmarks/results/rounding-layers/ (options per model: the Coverage table)",
          {model: options for model, (_, options) in files.items()})


if __name__ == "__main__":
    main()
