"""Reverse-mode automatic differentiation over a dynamic graph.

Every differentiable op is a `Function` subclass with two static methods:

    forward(ctx, *arrays, **options) -> array
    backward(ctx, grad_out)          -> one gradient array (or None) per positional input

`Function.apply` unwraps Tensor arguments into backend arrays, runs `forward`, wraps the
result in a Tensor and, when gradients are needed, records a node (the `ctx`) that keeps
the inputs and whatever `forward` saved on it. `Tensor.backward` walks the recorded nodes
in reverse topological order (iteratively, so a chain of 100,000 ops is fine), calls each
`backward`, adds the gradients of tensors used more than once, and frees the saved arrays.
"""
from __future__ import annotations

import contextlib
import threading

from . import backends

__all__ = ["Function", "Context", "no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled",
           "unbroadcast", "run_backward"]


class _GradMode(threading.local):
    enabled = True


_mode = _GradMode()


def is_grad_enabled() -> bool:
    return _mode.enabled


@contextlib.contextmanager
def set_grad_enabled(mode: bool):
    prev = _mode.enabled
    _mode.enabled = bool(mode)
    try:
        yield
    finally:
        _mode.enabled = prev


class no_grad(contextlib.ContextDecorator):
    """Context manager (and decorator) that stops the graph from being recorded."""

    def __enter__(self):
        self._prev = _mode.enabled
        _mode.enabled = False
        return self

    def __exit__(self, *exc):
        _mode.enabled = self._prev
        return False


class enable_grad(contextlib.ContextDecorator):
    def __enter__(self):
        self._prev = _mode.enabled
        _mode.enabled = True
        return self

    def __exit__(self, *exc):
        _mode.enabled = self._prev
        return False


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`, undoing NumPy broadcasting (leading axes and size-1 axes)."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


class Context:
    """A graph node: the function, its inputs, what forward saved, and options for backward."""

    __slots__ = ("fn", "inputs", "needs_input_grad", "saved_tensors", "out_shape", "out_dtype",
                 "retained", "freed", "__dict__")

    def __init__(self, fn, inputs, needs_input_grad):
        self.fn = fn
        self.inputs = inputs            # positional args: Tensors or plain values
        self.needs_input_grad = needs_input_grad
        self.saved_tensors = ()
        self.retained = None            # output Tensor whose .grad must be kept (retain_grad)
        self.freed = False

    def save_for_backward(self, *arrays):
        self.saved_tensors = arrays


class Function:
    """Base class of differentiable ops. Subclasses define `forward` and `backward`."""

    @staticmethod
    def forward(ctx, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad_out):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        from .tensor import Tensor  # local: tensor.py imports this module

        arrays = []
        device = None
        needs = []
        for a in args:
            if isinstance(a, Tensor):
                if device is None:
                    device = a.device
                elif a.device != device:
                    raise RuntimeError(
                        f"{cls.__name__}: all tensors must be on the same device, got {device!r} and {a.device!r}")
                arrays.append(a.data)
                needs.append(a.requires_grad)
            else:
                arrays.append(a)
                needs.append(False)
        record = _mode.enabled and any(needs)
        ctx = Context(cls, args if record else None, tuple(needs))
        out = cls.forward(ctx, *arrays, **kwargs)
        result = Tensor._wrap(out, requires_grad=record)
        if record:
            ctx.out_shape = out.shape
            ctx.out_dtype = out.dtype
            result._ctx = ctx
        return result


def run_backward(root, grad, retain_graph: bool = False) -> None:
    """Backpropagate `grad` (a backend array) from tensor `root` through the recorded graph."""
    from .tensor import Tensor

    ctx0 = root._ctx
    if ctx0 is None:
        _accumulate(root, grad)
        return
    if ctx0.freed:
        raise RuntimeError("backward through a graph a second time: its saved arrays were freed; "
                           "pass retain_graph=True to the first backward() to keep them")
    # iterative post-order DFS gives a topological order (inputs before users)
    order = []
    visited = {id(ctx0)}
    stack = [(ctx0, False)]
    while stack:
        ctx, expanded = stack.pop()
        if expanded:
            order.append(ctx)
            continue
        stack.append((ctx, True))
        for a in ctx.inputs:
            if isinstance(a, Tensor) and a._ctx is not None and id(a._ctx) not in visited:
                if a._ctx.freed:
                    raise RuntimeError("backward through a graph a second time: its saved arrays were "
                                       "freed; pass retain_graph=True to the first backward() to keep them")
                visited.add(id(a._ctx))
                stack.append((a._ctx, False))

    grads = {id(ctx0): grad}
    for ctx in reversed(order):
        g = grads.pop(id(ctx), None)
        if g is None:
            continue
        if ctx.retained is not None:
            _accumulate(ctx.retained, g)
        in_grads = ctx.fn.backward(ctx, g)
        if not isinstance(in_grads, tuple):
            in_grads = (in_grads,)
        for a, need, ig in zip(ctx.inputs, ctx.needs_input_grad, in_grads):
            if not need or ig is None:
                continue
            if ig.shape != a.shape:
                ig = unbroadcast(ig, a.shape)
            if ig.dtype != a.dtype:
                ig = ig.astype(a.dtype)
            if a._ctx is not None:
                key = id(a._ctx)
                prev = grads.get(key)
                grads[key] = ig if prev is None else prev + ig
            else:
                _accumulate(a, ig)
        # drop the loop's references now: the next backward may then reuse a gradient buffer that
        # nothing else holds (ReLU writes dx into it), and freed grads are released one step sooner
        in_grads = ig = None
        if not retain_graph:
            ctx.saved_tensors = ()
            ctx.inputs = tuple(a if isinstance(a, Tensor) else None for a in ctx.inputs)
            ctx.__dict__.clear()
            ctx.freed = True
    if not retain_graph:
        # cut the graph so its memory is released as soon as the user drops the outputs
        for ctx in order:
            ctx.inputs = ()


def _accumulate(t, g) -> None:
    from .tensor import Tensor

    if t.grad is None:
        # own the buffer: backward functions may hand the same array to several inputs
        t.grad = Tensor._wrap(g.copy())
    else:
        t.grad.data = t.grad.data + g
