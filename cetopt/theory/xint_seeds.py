"""FP=xINT (arXiv 2412.06865) over seeds on the zoo's labelled test sets: one seed's measurements
(:func:`run_seed`: every (bits, K) expansion, the Abelian-group axioms, the granularity timings) and the per-model
verdicts with seed-level intervals (:func:`analyse`). benchmarks/fp_xint.py and ``cetopt prove MODEL --claims
xint`` both call these; the judges themselves are cetopt.theory.xint's.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from cetopt.errors import ProblemError

CONFIDENCE = 0.95
# the zoo classifiers whose labelled test split is known here (the split behind their spec's ``evaluate``)
LABELLED_TEST = ("digits-mlp", "digits-cnn", "mnist1d-resnet")


def zoo_test_split(name: str, seed: int) -> tuple[Any, Any]:
    """(inputs, int64 labels) of the labelled test set behind the zoo spec's ``evaluate`` (cetopt.zoo.specs):
    digits' stratified split of the seed, MNIST-1D's fixed one.

    Raises:
        ProblemError: ``name`` is not one of :data:`LABELLED_TEST`.
    """
    if name.startswith("digits-"):
        from cetopt.zoo.digits import digits_split

        split = digits_split(seed)
    elif name == "mnist1d-resnet":
        from cetopt.zoo.mnist1d_resnet import mnist1d_split

        split = mnist1d_split()
    else:
        raise ProblemError(f"{name}: FP=xINT's claims are tested on a labelled test set, known here only for the zoo "
                           f"classifiers {', '.join(LABELLED_TEST)}; choose one of them", field="--claims")
    return split.x_test, split.y_test


def run_seed(name: str, seed: int, bits: Sequence[int], terms: Sequence[int]) -> dict[str, Any]:
    """One zoo model and shipped seed: every (b, K) expansion measured on the labelled test set
    (cetopt.theory.xint.measure_expansions), the group axioms on the max(bits)-bit basis models' parameter tuples
    and the granularity timings, as JSON values.

    Raises:
        ProblemError: no labelled test split for ``name``; RuntimeError: the split no longer matches the spec's.
    """
    import torch

    from cetopt.quant.abelian import ADD, MUL, check_group_axioms
    from cetopt.quant.basis import expand_model
    from cetopt.theory.xint import measure_expansions
    from cetopt.zoo.registry import load_zoo

    x, y = zoo_test_split(name, seed)
    spec = load_zoo(name, seed=seed)
    start = time.perf_counter()
    (fp_acc, fp_loss), points = measure_expansions(spec.model, x, y, bits=bits, terms=terms, layers=spec.layers,
                                                    exclude=spec.exclude)
    zoo_acc = float(spec.evaluate(spec.model)["accuracy"])  # the split above is the spec's own test set
    if abs(zoo_acc - fp_acc) > 1e-6:
        raise RuntimeError(f"{name} seed {seed}: FP accuracy {fp_acc} here but {zoo_acc} in the zoo spec: the test "
                           "split drifted from cetopt.zoo.specs")
    e = expand_model(spec.model, max(bits), max(max(terms), 3), layers=spec.layers, exclude=spec.exclude)
    tuples = [e.additive_tuple(k) for k in range(e.terms)]
    units = [{n: torch.where(v == 0, torch.ones_like(v), v) for n, v in t.items()} for t in tuples]
    axioms = [check_group_axioms(op, ts) for op, ts in ((ADD, tuples), (MUL, units))]
    return {"model": name, "seed": seed, "fp_accuracy": fp_acc, "fp_loss": fp_loss, "n_test": int(len(y)),
            "weights": spec.metadata.get("weights"), "seconds": time.perf_counter() - start,
            "timing": time_granularities(spec.model, e, x), "points": [p.__dict__ for p in points],
            "axioms": [{"op": c.op, "errors": c.errors, "tolerance": c.tolerance, "failed": list(c.failed)}
                       for c in axioms]}


def time_granularities(model: Any, expansion: Any, x: Any, repeats: int = 5) -> dict[str, float]:
    """Median seconds of one test-set forward pass at each granularity, the calls interleaved (same process,
    same threads): (a) tensor, (b) layer (K basis layers batched by vmap), (c) the K basis models batched by vmap
    and (c) one basis model after another."""
    import torch

    from cetopt.quant.basis import layer_model, model_sum, tensor_model

    tensor, layer = tensor_model(model, expansion), layer_model(model, expansion)
    calls = {"tensor": lambda: tensor(x), "layer_batched": lambda: layer(x),
             "model_batched": lambda: model_sum(model, expansion, x),
             "model_sequential": lambda: model_sum(model, expansion, x, parallel=False)}
    seconds: dict[str, list[float]] = {k: [] for k in calls}
    with torch.no_grad():
        for f in calls.values():  # warm-up
            f()
        for _ in range(repeats):
            for k, f in calls.items():
                t = time.perf_counter()
                f()
                seconds[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in seconds.items()} | {"terms": expansion.terms,
                                                                    "bits": expansion.bits}


def _point(run: dict[str, Any], b: int, k: int) -> dict[str, Any]:
    return next(p for p in run["points"] if p["bits"] == b and p["terms"] == k)


def _values(rs: Sequence[dict[str, Any]], b: int, k: int, key: str) -> np.ndarray:
    """``key`` of the (b, K) point of each seed's run, shape (n_seeds,)."""
    return np.array([_point(r, b, k)[key] for r in rs], dtype=np.float64)


def _worst(verdicts: set[str]) -> str:
    """fail over partial over inconclusive over pass: a model passes when every part does."""
    return next((v for v in ("fail", "partial", "inconclusive") if v in verdicts), "pass")


def _convergence(rs: Sequence[dict[str, Any]], b: int, terms: Sequence[int], fp_acc: np.ndarray) -> dict[str, Any]:
    """Convergence at ``b`` bits: judge_convergence per seed, the errors and accuracy gaps per K."""
    from cetopt.stats import seed_summary
    from cetopt.theory.xint import judge_convergence

    seed_verdicts = [judge_convergence([_point(r, b, k)["max_rate"] for k in terms],
                                       [_point(r, b, k)["output_rel_error"] for k in terms])[0].value for r in rs]
    return {"verdict": _worst(set(seed_verdicts)), "seed_verdicts": seed_verdicts,
            "worst_rate": max(_point(r, b, k)["max_rate"] for r in rs for k in terms),
            "weight_rel_error": {k: float(_values(rs, b, k, "weight_rel_error").mean()) for k in terms},
            "output_rel_error": {k: float(_values(rs, b, k, "output_rel_error").mean()) for k in terms},
            "accuracy_minus_fp": {k: seed_summary(_values(rs, b, k, "accuracy") - fp_acc).__dict__ for k in terms},
            "max_abs_gap": {k: float(np.max(np.abs(_values(rs, b, k, "accuracy") - fp_acc))) for k in terms}}


def _table_row(rs: Sequence[dict[str, Any]], b: int, k: int, terms: Sequence[int], fp_acc: np.ndarray,
               fp_loss: np.ndarray) -> dict[str, Any]:
    """Accuracy, loss and errors of the K-term b-bit series over seeds."""
    from cetopt.stats import seed_summary

    acc, loss = _values(rs, b, k, "accuracy"), _values(rs, b, k, "loss")
    mean = {key: float(_values(rs, b, k, key).mean()) for key in ("weight_rel_error", "output_rel_error",
                                                                   "model_sum_rel_error", "model_sum_vs_first")}
    return {"bits": b, "terms": k, "bits_per_weight": b * k,
            "accuracy": seed_summary(acc).__dict__, "loss": seed_summary(loss).__dict__,
            "accuracy_minus_fp": seed_summary(acc - fp_acc).__dict__,
            "loss_minus_fp": seed_summary(loss - fp_loss).__dict__, **mean,
            "first_rel_error": float(_values(rs, b, 1, "output_rel_error").mean()) if 1 in terms else float("nan"),
            "model_sum_minus_tensor_accuracy": seed_summary(_values(rs, b, k, "model_sum_accuracy") - acc).__dict__}


def _equal_bits(rs: Sequence[dict[str, Any]], b: int, k: int) -> dict[str, Any] | None:
    """The K-term b-bit series against one plain term of K x b bits (None for K = 1 or above 16 bits)."""
    from cetopt.stats import paired_seed_ci

    plain = [_point(r, b, k)["plain_accuracy"] for r in rs]
    if k <= 1 or any(p is None for p in plain):
        return None
    acc, loss = _values(rs, b, k, "accuracy"), _values(rs, b, k, "loss")
    acc_ci, acc_v = paired_seed_ci(acc, np.array(plain), confidence=CONFIDENCE)
    loss_ci, loss_v = paired_seed_ci(loss, _values(rs, b, k, "plain_loss"), confidence=CONFIDENCE)
    return {"bits": b, "terms": k, "total_bits": b * k, "series_accuracy": float(acc.mean()),
            "plain_accuracy": float(np.mean(plain)), "accuracy_diff": acc_ci.__dict__, "accuracy_verdict": acc_v,
            "loss_diff": loss_ci.__dict__, "loss_verdict": loss_v}


def _above_fp(rs: Sequence[dict[str, Any]], terms: Sequence[int], fp_acc: np.ndarray, conf: float
              ) -> tuple[dict[int, dict[str, Any]], str]:
    """"4-bit above FP accuracy" per K at confidence ``conf``, and the model's verdict (pass if some K passes,
    fail if every K fails)."""
    from cetopt.theory.xint import judge_above_fp

    above = {}
    for k in terms:
        diffs = _values(rs, 4, k, "accuracy") - fp_acc
        v, s = judge_above_fp(diffs, confidence=conf)
        above[k] = {"verdict": v.value, "diff": s.__dict__, "seeds_above": int((diffs > 0).sum()),
                    "seeds_equal": int((diffs == 0).sum()), "per_seed": diffs.tolist()}
    vs = {a["verdict"] for a in above.values()}
    verdict = ("pass" if "pass" in vs else "fail" if vs == {"fail"} else "inconclusive") if vs else "inconclusive"
    return above, verdict


def _axioms(rs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    failed = sorted({f"{a['op']}: {x}" for r in rs for a in r["axioms"] for x in a["failed"]})
    worst = {op: max(max(a["errors"].values()) for r in rs for a in r["axioms"] if a["op"] == op)
             for op in ("AbelianAdd", "AbelianMul")}
    return {"verdict": "fail" if failed else "pass", "failed": failed, "worst_eps": worst}


def analyse_model(rs: Sequence[dict[str, Any]], bits: Sequence[int], terms: Sequence[int]) -> dict[str, Any]:
    """One model's verdicts and seed-level intervals from its per-seed runs (:func:`run_seed`), sorted by seed."""
    from cetopt.stats import seed_summary
    from cetopt.theory.xint import judge_granularity

    rs = sorted(rs, key=lambda r: r["seed"])
    fp_acc = np.array([r["fp_accuracy"] for r in rs])
    fp_loss = np.array([r["fp_loss"] for r in rs])
    convergence = {b: _convergence(rs, b, terms, fp_acc) for b in bits}
    table = [_table_row(rs, b, k, terms, fp_acc, fp_loss) for b in bits for k in terms]
    equal_bits = [e for b in bits for k in terms if (e := _equal_bits(rs, b, k)) is not None]
    conf = 1 - (1 - CONFIDENCE) / len(terms)  # Bonferroni over the K tried
    above, above_verdict = _above_fp(rs, terms, fp_acc, conf) if 4 in bits else ({}, "inconclusive")
    gran_v, gran_note = judge_granularity([p["layer_gap"] for r in rs for p in r["points"]],
                                          [p["parallel_gap"] for r in rs for p in r["points"]])
    timing = [r["timing"] for r in rs if "timing" in r]
    return {"seeds": [r["seed"] for r in rs], "n_test": rs[0]["n_test"], "weights": rs[0]["weights"],
            "fp_accuracy": seed_summary(fp_acc).__dict__, "fp_loss": seed_summary(fp_loss).__dict__,
            "table": table, "convergence": {str(b): c for b, c in convergence.items()},
            "convergence_verdict": _worst({c["verdict"] for c in convergence.values()}),
            "equal_bits": equal_bits, "above_fp": {str(k): a for k, a in above.items()},
            "above_fp_verdict": above_verdict, "above_fp_confidence": conf,
            "granularity": {"verdict": gran_v.value, "note": gran_note},
            "timing": ({k: float(np.median([t[k] for t in timing])) for k in timing[0]} if timing else None),
            "axioms": _axioms(rs)}


def analyse(runs: list[dict[str, Any]], bits: Sequence[int], terms: Sequence[int]) -> dict[str, Any]:
    """``{"models": {model: analyse_model(...)}}`` of the per-seed runs of one or more models."""
    models = list(dict.fromkeys(r["model"] for r in runs))
    return {"models": {m: analyse_model([r for r in runs if r["model"] == m], bits, terms) for m in models}}


# the model-level claims of FP=xINT, in the order the reports list them: (claim, verdict key of analyse_model)
CLAIMS = (("The expansion converges to the FP model (weights and outputs) as K grows", "convergence_verdict"),
          ("AbelianAdd / AbelianMul between isomorphic basis models form Abelian groups", "axioms"),
          ("Layer granularity = tensor granularity; the basis models run in parallel (batched) = their sequential "
           "sum", "granularity"),
          ("4-bit above FP accuracy without calibration or fine-tuning", "above_fp_verdict"))


def claim_verdicts(model: dict[str, Any]) -> list[str]:
    """The verdict of each of :data:`CLAIMS` in one model's analysis (:func:`analyse_model`)."""
    return [model[key]["verdict"] if isinstance(model[key], dict) else model[key] for _, key in CLAIMS]
