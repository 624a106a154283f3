"""Quadric geometry of each layer's error (numpy only): classification, axes, subspaces, CET sensitivities."""

from cetopt.geometry.layer import LayerQuadric
from cetopt.geometry.quadric import QuadricKind, classify, principal_coordinates
from cetopt.geometry.sensitivity import cet_sensitivity, hawq_sensitivity

__all__ = ["LayerQuadric", "QuadricKind", "cet_sensitivity", "classify", "hawq_sensitivity", "principal_coordinates"]
