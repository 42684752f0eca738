"""Weight averaging (PyTorch's ``torch.optim.swa_utils`` names): an exponential moving average (EMA) or a
plain running mean (SWA) of a model's weights, kept in a separate copy of the model.

EMA, with decay d in [0, 1] (``get_ema_multi_avg_fn``), after each optimizer step t:

    W_ema(0) = W(0)                       (the first update copies the model)
    W_ema(t) = d * W_ema(t-1) + (1 - d) * W(t)   computed as  W_ema += (1 - d) * (W - W_ema)

so W_ema(t) = (1-d) sum_{s<=t} d^(t-s) W(s) (+ d^t W(0)): a weighted mean over about 1 / (1 - d) recent
steps. SWA (the default, ``get_swa_multi_avg_fn``): W_avg(n) = W_avg(n-1) + (W - W_avg(n-1)) / (n + 1),
the equal-weight mean of every model passed to `update_parameters`.

Why it helps: SGD/Adam iterates rattle around a minimum with the noise of each mini-batch; their average
sits nearer its centre, which on small data sets gives smoother validation curves (so the best-epoch
choice is less of a lottery) and often a better model. Averaging is not part of training: the gradient
and the optimizer only ever see the live model.

Buffers (batch-norm running statistics): with ``use_buffers=True`` float buffers are averaged like the
parameters; otherwise they are copied from the live model at each update, as in PyTorch. Integer buffers
(``num_batches_tracked``) are always copied.
"""
from __future__ import annotations

import copy

import numpy as np

from ..nn.module import Module

__all__ = ["AveragedModel", "get_ema_multi_avg_fn", "get_swa_multi_avg_fn", "get_ema_avg_fn", "get_swa_avg_fn"]


def _check_decay(decay) -> float:
    if not 0.0 <= float(decay) <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    return float(decay)


def get_ema_multi_avg_fn(decay: float = 0.999):
    """In-place EMA of lists of arrays: ``avg += (1 - decay) * (cur - avg)`` for each pair."""
    w = 1.0 - _check_decay(decay)

    def ema_update(averaged: list, current: list, num_averaged) -> None:
        for a, c in zip(averaged, current):
            a += (c - a) * a.dtype.type(w)   # a scalar of the array's dtype: float32 stays float32 (NumPy or CuPy)
    return ema_update


def get_swa_multi_avg_fn():
    """In-place running mean of lists of arrays: ``avg += (cur - avg) / (n + 1)``."""

    def swa_update(averaged: list, current: list, num_averaged) -> None:
        n = int(num_averaged)
        for a, c in zip(averaged, current):
            a += (c - a) / a.dtype.type(n + 1)
    return swa_update


def get_ema_avg_fn(decay: float = 0.999):
    """Out-of-place EMA of one array: returns ``decay * avg + (1 - decay) * cur``."""
    w = 1.0 - _check_decay(decay)
    return lambda avg, cur, num_averaged: avg + (cur - avg) * avg.dtype.type(w)


def get_swa_avg_fn():
    """Out-of-place running mean of one array: returns ``avg + (cur - avg) / (n + 1)``."""
    return lambda avg, cur, num_averaged: avg + (cur - avg) / avg.dtype.type(int(num_averaged) + 1)


class AveragedModel(Module):
    """A copy of `model` (``.module``) whose weights are the average of the weights passed to
    `update_parameters`; calling it runs that copy.

    avg_fn(avg, cur, n) -> new array, or multi_avg_fn(avg_list, cur_list, n) in place (at most one;
    neither: SWA's equal-weight mean). use_buffers: average float buffers too (else copy them).
    ``n_averaged`` counts the updates, and is saved in the state_dict so a resumed run continues the average.
    Arrays are averaged on the model's device with its array module (NumPy or CuPy).
    """

    def __init__(self, model: Module, device=None, avg_fn=None, multi_avg_fn=None, use_buffers: bool = False):
        super().__init__()
        if avg_fn is not None and multi_avg_fn is not None:
            raise ValueError("give avg_fn or multi_avg_fn, not both")
        if not isinstance(model, Module):
            raise TypeError(f"model must be a tinycnn.nn.Module, got {type(model).__name__}")
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.grad = None
            p.requires_grad_(False)   # the average is never trained
        if device is not None:
            self.module.to(device)
        from ..tensor import tensor
        self.register_buffer("n_averaged", tensor(np.array(0, dtype=np.int64)))
        self.avg_fn, self.multi_avg_fn, self.use_buffers = avg_fn, multi_avg_fn, bool(use_buffers)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def _pairs(self, model):
        """(averaged array, model array) pairs to average, and pairs to copy."""
        mine, theirs = list(self.module.named_parameters()), list(model.named_parameters())
        if [n for n, _ in mine] != [n for n, _ in theirs]:
            raise ValueError("update_parameters: `model` has other parameters than the averaged model")
        avg = [(a.data, b.data) for (_, a), (_, b) in zip(mine, theirs)]
        cp = []
        for (_, a), (_, b) in zip(self.module.named_buffers(), model.named_buffers()):
            if self.use_buffers and a.data.dtype.kind == "f":
                avg.append((a.data, b.data))
            else:
                cp.append((a.data, b.data))
        return avg, cp

    def update_parameters(self, model: Module) -> None:
        """Fold the current weights of `model` (same architecture) into the average."""
        avg, cp = self._pairs(model)
        n = int(self.n_averaged.data)
        for a, b in cp:
            a[...] = b
        if n == 0:
            for a, b in avg:
                a[...] = b
        elif self.avg_fn is not None:
            for a, b in avg:
                a[...] = self.avg_fn(a, b, n)
        else:
            (self.multi_avg_fn or get_swa_multi_avg_fn())([a for a, _ in avg], [b for _, b in avg], n)
        self.n_averaged.data[...] = n + 1
