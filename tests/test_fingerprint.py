"""Fingerprints tie problems to weights: equal numbers give equal digests, any change is caught and refused."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from cetopt.fingerprint import (FingerprintMismatchError, check_fingerprint, fingerprint_spec, sha256_of,
                                weights_sha256)
from cetopt.modelspec import ModelSpec


def _spec(seed: int = 0) -> ModelSpec:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    return ModelSpec(name="tiny", model=model, calibration=[(x, y)],
                     loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]))


def test_digest_is_sha256_of_dtype_shape_and_bytes() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    expected = hashlib.sha256(b"<f4(2, 3)" + a.tobytes()).hexdigest()
    assert sha256_of(a) == expected
    assert sha256_of(torch.from_numpy(a)) == expected  # a tensor hashes as its numbers
    assert sha256_of(a.astype(">f4")) == expected  # byte order does not matter, the values do


def test_equal_weights_equal_digests_and_any_change_differs() -> None:
    one, two = _spec(0), _spec(0)
    assert fingerprint_spec(one) == fingerprint_spec(two)
    with torch.no_grad():
        two.model[3].weight[0, 0] += 1e-6
    f1, f2 = fingerprint_spec(one), fingerprint_spec(two)
    assert f1.weights != f2.weights and f1.layers != f2.layers and f1.calibration == f2.calibration


def test_layer_digest_ignores_buffers_the_full_digest_does_not() -> None:
    one, two = _spec(0), _spec(0)
    two.model[1].running_mean.add_(0.5)
    assert weights_sha256(one.model, ["0", "3"]) == weights_sha256(two.model, ["0", "3"])
    assert weights_sha256(one.model) != weights_sha256(two.model)


def test_check_refuses_other_weights_and_names_what_differs() -> None:
    meta = fingerprint_spec(_spec(0)).as_metadata()
    check_fingerprint(meta, _spec(0))  # same model: accepted
    with pytest.raises(FingerprintMismatchError, match="Re-extract") as err:
        check_fingerprint(meta, _spec(1))
    assert "fingerprint_weights" in err.value.fields and "fingerprint_calibration" in err.value.fields
    assert "fingerprint_weights" in str(err.value)


def test_missing_fingerprint_is_refused_only_when_required() -> None:
    check_fingerprint({}, _spec(0))
    with pytest.raises(FingerprintMismatchError, match="records no weights fingerprint"):
        check_fingerprint({}, _spec(0), require=True)


def test_built_problem_records_the_fingerprint_and_measuring_checks_it() -> None:
    from cetopt.measure import check_same_model
    from cetopt.workflow import build_for

    spec = _spec(0)
    problem = build_for(spec, bits=(2, 4, 8)).problem
    assert problem.metadata["fingerprint_weights"] == fingerprint_spec(spec).weights
    json.dumps(dict(problem.metadata))  # plain strings: the problem file keeps them
    check_same_model(spec, problem.metadata)
    with pytest.raises(FingerprintMismatchError):
        check_same_model(_spec(1), problem.metadata)
