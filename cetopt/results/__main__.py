"""``python -m cetopt.results [--check] [--root DIR] [--section NAME ...]``: regenerate the marked sections of
README.md and the docs (cetopt.results.DOCUMENTS) from the committed results files (atomically); ``--check``
only reports, exit 1 when a document is stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cetopt._atomic import atomic_write_text
from cetopt.results import DOCUMENTS, SECTIONS, SectionError, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cetopt.results", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a document differs from the generated text")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2],
                        help="the repository root the documents are relative to")
    parser.add_argument("--section", action="append", choices=sorted(SECTIONS), help="only these sections")
    args = parser.parse_args(argv)
    stale = 0
    for document, names in DOCUMENTS.items():
        path = args.root / document
        wanted = [n for n in names if args.section is None or n in args.section]
        if not wanted:
            continue
        try:
            old = path.read_text(encoding="utf-8")
            new = render(old, wanted)
        except (OSError, SectionError) as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            return 2
        if new == old:
            print(f"{path} is up to date", file=sys.stderr)
        elif args.check:
            print(f"{path} is stale: run python -m cetopt.results", file=sys.stderr)
            stale = 1
        else:
            atomic_write_text(path, new)
            print(f"rewrote {path}", file=sys.stderr)
    return stale


if __name__ == "__main__":
    sys.exit(main())
