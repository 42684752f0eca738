"""`synthetic`: a learnable two-class image set generated in code (no download).

Class 0 ("disc"): a filled disc. Class 1 ("blob"): an irregular lobed blob whose radius varies with the
angle, r(theta) = r0 * (1 + a1 cos(k1 theta + phi1) + a2 cos(k2 theta + phi2)), k1 in {3, 4, 5},
a1 in [0.38, 0.52], k2 in {2..6}, a2 in [0, 0.12]. Both have random centre, size
and contrast, a soft edge, and sit in textured noise (low-pass filtered Gaussian noise plus white noise),
so the only reliable cue is the outline. A small CNN separates them to > 95% accuracy within a few epochs.
Everything is drawn from `numpy.random.default_rng([seed, split_index])`: the same seed gives the same
arrays, and each split is independent of the other splits' sizes.

`synthetic-multilabel` (`make_synthetic_multilabel`): the multi-label counterpart (task "multi-label,
binary-class", like ChestMNIST), 4 labels, label l = "shape l (disc, square, cross, ring) is in the image";
see `make_multilabel_images`.
"""
from __future__ import annotations

import numpy as np

from .base import ArrayDataset, DatasetInfo, DatasetSplits

CLASS_NAMES = ("disc", "blob")


def _texture(rng, n, size):
    """Smooth random texture in about [-1, 1]: Gaussian noise low-pass filtered in the Fourier domain."""
    noise = rng.standard_normal((n, size, size))
    f = np.fft.fftfreq(size)
    r2 = f[:, None] ** 2 + f[None, :] ** 2
    sigma = rng.uniform(0.06, 0.15, size=(n, 1, 1))
    smooth = np.fft.ifft2(np.fft.fft2(noise) * np.exp(-r2[None] / (2 * sigma ** 2))).real
    return smooth / (smooth.std(axis=(1, 2), keepdims=True) + 1e-8)


def make_images(n: int, size: int = 28, channels: int = 1, seed: int = 0, split_index: int = 0):
    """Generate `n` images and balanced labels: float32 (n, channels, size, size) in [0, 1], int64 (n,)."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    rng = np.random.default_rng([int(seed), int(split_index)])
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    s = size / 28.0
    r0 = rng.uniform(4.5, 8.5, size=n) * s
    margin = r0 * 1.3 + 1
    cy = rng.uniform(margin, size - 1 - margin)
    cx = rng.uniform(margin, size - 1 - margin)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy = yy[None] - cy[:, None, None]
    dx = xx[None] - cx[:, None, None]
    dist = np.hypot(dy, dx)
    theta = np.arctan2(dy, dx)
    blob = (labels == 1)[:, None, None]
    k1 = rng.integers(3, 6, size=n)[:, None, None]
    k2 = rng.integers(2, 7, size=n)[:, None, None]
    a1 = rng.uniform(0.38, 0.52, size=n)[:, None, None]
    a2 = rng.uniform(0.0, 0.12, size=n)[:, None, None]
    p1, p2 = (rng.uniform(0, 2 * np.pi, size=n)[:, None, None] for _ in range(2))
    wobble = blob * (a1 * np.cos(k1 * theta + p1) + a2 * np.cos(k2 * theta + p2))
    radius = r0[:, None, None] * (1 + wobble)
    mask = 1.0 / (1.0 + np.exp(-(radius - dist) / 0.5))
    background = rng.uniform(0.2, 0.45, size=(n, 1, 1))
    contrast = rng.uniform(0.3, 0.5, size=(n, 1, 1))
    img = background + contrast * mask
    img = img + 0.06 * _texture(rng, n, size) + 0.03 * rng.standard_normal((n, size, size))
    img = np.clip(img, 0.0, 1.0).astype(np.float32)[:, None]
    if channels == 3:
        tint = rng.uniform(0.85, 1.15, size=(n, 3, 1, 1)).astype(np.float32)
        img = np.clip(img * tint, 0.0, 1.0).astype(np.float32)
    return np.ascontiguousarray(img), labels


def make_synthetic(n_train: int = 2000, n_val: int = 400, n_test: int = 400, size: int = 28, channels: int = 1,
                   seed: int = 0) -> DatasetSplits:
    """The `synthetic` dataset: discs (class 0) vs irregular blobs (class 1), binary-class, balanced."""
    parts = [ArrayDataset(*make_images(n, size, channels, seed, i)) for i, n in enumerate((n_train, n_val, n_test))]
    info = DatasetInfo(name="synthetic", task="binary-class", class_names=CLASS_NAMES, n_channels=channels,
                       image_size=size, n_samples={"train": n_train, "val": n_val, "test": n_test},
                       source="generated", extra={"seed": int(seed)})
    return DatasetSplits(*parts, info)


# ---------------------------------------------------------------- synthetic-multilabel
MULTILABEL_NAME = "synthetic-multilabel"
MULTILABEL_NAMES = ("disc", "square", "cross", "ring")


def _shape_mask(kind: int, dy, dx, r):
    """Soft (0..1) mask of shape `kind` (index into MULTILABEL_NAMES) of size r around offsets (dy, dx)."""
    def soft(v):  # inside where v > 0, edge 0.5 px wide
        return 1.0 / (1.0 + np.exp(-v / 0.5))
    if kind == 0:    # filled disc
        return soft(r - np.hypot(dy, dx))
    if kind == 1:    # filled square
        return soft(r * 0.85 - np.maximum(np.abs(dy), np.abs(dx)))
    if kind == 2:    # plus sign, arms 2 px wide
        arm = np.maximum(soft(1.1 - np.abs(dy)) * soft(r - np.abs(dx)), soft(1.1 - np.abs(dx)) * soft(r - np.abs(dy)))
        return arm
    d = np.hypot(dy, dx)  # ring: annulus 1.6 px wide
    return soft(0.8 - np.abs(d - (r - 0.8)))


def make_multilabel_images(n: int, size: int = 28, seed: int = 0, split_index: int = 0):
    """`n` images with multi-label targets: float32 (n, 1, size, size) in [0, 1], int64 (n, 4) of 0/1.

    Label l is 1 when shape l of MULTILABEL_NAMES (disc, square, cross, ring) is in the image. Each label is
    present independently with probability 0.5; present shapes are placed in distinct quadrants chosen at
    random (position says nothing about the label), with random size, offset and contrast, on textured
    noise. Only the shape itself tells which label it is.
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")
    L = len(MULTILABEL_NAMES)
    rng = np.random.default_rng([int(seed), int(split_index), 7])
    labels = (rng.random((n, L)) < 0.5).astype(np.int64)
    quadrant = np.argsort(rng.random((n, 4)), axis=1)       # shape l goes to quadrant quadrant[:, l]
    half = size / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = rng.uniform(0.2, 0.4, size=(n, 1, 1)) + np.zeros((n, size, size))
    for l in range(L):
        q = quadrant[:, l]
        r = rng.uniform(0.32, 0.4, size=n) * half
        cy = (q // 2) * half + half / 2 + rng.uniform(-1.0, 1.0, size=n) * (half / 2 - r - 0.5).clip(0)
        cx = (q % 2) * half + half / 2 + rng.uniform(-1.0, 1.0, size=n) * (half / 2 - r - 0.5).clip(0)
        contrast = rng.uniform(0.4, 0.6, size=n)
        mask = _shape_mask(l, yy[None] - cy[:, None, None], xx[None] - cx[:, None, None], r[:, None, None])
        img = img + (labels[:, l] * contrast)[:, None, None] * mask
    img = img + 0.03 * _texture(rng, n, size) + 0.02 * rng.standard_normal((n, size, size))
    img = np.clip(img, 0.0, 1.0).astype(np.float32)[:, None]
    return np.ascontiguousarray(img), labels


def make_synthetic_multilabel(n_train: int = 2000, n_val: int = 400, n_test: int = 400, size: int = 28,
                              seed: int = 0) -> DatasetSplits:
    """The `synthetic-multilabel` dataset: 4 labels (disc, square, cross, ring present), task
    "multi-label, binary-class" like ChestMNIST, so multi-label training can be run without a download."""
    parts = [ArrayDataset(*make_multilabel_images(n, size, seed, i)) for i, n in enumerate((n_train, n_val, n_test))]
    info = DatasetInfo(name=MULTILABEL_NAME, task="multi-label, binary-class", class_names=MULTILABEL_NAMES,
                       n_channels=1, image_size=size, n_samples={"train": n_train, "val": n_val, "test": n_test},
                       source="generated", extra={"seed": int(seed)})
    return DatasetSplits(*parts, info)
