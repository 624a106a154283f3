"""``python -m cetopt.results [--check] [--readme PATH] [--section NAME ...]``: regenerate README.md's marked
sections from the committed results files (atomically); ``--check`` only reports, exit 1 when stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cetopt._atomic import atomic_write_text
from cetopt.results import SECTIONS, SectionError, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cetopt.results", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md differs from the generated text")
    parser.add_argument("--readme", type=Path, default=Path(__file__).resolve().parents[2] / "README.md")
    parser.add_argument("--section", action="append", choices=sorted(SECTIONS), help="only these sections")
    args = parser.parse_args(argv)
    try:
        old = args.readme.read_text(encoding="utf-8")
        new = render(old, args.section)
    except (OSError, SectionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check:
        if new != old:
            print(f"{args.readme} is stale: run python -m cetopt.results", file=sys.stderr)
            return 1
        print(f"{args.readme} is up to date", file=sys.stderr)
        return 0
    if new != old:
        atomic_write_text(args.readme, new)
        print(f"rewrote {args.readme}", file=sys.stderr)
    else:
        print(f"{args.readme} already up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
