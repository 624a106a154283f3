"""Quadric geometry of each layer's error (numpy only): classification, axes, CET sensitivities."""

from cetopt.geometry.quadric import QuadricKind, classify, principal_coordinates
from cetopt.geometry.sensitivity import cet_sensitivity, hawq_sensitivity

__all__ = ["QuadricKind", "cet_sensitivity", "classify", "hawq_sensitivity", "principal_coordinates"]
