"""The generated parts of docs/interpreting-checks.md: LLC's size-form plans against the FP model, read from the
`cetopt prove` results (docs/results/cet-checks/*/results.json), so the interpretation quotes the files, not
numbers typed by hand.

``python -m cetopt.results.interpretation`` rewrites the marked section; ``--check`` exits 1 when it is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cetopt.results.provenance import ROOT, stale_note

DOC = ROOT / "docs" / "interpreting-checks.md"
CHECKS_DIR = ROOT / "docs" / "results" / "cet-checks"
MODELS = ("digits-mlp", "digits-cnn", "mnist1d-resnet", "minilm", "mobilenetv2")
LLC_LOSSLESS = "llc (minimise size s.t. predicted dL <= 0)"


def llc_vs_fp_section(checks_dir: Path = CHECKS_DIR) -> str:
    """Per model: LLC's lossless size form (minimise size subject to predicted dL <= 0) and its equal-size rows,
    their test metric against the FP model (points, the CI `cetopt prove` computed) and their packed ratio."""
    from cetopt.tables import markdown_table

    rows = []
    for model in MODELS:
        path = checks_dir / model / "results.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        entry = (data.get("smallest_lossless") or {}).get(LLC_LOSSLESS)
        if entry:
            rows.append([model, "predicted dL <= 0 (size form)", f"{entry['avg_bits']:.3f}",
                         f"{entry['packed_ratio']:.2f}x", f"{100 * data['fp_metric']:.2f}", f"{100 * entry['metric']:.2f}",
                         entry.get("vs_fp") or "-"])
        for row in data.get("equal_size", []):
            if row["label"] == "llc (size form)" and row["metric"] == row["metric"]:  # NaN: no plan at that budget
                rows.append([model, f"{row['budget_bits']:g} avg bits (size form at that budget)", f"{row['avg_bits']:.3f}",
                             f"{row['packed_ratio']:.2f}x", f"{100 * data['fp_metric']:.2f}", f"{100 * row['metric']:.2f}",
                             row.get("vs_fp") or "-"])
        if not entry and not any(r[0] == model for r in rows):
            rows.append([model, "no LLC plan in this run", "-", "-", f"{100 * data['fp_metric']:.2f}", "-", "-"])
    text = ["LLC's plans against the FP model (test metric x100; the difference in points with the paired bootstrap "
            "95% CI `cetopt prove` computed; a tie when it contains 0). From docs/results/cet-checks/*/results.json.",
            markdown_table(["model", "LLC plan", "avg bits", "packed", "FP32", "LLC", "LLC - FP, points [95% CI]"], rows)]
    if note := stale_note("cet-checks"):
        text.append(note)
    return "\n\n".join(text)


def render(text: str) -> str:
    from cetopt.results import replace_section

    return replace_section(text, "llc-vs-fp", llc_vs_fp_section())


def main(argv: list[str] | None = None) -> int:
    from cetopt._atomic import atomic_write_text

    parser = argparse.ArgumentParser(prog="python -m cetopt.results.interpretation", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the document differs from the generated text")
    args = parser.parse_args(argv)
    old = DOC.read_text(encoding="utf-8")
    new = render(old)
    if args.check:
        print(f"{DOC} is {'up to date' if new == old else 'stale: run python -m cetopt.results.interpretation'}",
              file=sys.stderr)
        return 0 if new == old else 1
    if new != old:
        atomic_write_text(DOC, new)
    print(f"wrote {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
