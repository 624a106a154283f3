"""Held-out English sentences for scoring MiniLM plans, beyond the 32 test sentences of the shipped pairs.

Thirty-two test sentences cannot separate two plans whose mean cosine differs by a point (the paired bootstrap
interval is about as wide as the difference). Nothing may be downloaded, so the extra sentences come from text
every Python installation ships: the reference documentation in the standard library's ``pydoc_data.topics``
(PSF licence). :func:`prose_sentences` keeps plain prose sentences of 8 to 30 words. The selection is written
once to ``cetopt/data/minilm_test_sentences.txt`` (``python -m cetopt.zoo.minilm_text``), because the topics
text changes between Python releases and a test set must not.

These sentences are technical prose, not paraphrase pairs: they test whether the quantised encoder keeps its
embeddings (cosine to FP32, ranking of pairwise similarities), not a downstream task.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from importlib import resources
from pathlib import Path

SENTENCES_FILE = "minilm_test_sentences.txt"
_MARKUP = re.compile(r"[`*_=<>{}\[\]()#|:;@\\/\"]")


def prose_sentences(text: str, *, min_words: int = 8, max_words: int = 30) -> list[str]:
    """Distinct sentences of ``text`` that read as plain prose: ``min_words`` to ``max_words`` words, starting with
    a capital letter, no markup or code characters, at least 95% letters and spaces. Order of first appearance."""
    kept: dict[str, None] = {}
    for raw in re.split(r"(?<=[.!?])\s+", text):
        sentence = " ".join(raw.split())
        words = sentence.split()
        if not (min_words <= len(words) <= max_words) or not sentence[0].isupper() or _MARKUP.search(sentence):
            continue
        if sum(c.isalpha() or c == " " for c in sentence) < 0.95 * len(sentence):
            continue
        kept[sentence] = None
    return list(kept)


def select(sentences: list[str], count: int, exclude: set[str]) -> list[str]:
    """``count`` of ``sentences`` (not in ``exclude``), chosen by the SHA-256 of each sentence (stable across runs
    and platforms), in that order."""
    pool = [s for s in sentences if s not in exclude]
    pool.sort(key=lambda s: hashlib.sha256(s.encode("utf-8")).hexdigest())
    return pool[:count]


def test_sentences() -> list[str]:
    """The shipped extra test sentences (comment lines starting with '#' skipped)."""
    text = resources.files("cetopt.data").joinpath(SENTENCES_FILE).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def main(argv: list[str] | None = None) -> int:
    """Write the selection to ``--out`` (default: the package's data file), atomically."""
    import pydoc_data.topics

    from cetopt._atomic import atomic_write_text
    from cetopt.zoo.minilm import text_pairs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path(str(resources.files("cetopt.data").joinpath(SENTENCES_FILE))))
    args = parser.parse_args(argv)
    prose = prose_sentences(" ".join(pydoc_data.topics.topics.values()))
    chosen = select(prose, args.count, {s for pair in text_pairs() for s in pair})
    if len(chosen) < args.count:
        raise SystemExit(f"--count {args.count}: only {len(chosen)} prose sentences in this Python's pydoc_data.topics")
    version = ".".join(map(str, sys.version_info[:3]))
    header = (f"# {len(chosen)} prose sentences from CPython {version}'s pydoc_data.topics (PSF licence), chosen by "
              "SHA-256 order; written by python -m cetopt.zoo.minilm_text\n")
    atomic_write_text(args.out, header + "\n".join(chosen) + "\n")
    print(f"wrote {len(chosen)} sentences to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
