"""What dominates each cost model's prices on the zoo models: each signal's ablation effect on the costs of the
problem ``cetopt extract`` builds (the default grid and candidate widths, zoo seed 0), read from the problem's own
``cost_signal_effects`` (cetopt.costmodels.dominance). One build per model and cost model; no sampling, so no CI
(the signals of one calibration set are measured once).

Writes ``benchmarks/results/cost-dominance.{json,md}``::

    OMP_NUM_THREADS=2 python benchmarks/cost_dominance.py [--models digits-mlp,...] [--methods cet-upper,cet,...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

MODELS = ("digits-mlp", "digits-cnn", "mnist1d-resnet")
METHODS = ("cet-upper", "cet", "cet-shrink")
OUT = Path(__file__).resolve().parent / "results" / "cost-dominance"


def effects_of(model: str, methods: Sequence[str]) -> dict[str, Any]:
    """Cost model -> its signal effects on ``model``'s default problem, and the build seconds."""
    from cetopt.modelspec import load_model_spec
    from cetopt.workflow import build_for

    spec = load_model_spec(model)
    out: dict[str, Any] = {"data": spec.data, "methods": {}}
    for method in methods:
        start = time.perf_counter()
        built = build_for(spec, method=method)
        out["methods"][method] = {"effects": dict(built.problem.metadata["cost_signal_effects"]),
                                  "layers": len(built.problem.layers), "seconds": time.perf_counter() - start}
        print(f"{model} {method}: {out['methods'][method]['effects']}", flush=True)
    return out


def markdown(data: dict[str, Any]) -> str:
    from cetopt.costmodels.dominance import describe_effects
    from cetopt.tables import markdown_table

    rows = [[model, method, str(entry["layers"]), describe_effects(entry["effects"])]
            for model, res in data["models"].items() for method, entry in res["methods"].items()]
    return "\n".join([
        "# What dominates each cost model's prices", "",
        f"`{data['command']}`; generated, do not edit (torch threads {data['threads']}). Each signal's effect: how "
        "much setting it to zero moves the problem's prices, as a share of their total size over every candidate "
        "(cetopt.costmodels.dominance). One calibration set per model (zoo seed 0), the default grid and widths.", "",
        markdown_table(["model", "cost model", "layers", "signal effects"], rows), ""])


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from cetopt._atomic import atomic_write_text
    from cetopt.results.provenance import record_for

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    data: dict[str, Any] = {"command": "python benchmarks/cost_dominance.py" + "".join(" " + a for a in (argv or [])),
                            "threads": args.threads, "models": {}}
    for model in [m for m in args.models.split(",") if m]:
        data["models"][model] = effects_of(model, methods)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data["code_version"] = record_for(out.with_suffix(".json").resolve(), "benchmarks/cost_dominance.py")
    atomic_write_text(out.with_suffix(".json"), json.dumps(data, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(data))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
