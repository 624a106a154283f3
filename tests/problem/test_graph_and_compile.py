from __future__ import annotations

import numpy as np
import pytest

from cetopt import AllocationProblem, Budget, Choice, Edge, Layer, ProblemError, compile_problem
from cetopt.problem.graph import adjacent_pairs, layer_graph, tie_groups


def _layers(*names: str) -> tuple[Layer, ...]:
    return tuple(Layer(n, 10, (Choice(4, 1.0), Choice(8, 0.0))) for n in names)


def test_graph_derives_ties_and_interacting_pairs() -> None:
    problem = AllocationProblem(
        "g", _layers("conv1", "conv2", "down", "fc"), Budget(avg_bits=6),
        edges=(Edge("conv1", "conv2"), Edge("conv2", "down", "adds_with"), Edge("conv2", "fc"),
               Edge("down", "fc")))
    graph = layer_graph(problem)
    assert graph.number_of_nodes() == 4 and graph.number_of_edges() == 4
    assert tie_groups(graph) == [("conv2", "down")]
    assert adjacent_pairs(graph) == [("conv1", "conv2"), ("conv2", "fc"), ("down", "fc")]


def test_tie_groups_compile_to_shared_options() -> None:
    layers = (Layer("a", 10, (Choice(2, 3.0), Choice(4, 1.0), Choice(8, 0.0))),
              Layer("b", 20, (Choice(4, 2.0), Choice(8, 0.5))),
              Layer("c", 5, (Choice(8, 0.0),)))
    compiled = compile_problem(AllocationProblem("t", layers, Budget(avg_bits=6), ties=(("a", "b"),)))
    assert compiled.n_groups == 2
    tied = compiled.groups[0]
    assert tied.members == (0, 1)
    np.testing.assert_array_equal(tied.options, [[1, 0], [2, 1]])  # 4 and 8 bits, the shared widths
    np.testing.assert_allclose(tied.loss * compiled.loss_unit, [3.0, 0.5])
    np.testing.assert_allclose(tied.size, [120.0, 240.0])


def test_ties_without_a_shared_width_are_an_error() -> None:
    layers = (Layer("a", 10, (Choice(2, 3.0),)), Layer("b", 20, (Choice(4, 2.0),)))
    with pytest.raises(ProblemError, match="share no allowed bit-width"):
        compile_problem(AllocationProblem("t", layers, Budget(avg_bits=6), ties=(("a", "b"),)))


def test_bops_budget_needs_macs() -> None:
    problem = AllocationProblem("t", _layers("a"), Budget(bops=100.0))
    with pytest.raises(ProblemError) as err:
        compile_problem(problem)
    assert err.value.field == "layers[0].macs"
