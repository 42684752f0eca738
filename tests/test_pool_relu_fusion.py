"""Max-pool backward fused with the backward of a ReLU before the pool (primitive max_pool2d_backward_relu; MaxPool2d and ReLU in tinycnn/ops): compared with the unfused
NumPy reference and the unfused Numba kernels, float32 and float64, odd shapes, and through autograd."""
import numba
import numpy as np
import pytest
import torch

import tinycnn
import tinycnn.nn.functional as F
from tinycnn import backends
from tinycnn.backends import cpu_numba as NB
from tinycnn.backends import cpu_numpy as NP
from tinycnn.gradcheck import gradcheck
from tinycnn.ops import activation

# (kernel, stride, padding): windows that tile the input, overlapping/padded ones, and ones with gaps
WINDOWS = [((2, 2), (2, 2), (0, 0)), ((3, 3), (3, 3), (0, 0)), ((2, 3), (2, 3), (0, 0)), ((1, 1), (1, 1), (0, 0)),
           ((3, 3), (2, 2), (1, 1)), ((2, 2), (1, 1), (0, 0)), ((2, 2), (3, 3), (0, 0))]
WIDS = ["k2s2", "k3s3", "k23s23", "k1s1", "k3s2p1", "k2s1", "k2s3gaps"]
SHAPES = [(2, 3, 9, 11), (1, 2, 7, 7), (3, 5, 28, 28), (64, 32, 14, 15)]   # the last one runs threaded


def _relu_out(shape, dtype, rng):
    """A ReLU output with exact zeros, a NaN and a tie, as the pool's input r."""
    z = rng.standard_normal(shape).astype(dtype)
    z[0, 0, 0, :2] = 3.0                        # tie: the first element wins
    z[0, 0, 1, 1] = np.nan
    return np.maximum(z, 0)


def _grad(shape, dtype, rng):
    g = rng.standard_normal(shape).astype(dtype)
    g.reshape(-1)[:3] = (-0.0, np.inf, np.nan)  # -0.0 must come out +0.0; inf/NaN masked out -> 0
    return g


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("window", WINDOWS, ids=WIDS)
def test_fused_backward_equals_pool_backward_then_relu_backward(window, shape, dtype):
    rng = np.random.default_rng(1)
    if window[0][0] > shape[2] or window[0][1] > shape[3]:
        pytest.skip("window larger than the input")
    r = _relu_out(shape, dtype, rng)
    y, idx = NB.max_pool2d_forward(r, *window)
    g = _grad(y.shape, dtype, rng)
    # Numba: fused == unfused Numba kernels, bit for bit, with and without the window geometry
    ref_nb = backends.kernel("relu_backward", g)(NB.max_pool2d_backward(g, idx, r.shape), r)
    for args in ((), window):
        fused = NB.max_pool2d_backward_relu(g, idx, r.shape, r, *args)
        assert fused.dtype == g.dtype and fused.shape == r.shape
        np.testing.assert_array_equal(fused, ref_nb)
        assert not np.signbit(fused[fused == 0]).any()
    # ... and the unfused NumPy reference (exactly where no two windows add into one element)
    ref_np = activation.relu_backward(NP.max_pool2d_backward(g, idx, r.shape), r)
    np.testing.assert_array_equal(NP.max_pool2d_backward_relu(g, idx, r.shape, r, *window), ref_np)
    overlap = window[1][0] < window[0][0] or window[1][1] < window[0][1]
    if overlap:
        # float32 sums of overlapping windows round differently from the reference's float64 sums
        tol = 1e-5 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(fused, ref_np, rtol=tol, atol=tol)
    else:
        np.testing.assert_array_equal(fused, ref_np)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("window", WINDOWS, ids=WIDS)
def test_window_geometry_does_not_change_the_pool_backward(window, shape, dtype):
    rng = np.random.default_rng(2)
    if window[0][0] > shape[2] or window[0][1] > shape[3]:
        pytest.skip("window larger than the input")
    x = rng.standard_normal(shape).astype(dtype)
    y, idx = NB.max_pool2d_forward(x, *window)
    g = _grad(y.shape, dtype, rng)
    plain = NB.max_pool2d_backward(g, idx, x.shape)
    np.testing.assert_array_equal(NB.max_pool2d_backward(g, idx, x.shape, *window), plain)
    np.testing.assert_array_equal(NP.max_pool2d_backward(g, idx, x.shape, *window), NP.max_pool2d_backward(g, idx, x.shape))
    assert not np.signbit(plain[plain == 0]).any()


def test_fused_kernels_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(3)
    r = _relu_out((64, 32, 28, 28), np.float32, rng)
    window = ((2, 2), (2, 2), (0, 0))
    y, idx = NB.max_pool2d_forward(r, *window)
    g = _grad(y.shape, np.float32, rng)
    prev = numba.get_num_threads()
    try:
        outs = []
        for t in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(t)
            outs.append([NB.max_pool2d_backward_relu(g, idx, r.shape, r, *window).copy(),
                         NB.max_pool2d_backward_relu(g, idx, r.shape, r).copy()])
    finally:
        numba.set_num_threads(prev)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_fused_kernel_checks_r():
    g = np.zeros((1, 1, 2, 2), np.float32)
    idx = np.zeros((1, 1, 2, 2), np.int32)
    with pytest.raises(ValueError, match="r must have shape"):
        NB.max_pool2d_backward_relu(g, idx, (1, 1, 4, 4), np.zeros((1, 1, 4, 4), np.float64))


# --------------------------------------------------------------------------- through autograd
def _conv_relu_pool(dtype, rng, retain=False, extra_use=False, window=((2, 2), (2, 2), (0, 0))):
    """conv -> ReLU -> max-pool -> sum(p^2 + p) (gradient 2p + 1, nonzero everywhere); returns (gradients of x, W, b), the ReLU output."""
    x = tinycnn.tensor(rng.standard_normal((4, 3, 13, 12)).astype(dtype), requires_grad=True)
    w = tinycnn.tensor(rng.standard_normal((8, 3, 3, 3)).astype(dtype), requires_grad=True)
    b = tinycnn.tensor(rng.standard_normal(8).astype(dtype), requires_grad=True)
    r = F.relu(F.conv2d(x, w, b, padding=1))
    if retain:
        r.retain_grad()
    p = F.max_pool2d(r, window[0], window[1], window[2])
    loss = (p * p + p).sum()
    if extra_use:
        loss = loss + (r * 0.5).sum()
    loss.backward()
    return [t.grad.numpy().copy() for t in (x, w, b)], r


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("window", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1))], ids=["tiled", "overlap"])
def test_fusion_leaves_every_gradient_bit_identical(dtype, window, monkeypatch):
    calls = []
    real = NB.max_pool2d_backward_relu
    monkeypatch.setitem(backends._registry, ("max_pool2d_backward_relu", "numba"),
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    fused, _ = _conv_relu_pool(dtype, np.random.default_rng(4), window=window)
    assert calls == [1]
    plain, r = _conv_relu_pool(dtype, np.random.default_rng(4), retain=True, window=window)  # retain: not fused
    assert calls == [1]
    for a, b in zip(fused, plain):
        np.testing.assert_array_equal(a, b)


def test_retained_gradient_of_the_relu_output_is_the_pools_own_gradient():
    """Grad-CAM retains a feature map's gradient: it must be dL/dr itself, not the ReLU-masked one."""
    (gx, gw, gb), r = _conv_relu_pool(np.float64, np.random.default_rng(5), retain=True)
    y, idx = NP.max_pool2d_forward(r.numpy(), (2, 2), (2, 2), (0, 0))
    np.testing.assert_allclose(r.grad.numpy(), NP.max_pool2d_backward(2 * y + 1, idx, r.shape), rtol=1e-15)
    assert np.any((r.grad.numpy() != 0) & (r.numpy() == 0))  # windows of zeros still get a gradient


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_relu_output_used_twice_matches_torch(dtype, tol):
    (gx, gw, gb), _ = _conv_relu_pool(dtype, np.random.default_rng(6), extra_use=True)
    rng = np.random.default_rng(6)
    x = torch.tensor(rng.standard_normal((4, 3, 13, 12)).astype(dtype), requires_grad=True)
    w = torch.tensor(rng.standard_normal((8, 3, 3, 3)).astype(dtype), requires_grad=True)
    b = torch.tensor(rng.standard_normal(8).astype(dtype), requires_grad=True)
    r = torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1))
    p = torch.nn.functional.max_pool2d(r, 2, 2)
    ((p * p + p).sum() + (r * 0.5).sum()).backward()
    for ours, t in zip((gx, gw, gb), (x, w, b)):
        np.testing.assert_allclose(ours, t.grad.numpy(), rtol=tol, atol=tol)


def test_relu_then_pool_in_a_retained_graph_gives_the_same_gradients_twice():
    rng = np.random.default_rng(7)
    z = tinycnn.tensor(rng.standard_normal((2, 4, 9, 9)), requires_grad=True)
    loss = (F.max_pool2d(F.relu(z), 3, 3) ** 2).sum()
    loss.backward(retain_graph=True)
    first = z.grad.numpy().copy()
    z.grad = None
    loss.backward()
    np.testing.assert_array_equal(z.grad.numpy(), first)


@pytest.mark.parametrize("window", [(2, 2, 0), (3, 2, 1), (3, 3, 0)], ids=["k2s2", "k3s2p1", "k3s3"])
def test_relu_then_pool_gradcheck_float64(window):
    k, s, p = window
    rng = np.random.default_rng(8)
    a = rng.standard_normal((2, 3, 7, 8))
    a[np.abs(a) < 1e-2] = 0.3                   # keep finite differences away from ReLU's kink
    assert gradcheck(lambda t: F.max_pool2d(F.relu(t), k, s, p), [tinycnn.tensor(a, requires_grad=True)])
