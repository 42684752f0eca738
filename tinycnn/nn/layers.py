"""Layers: thin Modules over tinycnn.nn.functional with PyTorch's constructors, attributes and reprs.

The math of each layer lives in its op (tinycnn/ops/*.py, with forward/backward formulas);
a layer holds parameters and buffers, checks its configuration and calls the op.
"""
from __future__ import annotations

import math

import numpy as np

from ..ops.conv import pair
from ..ops.nn_args import number_arg
from ..tensor import Tensor, as_dtype
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["Identity", "Flatten", "Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
           "BatchNorm1d", "BatchNorm2d", "Dropout", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax",
           "LogSoftmax"]


def _int_arg(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _empty(shape, dtype):
    dtype = as_dtype(dtype) or np.dtype(np.float32)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    return Parameter(np.empty(shape, dtype=dtype))


class Identity(Module):
    """y = x (accepts and ignores any constructor arguments, as torch's)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Flatten(Module):
    """Flattens dims start_dim..end_dim: (N, C, H, W) -> (N, C*H*W) with the defaults."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim = _int_arg(start_dim, "start_dim", -(1 << 30))
        self.end_dim = _int_arg(end_dim, "end_dim", -(1 << 30))

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Conv2d(Module):
    """2-D convolution layer: y = conv2d(x, weight, bias, stride, padding, dilation, groups).

    weight (out_channels, in_channels / groups, kH, kW), bias (out_channels,). Default init as
    PyTorch: weight ~ kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in)), bias ~ U(+-1/sqrt(fan_in)),
    fan_in = in_channels / groups * kH * kW. `padding` may also be "valid" (0) or "same" (stride 1,
    odd effective kernel). Only padding_mode="zeros" is supported.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        self.in_channels = _int_arg(in_channels, "in_channels", 1)
        self.out_channels = _int_arg(out_channels, "out_channels", 1)
        self.groups = _int_arg(groups, "groups", 1)
        if self.in_channels % self.groups:
            raise ValueError(f"in_channels must be divisible by groups, got in_channels={in_channels}, groups={groups}")
        if self.out_channels % self.groups:
            raise ValueError(f"out_channels must be divisible by groups, got out_channels={out_channels}, "
                             f"groups={groups}")
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
            if padding == "same":
                if self.stride != (1, 1):
                    raise ValueError(f"padding='same' needs stride=1, got stride={stride}")
                total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
                if any(t % 2 for t in total):
                    raise ValueError("padding='same' with an even effective kernel needs asymmetric padding, "
                                     f"which is not supported (kernel_size={self.kernel_size}, "
                                     f"dilation={self.dilation})")
            self.padding = padding
        else:
            self.padding = pair(padding, "padding", 0)
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' (the only one supported), got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.output_padding = (0, 0)
        self.transposed = False
        kh, kw = self.kernel_size
        self.weight = _empty((self.out_channels, self.in_channels // self.groups, kh, kw), dtype)
        if bias:
            self.bias = _empty((self.out_channels,), dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        if device is not None:
            self.to(device)

    def _padding_pair(self):
        if self.padding == "valid":
            return (0, 0)
        if self.padding == "same":
            return tuple(d * (k - 1) // 2 for d, k in zip(self.dilation, self.kernel_size))
        return self.padding

    def reset_parameters(self):
        # initialise on the host generator, then move: the same seed gives the same model on every device
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        if isinstance(x, Tensor) and x.ndim == 4 and x.shape[1] != self.in_channels:
            raise ValueError(f"{self._get_name()}: expected input with {self.in_channels} channels "
                             f"(shape (N, {self.in_channels}, H, W)), got input of shape {x.shape}")
        return F.conv2d(x, self.weight, self.bias, self.stride, self._padding_pair(), self.dilation, self.groups)

    def relu_max_pool2d(self, x):
        """max_pool2d(relu(self(x)), 2), bit-identical to the three layers in turn, as one op
        (`F.conv2d_relu_max_pool2d`): for inference it pools while the convolution writes its output, in
        training it pools first and applies ReLU to the pooled map. With hooks on this layer it runs as
        a module (the hooks see its full-size output), then `F.relu_max_pool2d`."""
        if self._forward_hooks or self._forward_pre_hooks:
            return F.relu_max_pool2d(self(x), 2)
        if isinstance(x, Tensor) and x.ndim == 4 and x.shape[1] != self.in_channels:
            return self.forward(x)      # its error names the expected channels
        return F.conv2d_relu_max_pool2d(x, self.weight, self.bias, self.stride, self._padding_pair(),
                                        self.dilation, self.groups)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Linear(Module):
    """y = x W^T + b; weight (out_features, in_features), bias (out_features,). Init as Conv2d (PyTorch's)."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = _int_arg(in_features, "in_features", 0)
        self.out_features = _int_arg(out_features, "out_features", 0)
        self.weight = _empty((self.out_features, self.in_features), dtype)
        if bias:
            self.bias = _empty((self.out_features,), dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        if device is not None:
            self.to(device)

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_features
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class MaxPool2d(Module):
    """Max over kernel_size windows (stride defaults to kernel_size; padding counts as -inf)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        if dilation not in (1, (1, 1)):
            raise ValueError(f"MaxPool2d: dilation must be 1 (the only value supported), got {dilation!r}")
        if return_indices or ceil_mode:
            raise ValueError("MaxPool2d: return_indices=True and ceil_mode=True are not supported, got "
                             f"return_indices={return_indices}, ceil_mode={ceil_mode}")
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Mean over kernel_size windows; count_include_pad=True divides by the full window (PyTorch's default)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        if ceil_mode or divisor_override is not None:
            raise ValueError("AvgPool2d: ceil_mode=True and divisor_override are not supported, got "
                             f"ceil_mode={ceil_mode}, divisor_override={divisor_override}")
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, x):
        if self.count_include_pad:
            return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, count_include_pad=False)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed (oh, ow) output whatever the input size (1 gives global average pooling)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class _BatchNorm(Module):
    """Batch normalisation with learnable affine (gamma=weight, beta=bias) and running statistics.

    bias=False (keyword-only, as torch 2.x) keeps gamma but drops beta.
    Buffers running_mean (zeros), running_var (ones) and num_batches_tracked (int64 0-d) as torch.
    Training: normalise with batch statistics and update the running ones with factor `momentum`
    (momentum=None: cumulative average, factor 1/num_batches_tracked). Eval: use the running ones.
    """

    _expected_dims: tuple = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        super().__init__()
        self.num_features = _int_arg(num_features, "num_features", 1)
        number_arg(eps, "eps", "a non-negative number", lambda v: v >= 0)
        if momentum is not None:
            number_arg(momentum, "momentum", "None or a number in [0, 1]", lambda v: 0 <= v <= 1)
        self.eps = eps
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dt = as_dtype(dtype) or np.dtype(np.float32)
        c = self.num_features
        if self.affine:
            self.weight = Parameter(np.ones(c, dtype=dt))
            if bias:
                self.bias = Parameter(np.zeros(c, dtype=dt))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", Tensor._wrap(np.zeros(c, dtype=dt)))
            self.register_buffer("running_var", Tensor._wrap(np.ones(c, dtype=dt)))
            self.register_buffer("num_batches_tracked", Tensor._wrap(np.array(0, dtype=np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        if device is not None:
            self.to(device)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def _check_input_dim(self, x):
        if not isinstance(x, Tensor):
            raise TypeError(f"{self._get_name()}: input must be a tinycnn Tensor, got {type(x).__name__}")
        if x.ndim not in self._expected_dims:
            want = " or ".join(f"{d}D" for d in self._expected_dims)
            raise ValueError(f"{self._get_name()}: expected {want} input, got {x.ndim}D input of shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{self._get_name()}: expected input with {self.num_features} channels "
                             f"(dim 1), got input of shape {x.shape}")

    def forward(self, x):
        self._check_input_dim(x)
        nbt = None
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            nbt = self.num_batches_tracked
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if track else None, self.running_var if track else None,
                            self.weight, self.bias, use_batch_stats, self.momentum, self.eps,
                            num_batches_tracked=nbt)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) inputs; statistics per channel C."""

    _expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) inputs; statistics per channel over N, H, W."""

    _expected_dims = (4,)


class Dropout(Module):
    """Inverted dropout in training mode (kept values scaled by 1/(1-p)); identity in eval mode."""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        number_arg(p, "dropout probability p", "a number in [0, 1]", lambda v: 0 <= v <= 1)
        self.p = float(p)
        self.inplace = inplace

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class ReLU(Module):
    """y = max(x, 0)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return F.relu(x)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class LeakyReLU(Module):
    """y = x for x >= 0, negative_slope * x otherwise."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Sigmoid(Module):
    """y = 1 / (1 + exp(-x))."""

    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    """y = tanh(x)."""

    def forward(self, x):
        return F.tanh(x)


def _legacy_softmax_dim(ndim):
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(Module):
    """Softmax along `dim` (stable, max-shifted). dim=None uses torch's legacy choice (0 for 0/1/3-D, else 1)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        dim = self.dim if self.dim is not None else _legacy_softmax_dim(x.ndim)
        return F.softmax(x, dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """log-softmax along `dim` (stable log-sum-exp)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        dim = self.dim if self.dim is not None else _legacy_softmax_dim(x.ndim)
        return F.log_softmax(x, dim)

    def extra_repr(self):
        return f"dim={self.dim}"
