"""One call from a torch model and calibration data to a CurvatureResult, cached on disk.

The cache key hashes the model's weights and buffers, the calibration tensors, the settings, the loss
function's name, the layer list and the cetopt version; a stored file whose key or checksum does not
match is recomputed, never trusted. Files are written atomically, so an interrupted run leaves the
cache as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from cetopt import distributed
from cetopt.curvature.deflation import deflated_traces
from cetopt.curvature.hutchinson import hutchinson_traces
from cetopt.curvature.lanczos import lanczos_eigenpairs
from cetopt.curvature.operator import Batch, CurvatureOperator, LossFn, check_finite
from cetopt.curvature.result import CacheError, CurvatureResult, LayerCurvature
from cetopt.errors import ProblemError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurvatureSettings:
    """How curvature is extracted.

    Attributes:
        max_probes, min_probes, probe_block, rtol: Hutchinson stopping rule and probes per backward pass
            (None: 1 on the CPU, 8 on CUDA; see hutchinson_traces).
        trace_mode: "shared" (one probe for all layers), "restricted" (a probe per layer, batched),
            "deflated" (restricted probes after deflating each layer's Lanczos Ritz vectors: runs Lanczos with
            k >= 8 first; cetopt.curvature.deflation), "output" (probes in output space, exact for
            piecewise-linear models only: cetopt.curvature.output_traces; refused elsewhere) or "auto"
            ("output" where it is exact, else "shared"; the log says which ran).
        k: eigenpairs at each end of every layer's spectrum (0 = skip Lanczos).
        lanczos_iterations: Krylov dimension per layer.
        fisher: also compute the empirical Fisher diagonal.
        seed: probes and Lanczos start vectors.
        device: "auto", "cpu", "cuda".
        dtype: "float32" or "float64".
    """

    max_probes: int = 128
    min_probes: int = 16
    probe_block: int | None = None
    rtol: float = 0.05
    trace_mode: str = "auto"  # output-space probes where exact: faster at equal error on the zoo's piecewise-linear
    # models (benchmarks/results/trace-output-space.md measures by how much), shared probes elsewhere
    k: int = 8
    lanczos_iterations: int = 32
    fisher: bool = False
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"

    def torch_dtype(self) -> torch.dtype:
        return {"float32": torch.float32, "float64": torch.float64}[self.dtype]


def _hash_tensor(digest: Any, tensor: torch.Tensor) -> None:
    digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
    digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())


def _hash_batch(digest: Any, batch: Batch) -> None:
    if isinstance(batch, torch.Tensor):
        _hash_tensor(digest, batch)
    elif isinstance(batch, dict):
        for key in sorted(batch):
            digest.update(str(key).encode())
            _hash_batch(digest, batch[key])
    elif isinstance(batch, (list, tuple)):
        for item in batch:
            _hash_batch(digest, item)
    else:
        digest.update(repr(batch).encode())


def cache_key(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], settings: CurvatureSettings,
              layers: Sequence[str] | None) -> str:
    """A hex digest of everything the result depends on."""
    from cetopt._versions import __version__

    digest = hashlib.sha256()
    digest.update(json.dumps({"settings": asdict(settings), "layers": list(layers) if layers else None,
                              "loss_fn": f"{getattr(loss_fn, '__module__', '')}.{getattr(loss_fn, '__qualname__', repr(loss_fn))}",
                              "version": __version__}, sort_keys=True).encode())
    for name, tensor in list(model.state_dict().items()):
        digest.update(name.encode())
        _hash_tensor(digest, tensor)
    for batch in batches:
        _hash_batch(digest, batch)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("CETOPT_CACHE_DIR", Path.home() / ".cache" / "cetopt")) / "curvature"


def extract_curvature(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], *,
                      settings: CurvatureSettings | None = None, layers: Sequence[str] | None = None,
                      cache_dir: str | os.PathLike[str] | None | bool = None, show_progress: bool = True,
                      description: str = "") -> CurvatureResult:
    """Gradients, Hutchinson traces and Lanczos eigenpairs for every quantisable layer.

    Args:
        model: the network (left unchanged).
        loss_fn: ``loss_fn(model, batch) -> scalar``; the calibration loss is its mean over ``batches``.
        batches: calibration batches.
        settings: extraction settings (defaults: CurvatureSettings()).
        layers: which layers (default: every Linear/Conv/Embedding; a ModelSpec's ``quantisable_layers()`` leaves
            its excluded ones out). The cache key records them.
        cache_dir: where to cache (None = ``$CETOPT_CACHE_DIR`` or ~/.cache/cetopt; False = no cache).
        description: free text stored in the result's metadata (model and data names).
    """
    settings = settings or CurvatureSettings()
    batches = list(batches)
    key = path = None
    if cache_dir is not False:
        key = cache_key(model, loss_fn, batches, settings, layers)
        path = Path(cache_dir if cache_dir not in (None, True) else default_cache_dir()) / f"{key}.npz"
        cached = _cached(path, key)
        # under torch.distributed every rank must take the same branch (the computation all-reduces)
        if distributed.all_reduce_numpy(np.array([cached is None]))[0] == 0:
            return cached  # type: ignore[return-value]
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    operator = CurvatureOperator(model, loss_fn, batches, layers=layers, device=settings.device,
                                 dtype=settings.torch_dtype())
    loss, gradient = operator.loss_and_gradient(show_progress=show_progress)
    for name, g in zip(operator.names, gradient):
        check_finite(name, "gradient", g)
    seconds["gradient"] = time.perf_counter() - start
    traces, eig, estimator, trace_fallback = _traces_and_eigenpairs(operator, settings, show_progress, seconds)
    fisher = [None] * len(traces)
    if settings.fisher:
        from cetopt.curvature.signals import fisher_diagonal

        mark = time.perf_counter()
        fisher = [f.detach().double().cpu().numpy().ravel() for f in fisher_diagonal(operator)]
        seconds["fisher"] = time.perf_counter() - mark
    operator.release()
    seconds["total"] = time.perf_counter() - start
    result_layers = tuple(
        LayerCurvature(name=name, shape=tuple(p.shape), gradient=g.detach().double().cpu().numpy().ravel(),
                       trace=t.trace, trace_stderr=t.stderr, n_probes=t.n_probes, eig=e, fisher_diagonal=f)
        for name, p, g, t, e, f in zip(operator.names, operator.params, gradient, traces, eig, fisher))
    result = CurvatureResult(
        layers=result_layers, loss=loss, settings=asdict(settings), seconds=seconds, device=str(operator.device),
        metadata={"description": description, "cache_key": key, "hvp_count": operator.hvp_count,
                  "versions": {"torch": torch.__version__, "numpy": np.__version__},
                  "ranks": distributed.world_size(), "trace_estimator": estimator,
                  "trace_fallback": trace_fallback},
    )
    if path is not None and distributed.is_rank_zero():
        result.save(path)
    return result


def _traces_and_eigenpairs(operator: CurvatureOperator, settings: CurvatureSettings, show_progress: bool,
                           seconds: dict[str, float]) -> tuple[list, list, str, str | None]:
    """Hutchinson traces (``settings.trace_mode``), Lanczos eigenpairs (k per end; None per layer when k=0), the
    trace estimator that ran ("output", "shared", "restricted" or "deflated") and, when "auto" could not take
    output-space probes, why (the node or module that makes them inexact).

    "deflated" runs Lanczos first (k = max(settings.k, 8)) and deflates the traces with its Ritz vectors.
    """
    eig: list = [None] * len(operator.params)
    k = max(settings.k, 8) if settings.trace_mode == "deflated" else settings.k
    if k > 0:
        mark = time.perf_counter()
        eig = lanczos_eigenpairs(operator, k=k, iterations=settings.lanczos_iterations, seed=settings.seed,
                                 show_progress=show_progress)
        seconds["lanczos"] = time.perf_counter() - mark
    mark = time.perf_counter()
    estimator, problem = settings.trace_mode, None
    if estimator in ("output", "auto"):
        from cetopt.curvature.output_traces import exactness_problem, output_space_traces

        problem = exactness_problem(operator)
        if problem is not None and estimator == "output":
            raise ProblemError(f"trace_mode 'output' is exact only for piecewise-linear models: {problem}; use "
                               "'shared' or 'auto'", field="trace_mode")
        estimator = "output" if problem is None else "shared"
        log.info("traces: %s", "output-space probes" if problem is None else f"shared probes ({problem})")
    if estimator == "output":
        traces = output_space_traces(operator, max_probes=settings.max_probes, min_probes=settings.min_probes,
                                     rtol=settings.rtol, seed=settings.seed, show_progress=show_progress, check=False)
    elif estimator == "deflated":
        traces = deflated_traces(operator, eig, max_probes=settings.max_probes, min_probes=settings.min_probes,
                                 rtol=settings.rtol, seed=settings.seed, show_progress=show_progress)
    else:
        traces = hutchinson_traces(operator, max_probes=settings.max_probes, min_probes=settings.min_probes,
                                   block=settings.probe_block, rtol=settings.rtol, seed=settings.seed,
                                   show_progress=show_progress, mode=estimator)
    seconds["hutchinson"] = time.perf_counter() - mark
    return traces, eig, estimator, problem


def _cached(path: Path, key: str) -> CurvatureResult | None:
    """The stored result at ``path`` if it exists, loads and carries ``key``; None otherwise."""
    if not path.exists():
        return None
    try:
        cached = CurvatureResult.load(path)
    except CacheError as err:
        log.warning("%s; recomputing", err)
        return None
    if cached.metadata.get("cache_key") == key:
        log.info("curvature cache hit %s", path)
        return cached
    log.warning("curvature cache %s has another key; recomputing", path)
    return None
