"""Stochastic gradient descent with momentum, dampening, weight decay and Nesterov momentum.

The update is written in place through the `sgd_step` primitive (docs/kernels.md): its NumPy reference
lives here, and the GPU families (kernels/elementwise.cu, Numba CUDA) register one fused kernel each.
"""
from __future__ import annotations

from ..backends import kernel, register, xp_of
from .optimizer import Optimizer, _number

__all__ = ["SGD", "sgd_step"]


@register("sgd_step", "numpy")
def sgd_step(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first):
    """One SGD update in place on flat 1-D buffers (the formulas of `SGD`).

    `buf` is the momentum buffer (ignored when momentum == 0); with `first` it is overwritten with the
    step's direction, as PyTorch does on a parameter's first step.
    """
    d = -grad if maximize else grad
    if weight_decay != 0:
        d = d + weight_decay * param
    if momentum != 0:
        if first:
            buf[...] = d
        else:
            buf *= momentum
            buf += (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
    param -= lr * d


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
        xp = xp_of(p)
        mu = group["momentum"]
        first = False
        buf = state.get("momentum_buffer")
        if mu != 0 and buf is None:
            buf = state["momentum_buffer"] = xp.empty(p.shape, dtype=p.dtype)   # C order: flat view
            first = True
        elif buf is not None and not buf.flags.c_contiguous:   # e.g. a loaded state: the kernel needs a view
            buf = state["momentum_buffer"] = xp.ascontiguousarray(buf)
        flat = p.reshape(-1) if p.flags.c_contiguous else xp.ascontiguousarray(p).reshape(-1)
        buf_flat = flat if buf is None else buf.reshape(-1)   # the kernel ignores it without momentum
        kernel("sgd_step", p)(flat, xp.ascontiguousarray(g).reshape(-1), buf_flat, group["lr"], mu,
                              group["dampening"], group["weight_decay"], group["nesterov"], group["maximize"],
                              first)
        if not p.flags.c_contiguous:
            p[...] = flat.reshape(p.shape)
