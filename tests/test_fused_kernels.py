"""The fused elementwise primitives (relu_forward / relu_backward): Numba kernels vs the NumPy reference
and PyTorch, on sizes that take the parallel path (>= 2**15 elements) and sizes that do not."""
import numba
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tinycnn
import tinycnn.nn.functional as F
from tinycnn import backends
from tinycnn.backends import cpu_numba_ew
from tinycnn.gradcheck import gradcheck
from tinycnn.ops import activation

SHAPES = [(5,), (3, 7), (2, 16, 33, 31), (128, 64, 14, 14)]  # the last two run on all Numba threads


def _data(shape, dtype, rng):
    a = (rng.standard_normal(shape) * 2).astype(dtype)
    flat = a.reshape(-1)
    flat[0] = 0.0
    if flat.size > 4:
        flat[1], flat[2], flat[3] = np.nan, -np.inf, -0.0
    return a


def test_numba_family_provides_the_relu_primitives():
    x = np.zeros(3, np.float32)
    assert backends.kernel("relu_forward", x) is cpu_numba_ew.relu_forward
    assert backends.kernel("relu_backward", x) is cpu_numba_ew.relu_backward


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_relu_forward_matches_reference_and_torch(shape, dtype, rng):
    x = _data(shape, dtype, rng)
    y = cpu_numba_ew.relu_forward(x)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, activation.relu_forward(x))  # NaN == NaN here
    np.testing.assert_array_equal(y, torch.relu(torch.from_numpy(x)).numpy())
    assert not np.signbit(y[y == 0]).any()  # -0.0 becomes +0.0, as in np.maximum(x, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_relu_backward_matches_reference_and_torch(shape, dtype, rng):
    y = np.maximum(_data(shape, dtype, rng), 0)
    g = _data(shape, dtype, rng)  # NaN / -inf gradients where y <= 0 must give 0, as in torch
    dx = cpu_numba_ew.relu_backward(g, y)
    assert dx.dtype == g.dtype and dx.shape == g.shape
    np.testing.assert_array_equal(dx, activation.relu_backward(g, y))
    expect = torch.ops.aten.threshold_backward(torch.from_numpy(g), torch.from_numpy(y), 0).numpy()
    np.testing.assert_array_equal(dx, expect)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_contiguous_and_integer_inputs_fall_back(dtype, rng):
    x = rng.standard_normal((64, 40, 30)).astype(dtype)[:, ::2]
    np.testing.assert_array_equal(cpu_numba_ew.relu_forward(x), np.maximum(x, 0))
    g = rng.standard_normal(x.shape).astype(dtype)[::-1]
    y = np.maximum(x, 0)
    np.testing.assert_array_equal(cpu_numba_ew.relu_backward(g, y), np.where(y <= 0, 0, g))
    i = np.arange(-5, 5)
    np.testing.assert_array_equal(cpu_numba_ew.relu_forward(i), np.maximum(i, 0))


def test_results_do_not_depend_on_the_thread_count(rng):
    x = rng.standard_normal((64, 32, 28, 28)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    prev = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        y1, d1 = cpu_numba_ew.relu_forward(x), cpu_numba_ew.relu_backward(g, np.maximum(x, 0))
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        y2, d2 = cpu_numba_ew.relu_forward(x), cpu_numba_ew.relu_backward(g, np.maximum(x, 0))
    finally:
        numba.set_num_threads(prev)
    assert np.array_equal(y1, y2) and np.array_equal(d1, d2)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_relu_op_on_a_conv_sized_tensor_matches_torch(dtype, tol, rng):
    a = rng.standard_normal((16, 32, 28, 28)).astype(dtype)
    g = rng.standard_normal(a.shape).astype(dtype)
    x = tinycnn.tensor(a, requires_grad=True)
    xt = torch.tensor(a, requires_grad=True)
    y, yt = F.relu(x), torch.relu(xt)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=tol, atol=0)
    y.backward(tinycnn.tensor(g))
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=tol, atol=0)


def test_relu_gradcheck_float64(rng):
    a = rng.standard_normal((2, 3, 5, 4))
    a[np.abs(a) < 1e-3] = 0.5  # keep finite differences away from the kink
    assert gradcheck(F.relu, [tinycnn.tensor(a, requires_grad=True)])


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=4, max_side=9),
                  elements=st.floats(width=32, allow_nan=True, allow_infinity=True)),
       st.integers(0, 2**31 - 1))
def test_relu_primitives_property(x, seed):
    g = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
    y = cpu_numba_ew.relu_forward(x)
    np.testing.assert_array_equal(y, torch.relu(torch.from_numpy(x)).numpy())
    expect = torch.ops.aten.threshold_backward(torch.from_numpy(g), torch.from_numpy(y), 0).numpy()
    np.testing.assert_array_equal(cpu_numba_ew.relu_backward(g, y), expect)


def test_relu_backward_writes_into_the_gradient_only_when_nobody_else_sees_it(rng):
    # a + b: Add's backward hands the SAME gradient array to both ReLUs, so neither may overwrite it
    a1, a2 = rng.standard_normal((2, 64, 40, 30))
    x1, x2 = tinycnn.tensor(a1, requires_grad=True), tinycnn.tensor(a2, requires_grad=True)
    t1, t2 = torch.tensor(a1, requires_grad=True), torch.tensor(a2, requires_grad=True)
    g = rng.standard_normal(a1.shape)
    (F.relu(x1) + F.relu(x2)).backward(tinycnn.tensor(g))
    (torch.relu(t1) + torch.relu(t2)).backward(torch.tensor(g))
    np.testing.assert_array_equal(x1.grad.numpy(), t1.grad.numpy())
    np.testing.assert_array_equal(x2.grad.numpy(), t2.grad.numpy())
    # the caller's gradient array itself is never written
    gt = tinycnn.tensor(g.copy())
    F.relu(tinycnn.tensor(a1, requires_grad=True)).backward(gt)
    np.testing.assert_array_equal(gt.numpy(), g)


def test_grad_buffer_sees_aliases_and_views():
    def engine(make):
        g = np.ones((4, 5))
        keep = make(g)  # noqa: F841 - holds an alias / view while the check runs
        return backward(g)

    def backward(g):
        return activation.grad_buffer(g) is g

    if activation._SOLE_OWNER_REFS is None:
        assert not engine(lambda g: None)
        return
    assert engine(lambda g: None)
    assert not engine(lambda g: g)
    assert not engine(lambda g: g[1:])
    assert activation.grad_buffer(np.ones(3)[::2]) is None


def test_relu_in_a_retained_graph_gives_the_same_gradient_twice(rng):
    a = rng.standard_normal((8, 32, 16, 16))
    x = tinycnn.tensor(a, requires_grad=True)
    loss = F.relu(x * 2.0).sum()
    loss.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    x.grad = None
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), first)
    np.testing.assert_array_equal(first, 2.0 * (a > 0))


def test_numpy_reference_relu_backward_writes_into_out():
    """The NumPy reference (used when TINYCNN_CPU_KERNELS=numpy) supports the in-place out= path."""
    from tinycnn.ops.activation import relu_backward
    gy = np.array([1.0, np.inf, -2.0, np.nan], dtype=np.float32)
    y = np.array([0.5, 0.0, 3.0, -1.0], dtype=np.float32)
    out = gy.copy()
    res = relu_backward(gy, y, out=out)
    assert res is out
    np.testing.assert_array_equal(out, [1.0, 0.0, -2.0, 0.0])


def test_relu_op_under_numpy_family_matches_numba_family():
    prev = backends.get_cpu_kernels()
    x = np.random.default_rng(0).normal(size=(4, 3, 5, 5)).astype(np.float32)
    grads = []
    for family in ("numpy", "numba"):
        backends.set_cpu_kernels(family)
        try:
            t = tinycnn.tensor(x, requires_grad=True)
            (t.relu() * 2.0).sum().backward()
            grads.append(t.grad.numpy())
        finally:
            backends.set_cpu_kernels(prev)
    np.testing.assert_array_equal(grads[0], grads[1])


def test_relu_backward_writes_into_the_engines_gradient(monkeypatch):
    """ReLU after max-pool reuses the gradient buffer that only the engine holds (a refactor that adds a
    frame or a stack reference silently loses this); the fused ReLU + max-pool op needs no ReLU pass."""
    if activation._SOLE_OWNER_REFS is None or tinycnn.backends.get_cpu_kernels() != "numba":
        pytest.skip("in-place gradients need CPython < 3.14 and the Numba kernels")
    from tinycnn.ops.pool import relu_max_pool2d
    seen = []
    real = activation.kernel

    def kernel(name, x):
        fn = real(name, x)
        if name == "relu_backward":
            return lambda g, y, out=None: seen.append(out is g) or fn(g, y, out=out)
        return fn
    monkeypatch.setattr(activation, "kernel", kernel)
    x = tinycnn.tensor(np.random.default_rng(0).standard_normal((2, 3, 8, 8)), requires_grad=True)
    F.max_pool2d(F.relu(x), 2).sum().backward()
    (relu_max_pool2d(x, 2) * 2).sum().backward()
    assert seen == [True]
