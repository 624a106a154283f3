"""The photos that run offline, and the split of them that the image zoo's calibration, validation and test crops
are cut from: by photo, never by crop.

Crops cut from one photo overlap and share its content, so they are not independent draws: a test crop cut from a
calibration photo is not held out, and a bootstrap over crops treats 11 photos as hundreds of samples. Every crop
therefore carries the id of its photo (:class:`Crops`), the splits use disjoint photos (:data:`SPLITS`), and the
CIs resample photos (:func:`cetopt.stats.clustered_bootstrap_ci`).

The photos are the real photographs shipped inside the scikit-learn and scikit-image wheels (nothing is
downloaded): scikit-learn's two sample images and the scikit-image ``data`` files that are photographs (not
drawings, logos or synthetic patterns), 8 in colour and 7 in grey (repeated over the three channels). Several are
far from ImageNet's distribution (a Hubble deep field, a retina, a stained tissue section); the zoo measures
fidelity to the FP32 model on them, not ImageNet accuracy. ``cat`` is left out: it is ``chelsea`` again.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from cetopt.errors import ProblemError

if TYPE_CHECKING:
    import torch


def _sklearn(index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_images

        return np.asarray(load_sample_images().images[index])  # sorted file names: china.jpg, flower.jpg
    return load


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        try:
            import skimage.data
        except ImportError:
            raise ProblemError("the image zoo's validation and test photos come from scikit-image: "
                               "pip install scikit-image==0.26.0 (or pip install 'cetopt[zoo]')",
                               field="scikit-image") from None
        image = getattr(skimage.data, name)()
        return np.asarray(image[0] if isinstance(image, tuple) else image)  # stereo_motorcycle: (left, right, disp)
    return load


# photo id -> loader of an (H, W) or (H, W, 3) uint8 array
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "sklearn-china": _sklearn(0), "sklearn-flower": _sklearn(1),
    **{f"skimage-{name}": _skimage(name) for name in (
        "astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "hubble_deep_field", "immunohistochemistry",
        "retina", "camera", "coins", "moon", "clock", "grass", "gravel", "brick")},
}

# disjoint photo sets. Calibration keeps scikit-learn's two photos and their crop stream (seed ``seed``), so the
# calibration crops, and with them the problems' calibration fingerprints, are those of every earlier release
SPLITS: dict[str, tuple[str, ...]] = {
    "calibration": ("sklearn-china", "sklearn-flower"),
    "validation": ("skimage-coffee", "skimage-rocket", "skimage-coins", "skimage-grass"),
    "test": ("skimage-astronaut", "skimage-chelsea", "skimage-stereo_motorcycle", "skimage-hubble_deep_field",
             "skimage-immunohistochemistry", "skimage-retina", "skimage-camera", "skimage-moon", "skimage-clock",
             "skimage-gravel", "skimage-brick"),
}
# each split's crop stream: calibration the historical np.random.default_rng(seed), the others their own
_STREAM = {"calibration": None, "validation": 1, "test": 2}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Crops:
    """ImageNet-normalised crops and the photo each was cut from.

    Attributes:
        images: (n, 3, size, size) float32 tensor.
        photos: (n,) photo ids (keys of :data:`PHOTOS`), the cluster of each crop for clustered CIs.
    """

    images: "torch.Tensor"
    photos: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.photos)


@functools.lru_cache(maxsize=None)
def load_photo(photo: str) -> np.ndarray:
    """Photo ``photo`` as a read-only (H, W, 3) float32 array in [0, 1] (grey photos repeated over the channels);
    loaded once per process."""
    if photo not in PHOTOS:
        raise ProblemError(f"unknown photo {photo!r}; choose from {sorted(PHOTOS)}", field="photo")
    image = np.asarray(PHOTOS[photo](), dtype=np.float32) / 255.0
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = np.ascontiguousarray(image[:, :, :3])
    image.setflags(write=False)
    return image


def cut_crops(photos: tuple[str, ...], count: int, *, size: int = 224, rng: np.random.Generator) -> Crops:
    """``count`` random square crops (side 50-100% of the photo's short side, resized to ``size``) taken from
    ``photos`` in turn, normalised with ImageNet's mean and std."""
    import torch
    from torch import nn

    images = [load_photo(p) for p in photos]
    crops, ids = [], []
    for i in range(count):
        img = images[i % len(images)]
        scale = rng.uniform(0.5, 1.0)
        side = int(min(img.shape[:2]) * scale)
        top = rng.integers(0, img.shape[0] - side + 1)
        left = rng.integers(0, img.shape[1] - side + 1)
        patch = torch.from_numpy(np.array(img[top:top + side, left:left + side])).permute(2, 0, 1)[None]
        crops.append(nn.functional.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False)[0])
        ids.append(photos[i % len(photos)])
    batch = torch.stack(crops) if crops else torch.empty((0, 3, size, size))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return Crops(images=(batch - mean) / std, photos=tuple(ids))


def split_crops(split: str, count: int, *, size: int = 224, seed: int = 0) -> Crops:
    """``count`` crops of the photos of ``split`` (calibration, validation or test; :data:`SPLITS`)."""
    if split not in SPLITS:
        raise ProblemError(f"unknown split {split!r}; choose from {sorted(SPLITS)}", field="split")
    if count < 0:
        raise ProblemError(f"expected a count >= 0, got {count}", field="count")
    stream = _STREAM[split]
    rng = np.random.default_rng(seed if stream is None else [seed, stream])
    return cut_crops(SPLITS[split], count, size=size, rng=rng)
