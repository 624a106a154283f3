"""Curvature extraction speed, against baselines measured in the same run.

1. Cost of one Hessian-vector probe relative to one forward+backward pass (goal <= 2.5x), for single
   probes and for a block of probes through one batched backward pass.
2. Per-layer Hutchinson traces for all layers from shared probes, vs a PyHessian-style loop that
   estimates one layer at a time (its own first-order graph, one unbatched probe per product), at
   equal standard error: each layer's loop runs the probes its own per-probe variance needs to reach
   the standard error the shared run reported for that layer (goal >= 10x faster).

Models: a ResNet-18 (torchvision layout and stem, 32x32 inputs, batch 32) and a 4-block transformer (seq 32,
batch 16), random weights and data (timings do not depend on training). On a GPU machine pass
``--device cuda``.

    python benchmarks/curvature.py [--device cuda] [--probes 64]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from cetopt._atomic import atomic_write_text
from cetopt.curvature import CurvatureOperator, hutchinson_traces
from cetopt.curvature.hutchinson import rademacher_like
from cetopt.curvature.operator import eval_mode, resolve_device
from cetopt.tables import format_table
from cetopt.zoo.resnet import resnet18
from cetopt.zoo.transformer import TinyTransformer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: torch.device, repeats: int = 5) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def pyhessian_style_layer_loop(op: CurvatureOperator, probes_per_layer: list[int], seed: int) -> tuple[float, list[float]]:
    """One layer at a time: its own create_graph gradient, then unbatched probes on that layer only."""
    generator = torch.Generator().manual_seed(seed)
    stderrs = []
    start = time.perf_counter()
    with eval_mode(op.model):
        for weight, count in zip(op.params, probes_per_layer):
            values = []
            for batch in op.batches:
                loss = op.loss_fn(op.model, batch)
                (g,) = torch.autograd.grad(loss, weight, create_graph=True)
                for _ in range(count):
                    v = rademacher_like([weight], 1, generator)[0][0]
                    (hv,) = torch.autograd.grad(g, weight, grad_outputs=v, retain_graph=True)
                    values.append(float((v * hv).sum()))
            arr = np.array(values)
            stderrs.append(float(arr.std(ddof=1) / math.sqrt(len(arr))))
    _sync(op.device)
    return time.perf_counter() - start, stderrs


def bench_model(name: str, model: nn.Module, batch: Any, loss_fn: Callable, device: torch.device, probes: int,
                seed: int) -> dict[str, Any]:
    op = CurvatureOperator(model, loss_fn, [batch], device=device)
    model_on = op.model

    def fwd_bwd() -> None:
        with eval_mode(model_on):
            loss = loss_fn(model_on, op.batches[0])
            torch.autograd.grad(loss, op.params)

    base = timed(fwd_bwd, device)
    op.hvp([torch.zeros_like(p) for p in op.params])  # builds and caches the first-order graph
    one = [p[0] for p in rademacher_like(op.params, 1, torch.Generator().manual_seed(0))]
    single = timed(lambda: op.hvp(one), device)
    block = rademacher_like(op.params, 8, torch.Generator().manual_seed(1))
    blocked = timed(lambda: op.hvp(block, batched=True), device) / 8
    # shared probes, all layers at once
    start = time.perf_counter()
    shared = hutchinson_traces(op, max_probes=probes, min_probes=probes, rtol=0.0, seed=seed,
                               show_progress=False)
    _sync(device)
    shared_seconds = time.perf_counter() - start
    # per-layer variance of restricted probes (pilot), then the probes each layer needs for equal stderr
    pilot = 16
    pilot_seconds = time.perf_counter()
    restricted_var = []
    for j in range(len(op.params)):
        est = hutchinson_traces(op, max_probes=pilot, min_probes=pilot, rtol=0.0, seed=seed + 1,
                                restrict_to=j, show_progress=False)[j]
        restricted_var.append((est.stderr * math.sqrt(pilot)) ** 2)
    pilot_seconds = time.perf_counter() - pilot_seconds
    needed = [max(2, math.ceil(var / max(s.stderr, 1e-300) ** 2)) for var, s in zip(restricted_var, shared)]
    loop_seconds, loop_stderr = pyhessian_style_layer_loop(op, needed, seed + 2)
    ok = float(np.mean([l <= 1.5 * s.stderr for l, s in zip(loop_stderr, shared)]))
    # the restricted estimator (a probe per layer, one batched pass per round) at the same stderr
    rounds = max(2, max(needed))
    start = time.perf_counter()
    restricted = hutchinson_traces(op, max_probes=rounds, min_probes=rounds, rtol=0.0, seed=seed + 3,
                                   mode="restricted", show_progress=False)
    _sync(device)
    restricted_seconds = time.perf_counter() - start
    shared_var = [(s.stderr * math.sqrt(s.n_probes)) ** 2 for s in shared]
    variance_ratio = float(np.median(np.array(shared_var) / np.maximum(restricted_var, 1e-300)))
    return {
        "model": name, "layers": len(op.params), "params": sum(p.numel() for p in op.params),
        "forward_backward_s": base, "hvp_single_s": single, "hvp_block8_per_probe_s": blocked,
        "hvp_over_fb_single": single / base, "hvp_over_fb_block8": blocked / base,
        "shared_probes": probes, "shared_seconds": shared_seconds,
        "loop_probes_total": int(sum(needed)), "loop_seconds": loop_seconds, "pilot_seconds": pilot_seconds,
        "speedup_shared_vs_loop": loop_seconds / shared_seconds, "loop_layers_within_1.5x_stderr": ok,
        "median_relative_stderr": float(np.median([s.relative_error for s in shared])),
        "restricted_rounds": rounds, "restricted_seconds": restricted_seconds,
        "speedup_restricted_vs_loop": loop_seconds / restricted_seconds,
        "median_variance_ratio_shared_over_restricted": variance_ratio,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "curvature.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    rows = []
    cnn = resnet18(num_classes=10)
    images = (torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,)))
    rows.append(bench_model("resnet18 32x32 b32", cnn, images,
                            lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]), device, args.probes, args.seed))
    print("done resnet18", file=sys.stderr)
    tf = TinyTransformer(vocab=1000, dim=128, depth=4, heads=4, hidden=512, classes=10, max_len=32)
    tokens = (torch.randint(0, 1000, (16, 32)), torch.randint(0, 10, (16,)))
    rows.append(bench_model("transformer d128x4 seq32 b16", tf, tokens,
                            lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]), device, args.probes, args.seed))
    table = [[r["model"], r["layers"], f"{r['params'] / 1e6:.2f}M", f"{r['forward_backward_s'] * 1e3:.1f}",
              f"{r['hvp_over_fb_single']:.2f}x", f"{r['hvp_over_fb_block8']:.2f}x", f"{r['shared_seconds']:.2f}",
              f"{r['loop_seconds']:.2f}", f"{r['speedup_shared_vs_loop']:.2f}x", f"{r['restricted_seconds']:.2f}",
             f"{r['speedup_restricted_vs_loop']:.2f}x", f"{r['median_variance_ratio_shared_over_restricted']:.1f}"]
             for r in rows]
    print(format_table(["model", "layers", "weights", "fwd+bwd ms", "HVP/fb (1)", "HVP/fb (block 8)",
                        "shared s", "per-layer loop s", "shared speedup", "restricted s", "restricted speedup",
                        "var shared/restricted"], table))
    meta = {"device": str(device), "torch": torch.__version__, "threads": args.threads,
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None}
    atomic_write_text(args.out, json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
