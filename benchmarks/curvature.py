"""Curvature extraction cost on trained models, every comparison interleaved (cetopt.bench.timing).

1. Hessian-vector product vs one forward+backward pass (the goal: <= 2.5x), timed in the same rounds:
   ``forward+backward`` (loss and gradient w.r.t. the layer weights), ``hvp steady`` (one product on the
   cached first-order graph: the cost of each further probe once a run is under way) and ``hvp one-off``
   (an operator with ``cache_graph=False``: the first-order graph built fresh, then the product).
2. Per-layer Hutchinson traces at equal standard error, against a PyHessian-style per-layer loop (each
   layer: its own create_graph gradient, then one unbatched probe at a time on that layer). The loop's
   samples v_l' H_ll v_l have the same distribution as restricted mode's, so the loop needs ``P`` probes per
   layer wherever restricted mode needs ``P`` rounds; shared probes (one product over all layers) need
   ``P x max_l var_shared[l] / var_restricted[l]`` rounds, since a run stops only when every layer is there.
   The variances are measured on the trained weights (``--variance-probes`` probes, 24 by default, fixed
   seed, so both runs use the same ones; the relative error of a variance from n probes is about
   sqrt(2 / n), 29% at 24). The
   per-probe costs are timed in the same rounds (graph build, shared probe, restricted round, loop
   setups, loop probes) and each round gives its own equal-error times and ratios:
   loop = setups + P x loop probes; restricted = graph + P x round; shared = graph + ceil(P x m) x probe.
   ``--direct`` models also time the whole runs end to end (interleaved), to check that assembly.
3. Deflated probes (cetopt.curvature.deflated_traces, mode ``deflated``, on by default): restricted probes
   after projecting out each layer's Lanczos Ritz vectors (k per end, ``--lanczos-iterations``). Its
   variance is measured like the others'; the Lanczos run is timed in the same rounds, and the speedup is
   reported without it (free when eigenpairs are extracted anyway, as ``--method cet`` does) and with it.

    python benchmarks/curvature.py --run 1        # writes benchmarks/results/curvature-run1.{json,txt}
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cetopt._atomic import atomic_write_text
from cetopt.bench.timing import Adaptive, Comparison, compare
from cetopt.curvature import CurvatureOperator, deflated_traces, hutchinson_traces, lanczos_eigenpairs
from cetopt.curvature.hutchinson import rademacher_like
from cetopt.curvature.operator import eval_mode

sys.path.insert(0, str(Path(__file__).parent))
from curvature_models import MODELS, BenchModel, load_bench_model  # noqa: E402
from reports import format_curvature  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MIN_BLOCK = 0.2  # seconds: shorter operations are repeated back to back within a round


def hvp_cost(bm: BenchModel, rounds: int, sync: Callable[[], None]) -> dict[str, Any]:
    """Steady-state and one-off HVP against one forward+backward, interleaved."""
    op = CurvatureOperator(bm.model, bm.loss_fn, [bm.batch])
    fresh = CurvatureOperator(bm.model, bm.loss_fn, [bm.batch], cache_graph=False)
    probe = [p[0] for p in rademacher_like(op.params, 1, torch.Generator().manual_seed(0))]

    def forward_backward() -> None:
        with eval_mode(op.model):
            torch.autograd.grad(bm.loss_fn(op.model, op.batches[0]), op.params)

    timing = compare({"forward+backward": forward_backward, "hvp steady": lambda: op.hvp(probe),
                      "hvp one-off": lambda: fresh.hvp(probe)}, rounds=rounds, warmup=1, sync=sync,
                     adaptive=Adaptive(min_block=MIN_BLOCK))
    op.release()
    return {"timing": timing.to_dict(),
            "hvp_steady_over_fb": vars(timing.ratio("hvp steady", "forward+backward")),
            "hvp_one_off_over_fb": vars(timing.ratio("hvp one-off", "forward+backward"))}


def trace_round(op: CurvatureOperator, mode: str, probes: int, seed: int, eig: list[Any] | None) -> list[Any]:
    """``probes`` probes of one trace estimator (a Hutchinson mode, or ``deflated`` with ``eig``), no stopping."""
    kw = dict(max_probes=probes, min_probes=probes, rtol=0.0, seed=seed, show_progress=False)
    if mode == "deflated":
        return deflated_traces(op, eig, **kw)
    return hutchinson_traces(op, mode=mode, **kw)


def per_sample_variances(op: CurvatureOperator, modes: list[str], probes: int, seed: int,
                         eig: list[Any] | None) -> dict[str, np.ndarray]:
    """Per layer, the variance of one probe's trace sample in each mode (stderr^2 x n)."""
    out = {}
    for mode in modes:
        est = trace_round(op, mode, probes, seed, eig)
        out[mode] = np.array([e.stderr ** 2 * e.n_probes for e in est])
    return out


class LayerLoop:
    """The PyHessian-style baseline, one layer at a time: its own create_graph gradient, unbatched probes."""

    def __init__(self, op: CurvatureOperator, seed: int) -> None:
        self.op = op
        self.generator = torch.Generator().manual_seed(seed)
        self.graphs: list[torch.Tensor] = []

    def setups(self) -> None:
        """Build every layer's own first-order graph (one forward and create_graph backward each)."""
        self.graphs = []
        with eval_mode(self.op.model):
            for weight in self.op.params:
                loss = self.op.loss_fn(self.op.model, self.op.batches[0])
                (g,) = torch.autograd.grad(loss, weight, create_graph=True)
                self.graphs.append(g)

    def probes(self) -> list[float]:
        """One probe per layer on that layer's graph; returns the samples v' H_ll v."""
        samples = []
        with eval_mode(self.op.model):
            for g, weight in zip(self.graphs, self.op.params):
                v = rademacher_like([weight], 1, self.generator)[0][0]
                (hv,) = torch.autograd.grad(g, weight, grad_outputs=v, retain_graph=True)
                samples.append(float((v * hv).sum()))
        return samples

    def run(self, probes: int) -> None:
        """The whole loop to ``probes`` probes per layer, one layer's graph alive at a time."""
        with eval_mode(self.op.model):
            for weight in self.op.params:
                loss = self.op.loss_fn(self.op.model, self.op.batches[0])
                (g,) = torch.autograd.grad(loss, weight, create_graph=True)
                for _ in range(probes):
                    v = rademacher_like([weight], 1, self.generator)[0][0]
                    torch.autograd.grad(g, weight, grad_outputs=v, retain_graph=True)


def build_graph(op: CurvatureOperator) -> None:
    """One fresh first-order graph over all layers (what every shared or restricted run pays once)."""
    with eval_mode(op.model):
        torch.autograd.grad(op.loss_fn(op.model, op.batches[0]), op.params, create_graph=True)


def equal_error(bm: BenchModel, args: argparse.Namespace, sync: Callable[[], None]) -> dict[str, Any]:
    """Equal-standard-error times of each Hutchinson mode and of the per-layer loop, per round."""
    op = CurvatureOperator(bm.model, bm.loss_fn, [bm.batch])

    def lanczos() -> list[Any]:
        return lanczos_eigenpairs(op, k=args.deflation_k, iterations=args.lanczos_iterations, seed=args.seed,
                                  show_progress=False)

    eig = lanczos() if "deflated" in args.modes else None
    variances = per_sample_variances(op, args.modes, args.variance_probes, args.seed, eig)
    reference = np.maximum(variances["restricted"], 1e-300)
    multiplier = {m: variances[m] / reference for m in args.modes}
    loop = LayerLoop(op, args.seed + 7)
    things: dict[str, Callable[[], Any]] = {"graph build": lambda: build_graph(op), "loop setups": loop.setups,
                                            "loop probes": loop.probes}
    for mode in args.modes:
        things[f"{mode} round"] = (lambda m: lambda: trace_round(op, m, 1, args.seed, eig))(mode)
    if eig is not None:
        things["lanczos"] = lanczos
    timing = compare(things, rounds=args.eq_rounds, warmup=1, sync=sync,
                     adaptive=Adaptive(min_block=MIN_BLOCK, min_seconds=args.eq_seconds,
                                       max_rounds=max(args.eq_rounds, args.eq_max_rounds)))
    loop.graphs = []
    op.release()
    P = args.target_probes
    rounds_needed = {m: math.ceil(P * float(multiplier[m].max())) for m in args.modes}
    seconds = {"loop": timing.derived(lambda t: t["loop setups"] + P * t["loop probes"])}
    for m in args.modes:
        seconds[m] = timing.derived(lambda t, m=m: t["graph build"] + rounds_needed[m] * t[f"{m} round"])
    speedup = {m: timing.derived(lambda t, m=m: (t["loop setups"] + P * t["loop probes"])
                                 / (t["graph build"] + rounds_needed[m] * t[f"{m} round"])) for m in args.modes}
    if eig is not None:
        m = "deflated"
        seconds["deflated + lanczos"] = timing.derived(
            lambda t: t["lanczos"] + t["graph build"] + rounds_needed[m] * t[f"{m} round"])
        speedup["deflated + lanczos"] = timing.derived(
            lambda t: (t["loop setups"] + P * t["loop probes"])
            / (t["lanczos"] + t["graph build"] + rounds_needed[m] * t[f"{m} round"]))
    names = op.names
    return {"target_probes": P, "variance_probes": args.variance_probes, "variance_seed": args.seed,
            "variance_ratio_vs_restricted": {m: {"median": float(np.median(r)), "max": float(r.max()),
                                                 "argmax_layer": names[int(r.argmax())]} for m, r in multiplier.items()},
            "rounds_needed": rounds_needed, "timing": timing.to_dict(),
            "seconds": {k: vars(v) for k, v in seconds.items()},
            "speedup_vs_loop": {m: vars(v) for m, v in speedup.items()}}


def direct_check(bm: BenchModel, eq: dict[str, Any], args: argparse.Namespace,
                 sync: Callable[[], None]) -> dict[str, Any]:
    """Whole equal-error runs end to end, interleaved: each from a fresh operator (graph build included)."""
    loop = LayerLoop(CurvatureOperator(bm.model, bm.loss_fn, [bm.batch]), args.seed + 11)
    P = args.target_probes

    def mode_run(mode: str) -> Callable[[], Any]:
        k = eq["rounds_needed"][mode]
        return lambda: hutchinson_traces(CurvatureOperator(bm.model, bm.loss_fn, [bm.batch]), max_probes=k,
                                         min_probes=k, rtol=0.0, seed=args.seed, mode=mode, show_progress=False)

    things: dict[str, Callable[[], Any]] = {"loop": lambda: loop.run(P)}
    # a mode that needs far more rounds than the loop has probes would dominate the benchmark's run time
    # (deflated runs need the Lanczos vectors; their assembly is the restricted one's with a projection)
    direct = [m for m in args.modes if m != "deflated" and eq["rounds_needed"][m] <= 2 * P]
    things.update({m: mode_run(m) for m in direct})
    timing: Comparison = compare(things, rounds=args.direct_rounds, warmup=1, sync=sync)
    return {"timing": timing.to_dict(),
            "speedup_vs_loop": {m: vars(timing.ratio("loop", m)) for m in direct}}


def bench_model(name: str, args: argparse.Namespace, sync: Callable[[], None]) -> dict[str, Any]:
    bm = load_bench_model(name, seed=args.seed)
    op = CurvatureOperator(bm.model, bm.loss_fn, [bm.batch])
    row: dict[str, Any] = {"model": name, "training": bm.training, "test_accuracy": bm.test_accuracy,
                           "layers": len(op.params), "weights": int(sum(p.numel() for p in op.params)),
                           "batch": int(len(bm.batch[1]))}
    row["hvp"] = hvp_cost(bm, args.rounds, sync)
    print(f"  {name}: hvp done", file=sys.stderr)
    if args.hvp_only:
        return row
    row["equal_error"] = equal_error(bm, args, sync)
    print(f"  {name}: equal-error done", file=sys.stderr)
    if name in args.direct:
        row["direct"] = direct_check(bm, row["equal_error"], args, sync)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--modes", nargs="+", default=["shared", "restricted", "deflated"],
                        choices=["shared", "restricted", "deflated"],
                        help="trace estimators: hutchinson_traces modes and 'deflated' (deflated_traces); "
                             "'restricted' is the variance reference and is always run")
    parser.add_argument("--deflation-k", type=int, default=8, help="Ritz vectors per end deflated")
    parser.add_argument("--lanczos-iterations", type=int, default=32, help="Krylov dimension of that Lanczos run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the HVP comparison")
    parser.add_argument("--eq-rounds", type=int, default=2, help="interleaved rounds of the equal-error timing")
    parser.add_argument("--eq-seconds", type=float, default=150.0,
                        help="add equal-error rounds until they took this long (small models get more rounds: "
                             "two rounds of a 15 s comparison moved its median ratio 20%% between runs)")
    parser.add_argument("--eq-max-rounds", type=int, default=15, help="at most this many equal-error rounds")
    parser.add_argument("--target-probes", type=int, default=32, help="loop probes per layer (sets the error)")
    parser.add_argument("--variance-probes", type=int, default=24)
    parser.add_argument("--direct", nargs="*", default=["digits-cnn"])
    parser.add_argument("--direct-rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--hvp-only", action="store_true",
                        help="only the HVP comparison; results go to curvature-hvp-run<label>.json")
    parser.add_argument("--run", default="1", help="run label: results go to curvature-run<label>.json")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if "restricted" not in args.modes:
        args.modes.append("restricted")
    torch.set_num_threads(args.threads)
    logging.getLogger("cetopt.curvature").setLevel(logging.ERROR)  # fixed-probe runs "hit the cap" by design
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    rows = []
    for name in args.models:
        rows.append(bench_model(name, args, sync))
        print(f"done {name}", file=sys.stderr)
    meta = {"benchmark": "curvature", "part": "hvp" if args.hvp_only else "all", "run": args.run, "torch": torch.__version__, "threads": args.threads,
            "python": platform.python_version(), "machine": platform.machine(), "device": "cpu",
            "command": "python benchmarks/curvature.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    data = {"meta": meta, "rows": rows}
    stem = args.out_dir / f"curvature-{'hvp-' if args.hvp_only else ''}run{args.run}"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(data, indent=1) + "\n")
    report = format_curvature(data)
    atomic_write_text(stem.with_suffix(".txt"), report + "\n")
    print(report)
    print(f"wrote {stem}.json and .txt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
