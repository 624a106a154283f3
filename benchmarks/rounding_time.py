"""Time and peak memory to round every candidate of a model (issue 29, measurement b).

For each registered rounding, every quantisable layer of the model is rounded at every default candidate
bit-width (cetopt.workflow.DEFAULT_BITS) on the default grid (cetopt.workflow.DEFAULT_QUANTIZER), each rounding in
a fresh process so its peak resident memory (ru_maxrss) is its own. The layer-input Gram matrices (adaround,
gptq) are computed once per process and timed separately; major-axis needs the layers' curvature quadrics, which
are not timed here (they come from the curvature cache the problem's build already fills) - on a model where
that extraction is not cached, major-axis is timed on synthetic layers of the model's largest shapes instead
(``--synthetic``), the batched search against the original one-ratio-at-a-time search, interleaved. Writes
``benchmarks/results/rounding-time-<model>.{json,md}``::

    flock /tmp/cetopt-heavy.lock env OMP_NUM_THREADS=2 python benchmarks/rounding_time.py --model mobilenetv2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "results"
GRAM_ROUNDINGS = ("nearest", "mse", "adaround", "gptq")


def _time_rounding(model: str, rounding: str, queue: Any) -> None:
    import torch

    from cetopt.builders.second_order import rounding_grams
    from cetopt.curvature.layers import find_layers
    from cetopt.modelspec import load_model_spec
    from cetopt.quant.rounding import get_rounding
    from cetopt.quant.rounding.base import RoundingContext
    from cetopt.workflow import DEFAULT_BITS, DEFAULT_QUANTIZER

    torch.set_num_threads(2)
    spec = load_model_spec(model)
    layers = [r.name for r in find_layers(spec.model, spec.quantisable_layers(), exclude=spec.exclude)]
    start = time.perf_counter()
    grams = rounding_grams(spec.model, spec.loss_fn, spec.calibration, layers, rounding) or {}
    gram_seconds = time.perf_counter() - start
    modules = dict(spec.model.named_modules())
    chosen = get_rounding(rounding)
    start = time.perf_counter()
    candidates = 0
    for name in layers:
        context = RoundingContext(gram=grams.get(name))
        for bits in DEFAULT_BITS:
            chosen.round(modules[name].weight.detach(), bits, DEFAULT_QUANTIZER, context)
            candidates += 1
    seconds = time.perf_counter() - start
    queue.put({"model": model, "rounding": rounding, "layers": len(layers), "candidates": candidates,
               "gram_seconds": gram_seconds, "round_seconds": seconds,
               "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _synthetic_major_axis(shapes: list[tuple[int, int]], m: int, queue: Any) -> None:
    import numpy as np
    import torch

    from cetopt.geometry.layer import LayerQuadric
    from cetopt.quant.major_axis import RATIOS, flip_search
    from cetopt.quant.quantizers import QuantizerSpec
    from cetopt.quant.rounding import round_weight
    from cetopt.quant.rounding.base import RoundingContext
    from cetopt.quant.rounding.grid import make_grid

    torch.set_num_threads(2)
    rows = []
    for out, inp in shapes:
        rng = np.random.default_rng(out * inp)
        n = out * inp
        u = np.linalg.qr(rng.standard_normal((n, m)))[0].T
        values = np.sort(np.concatenate([np.abs(rng.standard_normal(m // 2)) * 1e-3, 10 ** rng.uniform(1, 4, m - m // 2)]))
        quadric = LayerQuadric(name="w", gradient=np.zeros(n), trace=float(values.sum() + 0.1 * (n - m)),
                               eigenvalues=values, eigenvectors=u)
        w = torch.from_numpy(rng.standard_normal((out, inp)) * 0.05).float()
        for bits in (2, 3, 4):
            start = time.perf_counter()
            new = round_weight("major-axis", w, bits, QuantizerSpec(), RoundingContext(quadric=quadric))
            new_seconds = time.perf_counter() - start
            start = time.perf_counter()
            best = new.info["model_nearest"]
            for ratio in RATIOS:  # the original search: one ratio at a time
                grid = make_grid(w, bits, QuantizerSpec(), ratio)
                floor, ceil = grid.floor_ceil(w)
                first = grid.nearest(w)
                other = torch.where(first == floor, ceil, floor)
                _, value = flip_search((grid.values(first) - w.double()).reshape(-1).numpy(),
                                       (grid.values(other) - w.double()).reshape(-1).numpy(), quadric)
                best = min(best, value)
            rows.append({"shape": [out, inp], "m": m, "bits": bits, "batched_seconds": new_seconds,
                         "one_ratio_seconds": time.perf_counter() - start, "batched_model": new.info["model"],
                         "one_ratio_model": best, "nearest_model": new.info["model_nearest"]})
    queue.put({"synthetic_major_axis": rows, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _run(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--roundings", default=",".join(GRAM_ROUNDINGS))
    parser.add_argument("--synthetic", default="", help="major-axis on synthetic layers of these shapes, e.g. "
                                                        "1536x384,384x1536,384x384 (out x in)")
    parser.add_argument("--eigenpairs", type=int, default=16, help="m of the synthetic quadrics (k = 8 per end)")
    args = parser.parse_args(argv)
    from cetopt._atomic import atomic_write_text
    from cetopt.tables import format_table

    rows = [_run(_time_rounding, args.model, r) for r in args.roundings.split(",") if r]
    synthetic = None
    if args.synthetic:
        shapes = [tuple(int(x) for x in s.split("x")) for s in args.synthetic.split(",")]
        synthetic = _run(_synthetic_major_axis, shapes, args.eigenpairs)
    command = "python benchmarks/rounding_time.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    out = OUT / f"rounding-time-{args.model}"
    atomic_write_text(out.with_suffix(".json"), json.dumps({"command": command, "rows": rows,
                                                            "synthetic": synthetic}, indent=1) + "\n")
    lines = [f"# Rounding every candidate of {args.model}", "", f"Written by `{command}` (2 threads; see the "
             "script's docstring). Seconds on a shared 2-core machine (other jobs running); peak = the process's "
             "maximum resident memory (model, data and Gram matrices included).", "",
             format_table(["rounding", "layers", "candidates", "Gram s", "rounding s", "peak MiB"],
                          [[r["rounding"], r["layers"], r["candidates"], f"{r['gram_seconds']:.1f}",
                            f"{r['round_seconds']:.1f}", f"{r['peak_rss_mib']:.0f}"] for r in rows]), ""]
    if synthetic:
        lines += ["## Major-axis on synthetic layers (random quadrics, m eigenpairs)", "",
                  format_table(["shape", "m", "bits", "batched s", "one ratio at a time s", "model batched",
                                "model one-at-a-time", "model nearest"],
                               [[f"{r['shape'][0]}x{r['shape'][1]}", r["m"], r["bits"], f"{r['batched_seconds']:.2f}",
                                 f"{r['one_ratio_seconds']:.2f}", f"{r['batched_model']:.6g}",
                                 f"{r['one_ratio_model']:.6g}", f"{r['nearest_model']:.6g}"]
                                for r in synthetic["synthetic_major_axis"]]),
                  "", f"peak MiB of that process: {synthetic['peak_rss_mib']:.0f}", ""]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines))


if __name__ == "__main__":
    main()
