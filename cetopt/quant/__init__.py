"""Quantisers, plans and applying them to torch models."""
