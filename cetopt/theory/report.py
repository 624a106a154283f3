"""Check results as plain data, and the markdown report that shows them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Sequence

from cetopt.tables import format_table, markdown_table


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    PARTIAL = "partial"  # holds where the theory's assumptions hold, and the report says where it does not
    INCONCLUSIVE = "inconclusive"  # the check's precondition does not hold: the claim was not tested


@dataclass(frozen=True)
class CheckResult:
    """One numerical check of a claim.

    Attributes:
        number, title: the check's place and name.
        claim: what the theory says.
        statistic: what was measured, in words.
        value: the statistic's value.
        tolerance: the threshold the verdict applies.
        verdict: pass / fail / partial / inconclusive (precondition not met: claim untested).
        notes: where it breaks down, caveats.
        table: (header, rows) of per-layer or per-plan details.
        figures: file names of the plots (relative to the report).
        data: the raw numbers (for notebooks and tests).
    """

    number: int
    title: str
    claim: str
    statistic: str
    value: str
    tolerance: str
    verdict: Verdict
    notes: str = ""
    table: tuple[Sequence[str], Sequence[Sequence[Any]]] | None = None
    figures: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)


def render_report(title: str, preamble: str, checks: Sequence[CheckResult], extra_sections: Sequence[str] = ()) -> str:
    """The markdown text of a proof report."""
    summary = markdown_table(["#", "check", "statistic", "value", "tolerance", "verdict"],
                              [[c.number, c.title, c.statistic, c.value, c.tolerance, f"**{c.verdict.value}**"]
                               for c in checks])
    parts = [f"# {title}", preamble, "## Summary", summary]
    for c in checks:
        parts.append(f"## {c.number}. {c.title}: {c.verdict.value}")
        parts.append(f"**Claim.** {c.claim}\n\n**Statistic.** {c.statistic} = {c.value} (tolerance: {c.tolerance}).")
        if c.notes:
            parts.append(c.notes)
        for fig in c.figures:
            parts.append(f"![{c.title}]({fig})")
        if c.table is not None:
            parts.append(markdown_table(*c.table))
    parts.extend(extra_sections)
    return "\n\n".join(parts) + "\n"


def text_summary(checks: Sequence[CheckResult]) -> str:
    """A plain-text table of the verdicts (for the terminal)."""
    return format_table(["#", "check", "value", "tolerance", "verdict"],
                        [[c.number, c.title, c.value, c.tolerance, c.verdict.value] for c in checks])
