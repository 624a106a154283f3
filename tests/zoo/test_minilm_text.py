"""The extra MiniLM test sentences: prose filtering, a stable selection, and the shipped file."""

from __future__ import annotations

from cetopt.zoo.minilm_text import prose_sentences, select, test_sentences


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
    sentences = test_sentences()
    assert len(sentences) == 400 and len(set(sentences)) == 400
    assert prose_sentences(" ".join(sentences)) == sentences
