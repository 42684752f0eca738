"""Adagrad: per-coordinate learning rates from the running sum of squared gradients."""
from __future__ import annotations

from ..backends import xp_of
from .optimizer import Optimizer, _number

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    r"""PyTorch's Adagrad, step for step.

        t  = t + 1
        g  = g_t + wd * p_t                       (when weight_decay != 0)
        lr_t = lr / (1 + (t - 1) * lr_decay)
        s_t = s_{t-1} + g * g                     (s_0 = initial_accumulator_value)
        p_{t+1} = p_t - lr_t * g / (sqrt(s_t) + eps)

    State per parameter: "step", "sum".
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 maximize=False):
        _number(initial_accumulator_value, "initial_accumulator_value", low=0.0)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, maximize=maximize))
        # torch creates the accumulators eagerly, so state_dict() has them before the first step
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p] = {"step": 0, "sum": xp_of(p.data).full_like(
                    p.data, group["initial_accumulator_value"])}

    def _check_group(self, group):
        super()._check_group(group)
        _number(group["lr_decay"], "lr_decay", low=0.0)
        _number(group["weight_decay"], "weight_decay", low=0.0)
        _number(group["eps"], "eps", low=0.0)

    def _update(self, p, g, state, group):
        xp = xp_of(p)
        if "sum" not in state:
            state["step"] = 0
            state["sum"] = xp.full_like(p, group["initial_accumulator_value"])
        state["step"] += 1
        if group["maximize"]:
            g = -g
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        s = state["sum"]
        tmp = xp.multiply(g, g)
        s += tmp
        xp.sqrt(s, out=tmp)
        tmp += group["eps"]
        xp.divide(g, tmp, out=tmp)
        tmp *= clr
        p -= tmp
