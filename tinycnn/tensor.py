"""The Tensor: a backend array (numpy or cupy) plus its place in the autograd graph."""
from __future__ import annotations

import numbers

import numpy as np

from . import backends
from . import random as _random
from .autograd import Function, is_grad_enabled, run_backward
from .ops import elementwise as E
from .ops import reduce as R
from .ops import shape as S

__all__ = ["Tensor", "tensor", "from_numpy", "zeros", "ones", "zeros_like", "ones_like", "randn", "rand",
           "arange", "cat", "stack", "where", "as_dtype"]


def as_dtype(dtype, name: str = "dtype"):
    """Turn a NumPy dtype, its name, or a Python type into a numpy.dtype (None stays None)."""
    if dtype is None:
        return None
    try:
        return np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be a NumPy dtype or its name (e.g. 'float32'), got {dtype!r}") from exc


def _to_array(data, dtype, device):
    """Convert `data` to a backend array following the dtype rules of the API contract."""
    if isinstance(data, Tensor):
        data = data.data
    if backends.device_of(data) == "cuda" or isinstance(data, np.ndarray):
        arr = data
        if dtype is not None and arr.dtype != dtype:
            arr = arr.astype(dtype)
    elif isinstance(data, (bool, np.bool_)):
        arr = np.asarray(data, dtype=dtype or np.bool_)
    elif isinstance(data, (numbers.Integral,)):
        arr = np.asarray(data, dtype=dtype or np.int64)
    elif isinstance(data, np.floating):
        arr = np.asarray(data, dtype=dtype or data.dtype)
    elif isinstance(data, numbers.Real):
        arr = np.asarray(data, dtype=dtype or np.float32)
    else:  # lists / tuples / other sequences
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"data must be an array, a number or a nested sequence of numbers: {exc}") from exc
        if arr.dtype == object:
            raise TypeError(f"data must be numeric; got a sequence that NumPy reads as dtype=object")
        if dtype is not None:
            arr = arr.astype(dtype)
        elif arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        elif arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
    if device is not None:
        arr = backends.to_device(arr, device)
    return arr


class Tensor:
    """An n-dimensional array with gradient tracking.

    ``Tensor(data, requires_grad=False, device="cpu")`` behaves as ``tensor(data, ...)``.
    """

    __array_priority__ = 1000   # numpy scalars/arrays on the left defer to our operators

    def __init__(self, data, requires_grad=False, device=None, dtype=None):
        self.data = _to_array(data, as_dtype(dtype), device)
        self.grad = None
        self._ctx = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, array, requires_grad=False):
        """Wrap a backend array without copying or converting (internal)."""
        t = cls.__new__(cls)
        t.data = array
        t.grad = None
        t._ctx = None
        t.requires_grad = requires_grad
        return t

    # ------------------------------------------------------------------ attributes
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def device(self):
        return backends.device_of(self.data)

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self):
        return self.ndim

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def requires_grad_(self, flag=True):
        if flag and self.data.dtype.kind not in "fc":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {self.dtype}")
        self.requires_grad = bool(flag)
        return self

    def __repr__(self):
        extra = ""
        if self.device != "cpu":
            extra += f", device='{self.device}'"
        if self.requires_grad:
            extra += ", requires_grad=True"
        body = np.array2string(self.numpy(), separator=", ", precision=4, threshold=50)
        return f"tensor({body}, dtype={self.dtype}{extra})"

    # ------------------------------------------------------------------ conversion
    def numpy(self):
        """The data as a NumPy array (a host copy for cuda tensors; shares memory on cpu)."""
        return backends.to_device(self.data, "cpu")

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        return Tensor._wrap(self.data)

    def clone(self):
        return E.Mul.apply(self, 1) if self.requires_grad else Tensor._wrap(self.data.copy())

    def to(self, device=None, dtype=None):
        """Copy to another device and/or dtype (returns self when nothing changes). Differentiable."""
        out = self
        if dtype is not None:
            dtype = as_dtype(dtype)
            if dtype != self.dtype:
                out = _Cast.apply(out, dtype)
        if device is not None and backends.normalize_device(device) != self.device:
            out = _ToDevice.apply(out, backends.normalize_device(device))
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    def long(self):
        return self.to(dtype=np.int64)

    def astype(self, dtype):
        return self.to(dtype=dtype)

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    # ------------------------------------------------------------------ autograd
    def backward(self, grad=None, retain_graph=False):
        """Backpropagate from this tensor; `grad` defaults to 1 for a one-element tensor."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input had requires_grad=True, or it was computed under no_grad)")
        xp = backends.xp_of(self.data)
        if grad is None:
            if self.data.size != 1:
                raise ValueError(f"grad must be given for a non-scalar output: backward() on a tensor of shape "
                                 f"{self.shape} needs grad= of that shape (only one-element outputs default to 1)")
            g = xp.ones(self.shape, dtype=self.dtype)
        else:
            g = grad.data if isinstance(grad, Tensor) else grad
            g = backends.to_device(xp.asarray(g) if backends.device_of(g) == self.device else g, self.device)
            g = g.astype(self.dtype, copy=False)
            if g.shape != self.shape:
                raise ValueError(f"grad must have the output's shape {self.shape}, got {tuple(g.shape)}")
        run_backward(self, g, retain_graph=retain_graph)

    def retain_grad(self):
        """Keep .grad for this non-leaf tensor after backward()."""
        if self._ctx is not None:
            self._ctx.retained = self
        return self

    def zero_(self):
        self.data[...] = 0
        return self

    # ------------------------------------------------------------------ operators
    def _other(self, other):
        if isinstance(other, Tensor):
            return other
        if isinstance(other, np.number):
            # a NumPy scalar acts as a Python number (as in PyTorch): np.float64(2) * float32 stays float32
            return other.item()
        if isinstance(other, numbers.Number):
            return other
        return Tensor(other, device=self.device)

    def __add__(self, o):
        return E.Add.apply(self, self._other(o))

    def __radd__(self, o):
        return E.Add.apply(self._other(o), self)

    def __sub__(self, o):
        return E.Sub.apply(self, self._other(o))

    def __rsub__(self, o):
        return E.Sub.apply(self._other(o), self)

    def __mul__(self, o):
        return E.Mul.apply(self, self._other(o))

    def __rmul__(self, o):
        return E.Mul.apply(self._other(o), self)

    def __truediv__(self, o):
        return E.Div.apply(self, self._other(o))

    def __rtruediv__(self, o):
        return E.Div.apply(self._other(o), self)

    def __pow__(self, o):
        return E.Pow.apply(self, self._other(o))

    def __rpow__(self, o):
        return E.Pow.apply(self._other(o), self)

    def __matmul__(self, o):
        return E.MatMul.apply(self, self._other(o))

    def __rmatmul__(self, o):
        return E.MatMul.apply(self._other(o), self)

    def __neg__(self):
        return E.Neg.apply(self)

    def __pos__(self):
        return self

    def _compare(self, o, op):
        o = o.data if isinstance(o, Tensor) else o
        return Tensor._wrap(op(self.data, o))

    def __eq__(self, o):
        return self._compare(o, lambda a, b: a == b)

    def __ne__(self, o):
        return self._compare(o, lambda a, b: a != b)

    def __lt__(self, o):
        return self._compare(o, lambda a, b: a < b)

    def __le__(self, o):
        return self._compare(o, lambda a, b: a <= b)

    def __gt__(self, o):
        return self._compare(o, lambda a, b: a > b)

    def __ge__(self, o):
        return self._compare(o, lambda a, b: a >= b)

    __hash__ = object.__hash__

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        return S.GetItem.apply(self, index)

    def __setitem__(self, index, value):
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError("in-place assignment to a tensor that requires grad; wrap it in no_grad()")
        value = value.data if isinstance(value, Tensor) else value
        self.data[index] = value

    # ------------------------------------------------------------------ math methods
    def exp(self):
        return E.Exp.apply(self)

    def log(self):
        return E.Log.apply(self)

    def sqrt(self):
        return E.Sqrt.apply(self)

    def abs(self):
        return E.Abs.apply(self)

    def clamp(self, min=None, max=None):  # noqa: A002 - PyTorch's argument names
        return E.Clamp.apply(self, min, max)

    def relu(self):
        from .ops.activation import ReLU
        return ReLU.apply(self)

    def sigmoid(self):
        from .ops.activation import Sigmoid
        return Sigmoid.apply(self)

    def tanh(self):
        from .ops.activation import Tanh
        return Tanh.apply(self)

    def softmax(self, dim):
        from .ops.activation import Softmax
        return Softmax.apply(self, dim=_axis(dim, self.ndim))

    def log_softmax(self, dim):
        from .ops.activation import LogSoftmax
        return LogSoftmax.apply(self, dim=_axis(dim, self.ndim))

    def sum(self, dim=None, keepdim=False):
        return R.Sum.apply(self, dims=R.normalize_dims(dim, self.ndim), keepdim=keepdim)

    def mean(self, dim=None, keepdim=False):
        if self.dtype.kind not in "fc":
            raise TypeError(f"mean() needs a floating-point tensor, got dtype {self.dtype}")
        return R.Mean.apply(self, dims=R.normalize_dims(dim, self.ndim), keepdim=keepdim)

    def max(self, dim=None, keepdim=False):
        """max() -> 0-d tensor; max(dim) -> (values, indices) as in PyTorch."""
        if dim is None:
            return R.Max.apply(self)
        d = _axis(dim, self.ndim)
        values = R.Max.apply(self, dim=d, keepdim=keepdim)
        return values, self.argmax(d, keepdim=keepdim)

    def argmax(self, dim=None, keepdim=False):
        xp = backends.xp_of(self.data)
        if dim is None:
            return Tensor._wrap(xp.asarray(xp.argmax(self.data), dtype=np.int64))
        idx = xp.argmax(self.data, axis=_axis(dim, self.ndim)).astype(np.int64)
        if keepdim:
            idx = xp.expand_dims(idx, _axis(dim, self.ndim))
        return Tensor._wrap(idx)

    # ------------------------------------------------------------------ shape methods
    def reshape(self, *shape):
        shape = _shape_arg(shape)
        known = int(np.prod([s for s in shape if s != -1])) if shape else 1
        n = self.numel()
        ok = shape.count(-1) <= 1 and (known == n if -1 not in shape else known > 0 and n % known == 0)
        if not ok:
            raise ValueError(f"shape {shape} is invalid for a tensor of shape {self.shape} ({n} elements)")
        return S.Reshape.apply(self, shape=shape)

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        s, e = _axis(start_dim, self.ndim), _axis(end_dim, self.ndim)
        shape = self.shape[:s] + (-1,) + self.shape[e + 1:]
        return S.Reshape.apply(self, shape=shape)

    def permute(self, *dims):
        dims = tuple(_axis(d, self.ndim) for d in _shape_arg(dims))
        if sorted(dims) != list(range(self.ndim)):
            raise ValueError(f"dims must be a permutation of 0..{self.ndim - 1}, got {dims}")
        return S.Permute.apply(self, dims=dims)

    def transpose(self, dim0, dim1):
        dims = list(range(self.ndim))
        a, b = _axis(dim0, self.ndim), _axis(dim1, self.ndim)
        dims[a], dims[b] = dims[b], dims[a]
        return S.Permute.apply(self, dims=tuple(dims))

    def unsqueeze(self, dim):
        d = dim if dim >= 0 else dim + self.ndim + 1
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(s for s in self.shape if s != 1))
        d = _axis(dim, self.ndim)
        if self.shape[d] != 1:
            return self
        return self.reshape(self.shape[:d] + self.shape[d + 1:])

    def contiguous(self):
        return self


def _axis(dim, ndim):
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"dim must be an int, got {dim!r}")
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise ValueError(f"dim={dim} is out of range for a tensor with {ndim} dimensions (expected {-n}..{n - 1})")
    return int(dim) % n


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for s in shape:
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool):
            raise TypeError(f"shape entries must be ints, got {shape!r}")
    return tuple(int(s) for s in shape)


class _Cast(Function):
    """y = a as another dtype.   da = g cast back to a's dtype."""

    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.dtype)


class _ToDevice(Function):
    """y = a copied to another device.   da = g copied back."""

    @staticmethod
    def forward(ctx, a, device):
        ctx.device = backends.device_of(a)
        return backends.to_device(a, device)

    @staticmethod
    def backward(ctx, g):
        return backends.to_device(g, ctx.device)


def zero_grads(params, set_to_none: bool = True) -> None:
    """Drop the gradients of `params` (None, PyTorch's default) or replace them by zeros.

    Zeroing makes a new array rather than writing into the old one: a gradient array may be
    shared with other tensors (the engine hands one array to several inputs).
    """
    for p in params:
        if p.grad is None:
            continue
        if set_to_none:
            p.grad = None
        else:
            p.grad = Tensor._wrap(backends.xp_of(p.grad.data).zeros_like(p.grad.data))


# ---------------------------------------------------------------------- creation
def tensor(data, dtype=None, requires_grad=False, device=None):
    """Make a Tensor. NumPy arrays keep their dtype; Python floats become float32, ints int64."""
    return Tensor(data, requires_grad=requires_grad, device=device, dtype=dtype)


def from_numpy(a):
    """A Tensor sharing memory with NumPy array `a`."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(a).__name__}")
    return Tensor._wrap(a)


def _creation(fill, shape, dtype, device, requires_grad):
    shape = _shape_arg(shape)
    dtype = as_dtype(dtype) or np.dtype(np.float32)
    device = backends.normalize_device(device)
    xp = backends.array_module(device)
    t = Tensor._wrap(fill(xp, shape, dtype, device))
    if requires_grad:
        t.requires_grad_(True)
    return t


def zeros(*shape, dtype=None, device=None, requires_grad=False):
    return _creation(lambda xp, s, d, dev: xp.zeros(s, dtype=d), shape, dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False):
    return _creation(lambda xp, s, d, dev: xp.ones(s, dtype=d), shape, dtype, device, requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    return zeros(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return ones(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False):
    """Standard normal samples from the library's seeded generator."""
    return _creation(lambda xp, s, d, dev: _random.generator(dev).standard_normal(s).astype(d, copy=False),
                     shape, dtype, device, requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False):
    """Uniform [0, 1) samples from the library's seeded generator."""
    return _creation(lambda xp, s, d, dev: _random.generator(dev).random(s).astype(d, copy=False),
                     shape, dtype, device, requires_grad)


def arange(*args, dtype=None, device=None):
    xp = backends.array_module(backends.normalize_device(device))
    a = xp.arange(*args)
    if dtype is not None:
        a = a.astype(as_dtype(dtype))
    elif a.dtype.kind == "f":
        a = a.astype(np.float32)
    return Tensor._wrap(a)


def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat() needs at least one tensor")
    return S.Cat.apply(*tensors, dim=_axis(dim, tensors[0].ndim))


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack() needs at least one tensor")
    return S.Stack.apply(*tensors, dim=_axis(dim, tensors[0].ndim + 1))


def where(condition, a, b):
    cond = condition.data if isinstance(condition, Tensor) else condition
    return E.Where.apply(cond, a, b)
