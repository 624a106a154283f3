"""Problems rebuilt from numbers that papers and their code published (no model or data needed).

``hawq_v3_resnet18`` is HAWQ-V3's ResNet-18 integer program (ILP.ipynb): per-layer sensitivity
Omega_i(b) = (Tr H_i / n_i) ||Q_b(W_i) - W_i||^2 at 4 and 8 bits, ties between each downsample conv and
the conv that reads the same input, and a size or BOPs limit set at all-INT4 + alpha (all-INT8 - all-INT4).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from cetopt.problem.model import AllocationProblem, Budget, Choice, Edge, EdgeKind, Layer


def _hawq_data() -> dict[str, Any]:
    return json.loads(resources.files("cetopt.data").joinpath("hawq_v3_resnet18.json").read_text())  # type: ignore[no-any-return]


def hawq_v3_resnet18(*, constraint: str = "size", alpha: float = 0.5) -> AllocationProblem:
    """HAWQ-V3's ResNet-18 4/8-bit problem with its published traces and weight deltas.

    Args:
        constraint: "size" or "bops", as in the notebook's two cells.
        alpha: the limit sits at all-INT4 + alpha x (all-INT8 - all-INT4) (the paper uses 0.25/0.5/0.75).
    """
    if constraint not in ("size", "bops"):
        raise ValueError(f"constraint must be 'size' or 'bops', got {constraint!r}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    data = _hawq_data()
    layers = []
    for i, name in enumerate(data["layer_names"]):
        trace = data["hutchinson_trace_per_param"][i]
        bops = data["bops_fp32"][i]
        layers.append(Layer(name=name, params=data["parameters"][i], choices=(
            Choice(bits=4, loss=trace * data["delta_weights_4bit_square"][i], bops=bops / 64),
            Choice(bits=8, loss=trace * data["delta_weights_8bit_square"][i], bops=bops / 16),
        )))
    names = data["layer_names"]
    ties = tuple((names[a], names[b]) for a, b in data["ties"])
    edges = tuple(Edge(names[a], names[b], EdgeKind.SHARES_INPUT) for a, b in data["ties"])
    if constraint == "size":
        budget = Budget(avg_bits=4 + 4 * alpha)
    else:
        low = sum(b / 64 for b in data["bops_fp32"])
        high = sum(b / 16 for b in data["bops_fp32"])
        budget = Budget(bops=low + alpha * (high - low))
    return AllocationProblem(
        name=f"hawq-v3-resnet18-{constraint}{alpha:g}", layers=tuple(layers), budget=budget, ties=ties, edges=edges,
        metadata={"source": data["source"], "notes": data["notes"], "constraint": constraint, "alpha": alpha,
                  "loss": "Omega_i(b) = (Tr H_i / n_i) * ||Q_b(W_i) - W_i||^2 (HAWQ-V3 sensitivity)"},
    )
