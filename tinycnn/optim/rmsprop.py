"""RMSprop: gradients scaled by a running root-mean-square, optionally centred and with momentum."""
from __future__ import annotations

from ..backends import xp_of
from .optimizer import Optimizer, _number

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    r"""PyTorch's RMSprop, step for step.

        g   = g_t + wd * p_t                                   (when weight_decay != 0)
        v_t = alpha * v_{t-1} + (1 - alpha) * g^2
        centered:  m_t = alpha * m_{t-1} + (1 - alpha) * g,   d = sqrt(v_t - m_t^2) + eps
        otherwise: d = sqrt(v_t) + eps
        momentum > 0:  b_t = momentum * b_{t-1} + g / d,   p_{t+1} = p_t - lr * b_t
        otherwise:     p_{t+1} = p_t - lr * g / d

    State per parameter: "step", "square_avg", "momentum_buffer" (momentum > 0), "grad_avg" (centered).
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize))

    def _check_group(self, group):
        super()._check_group(group)
        _number(group["alpha"], "alpha", low=0.0)
        _number(group["eps"], "eps", low=0.0)
        _number(group["weight_decay"], "weight_decay", low=0.0)
        _number(group["momentum"], "momentum", low=0.0)

    def _update(self, p, g, state, group):
        xp = xp_of(p)
        alpha, eps, mu = group["alpha"], group["eps"], group["momentum"]
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p)
            if mu > 0:
                state["momentum_buffer"] = xp.zeros_like(p)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(p)
        state["step"] += 1
        if group["maximize"]:
            g = -g
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p
        v = state["square_avg"]
        v *= alpha
        tmp = xp.multiply(g, g)
        tmp *= 1 - alpha
        v += tmp
        if group["centered"]:
            m = state["grad_avg"]
            xp.subtract(g, m, out=tmp)          # lerp: m + (1 - alpha) (g - m), as torch
            tmp *= 1 - alpha
            m += tmp
            xp.multiply(m, m, out=tmp)
            xp.subtract(v, tmp, out=tmp)
            xp.sqrt(tmp, out=tmp)
        else:
            xp.sqrt(v, out=tmp)
        tmp += eps
        xp.divide(g, tmp, out=tmp)
        if mu > 0:
            buf = state["momentum_buffer"]
            buf *= mu
            buf += tmp
            p -= group["lr"] * buf
        else:
            tmp *= group["lr"]
            p -= tmp
