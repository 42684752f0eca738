"""Loss modules: CrossEntropyLoss, BCEWithLogitsLoss, MSELoss, FocalLoss (formulas in tinycnn/ops/loss.py).

As in torch, class weights (`weight`, `pos_weight`) are registered buffers, so they follow
`.to(device, dtype)`; reduction is one of "mean", "sum", "none".
"""
from __future__ import annotations

import numpy as np

from ..ops.nn_args import number_arg
from ..tensor import Tensor
from . import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss", "FocalLoss"]

_REDUCTIONS = ("mean", "sum", "none")


def _reduction(reduction):
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _optional_tensor(value, name):
    """None, or `value` as a float Tensor (lists and arrays are accepted for convenience)."""
    if value is None or isinstance(value, Tensor):
        return value
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001
        raise TypeError(f"{name} must be None, a Tensor or an array of numbers, got {type(value).__name__}") from exc
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    return Tensor(arr.astype(arr.dtype if arr.dtype.kind == "f" else np.float32))


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = _reduction(reduction)

    def _weight_like(self, t, x):
        """A class-weight buffer in the input's dtype (the ops require equal dtypes)."""
        if t is None or t.dtype == x.dtype:
            return t
        return Tensor._wrap(t.data.astype(x.dtype))


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy over (N, C) logits and (N,) integer targets (see F.cross_entropy)."""

    def __init__(self, weight=None, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        number_arg(label_smoothing, "label_smoothing", "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)
        self.register_buffer("weight", _optional_tensor(weight, "weight"))
        self.label_smoothing = float(label_smoothing)

    def forward(self, input, target):  # noqa: A002 - PyTorch's argument name
        return F.cross_entropy(input, target, weight=self._weight_like(self.weight, input),
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class BCEWithLogitsLoss(_Loss):
    """Sigmoid + binary cross-entropy in one stable formula (see F.binary_cross_entropy_with_logits)."""

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        self.register_buffer("weight", _optional_tensor(weight, "weight"))
        self.register_buffer("pos_weight", _optional_tensor(pos_weight, "pos_weight"))

    def forward(self, input, target):  # noqa: A002
        return F.binary_cross_entropy_with_logits(input, target, pos_weight=self._weight_like(self.pos_weight, input),
                                                  reduction=self.reduction,
                                                  weight=self._weight_like(self.weight, input))


class MSELoss(_Loss):
    """Mean squared error (see F.mse_loss)."""

    def forward(self, input, target):  # noqa: A002
        return F.mse_loss(input, target, reduction=self.reduction)


class FocalLoss(_Loss):
    """Multi-class softmax focal loss -alpha_t (1 - p_t)^gamma log p_t (see F.focal_loss).

    gamma=0 and alpha=None equals CrossEntropyLoss. alpha: None or per-class weights (length C).
    """

    def __init__(self, gamma=2.0, alpha=None, reduction="mean"):
        super().__init__(reduction)
        number_arg(gamma, "gamma", "a number >= 0", lambda v: v >= 0)
        self.gamma = float(gamma)
        self.alpha = alpha

    def forward(self, input, target):  # noqa: A002
        return F.focal_loss(input, target, gamma=self.gamma, alpha=self.alpha, reduction=self.reduction)

    def extra_repr(self):
        return f"gamma={self.gamma}"
