"""Generated document sections: each marked section of README.md and of the docs is written by one function from
results files.

A section is the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` in a document. ``SECTIONS`` maps
each name to the ``"module:function"`` that returns its markdown body (no arguments; it reads committed
results files, never runs a benchmark); ``DOCUMENTS`` says which document (a path relative to the repository
root) holds which sections, each section in exactly one. ``python -m cetopt.results`` rewrites the documents
atomically; ``--check`` exits 1 when one is stale. Add a section: write the generator, put the markers in its
document, add one line to SECTIONS and its name to that document's entry in DOCUMENTS.
"""

from __future__ import annotations

import re

from cetopt._imports import resolve
from cetopt.errors import CetoptError

SECTIONS: dict[str, str] = {
    "speed": "cetopt.results.speed:speed_section",
    "cet-checks": "cetopt.results.quality_sections:checks_section",
    "quality": "cetopt.results.quality_sections:quality_section",
    "zoo": "cetopt.results.quality_sections:zoo_section",
    "equal-size": "cetopt.results.quality_sections:equal_size_section",
    "levels": "cetopt.results.quality_sections:levels_section",
    "published": "cetopt.results.published:published_section",
    "pretrained": "cetopt.results.pretrained:pretrained_section",
    "selection": "cetopt.results.selection:selection_section",
    "evaluation": "cetopt.results.evaluation:evaluation_section",
    "evaluation-objective": "cetopt.results.evaluation:objective_section",
}

# document (relative to the repository root) -> the sections it holds, in no particular order
DOCUMENTS: dict[str, tuple[str, ...]] = {
    "README.md": ("pretrained", "evaluation"),
    "docs/results/README.md": ("published", "selection", "zoo", "quality", "cet-checks", "equal-size", "levels",
                               "evaluation-objective"),
    "docs/results/speed.md": ("speed",),
}


class SectionError(CetoptError):
    """A section's markers are missing or malformed; the message names the section and the fix."""


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the lines between section ``name``'s markers replaced by ``body``.

    Raises:
        SectionError: a marker is missing, repeated, or END comes before BEGIN.
    """
    begin, end = _markers(name)
    counts = (text.count(begin), text.count(end))
    if counts != (1, 1):
        raise SectionError(f"README section {name!r}: expected one {begin!r} and one {end!r} line, found "
                           f"{counts[0]} and {counts[1]}; add the two markers around the section")
    start, stop = text.index(begin) + len(begin), text.index(end)
    if stop < start:
        raise SectionError(f"README section {name!r}: {end!r} comes before {begin!r}; swap them")
    return text[:start] + "\n" + body.strip("\n") + "\n" + text[stop:]


def section_body(name: str) -> str:
    """The current generated markdown of section ``name`` (calls its registered generator)."""
    if name not in SECTIONS:
        raise SectionError(f"no README section named {name!r}; known: {', '.join(SECTIONS)}")
    return resolve(SECTIONS[name])()


def render(text: str, names: list[str]) -> str:
    """``text`` (a document) with the sections ``names`` regenerated."""
    for name in names:
        text = replace_section(text, name, section_body(name))
    return text


def document_of(name: str) -> str:
    """The document (relative to the repository root) that holds section ``name``."""
    for document, names in DOCUMENTS.items():
        if name in names:
            return document
    raise SectionError(f"section {name!r} is in no document; add it to cetopt.results.DOCUMENTS")


def section_names(text: str) -> list[str]:
    """Names of the sections marked in ``text``."""
    return re.findall(r"<!-- BEGIN ([\w.-]+) -->", text)
