"""Plain-text tables of solve results, for the CLI, the demo and notebooks."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from cetopt.solvers.result import SolveResult


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned text columns with a rule under the header."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def status_text(result: SolveResult) -> str:
    return f"{result.status.value} ({result.limit} limit)" if result.limit else result.status.value


def comparison_table(results: Sequence[SolveResult]) -> str:
    """One row per result: solver, status, objective, bound, gap, size, avg bits, ratio, seconds."""
    rows = []
    for r in results:
        rows.append([
            r.solver, status_text(r), _num(r.objective, ".8g"), _num(r.bound, ".8g"),
            _num(r.gap, ".1e"), _num(r.size_bits, ".0f"), _num(r.avg_bits, ".3f"), _num(r.ratio, ".2f"),
            f"{r.seconds * 1000:.1f}",
        ])
    return format_table(["solver", "status", "objective", "bound", "gap", "size_bits", "avg_bits",
                         "ratio_vs_fp32", "solver_ms"], rows)


def bits_table(results: Sequence[SolveResult], layer_names: Sequence[str]) -> str:
    """Layers down, solvers across: the bit-width (or choice label) each solver picked."""
    rows = [[name] + [r.bits.get(name, "-") for r in results] for name in layer_names]
    return format_table(["layer"] + [r.solver for r in results], rows)


def result_table(result: SolveResult) -> str:
    """A single result: summary lines then the per-layer bits."""
    summary = [
        ("problem", result.problem), ("solver", result.solver), ("status", status_text(result)),
        ("objective", _num(result.objective, ".10g")), ("bound", _num(result.bound, ".10g")),
        ("gap", _num(result.gap, ".2e")), ("size_bits", _num(result.size_bits, ".0f")),
        ("avg_bits", _num(result.avg_bits, ".4f")), ("ratio_vs_fp32", _num(result.ratio, ".3f")),
        ("seconds", f"{result.seconds:.4f}"),
    ]
    if result.message:
        summary.append(("message", result.message))
    text = "\n".join(f"{k:>14}: {v}" for k, v in summary)
    if result.bits:
        text += "\n\n" + format_table(["layer", "bits", "choice"],
                                      [[n, b, result.choices[n]] for n, b in result.bits.items()])
    return text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table (floats to 4 significant digits, pipes escaped)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def ci_cell(entry: Mapping[str, Any] | None, scale: float = 100.0) -> str:
    """A paired difference with its CI as a table cell, ``+1.18 [+1.00, +1.36] better`` ("-" for None).

    ``entry``: {"estimate", "low", "high", "verdict"} as the benchmarks store a :class:`cetopt.stats.PairedCI`;
    ``scale``: 100 turns fractions (accuracy, agreement, cosine) into points.
    """
    if entry is None:
        return "-"
    return (f"{scale * entry['estimate']:+.2f} [{scale * entry['low']:+.2f}, {scale * entry['high']:+.2f}] "
            f"{entry['verdict']}")
