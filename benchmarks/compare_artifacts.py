"""Test metric of two artefacts of one model, paired over the same test examples (issue 37: a searched plan
against the plan selection would otherwise ship). CIs by the spec's source clusters (photos) when it has them
(``ModelSpec.paired_ci``). Prints one line and, with ``--out``, writes it as JSON::

    python benchmarks/compare_artifacts.py mobilenetv2 DIR_A DIR_B --objective fidelity --out result.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("a", type=Path, help="artefact directory (cetopt apply)")
    parser.add_argument("b", type=Path, help="artefact directory to compare against")
    parser.add_argument("--objective", choices=("task", "fidelity"), default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch

    from cetopt._atomic import atomic_write_text
    from cetopt.artifact import load_compressed
    from cetopt.modelspec import load_model_spec

    torch.set_num_threads(args.threads)
    spec = load_model_spec(args.model, objective=args.objective)
    if spec.test_outcomes is None:
        raise SystemExit(f"{args.model} has no per-example test outcomes to compare")
    a, b = (np.asarray(spec.test_outcomes(load_compressed(d, spec).model), dtype=np.float64) for d in (args.a, args.b))
    ci = spec.paired_ci(a, b)
    result = {"model": args.model, "a": str(args.a), "b": str(args.b), "mean_a": float(a.mean()),
              "mean_b": float(b.mean()), "diff": ci.estimate, "low": ci.low, "high": ci.high,
              "examples": int(a.size), "clusters": None if spec.test_clusters is None else len(set(spec.test_clusters))}
    print(f"{args.a} {a.mean():.4f} vs {args.b} {b.mean():.4f}: {ci.estimate:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}] "
          f"(paired 95% CI over {a.size} test examples" + (f", {result['clusters']} clusters)" if result["clusters"]
                                                              else ")"))
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
