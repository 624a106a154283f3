"""The end-to-end job on a zoo model: train or load, extract curvature, build the problem, solve it with
every backend, apply each plan, and measure what it does (``cetopt demo``, ``make demo``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import nn

from cetopt.problem.model import AllocationProblem, Budget

if TYPE_CHECKING:
    from cetopt.builders.second_order import BuiltProblem

ZOO_MODELS = ("digits-cnn", "digits-mlp", "mnist1d-resnet", "mobilenetv2", "minilm")


def ce_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of a classifier on an (inputs, labels) batch."""
    inputs, labels = batch
    return nn.functional.cross_entropy(model(inputs), labels)


@dataclass(frozen=True)
class ZooTask:
    """A trained zoo model with its calibration data, loss and evaluation.

    Attributes:
        calibration: batches for curvature; ``loss_fn(model, batch)`` is the calibration loss.
        evaluate: ``evaluate(model) -> {metric: value, ...}``; its first key is the headline metric:
            test accuracy (digits, MNIST-1D), top-1 agreement with FP32 (MobileNetV2: no ImageNet data
            offline), or mean cosine to the FP32 embeddings (MiniLM).
        exclude: layers left out of the problem (MiniLM's pooler, unused by mean pooling).
    """

    name: str
    model: nn.Module
    calibration: list[Any]
    loss_fn: Callable[[nn.Module, Any], torch.Tensor]
    evaluate: Callable[[nn.Module], dict[str, float]]
    data: str = ""
    exclude: tuple[str, ...] = ()


def load_task(name: str, *, calibration_size: int = 256, batch_size: int = 128, seed: int = 0) -> ZooTask:
    """A zoo model (trained and cached on first use) with ``calibration_size`` calibration examples."""
    from cetopt.zoo.digits import accuracy, digits_split, trained_digits_model

    if name not in ZOO_MODELS:
        raise KeyError(f"unknown zoo model {name!r}; available: {', '.join(ZOO_MODELS)}")
    if name == "mobilenetv2":
        from cetopt.zoo.mobilenet import fidelity, load_mobilenet_v2, sample_crops

        model = load_mobilenet_v2()
        calibration_size = min(calibration_size, 32)  # 224x224 double-backward graphs: keep memory ~1 GB
        batch_size = min(batch_size, 16)
        images = sample_crops(count=calibration_size + 32, seed=seed)
        with torch.no_grad():
            labels = model(images).argmax(dim=1)  # pseudo-labels: the FP32 model's own top-1
        calib_x, calib_y = images[:calibration_size], labels[:calibration_size]
        batches = [(calib_x[i:i + batch_size], calib_y[i:i + batch_size]) for i in range(0, len(calib_y), batch_size)]
        held_out = images[calibration_size:]
        return ZooTask(name, model, batches, ce_loss, lambda m: fidelity(model, m, held_out),
                       data=f"{calibration_size} crops of scikit-learn's sample photos, FP32 top-1 as labels")
    if name == "minilm":
        from cetopt.zoo.minilm import (distillation_batches, distillation_loss, embedding_fidelity, load_minilm,
                                       text_pairs)

        model, tokenizer = load_minilm()
        sentences = [s for pair in text_pairs() for s in pair]
        return ZooTask(name, model, distillation_batches(model, tokenizer, sentences), distillation_loss,
                       lambda m: embedding_fidelity(model, m, tokenizer, sentences),
                       data="64 shipped sentences (cetopt/data/minilm_pairs.tsv), 1 - cosine to FP32 embeddings",
                       exclude=("bert.pooler.dense",))
    if name == "mnist1d-resnet":
        from cetopt.zoo.mnist1d_resnet import mnist1d_split, trained_mnist1d_resnet

        model, split, data = trained_mnist1d_resnet(seed=seed), mnist1d_split(), "MNIST-1D (generated offline)"
    else:
        model, split, data = trained_digits_model(name, seed=seed), digits_split(seed), "sklearn digits"
    x, y = split.x_train[:calibration_size], split.y_train[:calibration_size]
    batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]

    def evaluate(m: nn.Module) -> dict[str, float]:
        return {"accuracy": accuracy(m, split.x_test, split.y_test)}

    return ZooTask(name, model, batches, ce_loss, evaluate, data=f"{data}, first {calibration_size} training examples")


def build_task_problem(task: ZooTask, *, bits: Sequence[int] = (2, 3, 4, 6, 8), method: str = "cet",
                       budget: Budget | None = None, **options: Any) -> "BuiltProblem":
    """The task's allocation problem and candidate weights (``options`` go to cetopt.builders.build:
    rounding, interactions, layer_eps, settings, curvature, max_loss...)."""
    from cetopt import __version__
    from cetopt.builders.second_order import build

    layers = None
    if task.exclude:
        from cetopt.curvature.layers import find_layers

        layers = [r.name for r in find_layers(task.model, exclude=task.exclude)]
    if budget is None and method != "llc":
        budget = Budget(avg_bits=3.0)
    suffix = "" if options.get("rounding", "nearest") == "nearest" else f"-{options['rounding']}"
    return build(task.model, task.loss_fn, task.calibration, name=f"{task.name}-{method}{suffix}", bits=bits,
                 method=method, budget=budget, layers=layers,
                 metadata={"model": task.name, "data": task.data, "seed": 0, "cetopt_version": __version__}, **options)


def extract_problem(task: ZooTask, *, bits: Sequence[int] = (2, 3, 4, 6, 8), method: str = "cet",
                    budget: Budget | None = None, **options: Any) -> AllocationProblem:
    """The task's allocation problem (provenance in metadata)."""
    return build_task_problem(task, bits=bits, method=method, budget=budget, **options).problem


def _calibration_loss(task: ZooTask, model: nn.Module) -> float:
    with torch.no_grad():
        return sum(float(task.loss_fn(model, b)) for b in task.calibration) / len(task.calibration)


def measure_model(task: ZooTask, model: nn.Module) -> dict[str, Any]:
    """The task's metrics of ``model`` and its calibration loss change vs the task's FP model."""
    metrics = task.evaluate(model)
    return {"metric": next(iter(metrics.values())), **metrics,
            "measured_dloss": _calibration_loss(task, model) - _calibration_loss(task, task.model)}


def measure(task: ZooTask, bits: dict[str, int]) -> dict[str, Any]:
    """Apply a round-to-nearest plan: the task's metrics, the calibration loss change and the packed size
    ratio vs FP32."""
    from cetopt.quant.plan import Plan, apply_plan

    applied = apply_plan(task.model, Plan(bits=bits, model=task.name))
    return {**measure_model(task, applied.model), "packed_ratio": applied.ratio}


def per_layer_check(task: ZooTask, problem: AllocationProblem, bits: dict[str, int]) -> list[dict[str, Any]]:
    """For each layer alone at its planned bit-width: the predicted loss change (the problem's choice loss)
    next to the measured change of the mean calibration loss; a last row for the whole plan."""
    from cetopt.problem.evaluate import choices_from_bits, evaluate

    rows = []
    for layer in problem.layers:
        choice = next(c for c in layer.choices if c.bits == bits[layer.name])
        measured = measure(task, {layer.name: bits[layer.name]})["measured_dloss"]
        rows.append({"layer": layer.name, "bits": choice.bits, "predicted": choice.loss, "measured": measured})
    whole = evaluate(problem, choices_from_bits(problem, bits)).loss
    rows.append({"layer": "(whole plan)", "bits": None, "predicted": whole,
                 "measured": measure(task, bits)["measured_dloss"]})
    return rows


def run_demo(name: str = "digits-cnn", *, avg_bits: float = 3.0, solvers: Sequence[str] | None = None) -> str:
    """The demo table as text."""
    from cetopt.solvers.api import solve
    from cetopt.solvers.registry import available_solvers
    from cetopt.tables import format_table
    task = load_task(name)
    fp_metrics = task.evaluate(task.model)
    metric_name, fp_accuracy = next(iter(fp_metrics.items()))
    problem = extract_problem(task, budget=Budget(avg_bits=avg_bits))
    names = solvers or [s.name for s in available_solvers() if s.installed and s.name != "bruteforce"]
    rows = []
    for solver in names:
        result = solve(problem, solver, time_limit=60)
        if not result.success:
            rows.append([f"cet/{solver}", result.status.value] + ["-"] * 7)
            continue
        m = measure(task, dict(result.bits))
        rows.append([f"cet/{solver}", result.status.value, f"{result.avg_bits:.3f}", f"{m['packed_ratio']:.2f}",
                     f"{result.objective:.5f}", "-" if result.gap is None else f"{result.gap:.1e}",
                     f"{m['measured_dloss']:.5f}", f"{m['metric']:.4f}", f"{m['metric'] - fp_accuracy:+.4f}"])
    hawq = extract_problem(task, method="hawq-v3", budget=Budget(avg_bits=avg_bits))
    baselines = {"hawq-v3/dp": dict(solve(hawq, "dp").bits)}
    uniform = max(b for b in (2, 3, 4, 6, 8) if b <= avg_bits)
    baselines[f"uniform {uniform}-bit"] = {layer.name: uniform for layer in problem.layers}
    for label, bits in baselines.items():
        choices = {layer.name: [c.bits for c in layer.choices].index(bits[layer.name]) for layer in problem.layers}
        from cetopt.problem.evaluate import evaluate

        score = evaluate(problem, choices)
        m = measure(task, bits)
        rows.append([label, "baseline", f"{score.avg_bits:.3f}", f"{m['packed_ratio']:.2f}", f"{score.objective:.5f}",
                     "-", f"{m['measured_dloss']:.5f}", f"{m['metric']:.4f}", f"{m['metric'] - fp_accuracy:+.4f}"])
    dp_bits = dict(solve(problem, "dp").bits)
    check = per_layer_check(task, problem, dp_bits)
    check_table = format_table(["layer", "bits", "predicted_dL", "measured_dL"],
                               [[r["layer"], r["bits"] or "", f"{r['predicted']:.6f}", f"{r['measured']:.6f}"]
                                for r in check])
    header = (f"{name}: metric = {metric_name} (FP32 {fp_accuracy:.4f}); {len(problem.layers)} layers; budget {avg_bits} avg bits; "
              f"predicted dL = g.d + 1/2 d'Hd (exact quadratic forms)")
    table = format_table(["plan", "status", "avg_bits", "packed_ratio", "predicted_dL", "gap", "measured_dL",
                          metric_name, "vs_FP"], rows)
    return (header + "\n" + table + "\n\nPredicted vs measured loss change of the dp plan, layer by layer (each "
            "layer quantised alone) and whole:\n" + check_table)
