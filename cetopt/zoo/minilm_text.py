"""English prose sentences for MiniLM's validation and test splits, beyond the sentences of the shipped pairs.

Thirty-two test sentences cannot separate two plans whose mean cosine differs by a point (the paired bootstrap
interval is about as wide as the difference). Nothing may be downloaded, so the extra sentences come from text
every Python installation ships: the reference documentation in the standard library's ``pydoc_data.topics``
(PSF licence). :func:`prose_sentences` keeps plain prose sentences of 8 to 30 words. The selection is written
once to ``cetopt/data/minilm_prose.tsv`` (``python -m cetopt.zoo.minilm_text``), because the topics
text changes between Python releases and a test set must not.

Each sentence carries its source: the documentation topic it comes from, with topics that share a sentence merged
into one source (named by its alphabetically first topic). Sentences of one topic are not independent draws, so
the validation and test splits take whole sources (:func:`split_of_source`), and CIs resample sources
(:func:`cetopt.stats.clustered_bootstrap_ci`).

These sentences are technical prose, not paraphrase pairs: they test whether the quantised encoder keeps its
embeddings (cosine to FP32, ranking of pairwise similarities), not a downstream task.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SENTENCES_FILE = "minilm_prose.tsv"
VALIDATION_SHARE = 5  # one source in VALIDATION_SHARE (by SHA-256 of its name) is validation, the rest test
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


@dataclass(frozen=True)
class SourcedSentence:
    """A shipped prose sentence and its source (documentation topic group), the cluster for CIs."""

    source: str
    text: str


def shipped_sentences() -> list[SourcedSentence]:
    """Every shipped prose sentence with its source, in file order (comment lines starting with '#' skipped)."""
    text = resources.files("cetopt.data").joinpath(SENTENCES_FILE).read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            source, _, sentence = line.partition("\t")
            out.append(SourcedSentence(source=source, text=sentence))
    return out


def split_of_source(source: str) -> str:
    """``"validation"`` for one source in :data:`VALIDATION_SHARE` (chosen by the SHA-256 of its name, stable
    across runs and platforms), ``"test"`` for the others: a source never straddles the two splits."""
    digest = int(hashlib.sha256(source.encode("utf-8")).hexdigest(), 16)
    return "validation" if digest % VALIDATION_SHARE == 0 else "test"


def split_sentences(split: str) -> list[SourcedSentence]:
    """The shipped prose sentences of ``split`` ("validation" or "test"), in file order."""
    if split not in ("validation", "test"):
        raise ValueError(f"split: expected 'validation' or 'test', got {split!r}")
    return [s for s in shipped_sentences() if split_of_source(s.source) == split]


def topic_sources(sentences: list[str], topics: dict[str, str]) -> list[str]:
    """The source of each sentence: the topics whose text holds it, merged over shared sentences (union-find),
    named by the alphabetically first topic of the group.

    Raises:
        ValueError: a sentence found in no topic.
    """
    text = {name: " ".join(body.split()) for name, body in topics.items()}
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    owners = []
    for sentence in sentences:
        names = sorted(name for name, body in text.items() if sentence in body)
        if not names:
            raise ValueError(f"sentences: {sentence[:60]!r} is in no topic")
        owners.append(names)
        for name in names[1:]:
            a, b = root(names[0]), root(name)
            parent[max(a, b)] = min(a, b)  # the smaller name stays the root: the group's first topic
    return [root(names[0]) for names in owners]


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
    sources = topic_sources(chosen, dict(pydoc_data.topics.topics))
    version = ".".join(map(str, sys.version_info[:3]))
    header = (f"# {len(chosen)} prose sentences from CPython {version}'s pydoc_data.topics (PSF licence), chosen by "
              "SHA-256 order, each after its source (the topic group it comes from) and a tab; written by python -m "
              "cetopt.zoo.minilm_text\n")
    atomic_write_text(args.out, header + "".join(f"{src}\t{text}\n" for src, text in zip(sources, chosen)))
    print(f"wrote {len(chosen)} sentences to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
