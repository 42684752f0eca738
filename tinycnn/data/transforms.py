"""Augmentations and normalisation for NumPy image batches, vectorised over the batch.

Every transform is a callable `t(x, rng=None) -> y` on a float array `x` of shape (N, C, H, W).
Randomness: `rng` (a `numpy.random.Generator`) when given, else the transform's own generator, made from
its `seed` argument (or, with `seed=None`, from `tinycnn.random.generator("cpu")`, which
`tinycnn.manual_seed` resets). `DataLoader` passes a generator derived from (seed, epoch, batch index),
so augmentation repeats exactly for a seed and does not depend on thread timing.

Geometric transforms share one routine, `affine_warp`: each output pixel p (pixel-centre coordinates
relative to the image centre) samples the input at q = A_n p + t_n with bilinear interpolation, one
2x3 matrix per image; pixels that fall outside are `fill` (mode "constant") or the nearest edge pixel
(mode "edge"). The identity matrix reproduces the input exactly.

    Normalize(mean, std)          y = (x - mean[c]) / std[c]
    Standardize(eps=1e-6)         y = (x - mean(x_n)) / (std(x_n) + eps), per image
    RandomHorizontalFlip(p)       x[..., ::-1] for each image with probability p
    RandomVerticalFlip(p)         x[..., ::-1, :]
    RandomRotation(degrees)       angle ~ U(-degrees, degrees) (or U(lo, hi) for a pair)
    RandomTranslate(max_shift)    shift ~ U(-max_shift, max_shift) * (W, H) pixels (fraction of size)
    RandomScale(scale)            zoom factor ~ U(lo, hi) about the centre
    RandomAffine(degrees, translate, scale)   all three in one warp
    RandomResizedCrop(size, scale, ratio)     area fraction ~ U(scale), log aspect ~ U(log ratio), resized
    RandomBrightnessContrast(brightness, contrast)  y = (x - m) * c + m + b, c ~ U(1-contrast, 1+contrast),
                                  b ~ U(-brightness, brightness), m = per-image mean, clipped to [0, 1]
    GaussianNoise(std)            y = x + std * N(0, 1)
    Resize(size)                  deterministic bilinear resize
    Compose([t1, t2, ...])        applies them in order with the same generator
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["Transform", "Compose", "Normalize", "Standardize", "RandomHorizontalFlip", "RandomVerticalFlip",
           "RandomRotation", "RandomTranslate", "RandomScale", "RandomAffine", "RandomResizedCrop",
           "RandomBrightnessContrast", "GaussianNoise", "Resize", "affine_warp", "hflip", "vflip", "rotate",
           "parse_augment"]


def _check_batch(x, name="x"):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of shape (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    return x


def _range(value, name, center=0.0, min_value=None):
    """A number v means (center - v, center + v); a pair means itself."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        lo, hi = center - float(value), center + float(value)
    else:
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number or a pair (lo, hi), got {value!r}") from None
        if lo > hi:
            raise ValueError(f"{name} must have lo <= hi, got ({lo}, {hi})")
    if min_value is not None and lo < min_value:
        raise ValueError(f"{name} must stay >= {min_value}, got range ({lo}, {hi})")
    return lo, hi


def _prob(p):
    if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    return float(p)


def affine_warp(x: np.ndarray, matrices: np.ndarray, out_size=None, mode: str = "constant", fill: float = 0.0):
    """Bilinear resampling of each image through its own affine map.

    x: (N, C, H, W) float. matrices: (N, 2, 3); row 0 gives the input column, row 1 the input row:
    [q_x, q_y] = A [p_x, p_y] + t, with p measured in output pixels from the output centre ((Wo-1)/2,
    (Ho-1)/2) and q in input pixels from the input centre. out_size: (Ho, Wo), default (H, W).
    mode: "constant" (outside pixels are `fill`) or "edge" (clamped to the border). Returns x's dtype.
    """
    _check_batch(x)
    n, c, h, w = x.shape
    m = np.asarray(matrices, dtype=np.float64)
    if m.shape != (n, 2, 3):
        raise ValueError(f"matrices must have shape ({n}, 2, 3), got {m.shape}")
    if mode not in ("constant", "edge"):
        raise ValueError(f"mode must be 'constant' or 'edge', got {mode!r}")
    ho, wo = (h, w) if out_size is None else out_size
    py, px = np.mgrid[0:ho, 0:wo].astype(np.float64)
    px = (px - (wo - 1) / 2.0).ravel()
    py = (py - (ho - 1) / 2.0).ravel()
    qx = m[:, 0, 0, None] * px + m[:, 0, 1, None] * py + (m[:, 0, 2, None] + (w - 1) / 2.0)
    qy = m[:, 1, 0, None] * px + m[:, 1, 1, None] * py + (m[:, 1, 2, None] + (h - 1) / 2.0)
    # The image is padded by one pixel (fill or edge copy), so every tap reads a valid address: a sample
    # point beyond the padding is clamped onto it, where its 2x2 neighbourhood is pure padding anyway.
    lo = 0.0 if mode == "edge" else -1.0
    np.clip(qx, lo, w - 1 - lo, out=qx)
    np.clip(qy, lo, h - 1 - lo, out=qy)
    x0, fx = _floor_frac(qx, w - 1 - lo)
    y0, fy = _floor_frac(qy, h - 1 - lo)
    if mode == "edge":
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    else:
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="constant", constant_values=fill)
    hp, wp = h + 2, w + 2
    base = (y0 + 1) * wp + (x0 + 1)                                   # (N, P) into one padded plane
    base = base[:, None, :] + (np.arange(n * c).reshape(n, c, 1) * (hp * wp))  # (N, C, P) into the batch
    flat = xp.reshape(-1)
    fx = fx.astype(x.dtype)[:, None]
    fy = fy.astype(x.dtype)[:, None]
    top = flat.take(base) * (1 - fx) + flat.take(base + 1) * fx
    bot = flat.take(base + wp) * (1 - fx) + flat.take(base + wp + 1) * fx
    out = top * (1 - fy) + bot * fy
    return out.reshape(n, c, ho, wo).astype(x.dtype, copy=False)


def _floor_frac(q, upper):
    """Left tap i and weight f of the right tap for sample points q <= upper, with i + 1 <= upper.

    Points within 1e-9 of a pixel centre get f = 0 exactly, so exact maps (identity, flips, 90-degree
    turns) copy pixels bit for bit.
    """
    i = np.minimum(np.floor(q + 1e-9), upper - 1)
    f = q - i
    f = np.where(f < 1e-9, 0.0, f)
    return i.astype(np.int64), f


def _affine_matrices(angle_deg, scale, tx, ty):
    """Inverse maps (output -> input) for rotation by angle, zoom by scale, then shift by (tx, ty) pixels."""
    a = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))
    s = np.asarray(scale, dtype=np.float64)
    cos, sin = np.cos(a) / s, np.sin(a) / s
    m = np.empty((a.shape[0], 2, 3))
    # forward: p_out = s R(a) q + t  =>  q = R(-a) (p_out - t) / s
    m[:, 0, 0], m[:, 0, 1] = cos, sin
    m[:, 1, 0], m[:, 1, 1] = -sin, cos
    m[:, 0, 2] = -(cos * tx + sin * ty)
    m[:, 1, 2] = -(-sin * tx + cos * ty)
    return m


def hflip(x):
    """Mirror left-right: y[..., j] = x[..., W-1-j]."""
    return np.ascontiguousarray(_check_batch(x)[..., ::-1])


def vflip(x):
    """Mirror top-bottom: y[..., i, :] = x[..., H-1-i, :]."""
    return np.ascontiguousarray(_check_batch(x)[..., ::-1, :])


def rotate(x, degrees, mode="constant", fill=0.0):
    """Rotate every image by `degrees` (scalar or one per image) about its centre, counter-clockwise as displayed."""
    _check_batch(x)
    angle = np.broadcast_to(np.asarray(degrees, dtype=np.float64), (x.shape[0],))
    return affine_warp(x, _affine_matrices(-angle, np.ones_like(angle), 0.0, 0.0), mode=mode, fill=fill)


class Transform:
    """Base class: holds the fallback generator and the call convention `t(x, rng=None)`."""

    def __init__(self, seed=None):
        self.seed = seed
        self._rng = None

    def _gen(self, rng):
        if rng is not None:
            if not isinstance(rng, np.random.Generator):
                raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
            return rng
        if self.seed is not None:
            if self._rng is None:
                self._rng = np.random.default_rng(self.seed)
            return self._rng
        from .. import random as _random
        return _random.generator("cpu")

    def __call__(self, x, rng=None):
        _check_batch(x)
        return self.apply(x, self._gen(rng))

    def apply(self, x, rng):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "seed")
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms, seed=None):
        super().__init__(seed)
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose expects callables, got {type(t).__name__}")

    def apply(self, x, rng):
        for t in self.transforms:
            x = t(x, rng) if isinstance(t, Transform) else t(x)
        return x


class Normalize(Transform):
    """y = (x - mean[c]) / std[c]; mean/std are scalars or one value per channel."""

    def __init__(self, mean, std):
        super().__init__()
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean.ndim != 1 or self.std.ndim != 1:
            raise ValueError(f"mean and std must be scalars or 1-D, got shapes {self.mean.shape}, {self.std.shape}")
        if np.any(self.std <= 0):
            raise ValueError(f"std must be > 0, got {self.std.tolist()}")

    def apply(self, x, rng):
        c = x.shape[1]
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v.size not in (1, c):
                raise ValueError(f"Normalize {name} has {v.size} values, expected 1 or C={c}")
        m = self.mean.astype(x.dtype).reshape(1, -1, 1, 1)
        s = self.std.astype(x.dtype).reshape(1, -1, 1, 1)
        return (x - m) / s

    def __call__(self, x, rng=None):
        return self.apply(_check_batch(x), None)


class Standardize(Transform):
    """Per-image standardisation: y = (x - mean(x_n)) / (std(x_n) + eps) over (C, H, W)."""

    def __init__(self, eps=1e-6):
        super().__init__()
        self.eps = float(eps)

    def apply(self, x, rng):
        m = x.mean(axis=(1, 2, 3), keepdims=True)
        s = x.std(axis=(1, 2, 3), keepdims=True)
        return ((x - m) / (s + self.eps)).astype(x.dtype, copy=False)

    def __call__(self, x, rng=None):
        return self.apply(_check_batch(x), None)


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right with probability p."""

    def __init__(self, p=0.5, seed=None):
        super().__init__(seed)
        self.p = _prob(p)

    def apply(self, x, rng):
        flip = rng.random(x.shape[0]) < self.p
        return np.where(flip[:, None, None, None], x[..., ::-1], x)


class RandomVerticalFlip(Transform):
    """Mirror each image top-bottom with probability p."""

    def __init__(self, p=0.5, seed=None):
        super().__init__(seed)
        self.p = _prob(p)

    def apply(self, x, rng):
        flip = rng.random(x.shape[0]) < self.p
        return np.where(flip[:, None, None, None], x[..., ::-1, :], x)


class RandomAffine(Transform):
    """Rotation (degrees), translation (fraction of width/height) and zoom (scale) in one bilinear warp.

    degrees: d or (lo, hi); translate: fraction f (shift ~ U(-f, f) * size) or None; scale: (lo, hi) or None.
    """

    def __init__(self, degrees=0.0, translate=None, scale=None, mode="constant", fill=0.0, seed=None):
        super().__init__(seed)
        self.degrees = _range(degrees, "degrees")
        self.translate = None if translate is None else _range(translate, "translate")
        self.scale = None if scale is None else _range(scale, "scale", center=1.0, min_value=1e-3)
        if self.scale is not None and self.scale[0] <= 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if mode not in ("constant", "edge"):
            raise ValueError(f"mode must be 'constant' or 'edge', got {mode!r}")
        self.mode, self.fill = mode, float(fill)

    def apply(self, x, rng):
        n, _, h, w = x.shape
        angle = rng.uniform(*self.degrees, size=n)
        if self.translate is not None:
            tx = rng.uniform(*self.translate, size=n) * w
            ty = rng.uniform(*self.translate, size=n) * h
        else:
            tx = ty = np.zeros(n)
        s = rng.uniform(*self.scale, size=n) if self.scale is not None else np.ones(n)
        return affine_warp(x, _affine_matrices(-angle, s, tx, ty), mode=self.mode, fill=self.fill)


class RandomRotation(RandomAffine):
    """Rotate each image by an angle ~ U(-degrees, degrees) (or U(lo, hi)), bilinear, about the centre."""

    def __init__(self, degrees, mode="constant", fill=0.0, seed=None):
        super().__init__(degrees=degrees, mode=mode, fill=fill, seed=seed)


class RandomTranslate(RandomAffine):
    """Shift each image by up to `max_shift` of its width/height in x and y (bilinear, sub-pixel)."""

    def __init__(self, max_shift=0.1, mode="constant", fill=0.0, seed=None):
        super().__init__(translate=max_shift, mode=mode, fill=fill, seed=seed)


class RandomScale(RandomAffine):
    """Zoom each image about its centre by a factor ~ U(lo, hi) (a number s means (1-s, 1+s))."""

    def __init__(self, scale=(0.9, 1.1), mode="constant", fill=0.0, seed=None):
        super().__init__(scale=scale, mode=mode, fill=fill, seed=seed)


class RandomResizedCrop(Transform):
    """Crop a random box (area fraction ~ U(scale), aspect ratio log-uniform in `ratio`) and resize it to `size`.

    Boxes that would leave the image are shrunk to fit (no padding), so the output only holds image pixels.
    """

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=None):
        super().__init__(seed)
        self.size = (size, size) if isinstance(size, numbers.Integral) else tuple(int(s) for s in size)
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be an int or (H, W) >= 1, got {size!r}")
        self.scale = _range(scale, "scale")
        self.ratio = _range(ratio, "ratio")
        if not (0 < self.scale[0] <= self.scale[1] <= 1):
            raise ValueError(f"scale must lie in (0, 1], got {self.scale}")
        if self.ratio[0] <= 0:
            raise ValueError(f"ratio must be > 0, got {self.ratio}")

    def apply(self, x, rng):
        n, _, h, w = x.shape
        ho, wo = self.size
        area = rng.uniform(*self.scale, size=n) * h * w
        logr = rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), size=n)
        r = np.exp(logr)
        cw = np.clip(np.sqrt(area * r), 1, w)
        ch = np.clip(np.sqrt(area / r), 1, h)
        # crop centre so that the box [c - size/2, c + size/2] (in pixel-edge units) stays inside the image
        cx = rng.uniform(0, 1, size=n) * (w - cw) + cw / 2 - w / 2
        cy = rng.uniform(0, 1, size=n) * (h - ch) + ch / 2 - h / 2
        m = np.zeros((n, 2, 3))
        m[:, 0, 0] = cw / wo
        m[:, 1, 1] = ch / ho
        m[:, 0, 2] = cx
        m[:, 1, 2] = cy
        return affine_warp(x, m, out_size=(ho, wo), mode="edge")


class RandomBrightnessContrast(Transform):
    """y = clip((x - m) * c + m + b, 0, 1), c ~ U(1-contrast, 1+contrast), b ~ U(-brightness, brightness).

    m is each image's mean, so contrast changes keep the mean brightness. clip=False keeps the raw values.
    """

    def __init__(self, brightness=0.1, contrast=0.1, clip=True, seed=None):
        super().__init__(seed)
        self.brightness = _range(brightness, "brightness")
        self.contrast = _range(contrast, "contrast", center=1.0, min_value=0.0)
        self.clip = bool(clip)

    def apply(self, x, rng):
        n = x.shape[0]
        b = rng.uniform(*self.brightness, size=(n, 1, 1, 1)).astype(x.dtype)
        c = rng.uniform(*self.contrast, size=(n, 1, 1, 1)).astype(x.dtype)
        m = x.mean(axis=(1, 2, 3), keepdims=True)
        y = (x - m) * c + m + b
        return np.clip(y, 0, 1) if self.clip else y


class GaussianNoise(Transform):
    """y = x + std * N(0, 1) (independent per pixel)."""

    def __init__(self, std=0.02, seed=None):
        super().__init__(seed)
        if not isinstance(std, numbers.Real) or std < 0:
            raise ValueError(f"std must be a number >= 0, got {std!r}")
        self.std = float(std)

    def apply(self, x, rng):
        return x + (self.std * rng.standard_normal(x.shape)).astype(x.dtype)


class Resize(Transform):
    """Deterministic bilinear resize to `size` (int or (H, W)); pixel centres are aligned like align_corners=False."""

    def __init__(self, size):
        super().__init__()
        self.size = (size, size) if isinstance(size, numbers.Integral) else tuple(int(s) for s in size)

    def apply(self, x, rng):
        n, _, h, w = x.shape
        ho, wo = self.size
        m = np.zeros((n, 2, 3))
        m[:, 0, 0] = w / wo
        m[:, 1, 1] = h / ho
        return affine_warp(x, m, out_size=(ho, wo), mode="edge")

    def __call__(self, x, rng=None):
        return self.apply(_check_batch(x), None)


_AUG_NAMES = {
    "hflip": lambda v: RandomHorizontalFlip(0.5 if v is None else float(v)),
    "vflip": lambda v: RandomVerticalFlip(0.5 if v is None else float(v)),
    "rotate": lambda v: RandomRotation(10.0 if v is None else float(v)),
    "shift": lambda v: RandomTranslate(0.1 if v is None else float(v)),
    "scale": lambda v: RandomScale(0.1 if v is None else float(v)),
    "crop": lambda v: RandomResizedCrop(28 if v is None else int(v), scale=(0.7, 1.0)),
    "brightness": lambda v: RandomBrightnessContrast(0.1 if v is None else float(v), 0.0),
    "contrast": lambda v: RandomBrightnessContrast(0.0, 0.1 if v is None else float(v)),
    "noise": lambda v: GaussianNoise(0.02 if v is None else float(v)),
}


def parse_augment(spec):
    """Build a Compose from a CLI string like "hflip,rotate=15,shift=0.1,scale=0.1,brightness=0.1".

    Names: hflip[=p], vflip[=p], rotate[=deg], shift[=fraction], scale[=s], crop[=size], brightness[=b],
    contrast[=c], noise[=std]. rotate/shift/scale are merged into one `RandomAffine` (placed where the
    first of them appears). "none" or "" gives None (no augmentation).
    """
    if spec is None:
        return None
    if not isinstance(spec, str):
        raise TypeError(f"augment must be a str, got {type(spec).__name__}")
    spec = spec.strip()
    if spec in ("", "none"):
        return None
    out = []
    geometric = {}
    for item in spec.split(","):
        key, _, val = item.strip().partition("=")
        if key not in _AUG_NAMES:
            raise ValueError(f"unknown augmentation {key!r} in {spec!r}: expected one of {', '.join(_AUG_NAMES)}")
        try:
            if key in ("rotate", "shift", "scale"):
                # one bilinear warp for all three: faster, and the image is interpolated (blurred) once
                if not geometric:
                    out.append(geometric)
                geometric[key] = float(val) if val else {"rotate": 10.0, "shift": 0.1, "scale": 0.1}[key]
            else:
                out.append(_AUG_NAMES[key](val or None))
        except ValueError as e:
            raise ValueError(f"bad value for augmentation {key!r} in {spec!r}: {e}") from None
    if geometric:
        try:
            affine = RandomAffine(degrees=geometric.get("rotate", 0.0), translate=geometric.get("shift"),
                                  scale=geometric.get("scale"))
        except ValueError as e:
            raise ValueError(f"bad value for augmentation in {spec!r}: {e}") from None
        out = [affine if t is geometric else t for t in out]
    return Compose(out)
