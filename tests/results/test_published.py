"""The README's published-problem table: every exact backend proves the same optimum, bounds sit below it."""

from __future__ import annotations

from cetopt.results.published import published_section


def test_exact_backends_agree_and_bounds_hold() -> None:
    rows = [line.split("|")[1:-1] for line in published_section().splitlines() if line.startswith("| `")]
    cells = {r[0].strip(" `"): [c.strip() for c in r[1:]] for r in rows}
    optimum = float(cells["dp"][1])
    for name in ("dp", "highs", "ortools-mip", "ortools"):
        assert cells[name][0] == "optimal" and abs(float(cells[name][1]) - optimum) <= 1e-6 * optimum, name
    for status, objective, bound, *_ in cells.values():
        assert bound == "-" or float(bound) <= optimum * (1 + 1e-6)
