"""The README's pretrained-model section: the default cost model against HAWQ-V3 and uniform on the real
pretrained models, read from benchmarks/results/cost_models_pretrained*.json (written by
``python benchmarks/cost_models_pretrained.py [--models M --out ...cost_models_pretrained_M]``: one file for all
models, or one per model when they were measured in separate runs). A model with no entry is said to be unmeasured."""

from __future__ import annotations

import json
from pathlib import Path

from cetopt.results.provenance import stale_note
from cetopt.tables import ci_cell, markdown_table

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "cost_models_pretrained.json"
PRETRAINED = ("mobilenetv2", "minilm")


def result_files(results: Path | None = None) -> list[Path]:
    """The combined results file and any per-model ones beside it (``cost_models_pretrained_<model>.json``)."""
    results = RESULTS if results is None else results
    return sorted(results.parent.glob(results.stem + "*.json"))


def _size_difference(mine: object, other: object) -> str:
    """The default plan's packed size relative to a baseline's at the same budget (``+0.0%`` = equal size)."""
    if not isinstance(mine, (int, float)) or not isinstance(other, (int, float)) or mine <= 0 or other <= 0:
        return "-"
    return f"{round(100.0 * (mine / other - 1.0), 2) + 0.0:+.2f}%"  # + 0.0: no "-0.00%" for a rounding-level gap


def pretrained_section() -> str:
    """Per pretrained model and budget: the default plan's metric and its paired differences, with verdicts."""
    files = result_files()
    if not files:
        raise FileNotFoundError(f"{RESULTS} is missing: run python benchmarks/cost_models_pretrained.py")
    from cetopt.costmodels.registry import DEFAULT_COST_MODEL
    from cetopt.workflow import DEFAULT_QUANTIZER

    # the table is the default pipeline's: its cost model on its quantiser grid; runs on another grid are their own
    # comparison, linked from the prose, and runs that did not measure the default model cannot fill it
    default, grid = DEFAULT_COST_MODEL, DEFAULT_QUANTIZER.clip
    loaded = [(path, data) for path, data in ((p, json.loads(p.read_text())) for p in files)
              if data["meta"].get("clip", "none") == grid and default in data["meta"]["methods"]]
    rows = []
    seen: set[str] = set()
    # a per-model file (a later, separate run) wins over the combined file for its model
    for _, data in sorted(loaded, key=lambda item: item[0].stem == RESULTS.stem):
        models = {c["model"] for c in data["comparisons"]} - seen
        seen |= models
        packed = {(c["model"], c["avg_bits"], c["method"]): c.get("packed_bits") for c in data["comparisons"]
                  if c.get("headline", True)}
        for c in data["comparisons"]:
            if c["model"] not in models or c["method"] != default or not c.get("headline", True):
                continue
            sizes = [_size_difference(c.get("packed_bits"), packed.get((c["model"], c["avg_bits"], other)))
                     for other in ("hawq-v3", "uniform")]
            rows.append([c["model"], f"{c['avg_bits']:g}", c["metric"], str(c["n_test"]), f"{100 * c['mean']:.2f}",
                         ci_cell(c["vs_hawq-v3"]), sizes[0], ci_cell(c["vs_uniform"]), sizes[1]])
    measured = {r[0] for r in rows}
    methods = sorted({(c.get("vs_hawq-v3") or {}).get("ci_method", "paired bootstrap over test examples")
                      for _, data in loaded for c in data["comparisons"]
                      if c["method"] == default and c.get("headline", True) and c["model"] in measured})
    missing = [m for m in PRETRAINED if m not in measured]
    text = [f"The default cost model (`{default}`, candidates on the {grid}-clipped grid, the baselines' plans "
            "applied on the same grid) against HAWQ-V3 and uniform precision at the same packed size on the real "
            "pretrained models (metric x100; paired bootstrap 95% CIs over the same test inputs; dp plans):",
            markdown_table(["model", "avg bits", "metric", "test inputs", default, "vs HAWQ-V3", "packed size vs HAWQ-V3",
                            "vs uniform", "packed size vs uniform"], rows)]
    if missing:
        text.append(f"Not measured yet: {', '.join(missing)} (the run did not finish on this 2-core machine; "
                    f"`python benchmarks/cost_models_pretrained.py --models {' '.join(missing)}` measures it).")
    sources = "; ".join(f"{path.relative_to(RESULTS.parents[2])} (`{data['meta']['command']}`)" for path, data in loaded)
    text.append(f"{len(measured)} development models (they chose the default, docs/protocol.md), one seed each; "
                f"CIs: {'; '.join(methods)}. Generated from {sources}.")
    if note := stale_note("pretrained"):
        text.append(note)
    return "\n\n".join(text)
