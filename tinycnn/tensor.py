"""The Tensor: a backend array (numpy or cupy) plus its place in the autograd graph."""
from __future__ import annotations

import numbers
from collections import namedtuple

import numpy as np

from . import backends
from . import random as _random
from .autograd import Function, is_grad_enabled, run_backward
from .ops import elementwise as E
from .ops import reduce as R
from .ops import shape as S

__all__ = ["Tensor", "tensor", "from_numpy", "zeros", "ones", "zeros_like", "ones_like", "randn", "rand",
           "arange", "cat", "stack", "where", "as_dtype", "TensorIndexError"]


class TensorIndexError(IndexError, ValueError):
    """An index out of range: a ValueError by the project's error rules, and an IndexError as in
    NumPy/PyTorch, which also lets ``for row in tensor`` stop at the end."""


# (values, indices), as torch.max(dim) returns it
MaxResult = namedtuple("max", ["values", "indices"])


def as_dtype(dtype, name: str = "dtype"):
    """Turn a NumPy dtype, its name, or a Python type into a numpy.dtype (None stays None)."""
    if dtype is None:
        return None
    try:
        return np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be a NumPy dtype or its name (e.g. 'float32'), got {dtype!r}") from exc


_NUMERIC_KINDS = "biufc"   # bool, (unsigned) int, float, complex: what a Tensor may hold


def looks_like_dtype(value) -> bool:
    """True for a dtype given where a device may also stand (``t.to(np.float64)``, ``m.to("float64")``)."""
    if isinstance(value, (np.dtype, type)):
        return True
    if isinstance(value, str) and value.split(":")[0] not in ("cpu", "cuda"):
        try:
            np.dtype(value)
        except TypeError:
            return False
        return True
    return False


def _to_array(data, dtype, device):
    """Convert `data` to a new backend array following the dtype rules of the API contract.

    Arrays and Tensors are copied, as torch.tensor() always copies (`from_numpy` is the way to share).
    """
    if isinstance(data, Tensor):
        data = data.data
    if backends.device_of(data) == "cuda" or isinstance(data, np.ndarray):
        if data.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"data must hold numbers (bool, int, float or complex), got an array of dtype {data.dtype}")
        arr = data.astype(dtype if dtype is not None else data.dtype, copy=True)
    elif isinstance(data, (str, bytes)):
        raise TypeError(f"data must be an array, a number or a nested sequence of numbers, got {type(data).__name__} "
                        f"{data!r}")
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
        if arr.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"data must be numeric; got a sequence that NumPy reads as dtype={arr.dtype}")
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
        """Copy to another device and/or dtype (returns self when nothing changes). Differentiable.

        ``to(dtype)`` may be given positionally, as torch allows (``t.to(np.float64)``, ``t.to("float64")``).
        """
        if dtype is None and looks_like_dtype(device):
            device, dtype = None, device
        out = self
        if dtype is not None:
            dtype = as_dtype(dtype)
            if dtype != self.dtype:
                # to a non-float dtype the result cannot require grad (as in torch): no graph for it
                out = _Cast.apply(out if dtype.kind in "fc" else out.detach(), dtype)
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
    def backward(self, grad=None, retain_graph=False, *, gradient=None):
        """Backpropagate from this tensor; `grad` defaults to 1 for a one-element tensor.

        `grad` is a Tensor or an array (or a number) of this tensor's shape; ``gradient=`` is accepted
        as well, PyTorch's name for it.
        """
        if gradient is not None:
            if grad is not None:
                raise TypeError("backward() got both grad and gradient (the same argument); pass one of them")
            grad = gradient
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
            if not isinstance(g, numbers.Number) and not hasattr(g, "shape") and not isinstance(g, (list, tuple)):
                raise TypeError(f"grad must be a Tensor, an array or a number, got {type(grad).__name__}")
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
    def _other(self, other, op):
        if isinstance(other, Tensor):
            return other
        if isinstance(other, np.number):
            # a NumPy scalar acts as a Python number (as in PyTorch): np.float64(2) * float32 stays float32
            return other.item()
        if isinstance(other, numbers.Number):
            return other
        if isinstance(other, (np.ndarray, list, tuple)) or backends.device_of(other) == "cuda":
            return Tensor(other, device=self.device)
        raise TypeError(f"unsupported operand for {op!r}: a Tensor, a number or an array is expected, "
                        f"got {type(other).__name__}")

    def _binary(self, fn, other, op, reflected=False):
        """fn.apply(self, other) (or (other, self)) after PyTorch's type promotion and a shape check."""
        other = self._other(other, op)
        a, b = (other, self) if reflected else (self, other)
        a, b = _promote(a, b, true_div=fn is E.Div)
        if fn is E.MatMul:
            _check_matmul(_shape_of(a), _shape_of(b))
        else:
            _check_broadcast(_shape_of(a), _shape_of(b), op)
        return fn.apply(a, b)

    def __add__(self, o):
        return self._binary(E.Add, o, "+")

    def __radd__(self, o):
        return self._binary(E.Add, o, "+", reflected=True)

    def __sub__(self, o):
        return self._binary(E.Sub, o, "-")

    def __rsub__(self, o):
        return self._binary(E.Sub, o, "-", reflected=True)

    def __mul__(self, o):
        return self._binary(E.Mul, o, "*")

    def __rmul__(self, o):
        return self._binary(E.Mul, o, "*", reflected=True)

    def __truediv__(self, o):
        return self._binary(E.Div, o, "/")

    def __rtruediv__(self, o):
        return self._binary(E.Div, o, "/", reflected=True)

    def __pow__(self, o):
        return self._binary(E.Pow, o, "**")

    def __rpow__(self, o):
        return self._binary(E.Pow, o, "**", reflected=True)

    def __matmul__(self, o):
        return self._binary(E.MatMul, o, "@")

    def __rmatmul__(self, o):
        return self._binary(E.MatMul, o, "@", reflected=True)

    def __neg__(self):
        return E.Neg.apply(self)

    def __pos__(self):
        return self

    def _compare(self, o, op):
        o = o.data if isinstance(o, Tensor) else o
        if hasattr(o, "shape"):
            _check_broadcast(self.shape, tuple(o.shape), "comparison")
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

    def _index_arg(self, index):
        """`index` with Tensors unwrapped; TypeError for an entry that cannot index (a float, a str, ...)."""
        parts = index if isinstance(index, tuple) else (index,)
        out = []
        for i in parts:
            if isinstance(i, Tensor):
                i = i.data
            ok = (i is None or i is Ellipsis or isinstance(i, (slice, numbers.Integral, np.integer, np.bool_, list))
                  or (hasattr(i, "dtype") and hasattr(i, "shape") and i.dtype.kind in "biu"))
            if not ok:
                what = f"dtype {i.dtype}" if hasattr(i, "dtype") else type(i).__name__
                raise TypeError(f"tensor indices must be ints, slices, None, Ellipsis, or integer/boolean arrays "
                                f"or Tensors; got {what} in index {_short_repr(index)}")
            out.append(i)
        return tuple(out) if isinstance(index, tuple) else out[0]

    def _index_error(self, index, exc):
        # NumPy's IndexError says which axis and size; add the tensor's shape (and be a ValueError too)
        return TensorIndexError(f"index {_short_repr(index)} is out of range for a tensor of shape {self.shape}: "
                                f"{exc}")

    def __getitem__(self, index):
        index = self._index_arg(index)
        try:
            return S.GetItem.apply(self, index)
        except IndexError as exc:
            raise self._index_error(index, exc) from None

    def __setitem__(self, index, value):
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError("in-place assignment to a tensor that requires grad; wrap it in no_grad()")
        index = self._index_arg(index)
        value = value.data if isinstance(value, Tensor) else value
        try:
            self.data[index] = value
        except IndexError as exc:
            raise self._index_error(index, exc) from None

    def __iter__(self):
        # explicit (not the __getitem__ fallback), so a 0-d tensor is a TypeError as in PyTorch
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    # ------------------------------------------------------------------ math methods
    def _floating(self):
        """self, or for a bool/int tensor a float32 copy: float-valued ops promote to the default dtype, as torch."""
        return self if self.dtype.kind in "fc" else self.to(dtype=np.float32)

    def exp(self):
        return E.Exp.apply(self._floating())

    def log(self):
        return E.Log.apply(self._floating())

    def sqrt(self):
        return E.Sqrt.apply(self._floating())

    def abs(self):
        return E.Abs.apply(self)

    def clamp(self, min=None, max=None):  # noqa: A002 - PyTorch's argument names
        return E.Clamp.apply(self, min, max)

    def relu(self):
        from .ops.activation import ReLU
        return ReLU.apply(self)

    def sigmoid(self):
        from .ops.activation import Sigmoid
        return Sigmoid.apply(self._floating())

    def tanh(self):
        from .ops.activation import Tanh
        return Tanh.apply(self._floating())

    def softmax(self, dim):
        from .ops.activation import Softmax
        return Softmax.apply(self._floating(), dim=_axis(dim, self.ndim))

    def log_softmax(self, dim):
        from .ops.activation import LogSoftmax
        return LogSoftmax.apply(self._floating(), dim=_axis(dim, self.ndim))

    def sum(self, dim=None, keepdim=False):
        return R.Sum.apply(self, dims=R.normalize_dims(dim, self.ndim), keepdim=keepdim)

    def mean(self, dim=None, keepdim=False):
        if self.dtype.kind not in "fc":
            raise TypeError(f"mean() needs a floating-point tensor, got dtype {self.dtype}")
        return R.Mean.apply(self, dims=R.normalize_dims(dim, self.ndim), keepdim=keepdim)

    def max(self, dim=None, keepdim=False):
        """max() -> 0-d tensor; max(dim) -> named tuple (values, indices) as in PyTorch."""
        if dim is None:
            return R.Max.apply(self)
        d = _axis(dim, self.ndim)
        values = R.Max.apply(self, dim=d, keepdim=keepdim)
        return MaxResult(values, self.argmax(d, keepdim=keepdim))

    def argmax(self, dim=None, keepdim=False):
        xp = backends.xp_of(self.data)
        if dim is None:
            idx = xp.asarray(xp.argmax(self.data), dtype=np.int64)
            # keepdim keeps every (reduced) axis as size 1, as torch.argmax(keepdim=True)
            return Tensor._wrap(idx.reshape((1,) * self.ndim) if keepdim else idx)
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
        if s > e:
            raise ValueError(f"flatten: start_dim must not come after end_dim, got start_dim={start_dim}, "
                             f"end_dim={end_dim} for a tensor with {self.ndim} dimensions")
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


def _short_repr(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _shape_of(x):
    return x.shape if isinstance(x, Tensor) else ()


def _check_broadcast(sa, sb, op):
    """ValueError naming both shapes and the clashing dimension when sa and sb do not broadcast."""
    if sa == sb:
        return
    for i in range(1, min(len(sa), len(sb)) + 1):
        m, n = sa[-i], sb[-i]
        if m != n and m != 1 and n != 1:
            raise ValueError(f"operands of {op!r} have shapes {sa} and {sb}, which do not broadcast: "
                             f"dimension {-i} has sizes {m} and {n} (they must be equal, or one of them 1)")


def _check_matmul(sa, sb):
    """ValueError for operands that '@' cannot multiply (NumPy matmul rules, PyTorch's)."""
    if len(sa) == 0 or len(sb) == 0:
        raise ValueError(f"'@' needs operands with at least 1 dimension, got shapes {sa} and {sb}")
    k_b = sb[0] if len(sb) == 1 else sb[-2]
    if sa[-1] != k_b:
        raise ValueError(f"operands of '@' have shapes {sa} and {sb}: the first's last dimension ({sa[-1]}) "
                         f"must equal the second's {'only' if len(sb) == 1 else 'second-to-last'} dimension ({k_b})")
    _check_broadcast(sa[:-2], sb[:-2], "@ (batch dimensions)")


_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}
_DEFAULT_DTYPE = {1: np.dtype(np.int64), 2: np.dtype(np.float32), 3: np.dtype(np.complex64)}


def _category(x):
    if isinstance(x, Tensor):
        return _CATEGORY[x.dtype.kind]
    return 0 if isinstance(x, bool) else 1 if isinstance(x, numbers.Integral) else 2 if isinstance(
        x, numbers.Real) else 3


def _promote(a, b, true_div=False):
    """Cast tensor operands to PyTorch's result dtype for a binary op (Python numbers stay as they are).

    PyTorch's rule: the highest category (bool < int < float < complex) wins; within it, dimensioned
    tensors decide over 0-d tensors, which decide over Python numbers (a number alone gives the default
    dtype: int64, float32). So float32 + int64 tensor is float32 and int / int is float32, where NumPy
    would give float64; a 0-d float64 tensor does not promote a float32 one.
    """
    top = max(_category(a), _category(b))
    if true_div:
        top = max(top, 2)
    tensors = [t for t in (a, b) if isinstance(t, Tensor)]
    ranked = [t for t in tensors if _CATEGORY[t.dtype.kind] == top]
    dims = [t for t in ranked if t.ndim > 0] or ranked
    dtype = np.result_type(*[t.dtype for t in dims]) if dims else _DEFAULT_DTYPE[top]
    if all(t.dtype == dtype for t in tensors):
        return a, b
    return tuple(x.to(dtype=dtype) if isinstance(x, Tensor) else x for x in (a, b))


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


def from_numpy(a, dtype=None, device=None, requires_grad=False):
    """A Tensor sharing memory with NumPy array `a`.

    dtype=, device=, requires_grad= as the other creation functions; a dtype or device that differs
    from the array's needs a converted copy, so only then is the memory not shared.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(a).__name__}")
    dtype = as_dtype(dtype)
    if dtype is not None and dtype != a.dtype:
        a = a.astype(dtype)
    if device is not None and backends.normalize_device(device) != "cpu":
        a = backends.to_device(a, device)
    t = Tensor._wrap(a)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _creation(fill, shape, dtype, device, requires_grad):
    shape = _shape_arg(shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape entries must be >= 0, got shape {shape}")
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


def _sequence_of_tensors(tensors, fname):
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{fname}() needs at least one tensor")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fname}(): tensors[{i}] must be a tinycnn Tensor, got {type(t).__name__}")
    return tensors


def cat(tensors, dim=0):
    tensors = _sequence_of_tensors(tensors, "cat")
    d = _axis(dim, tensors[0].ndim)
    ref = tensors[0].shape
    for i, t in enumerate(tensors):
        if t.ndim != len(ref) or t.shape[:d] + t.shape[d + 1:] != ref[:d] + ref[d + 1:]:
            raise ValueError(f"cat(): tensors must have the same shape except in dimension {d}; "
                             f"tensors[0] has shape {ref}, tensors[{i}] has shape {t.shape}")
    return S.Cat.apply(*tensors, dim=d)


def stack(tensors, dim=0):
    tensors = _sequence_of_tensors(tensors, "stack")
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack(): tensors must all have the same shape; tensors[0] has shape "
                             f"{tensors[0].shape}, tensors[{i}] has shape {t.shape}")
    return S.Stack.apply(*tensors, dim=_axis(dim, tensors[0].ndim + 1))


def where(condition, a, b):
    cond = condition.data if isinstance(condition, Tensor) else condition
    return E.Where.apply(cond, a, b)
