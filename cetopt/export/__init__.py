"""Deployable files from a cetopt artefact: ONNX with integer weights and DequantizeLinear
(:mod:`cetopt.export.onnx_export`), run and measured in onnxruntime (:mod:`cetopt.export.onnx_eval`).

Needs the ``export`` extra (``pip install 'cetopt[export]'``: onnx and onnxruntime).
"""

from __future__ import annotations

from cetopt.export.onnx_export import OnnxExport, export_onnx

__all__ = ["OnnxExport", "export_onnx"]
