"""Numerical gradient checking for students and tests.

`gradcheck(fn, inputs)` compares the gradients that autograd computes for `fn` with float64
central differences

    d f / d x_i  ~  (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)

A non-scalar output is reduced to the scalar sum(f(x) * v) with a fixed random v, so every
output element takes part and the check stays one backward pass.
"""
from __future__ import annotations

import numpy as np

from .autograd import no_grad
from .tensor import Tensor

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(RuntimeError):
    """Raised when an analytical gradient disagrees with the numerical one."""


def _scalarize(out, weights):
    if not isinstance(out, Tensor):
        raise TypeError(f"fn must return a Tensor, got {type(out).__name__}")
    if out.data.size == 1:
        return out.sum()
    return (out * weights).sum()


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check autograd's gradients of `fn(*inputs)` against float64 central differences.

    inputs: a Tensor or a sequence of Tensors (and other values passed through unchanged);
    floating tensors with requires_grad=True are checked, after conversion to float64.
    Returns True, or raises GradcheckError naming the input position, the element index,
    and the numerical and analytical values.
    """
    single = isinstance(inputs, Tensor)
    # an array is not a sequence of inputs here (each element would be passed as a number)
    if not single and (isinstance(inputs, (str, bytes, np.ndarray)) or not hasattr(inputs, "__iter__")):
        raise TypeError(f"gradcheck: inputs must be a Tensor or a sequence of Tensors, got {type(inputs).__name__}")
    inputs = [inputs] if single else list(inputs)
    xs = []
    for a in inputs:
        if isinstance(a, Tensor) and a.dtype.kind == "f":
            t = Tensor._wrap(a.numpy().astype(np.float64))
            t.requires_grad = a.requires_grad
            xs.append(t)
        else:
            xs.append(a)
    checked = [i for i, a in enumerate(xs) if isinstance(a, Tensor) and a.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")

    out = fn(*xs)
    if not isinstance(out, Tensor):
        raise TypeError(f"fn must return a Tensor, got {type(out).__name__}")
    rng = np.random.default_rng(0)
    weights = Tensor._wrap(rng.standard_normal(out.shape)) if out.data.size > 1 else None
    _scalarize(out, weights).backward()

    for i in checked:
        x = xs[i]
        analytic = np.zeros(x.shape) if x.grad is None else x.grad.numpy()
        flat = x.data.reshape(-1)
        for j in range(flat.size):
            orig = flat[j]
            with no_grad():
                flat[j] = orig + eps
                f_plus = float(_scalarize(fn(*xs), weights).item())
                flat[j] = orig - eps
                f_minus = float(_scalarize(fn(*xs), weights).item())
            flat[j] = orig
            numeric = (f_plus - f_minus) / (2 * eps)
            a = float(analytic.reshape(-1)[j])
            if not abs(numeric - a) <= atol + rtol * abs(numeric):
                idx = np.unravel_index(j, x.shape) if x.ndim else ()
                raise GradcheckError(
                    f"gradcheck failed for input {i} at element {tuple(int(k) for k in idx)}: "
                    f"numerical {numeric:.10g} vs analytical {a:.10g} "
                    f"(atol={atol}, rtol={rtol})")
    return True
