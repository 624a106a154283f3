"""A CNN built from nn.Conv2d subclasses with static same padding (forward: F.pad then F.conv2d, as
EfficientNet-PyTorch's Conv2dStaticSamePadding) against the same model with plain nn.Conv2d (issue 36).

Both copies hold the same random weights (MobileNetV2-style inverted residuals: pointwise expand, depthwise 3x3,
pointwise project, eval-mode BatchNorm, ReLU6, skips) and the same calibration batches. Each round times, for
one copy then the other (the order alternating between rounds, all in one process), the two curvature phases a
plan needs: the quadratic forms of every layer's round-to-nearest errors (``quadratic_forms``) and the per-layer
traces (``extract_curvature``, k = 0, trace_mode "auto"); it records which path every layer took (coverage) and
the largest relative difference between the two copies' numbers.

    python benchmarks/arch_subclass.py --threads 1 --rounds 9 --batch 4 --probes 8 --out benchmarks/results/arch-subclass
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cetopt._atomic import atomic_write_text
from cetopt.curvature import CurvatureOperator, quadratic_forms
from cetopt.curvature.coverage import FORWARD
from cetopt.curvature.extract import CurvatureSettings, extract_curvature
from cetopt.curvature.threads import configure_threads
from cetopt.quant.quantizers import quantization_error

BITS = (2, 3, 4, 6, 8)


class SameConv2d(nn.Conv2d):
    """Static same padding in its own forward (the module's padding stays 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.kernel_size[0] // 2
        return F.conv2d(F.pad(x, (p, p, p, p)), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv(subclass: bool, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if subclass:
        return SameConv2d(c_in, c_out, k, stride=stride, groups=groups, bias=False)
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False)


class InvertedResidual(nn.Module):
    def __init__(self, subclass: bool, c_in: int, c_out: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        hidden = c_in * expand
        self.expand = nn.Sequential(conv(subclass, c_in, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.depthwise = nn.Sequential(conv(subclass, hidden, hidden, 3, stride, groups=hidden), nn.BatchNorm2d(hidden),
                                       nn.ReLU6())
        self.project = nn.Sequential(conv(subclass, hidden, c_out, 1), nn.BatchNorm2d(c_out))
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project(self.depthwise(self.expand(x)))
        return x + h if self.skip else h


class MobileNetLike(nn.Module):
    def __init__(self, subclass: bool, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv(subclass, 3, 16, 3, 2), nn.BatchNorm2d(16), nn.ReLU6())
        plan = [(16, 16, 1), (16, 24, 2), (24, 24, 1), (24, 32, 2), (32, 32, 1), (32, 48, 1)]
        self.blocks = nn.Sequential(*(InvertedResidual(subclass, a, b, s) for a, b, s in plan))
        self.head = nn.Linear(48, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1))


def ce(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def models(seed: int) -> dict[str, nn.Module]:
    """The plain and the subclass copy, with identical weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    plain = MobileNetLike(False)
    g = torch.Generator().manual_seed(seed)
    for m in plain.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    subclass = MobileNetLike(True)
    subclass.load_state_dict(plain.state_dict())
    return {"plain": plain.eval(), "subclass": subclass.eval()}


def one_round(model: nn.Module, batches: list, seed: int, probes: int = 32) -> dict:
    """Time the quadratic forms and the traces of ``model``; return the times, paths and numbers."""
    start = time.perf_counter()
    op = CurvatureOperator(model, ce, batches, device="cpu")
    errors = {n: [quantization_error(p.detach(), b) for b in BITS] for n, p in zip(op.names, op.params)}
    forms = quadratic_forms(op, errors, show_progress=False)
    mid = time.perf_counter()
    result = extract_curvature(model, ce, batches, cache_dir=False, show_progress=False,
                               settings=CurvatureSettings(k=0, seed=seed, max_probes=probes, min_probes=probes))
    end = time.perf_counter()
    return {"forms_s": mid - start, "traces_s": end - mid, "total_s": end - start,
            "forward_layers": sum(p.forms == FORWARD for p in forms.paths.values()), "layers": len(forms.paths),
            "trace_estimator": result.metadata["trace_estimator"],
            "own": {n: v.tolist() for n, v in forms.own.items()}, "traces": [layer.trace for layer in result.layers]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16, help="images per calibration batch (2 batches, 32x32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probes", type=int, default=32, help="trace probes (a fixed number: equal work per copy)")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    configure_threads(args.threads)
    copies = models(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    batches = [(torch.randn(args.batch, 3, 32, 32, generator=g), torch.randint(0, 10, (args.batch,), generator=g))
               for _ in range(2)]
    one_round(copies["plain"], batches[:1], args.seed, args.probes)  # untimed warm-up
    rounds = []
    for r in range(args.rounds):
        order = ("plain", "subclass") if r % 2 == 0 else ("subclass", "plain")
        runs = {name: one_round(copies[name], batches, args.seed, args.probes) for name in order}
        rounds.append(runs)
        print(f"round {r}: " + ", ".join(f"{n} {runs[n]['total_s']:.1f} s" for n in order), flush=True)
    last = rounds[-1]
    diffs = [abs(a - b) / max(abs(b), 1e-30) for n in last["plain"]["own"]
             for a, b in zip(last["subclass"]["own"][n], last["plain"]["own"][n])]
    trace_diff = max(abs(a - b) / max(abs(b), 1e-30) for a, b in zip(last["subclass"]["traces"], last["plain"]["traces"]))
    ratios = {k: [r["subclass"][k] / r["plain"][k] for r in rounds] for k in ("forms_s", "traces_s", "total_s")}
    from scipy.stats import bootstrap

    ci = {k: list(bootstrap((np.asarray(v),), np.median, confidence_level=0.95, random_state=args.seed,
                            method="percentile").confidence_interval) if len(v) > 1 else [v[0], v[0]]
          for k, v in ratios.items()}
    summary = {"threads": args.threads, "rounds": args.rounds, "batch": args.batch, "seed": args.seed,
               "probes": args.probes, "load_1min": os.getloadavg()[0],
               "torch": torch.__version__, "bits": list(BITS), "params": sum(p.numel() for p in copies["plain"].parameters()),
               "paths": {n: {k: last[n][k] for k in ("forward_layers", "layers", "trace_estimator")} for n in last},
               "ratio_median": {k: statistics.median(v) for k, v in ratios.items()},
               "ratio_range": {k: [min(v), max(v)] for k, v in ratios.items()},
               "ratio_median_ci95": ci,
               "max_rel_diff_forms": max(diffs), "max_rel_diff_traces": trace_diff,
               "rounds_s": [{n: {k: r[n][k] for k in ("forms_s", "traces_s", "total_s")} for n in r} for r in rounds]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(summary, indent=1) + "\n")
    p = summary["paths"]
    median, spread = summary["ratio_median"], summary["ratio_range"]
    lines = ["# Conv2d subclass with same padding vs plain nn.Conv2d", "",
             f"Generated by `python benchmarks/arch_subclass.py --threads {args.threads} --rounds {args.rounds} "
             f"--batch {args.batch} --probes {args.probes} --seed {args.seed} --out {args.out}` (torch {torch.__version__}, "
             f"1-minute load {summary['load_1min']:.1f} at the end): a random-weight "
             f"MobileNetV2-style CNN ({summary['params']} parameters, {p['plain']['layers']} layers), 2 calibration "
             f"batches of {args.batch} images at 32x32, {len(BITS)} round-to-nearest errors per layer, {args.probes} "
             f"trace probes; the two copies timed alternately in one process, {args.rounds} rounds (one weight seed).", "",
             f"- paths: plain {p['plain']['forward_layers']}/{p['plain']['layers']} layers by forward mode, traces "
             f"'{p['plain']['trace_estimator']}'; subclass {p['subclass']['forward_layers']}/{p['subclass']['layers']}, "
             f"traces '{p['subclass']['trace_estimator']}'.",
             f"- subclass / plain time, median of the per-round ratios (95% percentile-bootstrap CI of the median; "
             f"min-max): quadratic forms **{median['forms_s']:.2f}x** ({ci['forms_s'][0]:.2f}-{ci['forms_s'][1]:.2f}; "
             f"{spread['forms_s'][0]:.2f}-{spread['forms_s'][1]:.2f}), traces {median['traces_s']:.2f}x "
             f"({ci['traces_s'][0]:.2f}-{ci['traces_s'][1]:.2f}; {spread['traces_s'][0]:.2f}-{spread['traces_s'][1]:.2f}), "
             f"both **{median['total_s']:.2f}x** ({ci['total_s'][0]:.2f}-{ci['total_s'][1]:.2f}; "
             f"{spread['total_s'][0]:.2f}-{spread['total_s'][1]:.2f}).",
             f"- largest relative difference between the copies: forms {summary['max_rel_diff_forms']:.1e}, traces "
             f"{summary['max_rel_diff_traces']:.1e}.", "",
             "| round | plain s | subclass s | ratio |", "|---|---|---|---|"]
    lines += [f"| {i} | {r['plain']['total_s']:.1f} | {r['subclass']['total_s']:.1f} | "
              f"{r['subclass']['total_s'] / r['plain']['total_s']:.2f} |" for i, r in enumerate(summary["rounds_s"])]
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
