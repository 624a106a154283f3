"""Per-layer Hessian traces at equal standard error: shared probes, layer-restricted probes and deflated
probes (cetopt.curvature.deflated_traces) against the PyHessian-style per-layer loop, on a zoo model's
trained weights, 1 thread. Prints one JSON object.

    python benchmarks/trace_deflation.py mnist1d-resnet --probes 32

Each estimator draws ``--probes`` probes; its per-probe variance per layer, var_l, and its time per probe, c,
give the cost of reaching a relative standard error r on every layer: max_l var_l / (r Tr_l)^2 probes for
the estimators that serve all layers at once, sum_l var_l / (r Tr_l)^2 full Hessian products for the loop
(whose probes are the restricted ones). Ratios are loop cost / estimator cost; "incl_lanczos" adds the
Lanczos run the deflation uses (free when eigenpairs are extracted anyway).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Any, Callable

import numpy as np
import torch


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    from cetopt.curvature import CurvatureOperator, deflated_traces, hutchinson_traces, lanczos_eigenpairs
    from cetopt.zoo.registry import load_zoo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--rtol", type=float, default=0.05)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)  # the estimators warn at their cap: here the cap is the design
    spec = load_zoo(args.model)
    op = CurvatureOperator(spec.model, spec.loss_fn, spec.calibration, exclude=spec.exclude, device="cpu")
    op.loss_and_gradient(show_progress=False)
    op._first_order_graphs()
    kw = dict(max_probes=args.probes, min_probes=args.probes, rtol=0.0, seed=0, show_progress=False)
    shared, t_shared = _timed(lambda: hutchinson_traces(op, mode="shared", **kw))
    restricted, t_restricted = _timed(lambda: hutchinson_traces(op, mode="restricted", **kw))
    eig, t_lanczos = _timed(lambda: lanczos_eigenpairs(op, k=8, iterations=32, seed=0, show_progress=False))
    deflated, t_deflated = _timed(lambda: deflated_traces(op, eig, **kw))

    def var(estimates: list) -> np.ndarray:
        return np.array([e.stderr ** 2 * e.n_probes for e in estimates])

    target = (args.rtol * np.array([abs(e.trace) for e in deflated])) ** 2
    per_probe = {"full_hvp": t_shared / args.probes, "restricted": t_restricted / args.probes,
                 "deflated": t_deflated / args.probes}
    loop = float(np.sum(var(restricted) / target)) * per_probe["full_hvp"]
    needed = {"shared": float(np.max(var(shared) / target)), "restricted": float(np.max(var(restricted) / target)),
              "deflated": float(np.max(var(deflated) / target)), "loop_total": float(np.sum(var(restricted) / target))}
    cost = {"shared": needed["shared"] * per_probe["full_hvp"], "restricted": needed["restricted"] * per_probe["restricted"],
            "deflated": needed["deflated"] * per_probe["deflated"]}
    print(json.dumps({
        "model": args.model, "layers": len(op.params), "probes": args.probes, "rtol": args.rtol,
        "load_average": os.getloadavg()[0], "seconds_per_probe": per_probe, "lanczos_seconds": t_lanczos,
        "median_variance_ratio": {"shared/restricted": float(np.median(var(shared) / var(restricted))),
                                  "deflated/restricted": float(np.median(var(deflated) / var(restricted)))},
        "probes_needed": needed,
        "speedup_vs_loop": {k: loop / v for k, v in cost.items()},
        "speedup_vs_loop_deflated_incl_lanczos": loop / (max(needed["deflated"], 16) * per_probe["deflated"] + t_lanczos),
    }, indent=1))


if __name__ == "__main__":
    main()
