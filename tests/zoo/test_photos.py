"""The zoo's offline photos and their split: disjoint photo sets, crops that carry their photo."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

pytest.importorskip("skimage", reason="scikit-image (the zoo extra) ships the validation and test photos")

from cetopt.errors import ProblemError  # noqa: E402
from cetopt.zoo.photos import IMAGENET_MEAN, IMAGENET_STD, PHOTOS, SPLITS, load_photo, split_crops  # noqa: E402


def test_splits_use_disjoint_photos_and_every_photo_once() -> None:
    names = [p for photos in SPLITS.values() for p in photos]
    assert len(names) == len(set(names)) == len(PHOTOS)
    assert len(SPLITS["test"]) >= 10  # enough clusters for a cluster bootstrap to mean something


def test_every_photo_loads_offline_as_distinct_rgb() -> None:
    seen = {}
    for name in PHOTOS:
        image = load_photo(name)
        assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 224
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.02
        seen[name] = hashlib.sha256(image.tobytes()).hexdigest()
    assert len(set(seen.values())) == len(seen)  # no photo twice (scikit-image's cat is chelsea)


def test_crops_carry_their_photo_and_are_normalised_cuts_of_it() -> None:
    crops = split_crops("test", 13, size=32, seed=3)
    assert crops.images.shape == (13, 3, 32, 32) and len(crops.photos) == 13
    assert crops.photos[:len(SPLITS["test"])] == SPLITS["test"] and crops.photos[11] == SPLITS["test"][0]
    # undo the normalisation: pixel values of a crop lie within its photo's range
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for image, photo in zip(crops.images, crops.photos):
        raw = (image * std + mean).numpy()
        source = load_photo(photo)
        assert raw.min() >= source.min() - 1e-5 and raw.max() <= source.max() + 1e-5
    again = split_crops("test", 13, size=32, seed=3)
    assert torch.equal(again.images, crops.images)
    assert not torch.equal(split_crops("test", 13, size=32, seed=4).images, crops.images)


def test_validation_and_test_streams_differ_from_calibration() -> None:
    cal, val = split_crops("calibration", 4, size=16), split_crops("validation", 4, size=16)
    assert set(cal.photos).isdisjoint(val.photos)
    assert np.all(np.isfinite(val.images.numpy()))


def test_bad_split_and_photo_are_named() -> None:
    with pytest.raises(ProblemError, match="unknown split"):
        split_crops("train", 4)
    with pytest.raises(ProblemError, match="unknown photo"):
        load_photo("lena")
