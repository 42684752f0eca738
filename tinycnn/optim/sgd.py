"""Stochastic gradient descent with momentum, dampening, weight decay and Nesterov momentum."""
from __future__ import annotations

from ..backends import xp_of
from .optimizer import Optimizer, _number

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""PyTorch's SGD, step for step (non-foreach, non-fused).

    With gradient g_t, parameter p_t, learning rate lr, weight decay wd, momentum mu, dampening tau:

        g   = g_t + wd * p_t                                (when wd != 0)
        b_t = g                                             (first step)
        b_t = mu * b_{t-1} + (1 - tau) * g                  (later steps; when mu != 0)
        g   = g + mu * b_t  (nesterov)   or   g = b_t       (when mu != 0)
        p_{t+1} = p_t - lr * g                              (maximize=True: p_t + lr * g)

    State per parameter: "momentum_buffer" (only when momentum != 0).
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"Nesterov momentum requires a momentum > 0 and zero dampening, "
                             f"got momentum={momentum}, dampening={dampening}")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def _check_group(self, group):
        super()._check_group(group)
        _number(group["momentum"], "momentum", low=0.0)
        _number(group["dampening"], "dampening")
        _number(group["weight_decay"], "weight_decay", low=0.0)

    def _update(self, p, g, state, group):
        lr, mu, tau = group["lr"], group["momentum"], group["dampening"]
        wd, nesterov = group["weight_decay"], group["nesterov"]
        if group["maximize"]:
            g = -g
        if wd != 0:
            g = g + wd * p
        if mu != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = xp_of(g).array(g, copy=True)
            else:
                buf *= mu
                buf += (1 - tau) * g
            g = g + mu * buf if nesterov else buf
        p -= lr * g
