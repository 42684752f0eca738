"""Tensor creation, dtype rules, attributes, conversions, operators and methods, checked against PyTorch.

Gradients of every operator and method are compared with torch.autograd in float64 (to 1e-10),
and the float32 forward to ~1e-5 relative.
"""
import numpy as np
import pytest
import torch

import tinycnn
from tinycnn import Tensor


def _pair(rng, shape, dtype=np.float64, positive=False, away_from_zero=False):
    """The same data as a tinycnn tensor and a torch tensor, both requiring grad."""
    a = rng.standard_normal(shape).astype(dtype)
    if positive:
        a = np.abs(a) + 0.5
    if away_from_zero:
        a = np.where(a >= 0, a + 0.5, a - 0.5).astype(dtype)
    return (tinycnn.tensor(a.copy(), requires_grad=True),
            torch.tensor(a.copy(), requires_grad=True))


def _close(ours, theirs, rtol=1e-10, atol=1e-12):
    ours = ours.numpy() if isinstance(ours, Tensor) else np.asarray(ours)
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert ours.shape == theirs.shape, f"shape {ours.shape} != torch's {theirs.shape}"
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)


def _backward_both(y, ty, rng):
    """Backpropagate the same random upstream gradient through both graphs."""
    g = rng.standard_normal(ty.shape)
    y.backward(g)
    ty.backward(torch.tensor(g))


# ---------------------------------------------------------------------------- creation and dtypes
@pytest.mark.parametrize("data, expected", [
    (np.zeros(3, dtype=np.float64), np.float64),
    (np.zeros(3, dtype=np.float32), np.float32),
    (np.zeros((2, 2), dtype=np.float16), np.float16),
    (1.5, np.float32),
    ([1.0, 2.0], np.float32),
    ([[1, 2], [3, 4.5]], np.float32),
    (3, np.int64),
    ([1, 2, 3], np.int64),
    (np.int32(3), np.int64),
    (np.int16(3), np.int64),
    (np.float64(2.5), np.float64),
    (True, np.bool_),
], ids=["f64-array", "f32-array", "f16-array", "py-float", "float-list", "mixed-nested-list", "py-int",
        "int-list", "np-int32-scalar", "np-int16-scalar", "np-float64-scalar", "bool"])
def test_tensor_dtype_rules(data, expected):
    assert tinycnn.tensor(data).dtype == np.dtype(expected)
    assert Tensor(data).dtype == np.dtype(expected), "Tensor(data) must behave as tensor(data)"


@pytest.mark.parametrize("dtype", [np.float64, "float64", np.dtype("float64"), "float32", np.int64, "int32"])
def test_tensor_dtype_argument_accepts_dtype_or_name(dtype):
    t = tinycnn.tensor([1, 2, 3], dtype=dtype)
    assert t.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(t.numpy(), [1, 2, 3])


def test_tensor_bad_dtype_is_type_error():
    with pytest.raises(TypeError, match="dtype"):
        tinycnn.tensor([1.0], dtype="not_a_dtype")


def test_tensor_bad_data_is_type_error():
    with pytest.raises(TypeError, match="data"):
        tinycnn.tensor(["a", object()])


def test_tensor_from_float64_array_keeps_values_exactly():
    a = np.array([1 / 3, 1e-300, 1e300])
    np.testing.assert_array_equal(tinycnn.tensor(a).numpy(), a)


def test_from_numpy_shares_memory():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = tinycnn.from_numpy(a)
    a[0, 0] = 42
    assert t.dtype == np.float64 and t.numpy()[0, 0] == 42
    with pytest.raises(TypeError, match="numpy.ndarray"):
        tinycnn.from_numpy([1, 2])


@pytest.mark.parametrize("fn", [tinycnn.zeros, tinycnn.ones, tinycnn.randn, tinycnn.rand])
@pytest.mark.parametrize("shape_args", [((2, 3),), (2, 3), ([2, 3],)], ids=["tuple", "ints", "list"])
def test_creation_shapes_and_defaults(fn, shape_args):
    t = fn(*shape_args)
    assert t.shape == (2, 3)
    assert t.dtype == np.float32
    assert t.device == "cpu"
    assert not t.requires_grad and t.is_leaf and t.grad is None


@pytest.mark.parametrize("fn", [tinycnn.zeros, tinycnn.ones, tinycnn.randn, tinycnn.rand])
def test_creation_options(fn):
    t = fn(4, dtype="float64", device="cpu", requires_grad=True)
    assert t.dtype == np.float64 and t.requires_grad and t.device == "cpu" and t.shape == (4,)
    assert fn((), dtype=np.float32).shape == ()


def test_zeros_ones_values():
    np.testing.assert_array_equal(tinycnn.zeros(2, 2).numpy(), np.zeros((2, 2)))
    np.testing.assert_array_equal(tinycnn.ones(3).numpy(), np.ones(3))


def test_randn_rand_distribution_and_seed():
    tinycnn.manual_seed(123)
    a = tinycnn.randn(20000, dtype="float64").numpy()
    u = tinycnn.rand(20000, dtype="float64").numpy()
    assert abs(a.mean()) < 0.05 and abs(a.std() - 1) < 0.05
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.02
    tinycnn.manual_seed(123)
    np.testing.assert_array_equal(tinycnn.randn(20000, dtype="float64").numpy(), a)
    np.testing.assert_array_equal(tinycnn.rand(20000, dtype="float64").numpy(), u)


def test_int_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="floating"):
        tinycnn.tensor([1, 2], requires_grad=True)


def test_creation_bad_shape_is_type_error():
    with pytest.raises(TypeError, match="shape"):
        tinycnn.zeros(2.5, 3)


def test_bad_device_is_value_error():
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'.*'tpu'"):
        tinycnn.zeros(2, device="tpu")


# ---------------------------------------------------------------------------- attributes and conversion
def test_attributes():
    a = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    t = Tensor(a, requires_grad=True)
    assert t.shape == (2, 3, 4) and isinstance(t.shape, tuple)
    assert t.dtype == np.float64 and isinstance(t.dtype, np.dtype)
    assert t.ndim == 3
    assert t.device == "cpu"
    assert isinstance(t.data, np.ndarray)
    assert t.grad is None and t.requires_grad and t.is_leaf
    y = t * 2
    assert not y.is_leaf and y.requires_grad


def test_numpy_item_detach():
    t = tinycnn.tensor([[1.5, 2.0]], requires_grad=True)
    n = t.numpy()
    assert isinstance(n, np.ndarray) and n.dtype == np.float32
    assert tinycnn.tensor(2.5).item() == 2.5 and isinstance(tinycnn.tensor(2.5).item(), float)
    assert tinycnn.tensor([7]).item() == 7 and isinstance(tinycnn.tensor([7]).item(), int)
    with pytest.raises(ValueError, match=r"one element.*\(1, 2\)"):
        t.item()
    d = (t * 3).detach()
    assert not d.requires_grad and d.is_leaf and d.grad is None
    np.testing.assert_array_equal(d.numpy(), [[4.5, 6.0]])


def test_to_and_cpu():
    t = tinycnn.tensor([1.0, 2.0], requires_grad=True)
    assert t.to("cpu") is t and t.cpu() is t
    d = t.to(dtype="float64")
    assert d.dtype == np.float64
    d.sum().backward()
    assert t.grad.dtype == np.float32
    np.testing.assert_array_equal(t.grad.numpy(), [1, 1])


@pytest.mark.skipif(tinycnn.cuda.is_available(), reason="checks the error raised when there is no GPU")
def test_cuda_without_gpu_raises_clear_runtime_error():
    t = tinycnn.zeros(2)
    with pytest.raises(RuntimeError, match="cuda.*(CuPy|GPU)"):
        t.cuda()
    with pytest.raises(RuntimeError, match="cuda.*(CuPy|GPU)"):
        t.to("cuda")
    with pytest.raises(RuntimeError, match="cuda.*(CuPy|GPU)"):
        tinycnn.zeros(2, device="cuda")
    assert tinycnn.cuda.is_available() is False


# ---------------------------------------------------------------------------- operators vs torch
BINARY_OPS = {
    "add": (lambda a, b: a + b, {}),
    "sub": (lambda a, b: a - b, {}),
    "mul": (lambda a, b: a * b, {}),
    "div": (lambda a, b: a / b, {"b": "away_from_zero"}),
    "pow": (lambda a, b: a ** b, {"a": "positive"}),
}
BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((4,), (3, 4)), ((2, 1, 4), (3, 1)), ((3, 4), ()),
                    ((), (2, 3)), ((1,), (5,)), ((2, 3, 1), (1, 1, 5)), ((5, 1, 1), (1, 1))]


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("op", list(BINARY_OPS))
def test_binary_op_forward_and_grads_match_torch(op, shapes, rng):
    fn, opts = BINARY_OPS[op]
    a, ta = _pair(rng, shapes[0], positive=opts.get("a") == "positive")
    b, tb = _pair(rng, shapes[1], away_from_zero=opts.get("b") == "away_from_zero")
    y, ty = fn(a, b), fn(ta, tb)
    _close(y, ty)
    _backward_both(y, ty, rng)
    assert a.grad.shape == shapes[0] and b.grad.shape == shapes[1]
    _close(a.grad, ta.grad)
    _close(b.grad, tb.grad)


@pytest.mark.parametrize("op", list(BINARY_OPS))
def test_binary_op_float32_matches_torch(op, rng):
    fn, opts = BINARY_OPS[op]
    a, ta = _pair(rng, (4, 5), dtype=np.float32, positive=opts.get("a") == "positive")
    b, tb = _pair(rng, (5,), dtype=np.float32, away_from_zero=opts.get("b") == "away_from_zero")
    y, ty = fn(a, b), fn(ta, tb)
    assert y.dtype == np.float32
    _close(y, ty, rtol=1e-5, atol=1e-6)
    y.sum().backward()
    ty.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float32
    _close(a.grad, ta.grad, rtol=1e-5, atol=1e-5)
    _close(b.grad, tb.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scalar", [2.5, 3, np.float64(1.5)], ids=["float", "int", "np-float64"])
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_scalar_operands_match_torch(op, scalar, side, rng):
    fn = BINARY_OPS[op][0]
    a, ta = _pair(rng, (3, 2), positive=True)
    if side == "right":
        y, ty = fn(a, scalar), fn(ta, float(scalar))
    else:
        y, ty = fn(scalar, a), fn(float(scalar), ta)
    assert isinstance(y, Tensor) and y.dtype == np.float64
    _close(y, ty)
    _backward_both(y, ty, rng)
    _close(a.grad, ta.grad)


def test_scalar_operand_keeps_float32():
    t = tinycnn.ones(3)
    for y in (t + 1.5, 2.0 * t, t / 3, t ** 2, 1 - t, np.float64(2) * t):
        assert isinstance(y, Tensor) and y.dtype == np.float32


def test_operand_array_or_list_is_wrapped(rng):
    a, ta = _pair(rng, (2, 3))
    y = a * np.arange(3.0) + [1.0, 2.0, 3.0]
    ty = ta * torch.arange(3.0, dtype=torch.float64) + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    _close(y, ty)


def test_unary_minus_matches_torch(rng):
    a, ta = _pair(rng, (3, 4))
    y, ty = -a, -ta
    _close(y, ty)
    _backward_both(y, ty, rng)
    _close(a.grad, ta.grad)


MATMUL_SHAPES = [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4, 5)),
                 ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((2, 3, 4), (4,)), ((4,), (2, 4, 3))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=lambda s: f"{s[0]}@{s[1]}")
def test_matmul_matches_torch(shapes, rng):
    a, ta = _pair(rng, shapes[0])
    b, tb = _pair(rng, shapes[1])
    y, ty = a @ b, ta @ tb
    _close(y, ty)
    _backward_both(y, ty, rng)
    _close(a.grad, ta.grad)
    _close(b.grad, tb.grad)


def test_rmatmul_with_array(rng):
    a, ta = _pair(rng, (4, 2))
    m = rng.standard_normal((3, 4))
    y, ty = m @ a, torch.tensor(m) @ ta
    assert isinstance(y, Tensor)
    _close(y, ty)
    _backward_both(y, ty, rng)
    _close(a.grad, ta.grad)


def test_only_one_operand_requires_grad(rng):
    a, ta = _pair(rng, (3,))
    b = tinycnn.tensor(rng.standard_normal(3))
    (a * b).sum().backward()
    assert b.grad is None
    np.testing.assert_allclose(a.grad.numpy(), b.numpy())


# ---------------------------------------------------------------------------- reductions
SUM_DIMS = [None, 0, 1, -1, (0, 2), (-1, 0), (0, 1, 2)]


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", SUM_DIMS, ids=str)
@pytest.mark.parametrize("op", ["sum", "mean"])
def test_sum_mean_match_torch(op, dim, keepdim, rng):
    a, ta = _pair(rng, (2, 3, 4))
    if dim is None:
        y = getattr(a, op)(keepdim=keepdim) if keepdim else getattr(a, op)()
        ty = getattr(ta, op)(dim=(0, 1, 2), keepdim=True) if keepdim else getattr(ta, op)()
    else:
        y, ty = getattr(a, op)(dim, keepdim=keepdim), getattr(ta, op)(dim, keepdim=keepdim)
    _close(y, ty)
    _backward_both(y, ty, rng)
    _close(a.grad, ta.grad)


def test_full_reductions_are_0d():
    t = tinycnn.ones(2, 3)
    assert t.sum().shape == () and t.mean().shape == () and t.max().shape == ()
    assert t.sum().item() == 6.0


def test_sum_bad_dim():
    with pytest.raises(ValueError, match=r"dim=3 is out of range.*3 dimensions"):
        tinycnn.ones(2, 3, 4).sum(3)
    with pytest.raises(TypeError, match="dim"):
        tinycnn.ones(2, 3).sum(1.0)


def test_mean_of_int_tensor_is_type_error():
    with pytest.raises(TypeError, match="floating.*int64"):
        tinycnn.tensor([1, 2]).mean()


def test_max_all_is_0d_and_grad_matches_torch(rng):
    a, ta = _pair(rng, (3, 5))
    y, ty = a.max(), ta.max()
    assert y.shape == ()
    _close(y, ty)
    y.backward()
    ty.backward()
    _close(a.grad, ta.grad)


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_max_dim_returns_values_and_indices(dim, keepdim, rng):
    a, ta = _pair(rng, (4, 5))
    values, indices = a.max(dim, keepdim=keepdim)
    tv, ti = ta.max(dim, keepdim=keepdim)
    _close(values, tv)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices.numpy(), ti.numpy())
    _backward_both(values, tv, rng)
    _close(a.grad, ta.grad)


def test_max_dim_tuple_unpacking():
    v, i = tinycnn.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]]).max(1)
    np.testing.assert_array_equal(v.numpy(), [5.0, 7.0])
    np.testing.assert_array_equal(i.numpy(), [1, 0])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_argmax_matches_torch(dim, rng):
    a = rng.standard_normal((4, 6))
    np.testing.assert_array_equal(tinycnn.tensor(a).argmax(dim).numpy(), torch.tensor(a).argmax(dim).numpy())
    assert tinycnn.tensor(a).argmax(dim).dtype == np.int64
    assert tinycnn.tensor(a).argmax().item() == torch.tensor(a).argmax().item()


# ---------------------------------------------------------------------------- shape methods
SHAPE_CASES = {
    "reshape-ints": (lambda t: t.reshape(4, 6), lambda t: t.reshape(4, 6)),
    "reshape-tuple": (lambda t: t.reshape((6, -1)), lambda t: t.reshape((6, -1))),
    "view": (lambda t: t.view(2, 12), lambda t: t.view(2, 12)),
    "view-tuple": (lambda t: t.view((24,)), lambda t: t.view((24,))),
    "flatten": (lambda t: t.flatten(), lambda t: t.flatten()),
    "flatten-1": (lambda t: t.flatten(1), lambda t: t.flatten(1)),
    "flatten-0-1": (lambda t: t.flatten(0, 1), lambda t: t.flatten(0, 1)),
    "flatten-1-2": (lambda t: t.flatten(start_dim=1, end_dim=2), lambda t: t.flatten(start_dim=1, end_dim=2)),
    "flatten-neg": (lambda t: t.flatten(-2, -1), lambda t: t.flatten(-2, -1)),
    "permute": (lambda t: t.permute(2, 0, 1), lambda t: t.permute(2, 0, 1)),
    "permute-tuple": (lambda t: t.permute((1, 2, 0)), lambda t: t.permute((1, 2, 0))),
    "transpose": (lambda t: t.transpose(0, 2), lambda t: t.transpose(0, 2)),
    "transpose-neg": (lambda t: t.transpose(-1, 1), lambda t: t.transpose(-1, 1)),
}


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_shape_methods_match_torch(case, rng):
    ours, theirs = SHAPE_CASES[case]
    a, ta = _pair(rng, (2, 3, 4))
    y, ty = ours(a), theirs(ta)
    _close(y, ty)
    _backward_both(y, ty, rng)
    _close(a.grad, ta.grad)


def test_reshape_bad_shape_is_value_error():
    with pytest.raises(ValueError, match=r"\(5, 5\).*\(2, 3, 4\)"):
        tinycnn.ones(2, 3, 4).reshape(5, 5)
    with pytest.raises(ValueError, match="shape"):
        tinycnn.ones(2, 3, 4).view(-1, -1)


def test_permute_bad_dims_is_value_error():
    with pytest.raises(ValueError, match="permutation"):
        tinycnn.ones(2, 3, 4).permute(0, 0, 1)


# ---------------------------------------------------------------------------- math methods
UNARY = {
    "exp": (lambda t: t.exp(), lambda t: t.exp(), {}),
    "log": (lambda t: t.log(), lambda t: t.log(), {"positive": True}),
    "relu": (lambda t: t.relu(), lambda t: t.relu(), {"away_from_zero": True}),
    "sigmoid": (lambda t: t.sigmoid(), lambda t: t.sigmoid(), {}),
    "tanh": (lambda t: t.tanh(), lambda t: t.tanh(), {}),
    "sqrt": (lambda t: t.sqrt(), lambda t: t.sqrt(), {"positive": True}),
    "abs": (lambda t: t.abs(), lambda t: t.abs(), {"away_from_zero": True}),
    "softmax": (lambda t: t.softmax(1), lambda t: t.softmax(1), {}),
    "log_softmax": (lambda t: t.log_softmax(-1), lambda t: t.log_softmax(-1), {}),
    "clamp": (lambda t: t.clamp(-0.5, 0.7), lambda t: t.clamp(-0.5, 0.7), {}),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_methods_match_torch(name, rng):
    ours, theirs, opts = UNARY[name]
    a, ta = _pair(rng, (3, 5), **opts)
    y, ty = ours(a), theirs(ta)
    _close(y, ty)
    _backward_both(y, ty, rng)
    _close(a.grad, ta.grad)


def test_sigmoid_extreme_values_finite():
    t = tinycnn.tensor(np.array([-1e4, -800.0, 0.0, 800.0, 1e4]), requires_grad=True)
    y = t.sigmoid()
    np.testing.assert_allclose(y.numpy(), [0, 0, 0.5, 1, 1], atol=1e-300)
    y.sum().backward()
    assert np.all(np.isfinite(t.grad.numpy()))


# ---------------------------------------------------------------------------- indexing
INDEX_CASES = {
    "int": 1,
    "slice": slice(1, 3),
    "neg-int": -1,
    "tuple": (1, slice(None, None, 2)),
    "ellipsis": (Ellipsis, 0),
    "none": (None, 0),
    "step-slice": (slice(None), slice(3, 0, -1)),
    "int-array": np.array([0, 2]),
    "repeated-int-array": np.array([0, 0, 2, 0]),
    "repeated-list": [1, 1, 1],
    "bool-mask": np.array([True, False, True]),
    "2d-int-arrays": (np.array([0, 0, 2]), np.array([1, 1, 4])),
}


@pytest.mark.parametrize("case", list(INDEX_CASES))
def test_indexing_matches_torch(case, rng):
    index = INDEX_CASES[case]
    a, ta = _pair(rng, (3, 5))

    def to_torch(i):
        if isinstance(i, np.ndarray):
            return torch.tensor(i)
        if isinstance(i, tuple):
            return tuple(to_torch(j) for j in i)
        if isinstance(i, slice) and i.step is not None and i.step < 0:
            return i  # torch has no negative steps; handled below
        return i

    y = a[index]
    if case == "step-slice":
        ty = ta[:, 1:4].flip(1)
    else:
        ty = ta[to_torch(index)]
    _close(y, ty)
    _backward_both(y, ty, rng)
    _close(a.grad, ta.grad)


def test_indexing_with_tensor_index(rng):
    a, ta = _pair(rng, (4, 2))
    idx = tinycnn.tensor([3, 3, 0])
    y, ty = a[idx], ta[torch.tensor([3, 3, 0])]
    _close(y, ty)
    _backward_both(y, ty, rng)
    _close(a.grad, ta.grad)


def test_comparisons_return_bool_tensors():
    t = tinycnn.tensor([1.0, 2.0, 3.0])
    np.testing.assert_array_equal((t > 1.5).numpy(), [False, True, True])
    np.testing.assert_array_equal((t == tinycnn.tensor([1.0, 0.0, 3.0])).numpy(), [True, False, True])
    assert ((t <= 2).numpy().dtype == np.bool_)


def test_repr_mentions_dtype_and_grad():
    r = repr(tinycnn.tensor([1.0], requires_grad=True))
    assert "float32" in r and "requires_grad=True" in r


# ---------------------------------------------------------------------------- top-level namespace
@pytest.mark.parametrize("path", ["nn", "nn.functional", "nn.init", "optim", "optim.lr_scheduler", "cuda"])
def test_import_tinycnn_exposes_submodules(path):
    obj = tinycnn
    for part in path.split("."):
        assert hasattr(obj, part), f"tinycnn.{path} must be available after `import tinycnn`"
        obj = getattr(obj, part)


@pytest.mark.parametrize("name", ["Tensor", "tensor", "from_numpy", "zeros", "ones", "randn", "rand", "no_grad",
                                  "manual_seed", "save", "load", "gradcheck", "GradcheckError"])
def test_top_level_names(name):
    assert callable(getattr(tinycnn, name))
    assert issubclass(tinycnn.GradcheckError, RuntimeError)
