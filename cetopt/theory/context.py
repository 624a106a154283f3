"""What every numerical check needs about one zoo model: its curvature, each layer's quadric, a curvature
operator for exact products, the allocation problems, and fast measurements of perturbed weights."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from cetopt.builders.second_order import BuiltProblem
from cetopt.curvature.extract import CurvatureSettings, extract_curvature
from cetopt.curvature.operator import CurvatureOperator
from cetopt.curvature.result import CurvatureResult
from cetopt.geometry.layer import LayerQuadric
from cetopt.measure import Measurer
from cetopt.modelspec import ModelSpec
from cetopt.quant.quantizers import QuantizerSpec
from cetopt.workflow import build_for
from cetopt.problem.model import Budget

DEFAULT_BITS = (2, 3, 4, 5, 6, 8)


def _double(batch: Any) -> Any:
    """``batch`` with every floating tensor promoted to float64 (labels and other integers unchanged)."""
    if isinstance(batch, torch.Tensor):
        return batch.double() if batch.is_floating_point() else batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(_double(b) for b in batch)
    if isinstance(batch, dict):
        return {k: _double(v) for k, v in batch.items()}
    return batch


DENSE_MAX = 1200  # default: layers up to this many weights get their exact float64 Hessian block


@dataclass
class ProofContext:
    """One model's curvature and helpers shared by the checks.

    Attributes:
        task: the zoo task (model, calibration data, loss, evaluation).
        curvature: gradients, traces, eigenpairs of every quantisable layer.
        quadrics: layer -> LayerQuadric.
        operator: exact Hessian-vector products on the calibration data.
        bits: candidate bit-widths of the problems.
        settings: the curvature settings used.
        dense_max: layers with at most this many weights get their exact float64 Hessian block (n Hessian-vector
            products each) where a check wants one; 0 turns it off (for large inputs, where n products of the full
            model cost hours).
    """

    task: ModelSpec
    curvature: CurvatureResult
    quadrics: dict[str, LayerQuadric]
    operator: CurvatureOperator
    bits: tuple[int, ...] = DEFAULT_BITS
    settings: CurvatureSettings = field(default_factory=CurvatureSettings)
    dense_max: int = DENSE_MAX
    _measurer: Measurer | None = None
    _work64: torch.nn.Module | None = None
    _operator64: CurvatureOperator | None = None
    _base_loss64: float | None = None
    _built: dict[Any, BuiltProblem] = field(default_factory=dict)
    _forms: dict[str, Any] = field(default_factory=dict)  # quadratic forms shared by the builds of every method

    @classmethod
    def create(cls, task: ModelSpec, *, bits: Sequence[int] = DEFAULT_BITS,
               settings: CurvatureSettings | None = None, dense_max: int = DENSE_MAX) -> "ProofContext":
        """Extract (or load from cache) the task's curvature with k eigenpairs per end of each spectrum."""
        settings = settings or CurvatureSettings(k=16, lanczos_iterations=48)
        layers = task.quantisable_layers()
        curvature = extract_curvature(task.model, task.loss_fn, task.calibration, settings=settings, layers=layers,
                                      show_progress=False, description=task.name)
        operator = CurvatureOperator(task.model, task.loss_fn, task.calibration, layers=curvature.names,
                                     device=settings.device, dtype=settings.torch_dtype())
        quadrics = {layer.name: LayerQuadric.from_curvature(layer) for layer in curvature.layers}
        if dense_max < 0:
            raise ValueError(f"dense_max must be >= 0 (0 = never build a dense Hessian block), got {dense_max}")
        return cls(task=task, curvature=curvature, quadrics=quadrics, operator=operator, bits=tuple(bits),
                   settings=settings, dense_max=dense_max)

    # ------------------------------------------------------------------ problems
    def built(self, method: str = "cet", *, avg_bits: float | None = 3.0, **options: Any) -> BuiltProblem:
        """The task's problem for ``method`` (cached per arguments; the budget is changed cheaply).

        The candidates are on the plain max|w| grid (QuantizerSpec()) unless ``options`` names a ``quantizer``:
        the checks of the theory's claims measure round-to-nearest errors on that grid (fake_quantize), so their
        predictions must price the same errors. Check 8 judges the default pipeline and passes its grid."""
        options.setdefault("quantizer", QuantizerSpec())
        key = (method, method == "llc" and avg_bits is None, tuple(sorted(options.items())))
        if key not in self._built:
            budget = None if method == "llc" and avg_bits is None else Budget(avg_bits=avg_bits or 3.0)
            self._built[key] = build_for(self.task, bits=self.bits, method=method, budget=budget,
                                                  settings=self.settings, curvature=self.curvature,
                                                  forms_cache=self._forms, **options)
        built = self._built[key]
        if avg_bits is None:
            return built
        return BuiltProblem(problem=built.problem.with_budget(Budget(avg_bits=avg_bits)), weights=built.weights,
                            curvature=built.curvature)

    def built_problems(self) -> list[BuiltProblem]:
        """Every problem this context has built so far, in build order."""
        return list(self._built.values())

    # ------------------------------------------------------------------ measurements
    @property
    def weights(self) -> dict[str, torch.Tensor]:
        from cetopt.curvature.layers import layer_weight

        return {name: layer_weight(self.task.model, name).detach() for name in self.curvature.names}

    @property
    def measurer(self) -> Measurer:
        """The shared apply-and-measure path (cetopt.measure), one working copy of the model."""
        if self._measurer is None:
            self._measurer = Measurer(self.task)
        return self._measurer

    def _model_with(self, replaced: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        return self.measurer.model_with(replaced)

    def loss(self, replaced: Mapping[str, torch.Tensor] | None = None) -> float:
        """Mean calibration loss with some layers' weights replaced."""
        return self.measurer.calibration_loss(replaced)

    @property
    def base_loss(self) -> float:
        return self.measurer.calibration_loss()

    def dloss(self, replaced: Mapping[str, torch.Tensor]) -> float:
        """Measured change of the mean calibration loss."""
        return self.measurer.calibration_dloss(replaced)

    def metric(self, replaced: Mapping[str, torch.Tensor] | None = None) -> float:
        """The task's headline metric (accuracy, agreement or fidelity) with weights replaced."""
        return float(next(iter(self.task.metrics(self._model_with(replaced or {})).values())))

    def outcomes(self, replaced: Mapping[str, torch.Tensor] | None = None) -> np.ndarray | None:
        """Per-test-example outcomes with weights replaced, shape (n_test,), for paired confidence intervals;
        None when the spec offers none (ModelSpec.test_outcomes)."""
        if self.task.test_outcomes is None:
            return None
        return np.asarray(self.task.test_outcomes(self._model_with(replaced or {})), dtype=np.float64)

    def validation_metric(self, replaced: Mapping[str, torch.Tensor] | None = None) -> float:
        """The selection metric on the VALIDATION batches (never the test set): top-1 accuracy when the
        batches are (inputs, integer labels), else minus the mean validation loss."""
        if not self.task.validation:
            raise ValueError(f"{self.task.name}: the spec has no validation batches; selection needs them")
        model = self._model_with(replaced or {})
        with torch.no_grad():
            batches = list(self.task.validation)
            first = batches[0]
            if isinstance(first, (tuple, list)) and len(first) == 2 and isinstance(first[1], torch.Tensor) \
                    and not first[1].is_floating_point():
                correct = sum(int((model(x).argmax(dim=1) == y).sum()) for x, y in batches)
                return correct / sum(len(y) for _, y in batches)
            return -sum(float(self.task.loss_fn(model, b)) for b in batches) / len(batches)

    def packed_ratio(self, bits: Mapping[str, int]) -> float:
        """FP32 size / packed size of the whole model under ``bits`` (cetopt.quant.apply.apply_plan)."""
        from cetopt.quant.apply import apply_plan
        from cetopt.quant.plan import Plan

        return float(apply_plan(self.task.model, Plan(bits=dict(bits))).ratio)

    def perturbed(self, name: str, direction: np.ndarray, step: float) -> dict[str, torch.Tensor]:
        """Layer ``name``'s weight moved by ``step`` x ``direction`` (flattened layout)."""
        w = self.weights[name]
        delta = torch.from_numpy(np.asarray(direction, dtype=np.float64) * step).reshape(w.shape).to(w.dtype)
        return {name: w + delta}

    def directional_curvature(self, name: str, directions: np.ndarray) -> np.ndarray:
        """u'H_ll u for each row u of ``directions`` (exact, from Hessian-vector products).

        Computed as :func:`cetopt.curvature.quadratic.quadratic_forms` computes a problem's forms: from the
        layer's cached input or output on where the model traces (on MobileNetV2 a layer's 16 directions took
        minutes on the full graph), else on the full graph."""
        from cetopt.curvature.quadratic import quadratic_forms

        w = self.weights[name]
        block = torch.from_numpy(np.asarray(directions, dtype=np.float64)).reshape(-1, *w.shape).to(w)
        forms = quadratic_forms(self.operator, {name: list(block)}, show_progress=False)
        return np.asarray(forms.own[name], dtype=np.float64)

    # ------------------------------------------------------------------ float64 ground truth
    def dloss64(self, replaced: Mapping[str, torch.Tensor]) -> float:
        """Measured change of the mean calibration loss in float64 (model and inputs promoted): finite
        differences small enough to see curvatures far below float32's resolution of the loss."""
        if self._work64 is None:
            self._work64 = copy.deepcopy(self.task.model).double().eval()
        from cetopt.curvature.layers import layer_weight

        work = self._work64

        def loss() -> float:
            with torch.no_grad():
                return sum(float(self.task.loss_fn(self._work64, _double(b))) for b in self.task.calibration
                           ) / len(self.task.calibration)

        originals = self.weights
        if self._base_loss64 is None:
            for name in self.curvature.names:
                layer_weight(work, name).data.copy_(originals[name].double())
            self._base_loss64 = loss()
        for name in self.curvature.names:
            layer_weight(work, name).data.copy_(replaced.get(name, originals[name]).double())
        return loss() - self._base_loss64

    def perturbed64(self, name: str, direction: np.ndarray, step: float) -> dict[str, torch.Tensor]:
        """Layer ``name``'s weight in float64 moved by ``step`` x ``direction`` (for :meth:`dloss64`)."""
        w = self.weights[name].double()
        return {name: w + torch.from_numpy(np.asarray(direction, dtype=np.float64) * step).reshape(w.shape)}

    def dense_hessian(self, name: str, chunk: int = 64) -> np.ndarray:
        """Layer ``name``'s Hessian block H_ll, shape (n, n), in float64 from n Hessian-vector products
        (use for small layers only: cost n products, memory n^2 doubles)."""
        if self._operator64 is None:
            self._operator64 = CurvatureOperator(self.task.model, self.task.loss_fn,
                                                 [_double(b) for b in self.task.calibration],
                                                 layers=self.curvature.names, device=self.settings.device,
                                                 dtype=torch.float64)
        index = self.curvature.names.index(name)
        shape = tuple(self.weights[name].shape)
        n = int(np.prod(shape))
        rows = []
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            block = torch.zeros((stop - start, n), dtype=torch.float64)
            block[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            out = self._operator64.cross_block_hvp(index, index, block.reshape(-1, *shape))
            rows.append(out.reshape(stop - start, n).double().cpu().numpy())
        return np.concatenate(rows)

    def full_quadratic(self, errors: Mapping[str, torch.Tensor]) -> tuple[float, float]:
        """(g.d, d'Hd) for a whole-model error (every cross-layer block included), by one full product."""
        names = self.operator.names
        vectors = [errors.get(n, torch.zeros_like(p)).to(p) for n, p in zip(names, self.operator.params)]
        products = self.operator.hvp(vectors)
        quad = float(sum((v * hv).sum() for v, hv in zip(vectors, products)))
        linear = float(sum(float(np.asarray(self.curvature.layer(n).gradient) @ v.detach().double().cpu().numpy().ravel())
                           for n, v in zip(names, vectors)))
        return linear, quad
