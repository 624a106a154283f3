"""Curvature extraction (torch): per-layer gradients, Hutchinson traces, Lanczos eigenpairs, exact
quadratic forms, Fisher and Gauss-Newton alternatives; CPU always, CUDA when present."""

from cetopt.curvature.allocator import keep_freed_memory
from cetopt.curvature.deflation import deflated_traces
from cetopt.curvature.extract import CurvatureSettings, cache_key, extract_curvature
from cetopt.curvature.hutchinson import TraceEstimate, hutchinson_traces
from cetopt.curvature.lanczos import Eigenpairs, lanczos_eigenpairs
from cetopt.curvature.layers import LayerRef, find_layers
from cetopt.curvature.operator import CurvatureError, CurvatureOperator, resolve_device
from cetopt.curvature.quadratic import QuadraticForms, quadratic_forms
from cetopt.curvature.result import CacheError, CurvatureResult, LayerCurvature

__all__ = [
    "CacheError", "CurvatureError", "CurvatureOperator", "CurvatureResult", "CurvatureSettings", "Eigenpairs",
    "LayerCurvature", "LayerRef", "QuadraticForms", "TraceEstimate", "cache_key", "deflated_traces", "extract_curvature",
    "find_layers", "hutchinson_traces", "keep_freed_memory", "lanczos_eigenpairs", "quadratic_forms", "resolve_device",
]
