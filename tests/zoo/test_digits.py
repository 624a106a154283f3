"""The digits models train deterministically to a stated accuracy, offline, and cache."""

from __future__ import annotations

import pytest
import torch

from cetopt.zoo.digits import accuracy, digits_split, trained_digits_model


@pytest.mark.parametrize("name, floor", [("digits-mlp", 0.95), ("digits-cnn", 0.96)])
def test_digits_models_reach_their_accuracy(name: str, floor: float, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CETOPT_CACHE_DIR", str(tmp_path))
    model = trained_digits_model(name)
    split = digits_split()
    assert accuracy(model, split.x_test, split.y_test) >= floor
    again = trained_digits_model(name)  # from the cache: identical weights
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    fresh = trained_digits_model(name, use_cache=False)  # retrained: deterministic
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
