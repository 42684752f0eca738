"""Argument checks shared by the layer and loss ops: each error names the argument, what was expected and what came."""
from __future__ import annotations

import numbers

import numpy as np

from .. import backends

REDUCTIONS = ("mean", "sum", "none")


def tensor_arg(x, name):
    """`x` itself when it is a Tensor, else TypeError naming `name`."""
    from ..tensor import Tensor

    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tinycnn Tensor, got {type(x).__name__}")
    return x


def float_tensor_arg(x, name):
    x = tensor_arg(x, name)
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point Tensor (float32 or float64), got dtype {x.dtype}")
    return x


def optional_tensor_arg(t, name, like, shape=None):
    """None, or a Tensor with `like`'s dtype and device (and `shape` when given)."""
    if t is None:
        return None
    t = tensor_arg(t, name)
    if shape is not None and t.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {t.shape}")
    if t.dtype != like.dtype:
        raise TypeError(f"{name} must have dtype {like.dtype} (the input's), got {t.dtype}")
    if t.device != like.device:
        raise RuntimeError(f"{name} is on {t.device!r} but the input is on {like.device!r}")
    return t


def reduction_arg(reduction):
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def number_arg(value, name, expected="a number", ok=None):
    """`value` when it is a real number (a bool is not) for which `ok(value)` holds: TypeError otherwise, or
    ValueError when only `ok` fails; both say "`name` must be `expected`, got ..."."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    if ok is not None and not ok(value):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value


def probability_arg(p, name, low=0.0, high=1.0):
    if not isinstance(p, (numbers.Real, np.number)) or isinstance(p, bool):
        raise TypeError(f"{name} must be a number in [{low}, {high}], got {type(p).__name__}")
    p = float(p)
    if not low <= p <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {p}")
    return p


def class_target(target, n, c, device):
    """Class-index targets as an int64 backend array of shape (n,) on `device`, labels checked in [0, c).

    Accepts a Tensor or a NumPy/CuPy array of any integer dtype (as the API contract says); anything
    float is a TypeError, a wrong shape or an out-of-range label a ValueError.
    """
    from ..tensor import Tensor

    arr = target.data if isinstance(target, Tensor) else target
    if isinstance(arr, (list, tuple)):
        arr = np.asarray(arr)
    if not hasattr(arr, "dtype") or not hasattr(arr, "shape"):
        raise TypeError(f"target must be a Tensor or an integer array of class indices, got {type(target).__name__}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices (any integer dtype), got dtype {arr.dtype}; "
                        f"float (probability) targets are not supported")
    if tuple(arr.shape) != (n,):
        raise ValueError(f"target must have shape ({n},) to match input of batch size {n}, got shape {tuple(arr.shape)}")
    if backends.device_of(arr) != device:
        arr = backends.to_device(arr, device)
    # on cuda this check would stall every training step on a device-to-host copy (and cannot run inside
    # a captured CUDA graph); the GPU cross-entropy kernels give a NaN loss for a label out of range instead
    if n and device == "cpu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= c:
            bad = lo if lo < 0 else hi
            raise ValueError(f"target holds label {bad} outside the valid range [0, {c - 1}] for {c} classes")
    return arr.astype(np.int64, copy=False)
