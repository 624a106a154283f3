"""docs/interpreting-checks.md's generated LLC-vs-FP section is current with the prove results it quotes."""

from __future__ import annotations

import json

from cetopt.results import interpretation


def test_the_document_is_current() -> None:
    text = interpretation.DOC.read_text()
    assert interpretation.render(text) == text, "run python -m cetopt.results.interpretation"


def test_llc_rows_quote_the_results_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = tmp_path / "digits-mlp"
    model.mkdir()
    (model / "results.json").write_text(json.dumps({
        "fp_metric": 0.9, "equal_size": [{"label": "llc (size form)", "budget_bits": 3.0, "avg_bits": 2.9,
                                          "packed_ratio": 10.0, "metric": float("nan"), "vs_fp": ""}],
        "smallest_lossless": {interpretation.LLC_LOSSLESS: {"avg_bits": 5.5, "packed_ratio": 5.0, "metric": 0.85,
                                                             "vs_fp": "-5.00 [-7.00, -3.00]"}}}))
    section = interpretation.llc_vs_fp_section(tmp_path)
    assert "| digits-mlp | predicted dL <= 0 (size form) | 5.500 | 5.00x | 90.00 | 85.00 | -5.00 [-7.00, -3.00] |" in section
    assert "3 avg bits" not in section  # no plan at that budget (NaN metric): no row
