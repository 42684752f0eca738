"""Adam and AdamW, with the update written in place through the `adam_step` primitive (docs/kernels.md).

The NumPy reference of the primitive lives here; GPU families (kernels/elementwise.cu, Numba CUDA)
register their own under the same name and are picked by `tinycnn.backends.kernel`.
"""
from __future__ import annotations

import math

from ..backends import kernel, register, xp_of
from .optimizer import Optimizer, _number

__all__ = ["Adam", "AdamW", "adam_step"]


@register("adam_step", "numpy")
def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    r"""One Adam (decoupled=False) or AdamW (decoupled=True) update, in place on flat 1-D buffers.

    param, exp_avg, exp_avg_sq are updated; grad is only read. `step` is the step number t >= 1
    (an int, or a one-element array). The formulas are PyTorch's (see `Adam`). Uses one
    temporary of the parameter's size (two with L2 weight decay).
    """
    xp = xp_of(param)
    t = int(step) if not hasattr(step, "shape") else int(step.reshape(-1)[0])
    if weight_decay != 0:
        if decoupled:
            param *= 1 - lr * weight_decay
        else:
            grad = grad + weight_decay * param
    tmp = xp.subtract(grad, exp_avg)           # exp_avg.lerp_(grad, 1 - beta1), as torch
    tmp *= 1 - beta1
    exp_avg += tmp
    exp_avg_sq *= beta2
    xp.multiply(grad, grad, out=tmp)
    tmp *= 1 - beta2
    exp_avg_sq += tmp
    bias_correction1 = 1 - beta1 ** t
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** t)
    step_size = lr / bias_correction1
    xp.sqrt(exp_avg_sq, out=tmp)
    tmp /= bias_correction2_sqrt
    tmp += eps
    xp.divide(exp_avg, tmp, out=tmp)
    tmp *= step_size
    param -= tmp


class Adam(Optimizer):
    r"""PyTorch's Adam (non-amsgrad, non-fused), step for step.

    With gradient g_t and step t = 1, 2, ...:

        g   = g_t + wd * p_{t-1}                          (L2 weight decay, Adam only)
        p   = p_{t-1} * (1 - lr * wd)                     (decoupled weight decay, AdamW only)
        m_t = beta1 * m_{t-1} + (1 - beta1) * g
        v_t = beta2 * v_{t-1} + (1 - beta2) * g^2
        m_hat = m_t / (1 - beta1^t),   v_hat = v_t / (1 - beta2^t)
        p_t = p - lr * m_hat / (sqrt(v_hat) + eps)

    computed as p - (lr / (1 - beta1^t)) * m_t / (sqrt(v_t) / sqrt(1 - beta2^t) + eps), as torch does.
    State per parameter: "step", "exp_avg" (m), "exp_avg_sq" (v). Derivation of the bias
    correction: docs/math.md ("Adam with bias correction").
    """

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
                 maximize=False):
        if amsgrad:
            raise ValueError("amsgrad=True is not supported (only PyTorch's default amsgrad=False), got amsgrad=True")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=False, maximize=maximize))

    def _check_group(self, group):
        super()._check_group(group)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        _number(betas[0], "betas[0]", low=0.0, high=1.0, high_inclusive=False)
        _number(betas[1], "betas[1]", low=0.0, high=1.0, high_inclusive=False)
        _number(group["eps"], "eps", low=0.0)
        _number(group["weight_decay"], "weight_decay", low=0.0)

    def _update(self, p, g, state, group):
        xp = xp_of(p)
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros(p.shape, dtype=p.dtype)      # C order: the kernel updates flat views
            state["exp_avg_sq"] = xp.zeros(p.shape, dtype=p.dtype)
        for key in ("exp_avg", "exp_avg_sq"):
            if not state[key].flags.c_contiguous:   # e.g. a loaded state: reshape(-1) would update a copy
                state[key] = xp.ascontiguousarray(state[key])
        state["step"] += 1
        if group["maximize"]:
            g = -g
        beta1, beta2 = group["betas"]
        flat = p.reshape(-1) if p.flags.c_contiguous else xp.ascontiguousarray(p).reshape(-1)
        kernel("adam_step", p)(flat, xp.ascontiguousarray(g).reshape(-1), state["exp_avg"].reshape(-1),
                               state["exp_avg_sq"].reshape(-1), state["step"], group["lr"], beta1, beta2,
                               group["eps"], group["weight_decay"], self._decoupled)
        if not p.flags.c_contiguous:
            p[...] = flat.reshape(p.shape)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter): p <- p (1 - lr wd) before the Adam step.

    Same formulas as `Adam` otherwise; default weight_decay=1e-2 as in PyTorch.
    """

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize)
