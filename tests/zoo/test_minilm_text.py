"""The shipped MiniLM prose sentences: prose filtering, a stable selection, sources, and splits by source."""

from __future__ import annotations

import pytest

from cetopt.zoo.minilm_text import (prose_sentences, select, shipped_sentences, split_of_source, split_sentences,
                                    topic_sources)


def test_prose_filter_keeps_plain_sentences_only() -> None:
    text = ("The for statement is used to iterate over the elements of a sequence. "
            "Use x = f(y) to call it with one argument each time. "
            "too short here. "
            "lowercase starts are dropped even when they are long enough to count. "
            "A list of `names` is marked up with back quotes in the text here. "
            "The for statement is used to iterate over the elements of a sequence.")
    assert prose_sentences(text) == ["The for statement is used to iterate over the elements of a sequence."]


def test_selection_is_stable_and_excludes() -> None:
    pool = [f"Sentence number {i} is plain prose of enough words here." for i in range(50)]
    first = select(pool, 10, exclude={pool[0]})
    assert first == select(list(reversed(pool)), 10, exclude={pool[0]})  # order of the input does not matter
    assert pool[0] not in first and len(set(first)) == 10


def test_shipped_sentences_are_prose_and_distinct() -> None:
    sentences = [s.text for s in shipped_sentences()]
    assert len(sentences) == 400 and len(set(sentences)) == 400
    assert prose_sentences(" ".join(sentences)) == sentences


def test_topic_sources_merge_topics_that_share_a_sentence() -> None:
    topics = {"b": "One two. Shared sentence here.", "a": "Shared   sentence here. Three.", "c": "Alone here.",
              "d": "Three."}
    # "Shared sentence here." ties b to a, "Three." ties d to a: one source named "a"
    assert topic_sources(["One two.", "Shared sentence here.", "Three.", "Alone here."], topics) == ["a", "a", "a", "c"]
    with pytest.raises(ValueError, match="in no topic"):
        topic_sources(["Nowhere to be found."], topics)


def test_validation_and_test_sentences_come_from_disjoint_sources() -> None:
    validation, test = split_sentences("validation"), split_sentences("test")
    assert {s.source for s in validation}.isdisjoint({s.source for s in test})
    assert len(validation) + len(test) == 400 and len(validation) >= 32 and len(test) >= 200
    assert all(split_of_source(s.source) == "validation" for s in validation)
    assert len({s.source for s in validation}) >= 5  # a validation split of one document would say little
