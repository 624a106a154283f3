"""Curvature extraction speed, against baselines measured in the same run.

1. Cost of one Hessian-vector probe relative to one forward+backward pass (goal <= 2.5x), for single
   probes and for a block of probes through one batched backward pass.
2. Per-layer Hutchinson traces for all layers, shared probes and restricted (per-layer, batched)
   probes, vs a PyHessian-style loop that estimates one layer at a time (its own first-order graph,
   one unbatched probe per product), at equal standard error (goal >= 10x faster). Times at equal
   error are assembled from measured per-probe costs and measured per-layer variances (see
   ``bench_model``), so the comparison does not depend on how long anything is run.

Models: a ResNet-18 (torchvision layout and stem, 32x32 inputs, batch 32) and a 4-block transformer (seq 32,
batch 16), random weights and data (timings do not depend on training). On a GPU machine pass
``--device cuda``.

    python benchmarks/curvature.py [--device cuda] [--probes 64]
"""

from __future__ import annotations

import argparse
import json
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


def layer_loop_costs(op: CurvatureOperator, probes: int, seed: int) -> tuple[list[float], list[float]]:
    """PyHessian-style, one layer at a time: per layer, the seconds to build its own create_graph gradient
    and the seconds per unbatched probe on that layer alone (median of ``probes``)."""
    generator = torch.Generator().manual_seed(seed)
    setup, per_probe = [], []
    with eval_mode(op.model):
        for weight in op.params:
            start = time.perf_counter()
            loss = op.loss_fn(op.model, op.batches[0])
            (g,) = torch.autograd.grad(loss, weight, create_graph=True)
            _sync(op.device)
            setup.append(time.perf_counter() - start)
            times = []
            for _ in range(probes):
                v = rademacher_like([weight], 1, generator)[0][0]
                start = time.perf_counter()
                torch.autograd.grad(g, weight, grad_outputs=v, retain_graph=True)
                _sync(op.device)
                times.append(time.perf_counter() - start)
            per_probe.append(float(np.median(times)))
    return setup, per_probe


def bench_model(name: str, model: nn.Module, batch: Any, loss_fn: Callable, device: torch.device, probes: int,
                seed: int) -> dict[str, Any]:
    """Measured per-probe costs and per-layer variances, combined into times at equal standard error.

    Target: for every layer, the standard error the per-layer loop reaches with ``probes`` restricted
    probes. Probes needed: loop ``probes`` per layer; restricted ``probes`` rounds; shared
    probes x max over layers of (shared variance / restricted variance), since the shared run stops only
    when every layer is there.
    """
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
    round_seconds = timed(lambda: op.layer_hvp(one), device, repeats=3)
    shared = hutchinson_traces(op, max_probes=probes, min_probes=probes, rtol=0.0, seed=seed, show_progress=False)
    restricted = hutchinson_traces(op, max_probes=probes, min_probes=probes, rtol=0.0, seed=seed + 1,
                                   mode="restricted", show_progress=False)
    var_shared = np.array([(e.stderr ** 2) * e.n_probes for e in shared])
    var_restricted = np.array([(e.stderr ** 2) * e.n_probes for e in restricted])
    ratio = var_shared / np.maximum(var_restricted, 1e-300)
    setup, per_probe = layer_loop_costs(op, 4, seed + 2)
    t_loop = float(sum(setup) + probes * sum(per_probe))
    t_shared = float(probes * ratio.max() * single)
    t_restricted = float(probes * round_seconds)
    return {
        "model": name, "layers": len(op.params), "params": sum(p.numel() for p in op.params),
        "forward_backward_s": base, "hvp_single_s": single, "hvp_block8_per_probe_s": blocked,
        "hvp_over_fb_single": single / base, "hvp_over_fb_block8": blocked / base,
        "restricted_round_s": round_seconds, "loop_probe_s_median": float(np.median(per_probe)),
        "variance_ratio_median": float(np.median(ratio)), "variance_ratio_max": float(ratio.max()),
        "equal_se_probes_per_layer": probes, "equal_se_seconds_loop": t_loop, "equal_se_seconds_shared": t_shared,
        "equal_se_seconds_restricted": t_restricted, "speedup_shared_vs_loop": t_loop / t_shared,
        "speedup_restricted_vs_loop": t_loop / t_restricted,
        "speedup_shared_vs_loop_if_median_layer": t_loop / float(probes * np.median(ratio) * single),
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
              f"{r['hvp_over_fb_single']:.2f}x", f"{r['hvp_over_fb_block8']:.2f}x",
              f"{r['variance_ratio_median']:.1f} / {r['variance_ratio_max']:.0f}",
              f"{r['equal_se_seconds_loop']:.1f}", f"{r['equal_se_seconds_shared']:.1f}",
              f"{r['equal_se_seconds_restricted']:.1f}", f"{r['speedup_shared_vs_loop']:.2f}x",
              f"{r['speedup_restricted_vs_loop']:.2f}x"] for r in rows]
    print(format_table(["model", "layers", "weights", "fwd+bwd ms", "HVP/fb (1)", "HVP/fb (block 8)",
                        "var shared/restricted (median / max)", "loop s", "shared s", "restricted s",
                        "shared vs loop", "restricted vs loop"], table))
    meta = {"device": str(device), "torch": torch.__version__, "threads": args.threads,
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None}
    atomic_write_text(args.out, json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
