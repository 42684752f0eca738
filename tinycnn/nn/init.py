r"""tinycnn.nn.init: in-place weight initialisers with PyTorch's names, arguments and formulas.

Each function fills ``tensor.data`` in place (no graph is recorded) with samples from
`tinycnn.random.generator(tensor.device)`, and returns the tensor.

For a weight of shape (out, in, *kernel): receptive = prod(kernel), fan_in = in * receptive,
fan_out = out * receptive.

- xavier_uniform_:  U(-a, a),  a = gain * sqrt(6 / (fan_in + fan_out))
- xavier_normal_:   N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))
- kaiming_uniform_: U(-b, b),  b = gain * sqrt(3 / fan),  gain = calculate_gain(nonlinearity, a)
- kaiming_normal_:  N(0, std^2), std = gain / sqrt(fan)
  with fan = fan_in (mode="fan_in", keeps the forward variance) or fan_out (keeps the backward one).

Derivations: docs/math.md ("Xavier and Kaiming initialisation"); tests: tests/test_init.py.
"""
from __future__ import annotations

import math
import numbers

from .. import backends
from .. import random as _random
from ..ops.nn_args import number_arg
from ..tensor import Tensor

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "ones_", "zeros_", "xavier_uniform_",
           "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "trunc_normal_"]

_LINEAR_FNS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
               "conv_transpose3d")


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table).

    linear / conv* / sigmoid: 1;  tanh: 5/3;  relu: sqrt(2);  leaky_relu: sqrt(2 / (1 + slope^2))
    with slope = param (default 0.01);  selu: 3/4.
    """
    if nonlinearity in _LINEAR_FNS or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, numbers.Real) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"negative_slope (param) must be a number, got {param!r}")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"nonlinearity must be one of {_LINEAR_FNS + ('sigmoid', 'tanh', 'relu', 'leaky_relu', 'selu')}"
                     f", got {nonlinearity!r}")


def _check(tensor, fname):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{fname}: tensor must be a tinycnn Tensor or Parameter, got {type(tensor).__name__}")
    return tensor


def _calculate_fan_in_and_fan_out(tensor):
    if tensor.ndim < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dimensions, got shape {tensor.shape}")
    receptive = 1
    for s in tensor.shape[2:]:
        receptive *= s
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _fill(tensor, values):
    """Write host or device samples into tensor.data, cast to its dtype, without recording a graph."""
    tensor.data[...] = backends.to_device(values, tensor.device).astype(tensor.dtype, copy=False)
    return tensor


def _gen(tensor, generator):
    return generator if generator is not None else _random.generator(tensor.device)


def uniform_(tensor, a: float = 0.0, b: float = 1.0, generator=None):
    """Fill with samples of U(a, b)."""
    _check(tensor, "uniform_")
    number_arg(a, "uniform_: a"), number_arg(b, "uniform_: b")   # TypeError, not NumPy's conversion message
    if not a <= b:
        raise ValueError(f"uniform_: expected a <= b, got a={a}, b={b}")
    u = _gen(tensor, generator).random(tensor.shape)
    return _fill(tensor, a + (b - a) * u)


def normal_(tensor, mean: float = 0.0, std: float = 1.0, generator=None):
    """Fill with samples of N(mean, std^2)."""
    _check(tensor, "normal_")
    number_arg(mean, "normal_: mean"), number_arg(std, "normal_: std")
    if std < 0:
        raise ValueError(f"normal_: std must be >= 0, got {std}")
    z = _gen(tensor, generator).standard_normal(tensor.shape)
    return _fill(tensor, mean + std * z)


def trunc_normal_(tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0, generator=None):
    """Fill with N(mean, std^2) samples restricted to [a, b] (rejection: redraw the ones outside)."""
    _check(tensor, "trunc_normal_")
    if not a < b:
        raise ValueError(f"trunc_normal_: expected a < b, got a={a}, b={b}")
    gen = _gen(tensor, generator)
    xp = backends.xp_of(tensor.data)
    out = mean + std * gen.standard_normal(tensor.shape)
    bad = (out < a) | (out > b)
    for _ in range(1000):
        if not bool(bad.any()):
            break
        redraw = mean + std * gen.standard_normal(tensor.shape)
        out = xp.where(bad, redraw, out)
        bad = (out < a) | (out > b)
    return _fill(tensor, xp.clip(out, a, b))


def constant_(tensor, val: float):
    _check(tensor, "constant_")
    number_arg(val, "constant_: val")
    tensor.data[...] = val
    return tensor


def ones_(tensor):
    return constant_(tensor, 1.0)


def zeros_(tensor):
    return constant_(tensor, 0.0)


def xavier_uniform_(tensor, gain: float = 1.0, generator=None):
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""
    _check(tensor, "xavier_uniform_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator=generator)


def xavier_normal_(tensor, gain: float = 1.0, generator=None):
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    _check(tensor, "xavier_normal_")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator=generator)


def kaiming_uniform_(tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", generator=None):
    """U(-b, b) with b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a) (He et al., 2015).

    Conv2d and Linear call it with a=sqrt(5), which gives b = 1 / sqrt(fan_in).
    """
    _check(tensor, "kaiming_uniform_")
    if 0 in tensor.shape:
        return tensor
    fan = _fan(tensor, mode)
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator=generator)


def kaiming_normal_(tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", generator=None):
    """N(0, std^2) with std = gain / sqrt(fan), gain = calculate_gain(nonlinearity, a)."""
    _check(tensor, "kaiming_normal_")
    if 0 in tensor.shape:
        return tensor
    fan = _fan(tensor, mode)
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return normal_(tensor, 0.0, std, generator=generator)
