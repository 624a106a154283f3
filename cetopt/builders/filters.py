"""Which candidates a layer may take: LLC's lossless neighbourhood, CET's error subspace E_l(eps), and tied
layers (residual adds) agreeing on one bit-width."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from cetopt.builders.candidates import LayerCandidates
from cetopt.costmodels.base import CostModel, LayerSignals

Level = tuple  # a Choice.level: (bits, rank, terms)


def _fallback(cand: LayerCandidates, costs: np.ndarray, layer_eps: float | None) -> int:
    """The candidate kept when none is admissible: the least costly under layer_eps, else the most precise."""
    if layer_eps is not None:
        return int(np.argmin(costs))
    return int(np.argmax([c.bits * c.terms if c.rank is None else -1 for c in cand.choices]))


def admissible_levels(candidates: Sequence[LayerCandidates], signals: Mapping[str, LayerSignals],
                      costs: Mapping[str, np.ndarray], model: CostModel, layer_eps: float | None
                      ) -> tuple[dict[str, set[Level]], dict[str, Level]]:
    """Per layer, the admissible choice levels and the fallback level (kept when nothing is admissible)."""
    admissible: dict[str, set[Level]] = {}
    fallback: dict[str, Level] = {}
    for cand in candidates:
        keep = np.ones(len(cand.choices), dtype=bool)
        if model.lossless:
            keep &= np.sqrt(signals[cand.name].energy) <= signals[cand.name].require("lossless_radius")
        if layer_eps is not None:
            keep &= costs[cand.name] <= layer_eps
        admissible[cand.name] = {cand.choices[i].level for i in np.flatnonzero(keep)}
        fallback[cand.name] = cand.choices[_fallback(cand, costs[cand.name], layer_eps)].level
    return admissible, fallback


def apply_ties(candidates: Sequence[LayerCandidates], ties: Sequence[Sequence[str]],
               admissible: dict[str, set[Level]], fallback: Mapping[str, Level], *, least_costly: bool) -> None:
    """Tied layers keep the bit-widths every member admits (in place); when none is shared, the fallback
    bit-width (the most precise one, or the least costly under layer_eps) is added to every member."""
    by_name = {c.name: c for c in candidates}
    for tie in ties:
        common = set.intersection(*({level[0] for level in admissible[n]} for n in tie))
        if not common:
            pick = (min if least_costly else max)(fallback[n][0] for n in tie)
            common = {pick}
            for n in tie:
                admissible[n] = admissible[n] | {c.level for c in by_name[n].choices if c.bits == pick}
        for n in tie:
            admissible[n] = {level for level in admissible[n] if level[0] in common}


def kept_indices(cand: LayerCandidates, admissible: set[Level], fallback: Level) -> np.ndarray:
    """Indices of ``cand``'s choices that stay in the problem."""
    allowed = admissible or {fallback}
    return np.array([i for i, c in enumerate(cand.choices) if c.level in allowed], dtype=np.int64)


def select_candidates(candidates: Sequence[LayerCandidates], signals: Mapping[str, LayerSignals],
                      costs: Mapping[str, np.ndarray], model: CostModel, layer_eps: float | None,
                      ties: Sequence[Sequence[str]]) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Per layer, the indices of the choices kept in the problem, and the labels of those removed."""
    admissible, fallback = admissible_levels(candidates, signals, costs, model, layer_eps)
    apply_ties(candidates, ties, admissible, fallback, least_costly=layer_eps is not None)
    kept = {c.name: kept_indices(c, admissible[c.name], fallback[c.name]) for c in candidates}
    removed = {c.name: [ch.label for i, ch in enumerate(c.choices) if i not in set(kept[c.name])]
               for c in candidates if len(kept[c.name]) < len(c.choices)}
    return kept, removed
