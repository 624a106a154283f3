"""Token embeddings into torch's own nn.TransformerEncoderLayer (nn.MultiheadAttention inside), the model MiniLM
and most text classifiers are built from. Its attention runs through scaled_dot_product_attention, whose CPU
flash kernel has no double backward: extraction must succeed with the math kernel forced in cetopt's
second-order passes. The embedding table is planned by default (a lookup: its forms from its output). The encoder layer is a torch.nn leaf of the trace (its forward is not fx-traceable), so its
feed-forward Linears take their forms from hooked outputs, and the attention's out_proj (used through its weight,
never called as a module) from the prefix cache, the enclosing leaf replayed with out_proj's weight swapped inside it
(torch.func.functional_call); the coverage says so."""

from __future__ import annotations

import torch
from torch import nn

from arch_check import check_architecture


class TextClassifier(nn.Module):
    def __init__(self, vocab: int = 20, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.encoder = nn.TransformerEncoderLayer(dim, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(1))


def token_batches(seed: int, count: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 20, (3, 6), generator=g), torch.randint(0, 3, (3,), generator=g)) for _ in range(count)]


def test_embedding_and_transformer_encoder_extract_with_any_sdpa_backend() -> None:
    torch.manual_seed(9)
    inner = ["encoder.self_attn.out_proj", "encoder.linear1", "encoder.linear2"]
    check_architecture(TextClassifier(), token_batches(9),
                       {"embed": "output", "encoder.self_attn.in_proj_weight": "weight",
                        "encoder.self_attn.out_proj": "weight", "encoder.linear1": "hooked",
                        "encoder.linear2": "hooked", "head": "forward"},
                       fallbacks={**{n: "not called in the traced graph" for n in inner},
                                  "encoder.self_attn.out_proj": "replayed inside encoder: module encoder "
                                                                "(TransformerEncoderLayer): its output is not affine",
                                  "encoder.self_attn.in_proj_weight": "bare Parameter", "embed": "encoder"},
                       trace_estimator="shared")


def test_an_embedding_named_as_a_layer_takes_the_output_shortcut() -> None:
    """nn.Embedding is a leaf whose output (a row lookup) is affine in its weight: planned by default or named, its
    forms come from its output, exact against the full double backward."""
    torch.manual_seed(12)
    check_architecture(TextClassifier(), token_batches(12), {"embed": "output", "encoder.linear1": "hooked",
                                                             "head": "forward"},
                       layers=["embed", "encoder.linear1", "head"], fallbacks={"embed": "encoder"})


class MaskedAttentionClassifier(nn.Module):
    """Embedding -> nn.MultiheadAttention (packed in_proj_weight, a key padding mask) -> Linear."""

    def __init__(self, vocab: int = 20, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.head = nn.Linear(dim, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        out, _ = self.attn(h, h, h, key_padding_mask=tokens == 0, need_weights=False)
        return self.head(out.mean(1))


def test_multihead_attention_with_a_mask_extracts() -> None:
    torch.manual_seed(10)
    check_architecture(MaskedAttentionClassifier(), token_batches(10),
                       {"embed": "output", "attn.in_proj_weight": "weight", "attn.out_proj": "weight", "head": "forward"},
                       fallbacks={"attn.out_proj": "replayed inside attn: module attn (MultiheadAttention): its output is "
                                                   "not one floating-point tensor",
                                  "attn.in_proj_weight": "replayed inside attn"}, trace_estimator="shared")
