"""The shipped artefact of a plan, checked against its prediction (issue 15's measurement).

Solves a model's problem at an average-bits budget with dp, writes the artefact (cetopt.artifact), and
prints the size on disk next to the predicted packed size (cetopt.quant.pack), then loads it back and
compares the outputs with a fake-quantised copy built independently with ``fake_quantize`` (as the
builder's candidates are). Torch threads: 1.

    python benchmarks/artifact_size.py problems/mobilenetv2/mobilenetv2-cet-avg4.json --model mobilenetv2
    python benchmarks/artifact_size.py --build --model mobilenetv2      # build_for(spec, budget=4 bits) first
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from collections import Counter


def main() -> None:
    import torch

    torch.set_num_threads(1)
    from cetopt import Budget, load_model_spec, load_problem, solve
    from cetopt.artifact import evaluate_artifact, load_compressed, write_artifact
    from cetopt.quant.plan import plan_from_result
    from cetopt.quant.quantizers import QuantizerSpec, fake_quantize

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", nargs="?", help="a problem file of the model (or --build)")
    parser.add_argument("--model", required=True, help="the model target the problem was built on")
    parser.add_argument("--build", action="store_true", help="build the problem with build_for (curvature cached)")
    parser.add_argument("--avg-bits", type=float, default=4.0)
    parser.add_argument("--out", help="artefact directory (default: a temporary one)")
    args = parser.parse_args()
    spec = load_model_spec(args.model)
    if args.build:
        from cetopt.workflow import build_for

        problem = build_for(spec, budget=Budget(avg_bits=args.avg_bits), target=args.model).problem
    else:
        problem = load_problem(args.problem).with_budget(Budget(avg_bits=args.avg_bits))
    modules = dict(spec.model.named_modules())
    if any((modules[l.name].weight.shape[0], modules[l.name].weight[0].numel()) != tuple(l.shape) for l in problem.layers):
        raise SystemExit("the problem's layers do not match the model")
    result = solve(problem, "dp")
    plan = plan_from_result(problem, result, model=args.model)
    out = args.out or tempfile.mkdtemp()
    info = write_artifact(spec, plan, out, target=args.model)
    print(f"problem {problem.name} ({len(problem.layers)} layers; weights fingerprint recorded: "
          f"{str(problem.metadata.get('fingerprint_weights', 'none'))[:12]}); dp {result.status.value}, avg_bits "
          f"{result.avg_bits:.4f}, bits {sorted(Counter(plan.bits.values()).items())}")
    print(f"model.safetensors {info.file_bytes} B = codes {info.code_bytes} B + scales {info.scale_bytes} B + other "
          f"parameters {info.other_bytes} B (buffers {info.buffer_bytes} B) + container overhead {info.overhead_bytes} "
          f"B; predicted packed size {info.predicted_bytes} B; "
          f"file vs predicted {100 * (info.file_bytes / info.predicted_bytes - 1):+.3f}%")
    print(f"ratio vs FP32: packed {info.size.ratio:.3f}; weights at their bits only (the problem's size model) "
          f"{result.ratio:.3f}")
    loaded = load_compressed(out, spec).model
    fake = copy.deepcopy(spec.model)
    fm, lm = dict(fake.named_modules()), dict(loaded.named_modules())
    quantizer = QuantizerSpec(**problem.metadata["quantizer"])
    with torch.no_grad():
        for name, bits in plan.bits.items():
            fm[name].weight.copy_(fake_quantize(fm[name].weight, bits, quantizer))
        inputs = [b[0] for b in (*spec.calibration, *spec.validation)]
        diff = max(float((loaded(x) - fake(x)).abs().max()) for x in inputs)
        wdiff = max(float((lm[n].weight - fm[n].weight).abs().max()) for n in plan.bits)
    print(f"loaded vs fake-quantised: max |dW| {wdiff:.3e}, max |d output| {diff:.3e} over {len(inputs)} batches")
    print(json.dumps(evaluate_artifact(out, spec)))


if __name__ == "__main__":
    main()
