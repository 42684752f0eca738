"""Losses: softmax cross-entropy (fused), binary cross-entropy with logits, mean squared error, focal loss.

Every loss computes a per-sample (or per-element) loss l and then reduces it:
"none" -> l, "sum" -> sum(l), "mean" -> sum(l) / D, where D is the number of terms, or for
class-weighted cross-entropy the sum of the targets' weights (PyTorch's semantics).
The backward of a reduction hands each term the upstream gradient times gscale = 1 (sum), 1 / D (mean),
or the element of the upstream gradient (none).
"""
from __future__ import annotations

from ..autograd import Function
from ..backends import kernel, xp_of
from ..backends import cpu_numpy_nn as _reference  # noqa: F401  (registers the NumPy primitives)
from . import nn_args
from .nn_args import number_arg


def _reduce(loss, reduction, denom=None):
    """Reduce a per-term loss array; returns (value, scale of the upstream gradient per term)."""
    if reduction == "none":
        return loss, None
    total = loss.sum()
    if reduction == "sum":
        return total, 1.0
    denom = loss.size if denom is None else denom
    return total / denom, 1.0 / denom


def _expand_grad(g, reduction, scale, shape):
    """The upstream gradient of each term, as an array of `shape`."""
    xp = xp_of(g)
    if reduction == "none":
        return g
    return xp.broadcast_to(g * scale, shape)


# --------------------------------------------------------------------------- cross-entropy
class CrossEntropy(Function):
    """Softmax cross-entropy fused with the softmax (primitives cross_entropy_forward / _backward).

    Shapes: logits z (N, C), target t (N,) int, weight w (C,) or None, eps = label_smoothing.
    forward:  logp = log_softmax(z) (max-shifted),  q_ic = (1 - eps) w_{t_i} [c = t_i] + eps w_c / C
              l_i = -sum_c q_ic logp_ic;  "mean" divides sum_i l_i by sum_i w_{t_i} (N without weights)
    backward: dz_ij = gscale_i (p_ij Q_i - q_ij),  p = softmax(z),  Q_i = sum_c q_ic
              which is (p - onehot) / N for the plain mean: no log(softmax), no division by p.
    """

    @staticmethod
    def forward(ctx, z, target, weight, label_smoothing, reduction):
        loss, logp = kernel("cross_entropy_forward", z)(z, target, weight, label_smoothing)
        denom = None
        if reduction == "mean" and weight is not None:
            denom = weight[target].sum()
        out, scale = _reduce(loss, reduction, denom)
        ctx.save_for_backward(logp, target, weight)
        ctx.opts = (label_smoothing, reduction, scale)
        return xp_of(z).asarray(out, dtype=z.dtype)

    @staticmethod
    def backward(ctx, g):
        logp, target, weight = ctx.saved_tensors
        label_smoothing, reduction, scale = ctx.opts
        gscale = xp_of(g).ascontiguousarray(_expand_grad(g, reduction, scale, target.shape), dtype=logp.dtype)
        dz = kernel("cross_entropy_backward", logp)(logp, target, weight, label_smoothing, gscale)
        return dz, None, None


def _class_logits(logits, fn):
    logits = nn_args.float_tensor_arg(logits, "input")
    if logits.ndim != 2:
        raise ValueError(f"{fn}: input must be logits of shape (N, C), got shape {logits.shape}")
    return logits


def _class_weight(weight, name, like, c, fn):
    """A per-class (C,) backend array of `like`'s dtype/device, from a Tensor, array or sequence."""
    from ..tensor import Tensor

    if weight is None:
        return None
    if isinstance(weight, Tensor):
        arr = weight.data
    else:
        arr = weight
    xp = xp_of(like.data)
    from ..backends import to_device
    try:
        arr = xp.asarray(to_device(arr, like.device) if hasattr(arr, "dtype") else arr, dtype=like.dtype)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{fn}: {name} must be None or a sequence of {c} numbers, got {weight!r}") from exc
    if arr.shape != (c,):
        raise ValueError(f"{fn}: {name} must have one entry per class, shape ({c},), got shape {tuple(arr.shape)}")
    return arr


def cross_entropy(logits, target, weight=None, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy between logits (N, C) and class indices target (N,) (PyTorch's F.cross_entropy).

    target: a Tensor or NumPy array of any integer dtype with labels in [0, C). weight (C,): class
    weights; with reduction="mean" the sum of the per-sample losses is divided by the sum of the
    targets' weights. label_smoothing in [0, 1] mixes the one-hot target with the uniform distribution
    (PyTorch's formula, weights included). Formulas of forward and backward: see `CrossEntropy`.
    """
    logits = _class_logits(logits, "cross_entropy")
    n, c = logits.shape
    reduction = nn_args.reduction_arg(reduction)
    label_smoothing = nn_args.probability_arg(label_smoothing, "label_smoothing")
    t = nn_args.class_target(target, n, c, logits.device)
    w = _class_weight(weight, "weight", logits, c, "cross_entropy")
    return CrossEntropy.apply(logits, t, w, label_smoothing=label_smoothing, reduction=reduction)


# --------------------------------------------------------------------------- focal loss
class FocalLoss(Function):
    """Multi-class softmax focal loss.

    Shapes: logits z (N, C), target t (N,), alpha (C,) or None (alpha_t = 1).
    forward:  lp_i = logp_{i, t_i} (stable log-softmax),  p_i = exp(lp_i)
              l_i = -alpha_{t_i} (1 - p_i)^gamma lp_i;   "mean" divides by N
    backward: dl_i/dlp_i = -alpha_{t_i} [(1 - p_i)^gamma - gamma (1 - p_i)^(gamma - 1) p_i lp_i]
              dlp_i/dz_ij = [j = t_i] - softmax(z)_ij
              dz_ij = gscale_i dl_i/dlp_i ([j = t_i] - softmax(z)_ij)
    gamma = 0, alpha = None gives the cross-entropy and its (softmax - onehot) gradient.
    """

    @staticmethod
    def forward(ctx, z, target, alpha, gamma, reduction):
        xp = xp_of(z)
        n = z.shape[0]
        shifted = z - z.max(axis=1, keepdims=True)
        logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        lp = logp[xp.arange(n), target]
        one_minus_p = -xp.expm1(lp)          # 1 - p without cancellation when p is close to 1
        mod = one_minus_p ** gamma if gamma else xp.ones_like(lp)
        a = alpha[target] if alpha is not None else None
        loss = -mod * lp
        if a is not None:
            loss *= a
        out, scale = _reduce(loss, reduction)
        ctx.save_for_backward(logp, target, lp, one_minus_p, mod, a)
        ctx.opts = (gamma, reduction, scale)
        return xp.asarray(out, dtype=z.dtype)

    @staticmethod
    def backward(ctx, g):
        logp, target, lp, one_minus_p, mod, a = ctx.saved_tensors
        gamma, reduction, scale = ctx.opts
        xp = xp_of(g)
        n = logp.shape[0]
        dl_dlp = -mod
        if gamma:
            # gamma (1-p)^(gamma-1) p lp: where 1 - p == 0 the product tends to 0 (lp ~ -(1-p)), keep it finite
            safe = xp.where(one_minus_p > 0, one_minus_p, 1)
            term = gamma * safe ** (gamma - 1) * xp.exp(lp) * lp
            dl_dlp = dl_dlp + xp.where(one_minus_p > 0, term, 0)
        if a is not None:
            dl_dlp = dl_dlp * a
        gs = _expand_grad(g, reduction, scale, (n,))
        coef = (gs * dl_dlp).astype(logp.dtype, copy=False)
        dz = xp.exp(logp)
        dz *= -coef[:, None]
        dz[xp.arange(n), target] += coef
        return dz, None, None


def focal_loss(logits, target, gamma=2.0, alpha=None, reduction="mean"):
    """Multi-class softmax focal loss -alpha_t (1 - p_t)^gamma log p_t (Lin et al. 2017).

    logits (N, C); target (N,) integer class indices; gamma >= 0; alpha None or a per-class
    sequence / array / Tensor of length C (alpha_t = alpha[target]); "mean" divides by N.
    Formulas of forward and backward: see `FocalLoss`.
    """
    logits = _class_logits(logits, "focal_loss")
    n, c = logits.shape
    reduction = nn_args.reduction_arg(reduction)
    number_arg(gamma, "focal_loss: gamma", "a number >= 0", lambda v: v >= 0)   # NumPy floats included
    t = nn_args.class_target(target, n, c, logits.device)
    a = _class_weight(alpha, "alpha", logits, c, "focal_loss")
    return FocalLoss.apply(logits, t, a, gamma=float(gamma), reduction=reduction)


# --------------------------------------------------------------------------- binary cross-entropy
class BCEWithLogits(Function):
    """Binary cross-entropy on logits, stable for any x (PyTorch's binary_cross_entropy_with_logits).

    Shapes: x, y alike; w (weight) and pw (pos_weight) broadcast against them (pw along the last axis).
    With softplus(s) = max(s, 0) + log1p(exp(-|s|)) = -log sigmoid(-s):
    forward:  l = w [pw y softplus(-x) + (1 - y) softplus(x)]
    backward: dx  = w [(pw y + 1 - y) sigmoid(x) - pw y]
              dy  = w [pw softplus(-x) - softplus(x)]
              dw  = pw y softplus(-x) + (1 - y) softplus(x)
              dpw = w y softplus(-x)
    """

    @staticmethod
    def forward(ctx, x, y, w, pw, reduction):
        xp = xp_of(x)
        sp_pos = xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))   # softplus(x)
        sp_neg = sp_pos - x                                        # softplus(-x)
        pos = sp_neg * y if pw is None else sp_neg * (pw * y)
        unweighted = pos + (1 - y) * sp_pos
        loss = unweighted if w is None else unweighted * w
        out, scale = _reduce(loss, reduction)
        ctx.save_for_backward(x, y, w, pw, sp_pos, sp_neg, unweighted)
        ctx.opts = (reduction, scale, loss.shape)
        return xp.asarray(out, dtype=x.dtype)

    @staticmethod
    def backward(ctx, g):
        x, y, w, pw, sp_pos, sp_neg, unweighted = ctx.saved_tensors
        reduction, scale, shape = ctx.opts
        xp = xp_of(g)
        need = ctx.needs_input_grad
        gs = _expand_grad(g, reduction, scale, shape)
        gw = gs if w is None else gs * w
        pwy = y if pw is None else pw * y
        dx = dy = dw = dpw = None
        if need[0]:
            sig = xp.exp(-xp.logaddexp(0, -x)).astype(x.dtype, copy=False)   # sigmoid without overflow
            dx = gw * ((pwy + 1 - y) * sig - pwy)
        if need[1]:
            dy = gw * ((sp_neg if pw is None else pw * sp_neg) - sp_pos)
        if w is not None and need[2]:
            dw = gs * unweighted
        if pw is not None and need[3]:
            dpw = gw * y * sp_neg
        return dx, dy, dw, dpw


def _broadcastable(shape, to, name, fn):
    xp_shape = tuple(shape)
    if len(xp_shape) > len(to) or any(a not in (1, b) for a, b in zip(xp_shape[::-1], to[::-1])):
        raise ValueError(f"{fn}: {name} of shape {xp_shape} does not broadcast to the input's shape {tuple(to)}")


def binary_cross_entropy_with_logits(logits, target, pos_weight=None, reduction="mean", weight=None):
    """Sigmoid + binary cross-entropy in one stable expression.

    logits and target of the same shape (target values in [0, 1], float); pos_weight broadcasts along
    the last axis (one weight per class for multi-label), weight broadcasts to the input's shape.
    Argument order follows the tinycnn API contract (pos_weight third); `weight` is PyTorch's per-element
    rescaling weight. Formulas of forward and backward: see `BCEWithLogits`.
    """
    fn = "binary_cross_entropy_with_logits"
    logits = nn_args.float_tensor_arg(logits, "input")
    target = nn_args.float_tensor_arg(target, "target")
    reduction = nn_args.reduction_arg(reduction)
    if target.shape != logits.shape:
        raise ValueError(f"{fn}: target size must be the same as input size, "
                         f"got target {target.shape} and input {logits.shape}")
    if target.dtype != logits.dtype:
        raise TypeError(f"{fn}: target must have the input's dtype {logits.dtype}, got {target.dtype}")
    extra = []
    for name, t in (("weight", weight), ("pos_weight", pos_weight)):
        if t is not None:
            t = nn_args.optional_tensor_arg(t, name, logits)
            _broadcastable(t.shape, logits.shape, name, fn)
        extra.append(t)
    return BCEWithLogits.apply(logits, target, extra[0], extra[1], reduction=reduction)


# --------------------------------------------------------------------------- mean squared error
class MSE(Function):
    """l = (x - y)^2 elementwise.   dx = 2 (x - y) gscale,  dy = -dx."""

    @staticmethod
    def forward(ctx, x, y, reduction):
        diff = x - y
        out, scale = _reduce(diff * diff, reduction)
        ctx.save_for_backward(diff)
        ctx.opts = (reduction, scale)
        return xp_of(x).asarray(out, dtype=x.dtype)

    @staticmethod
    def backward(ctx, g):
        (diff,) = ctx.saved_tensors
        reduction, scale = ctx.opts
        d = 2 * diff * (g if reduction == "none" else g * scale)
        need = ctx.needs_input_grad
        return (d if need[0] else None), (-d if need[1] else None)


def mse_loss(input, target, reduction="mean"):  # noqa: A002 - PyTorch's argument name
    """Mean squared error; input and target must have the same shape. Formulas: see `MSE`."""
    input = nn_args.float_tensor_arg(input, "input")
    target = nn_args.float_tensor_arg(target, "target")
    reduction = nn_args.reduction_arg(reduction)
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: target shape {target.shape} must equal input shape {input.shape}")
    if target.dtype != input.dtype:
        raise TypeError(f"mse_loss: target must have the input's dtype {input.dtype}, got {target.dtype}")
    return MSE.apply(input, target, reduction=reduction)
