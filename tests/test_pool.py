"""max/avg/adaptive-avg pooling against PyTorch (forward and dx), gradcheck, ties, and bad input."""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycnn.nn.functional as F
from tinycnn import backends
from tinycnn.gradcheck import gradcheck
from tinycnn.tensor import Tensor

TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-5, atol=1e-6)}
TF = torch.nn.functional


@pytest.fixture(params=["numba", "numpy"])
def cpu_family(request):
    prev = backends.get_cpu_kernels()
    backends.set_cpu_kernels(request.param)
    yield request.param
    backends.set_cpu_kernels(prev)


def _compare(ours_fn, torch_fn, x, dtype, **opts):
    rng = np.random.default_rng(0)
    X = Tensor(x.astype(dtype), requires_grad=True)
    y = ours_fn(X, **opts)
    tx = torch.tensor(x.astype(dtype), requires_grad=True)
    ty = torch_fn(tx, **opts)
    assert y.shape == tuple(ty.shape)
    g = rng.standard_normal(y.shape).astype(dtype)
    y.backward(Tensor(g))
    ty.backward(torch.tensor(g))
    assert y.dtype == dtype and X.grad.dtype == dtype
    np.testing.assert_allclose(y.data, ty.detach().numpy(), err_msg="y", **TOL[dtype])
    np.testing.assert_allclose(X.grad.data, tx.grad.numpy(), err_msg="dx", **TOL[dtype])


WINDOWS = [((2, 2), None, 0), ((3, 3), 2, 1), ((3, 3), 1, 1), ((2, 3), (1, 2), (1, 0)), ((3, 2), 3, (1, 1)),
           ((5, 3), 2, (2, 1)), ((1, 1), 2, 0)]
WIN_IDS = ["k2", "k3s2p1", "k3s1p1-overlap", "k23-s12-p10", "k32s3p1", "k53s2p21", "k1s2"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kernel_size,stride,padding", WINDOWS, ids=WIN_IDS)
@pytest.mark.parametrize("shape", [(2, 3, 8, 11), (1, 1, 7, 6)], ids=["2x3x8x11", "1x1x7x6"])
def test_max_pool2d_matches_torch(shape, kernel_size, stride, padding, dtype, cpu_family):
    x = np.random.default_rng(1).standard_normal(shape)
    _compare(F.max_pool2d, TF.max_pool2d, x, dtype, kernel_size=kernel_size, stride=stride, padding=padding)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["incl-pad", "excl-pad"])
@pytest.mark.parametrize("kernel_size,stride,padding", WINDOWS, ids=WIN_IDS)
@pytest.mark.parametrize("shape", [(2, 3, 8, 11), (1, 1, 7, 6)], ids=["2x3x8x11", "1x1x7x6"])
def test_avg_pool2d_matches_torch(shape, kernel_size, stride, padding, count_include_pad, dtype, cpu_family):
    x = np.random.default_rng(2).standard_normal(shape)
    _compare(F.avg_pool2d, TF.avg_pool2d, x, dtype, kernel_size=kernel_size, stride=stride, padding=padding,
             count_include_pad=count_include_pad)


ADAPTIVE = list(itertools.product([(7, 7), (5, 9), (1, 1), (3, 4), (7, 7)], [(1, 1), (3, 3), (2, 5), (7, 7)]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("hw,out", [(hw, out) for hw, out in ADAPTIVE if out[0] <= 7],
                         ids=[f"{hw}->{out}" for hw, out in ADAPTIVE if out[0] <= 7])
def test_adaptive_avg_pool2d_matches_torch(hw, out, dtype):
    x = np.random.default_rng(3).standard_normal((2, 3) + hw)
    _compare(F.adaptive_avg_pool2d, TF.adaptive_avg_pool2d, x, dtype, output_size=out)


def test_adaptive_avg_pool2d_int_and_none_output_size():
    x = np.random.default_rng(4).standard_normal((1, 2, 6, 5))
    _compare(F.adaptive_avg_pool2d, TF.adaptive_avg_pool2d, x, np.float64, output_size=4)
    _compare(F.adaptive_avg_pool2d, TF.adaptive_avg_pool2d, x, np.float64, output_size=(None, 2))


def test_max_pool2d_ties_go_to_first_element_and_grad_lands_there(cpu_family):
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 1, 0] = 5.0            # tie inside the first window: (1, 0) comes first
    X = Tensor(x, requires_grad=True)
    y = F.max_pool2d(X, 2)
    y.sum().backward()
    tx = torch.tensor(x, requires_grad=True)
    TF.max_pool2d(tx, 2).sum().backward()
    np.testing.assert_array_equal(X.grad.data, tx.grad.numpy())
    assert X.grad.data[0, 0, 1, 0] == 1.0 and X.grad.data[0, 0, 1, 1] == 0.0


def test_max_pool2d_overlapping_windows_add_gradients(cpu_family):
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0                             # the max of all four 2x2 stride-1 windows
    X = Tensor(x, requires_grad=True)
    F.max_pool2d(X, 2, stride=1).sum().backward()
    assert X.grad.data[0, 0, 1, 1] == 4.0 and X.grad.data.sum() == 4.0


def test_max_pool2d_indices_follow_the_kernel_contract(cpu_family):
    x = np.random.default_rng(5).standard_normal((2, 3, 7, 8)).astype(np.float32)
    y, idx = backends.kernel("max_pool2d_forward", x)(x, (3, 3), (2, 2), (1, 1))
    ty, tidx = TF.max_pool2d(torch.tensor(x), 3, 2, 1, return_indices=True)
    assert idx.dtype == np.int32
    np.testing.assert_array_equal(idx, tidx.numpy())
    np.testing.assert_array_equal(y, ty.numpy())


def test_max_pool2d_propagates_nan(cpu_family):
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y = F.max_pool2d(Tensor(x), 2).data
    ty = TF.max_pool2d(torch.tensor(x), 2).numpy()
    np.testing.assert_array_equal(y, ty)            # NaNs compare equal in assert_array_equal


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_max_pool_2x2_select_kernel_matches_the_general_scan(dtype):
    """The 2x2 / stride-2 kernel finds value and argmax with selects (max first, then the first tap equal
    to it, or the last NaN); the general kernel scans with branches. Windows full of ties, +-0.0, +-inf
    and one to four NaNs must give the same values (bit for bit) and indices in both."""
    from tinycnn.backends import cpu_numba
    rng = np.random.default_rng(7)
    palette = np.array([-np.inf, -1.0, -0.0, 0.0, 1.0, np.inf, np.nan])
    x = rng.choice(palette, size=(6, 5, 12, 10)).astype(dtype)
    x[0] = rng.standard_normal((5, 12, 10))          # and plain random-sign data
    y_fast, i_fast = np.empty((6, 5, 6, 5), dtype), np.empty((6, 5, 6, 5), np.int32)
    y_scan, i_scan = np.empty_like(y_fast), np.empty_like(i_fast)
    cpu_numba._max_pool_2x2_fwd(x, y_fast, i_fast, False)
    cpu_numba._max_pool_fwd(x, 2, 2, 2, 2, 0, 0, y_scan, i_scan, False)
    assert np.isnan(y_scan).any() and (np.isnan(x).reshape(6, 5, 6, 2, 5, 2).sum(axis=(3, 5)) >= 2).any()
    assert np.array_equal(y_fast.view(np.uint8), y_scan.view(np.uint8))      # bits: -0.0 and NaN too
    np.testing.assert_array_equal(i_fast, i_scan)
    # relu=True: the same indices, and max(y, 0) by ReLU's rule (v <= 0 -> +0.0, NaN kept), in both kernels
    relu = np.where(y_scan <= 0, dtype(0), y_scan)
    for fn, args in ((cpu_numba._max_pool_2x2_fwd, ()), (cpu_numba._max_pool_fwd, (2, 2, 2, 2, 0, 0))):
        y_r, i_r = np.empty_like(y_fast), np.empty_like(i_fast)
        fn(x, *args, y_r, i_r, True)
        assert np.array_equal(y_r.view(np.uint8), relu.view(np.uint8))
        np.testing.assert_array_equal(i_r, i_scan)


@pytest.mark.parametrize("fn,opts", [
    (F.max_pool2d, dict(kernel_size=3, stride=2, padding=1)),
    (F.max_pool2d, dict(kernel_size=2, stride=1)),
    (F.avg_pool2d, dict(kernel_size=3, stride=2, padding=1)),
    (F.avg_pool2d, dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    (F.adaptive_avg_pool2d, dict(output_size=(2, 3))),
], ids=["max-k3s2p1", "max-k2s1", "avg-k3s2p1", "avg-excl-pad", "adaptive"])
def test_pool_gradcheck(fn, opts, cpu_family):
    # distinct values keep the max away from ties, where the max is not differentiable
    x = np.random.default_rng(6).permutation(2 * 2 * 5 * 6).reshape(2, 2, 5, 6) / 7.0
    assert gradcheck(lambda t: fn(t, **opts), [Tensor(x, requires_grad=True)])


def test_pool_deterministic(cpu_family):
    x = Tensor(np.random.default_rng(7).standard_normal((4, 8, 12, 12)).astype(np.float32), requires_grad=True)
    runs = []
    for _ in range(2):
        x.grad = None
        (F.max_pool2d(x, 3, 1, 1) + F.avg_pool2d(x, 3, 1, 1)).sum().backward()
        runs.append(x.grad.data.copy())
    assert np.array_equal(runs[0], runs[1])


def _t(*shape, dtype=np.float32):
    return Tensor(np.zeros(shape, dtype=dtype))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: F.max_pool2d(_t(3, 8, 8), 2), ValueError, r"max_pool2d: input must be 4-D .* got shape \(3, 8, 8\)"),
    (lambda: F.avg_pool2d(_t(1, 3, 8, 8), 2, padding=2), ValueError,
     r"padding must be at most half of kernel_size, got padding=\(2, 2\), kernel_size=\(2, 2\)"),
    (lambda: F.max_pool2d(_t(1, 3, 4, 4), 7, padding=1), ValueError,
     r"kernel_size \(7, 7\) is larger than the padded input \(6, 6\)"),
    (lambda: F.max_pool2d(_t(1, 3, 4, 4), 0), ValueError, r"kernel_size must be >= 1, got 0"),
    (lambda: F.avg_pool2d(_t(1, 3, 4, 4), 2, stride=(1, 0)), ValueError, r"stride must be >= 1, got \(1, 0\)"),
    (lambda: F.adaptive_avg_pool2d(_t(1, 3, 4, 4), 0), ValueError, r"output_size must be >= 1, got 0"),
    (lambda: F.max_pool2d(np.zeros((1, 1, 4, 4)), 2), TypeError, r"input must be a tinycnn Tensor, got ndarray"),
    (lambda: F.max_pool2d(_t(1, 1, 4, 4, dtype=np.int64), 2), TypeError, r"floating-point tensor, got dtype int64"),
], ids=["rank", "padding-half", "kernel-too-big", "kernel0", "stride0", "adaptive0", "not-tensor", "int-dtype"])
def test_pool_bad_input_messages(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(128, 32, 28, 28), (128, 64, 14, 14)])
def test_reference_cnn_maxpool_shapes_match_torch(shape, cpu_family):
    x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
    _compare(F.max_pool2d, TF.max_pool2d, x, np.float32, kernel_size=2)


# ---------------------------------------------------------------------- ReLU then max-pool as one op
def _relu_pool_both(xa, k, s, p, g=None):
    """(y, dx) of relu then max_pool2d, separately and through ops.pool.relu_max_pool2d."""
    from tinycnn.ops.pool import relu_max_pool2d
    outs = []
    for fused in (False, True):
        x = Tensor(xa.copy(), requires_grad=True)
        y = relu_max_pool2d(x, k, s, p) if fused else F.max_pool2d(F.relu(x), k, s, p)
        if g is None:
            g = np.random.default_rng(1).standard_normal(y.shape).astype(xa.dtype)
        y.backward(Tensor(g))
        outs.append((y.numpy().copy(), x.grad.numpy().copy()))
    return outs


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), ((2, 3), (1, 2), (1, 0))])
@pytest.mark.parametrize("values", ["normal", "ties", "special"])
def test_relu_max_pool_is_bit_identical_to_relu_then_max_pool(dtype, k, s, p, values, cpu_family):
    rng = np.random.default_rng(0)
    shape = (3, 4, 9, 8)
    if values == "normal":
        xa = rng.standard_normal(shape)
    elif values == "ties":            # many equal values and exact zeros: argmax tie-breaking
        xa = rng.integers(-2, 3, shape).astype(np.float64)
    else:                             # -0.0, +-inf and NaN
        xa = rng.standard_normal(shape)
        flat = xa.reshape(-1)
        flat[rng.integers(0, flat.size, 20)] = -0.0
        flat[rng.integers(0, flat.size, 5)] = np.inf
        flat[rng.integers(0, flat.size, 5)] = -np.inf
        flat[rng.integers(0, flat.size, 5)] = np.nan
    (y0, dx0), (y1, dx1) = _relu_pool_both(xa.astype(dtype), k, s, p)
    np.testing.assert_array_equal(y1, y0)
    assert np.array_equal(np.signbit(y1), np.signbit(y0))      # -0.0 vs +0.0 too
    np.testing.assert_array_equal(dx1, dx0)


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (2, 3, 1)], ids=["disjoint", "overlapping", "gaps"])
def test_relu_max_pool_backward_special_gradients_bit_identical(k, s, p, cpu_family):
    """Gradients of -0.0, +-inf and NaN, on windows whose output is 0 and > 0: the fused backward (which
    stores 0 + g where windows do not overlap, and adds where they do) gives the bits of the two passes."""
    rng = np.random.default_rng(5)
    xa = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    n_out = (9 + 2 * p - k) // s + 1, (10 + 2 * p - k) // s + 1
    g = rng.choice(np.array([-0.0, 0.0, np.inf, -np.inf, np.nan, 1.5, -2.0], np.float32), size=(2, 3) + n_out)
    (y0, dx0), (y1, dx1) = _relu_pool_both(xa, k, s, p, g=g)
    assert (y0 == 0).any() and (y0 > 0).any()
    assert np.array_equal(dx1.view(np.uint32), dx0.view(np.uint32))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(2, 11), w=st.integers(2, 11),
       k=st.integers(1, 3), s=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_relu_max_pool_property_any_shape(n, c, h, w, k, s, seed):
    """Through the Numba kernels (the default family; the fixture cannot wrap a hypothesis test)."""
    k = min(k, h, w)
    p = k // 2 if seed % 2 else 0
    xa = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)
    (y0, dx0), (y1, dx1) = _relu_pool_both(xa, k, s, p)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(dx1, dx0)


def test_relu_max_pool_matches_torch():
    rng = np.random.default_rng(3)
    xa = rng.standard_normal((4, 8, 14, 14))
    g = rng.standard_normal((4, 8, 7, 7))
    from tinycnn.ops.pool import relu_max_pool2d
    x = Tensor(xa, requires_grad=True)
    y = relu_max_pool2d(x, 2)
    y.backward(Tensor(g))
    tx = torch.tensor(xa, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(torch.relu(tx), 2)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-15, atol=1e-15)
    assert gradcheck(lambda t: relu_max_pool2d(t, 2), (Tensor(rng.standard_normal((1, 2, 4, 4)) + 0.5,
                                                              requires_grad=True),))


def test_sequential_runs_relu_then_max_pool_as_one_op_unless_hooked(monkeypatch):
    import tinycnn
    from tinycnn import nn
    from tinycnn.ops import pool
    calls = []
    for fn in (pool.ReLUMaxPool2d, pool.Conv2dReLUMaxPool2d):
        monkeypatch.setattr(fn, "apply", lambda *a, _f=fn.apply, _n=fn.__name__, **k: calls.append(_n) or _f(*a, **k))
    tinycnn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 2))
    x = tinycnn.randn(2, 1, 8, 8)
    y = model(x)
    assert calls == ["Conv2dReLUMaxPool2d"]              # a first layer in training: conv, ReLU and pool as one op
    y_grad_x = model(tinycnn.tensor(x.numpy(), requires_grad=True))
    assert calls[1:] == ["ReLUMaxPool2d"]                  # x needs a gradient: the conv, then ReLU + pool as one op
    seen = []
    handle = model[1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    y_hooked = model(x)
    assert calls[2:] == [] and seen == [(2, 4, 8, 8)]      # hooked: the modules run; the hook sees the full-size output
    np.testing.assert_array_equal(y.numpy(), y_grad_x.numpy())
    handle.remove()
    np.testing.assert_array_equal(y.numpy(), y_hooked.numpy())
    # a non-4-D input is left to the modules (and their own errors)
    seq = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    with pytest.raises(ValueError, match="4-D"):
        seq(tinycnn.randn(2, 8, 8))


# --------------------------------------------------------------------------- conv + ReLU + 2x2 max-pool
def _conv_relu_pool_both(xa, wa, ba, stride, padding, dilation, groups):
    """relu(max_pool2d(conv2d(x), 2)) through the three ops and through ops.pool.conv2d_relu_max_pool2d
    under no_grad (the fused primitive); both as arrays."""
    import tinycnn
    from tinycnn.ops.pool import conv2d_relu_max_pool2d
    x, w = Tensor(xa), Tensor(wa)
    b = None if ba is None else Tensor(ba)
    with tinycnn.no_grad():
        sep = F.max_pool2d(F.relu(F.conv2d(x, w, b, stride, padding, dilation, groups)), 2)
        fused = conv2d_relu_max_pool2d(x, w, b, stride, padding, dilation, groups)
    return sep.numpy(), fused.numpy()


# (C, O, kernel, stride, padding, dilation, groups): the direct kernel (one channel per group), Winograd
# (3x3 s1, >= 8 channels) and the three-pass fallback (im2col: stride 2, 5x5, dilation, few channels)
CONV_POOL_CASES = [(1, 6, 3, 1, 1, 1, 1), (4, 8, 3, 1, 1, 1, 4), (1, 3, 5, 1, 2, 2, 1),
                   (8, 5, 3, 1, 1, 1, 1), (16, 12, 3, 1, 0, 1, 1), (9, 4, 3, 1, 2, 1, 1),
                   (3, 4, 3, 2, 1, 1, 1), (6, 4, 5, 1, 2, 1, 2), (4, 6, 3, 1, 1, 2, 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("hw", [(12, 12), (13, 11)], ids=["even", "odd"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", CONV_POOL_CASES, ids=lambda c: "C{}O{}k{}s{}p{}d{}g{}".format(*c))
def test_conv_relu_pool_is_bit_identical_to_the_three_ops(case, bias, hw, dtype, cpu_family):
    c, o, k, s, p, d, g = case
    rng = np.random.default_rng(sum(case))
    xa = rng.standard_normal((3, c, *hw)).astype(dtype)
    wa = rng.standard_normal((o, c // g, k, k)).astype(dtype)
    ba = rng.standard_normal(o).astype(dtype) if bias else None
    sep, fused = _conv_relu_pool_both(xa, wa, ba, s, p, d, g)
    assert fused.shape == sep.shape and fused.dtype == dtype
    np.testing.assert_array_equal(fused, sep)
    # and it is the PyTorch result
    t = torch.nn.functional.conv2d(torch.tensor(xa, dtype=torch.float64), torch.tensor(wa, dtype=torch.float64),
                                   None if ba is None else torch.tensor(ba, dtype=torch.float64), s, p, d, g)
    expect = torch.nn.functional.max_pool2d(torch.relu(t), 2).numpy()
    np.testing.assert_allclose(fused, expect, rtol=1e-4 if dtype == np.float32 else 1e-10,
                               atol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")
@pytest.mark.parametrize("tile", [2, 4], ids=["F2", "F4"])
@pytest.mark.parametrize("whole", [False, True], ids=["blocked", "whole"])
def test_conv_relu_pool_winograd_schedules_and_special_values(whole, tile):
    """The fused Winograd output transform in both schedules, with ties, zeros, -0.0, inf and NaN
    (first maximum, NaN wins, ReLU of -0.0 is +0.0): bit-identical to the three primitives."""
    from tinycnn.backends import cpu_numba, cpu_numba_ew, cpu_numba_winograd as W
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 8, 10, 9)).astype(np.float32)
    x[0, :, :4, :4] = 0.0                              # all-zero outputs: ties at 0 and ReLU of +-0
    x[1, 0, 2, 3] = np.nan
    x[2, 1, 5, 5] = np.inf
    w = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
    w[3] = 0.0                                         # a channel that is exactly its bias
    b = rng.standard_normal(6).astype(np.float32)
    b[3] = -0.0
    fused = W.conv2d_forward(x, w, (1, 1), bias=b, whole=whole, block_bytes=40_000, relu_pool=True, tile=tile)
    y = W.conv2d_forward(x, w, (1, 1), bias=b, whole=whole, block_bytes=40_000, tile=tile)
    pooled, _ = cpu_numba.max_pool2d_forward(y, (2, 2), (2, 2), (0, 0))
    sep = cpu_numba_ew.relu_forward(pooled)
    assert fused.shape == (5, 6, 5, 4)
    assert np.isnan(sep).any() and np.isnan(fused).any()
    np.testing.assert_array_equal(fused, sep)
    np.testing.assert_array_equal(np.signbit(fused), np.signbit(sep))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_conv_relu_pool_direct_kernel_special_values():
    """The direct kernel's fused pool: -0.0 outputs (weights and bias -0.0 on positive inputs) become +0.0,
    NaN wins its window, inf stays; bit-identical to the separate primitives, signs of zeros included."""
    rng = np.random.default_rng(11)
    xa = rng.uniform(0.5, 1.0, (2, 1, 8, 10)).astype(np.float32)
    xa[0, 0, 3, 3] = np.nan
    xa[1, 0, 5, 6] = np.inf
    wa = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    wa[1] = -0.0
    ba = np.array([0.5, -0.0, -1.0, 2.0], np.float32)
    sep, fused = _conv_relu_pool_both(xa, wa, ba, 1, 1, 1, 1)
    zeros = sep[:, 1][np.isfinite(sep[:, 1])]          # NaN * -0.0 spreads NaN; the rest is ReLU(-0.0)
    assert zeros.size > 20 and (zeros == 0).all() and np.isnan(fused).any()
    np.testing.assert_array_equal(fused, sep)
    np.testing.assert_array_equal(np.signbit(fused), np.signbit(sep))


def test_conv_relu_pool_falls_back_to_the_differentiable_ops_when_gradients_are_needed():
    from tinycnn.ops.pool import conv2d_relu_max_pool2d
    rng = np.random.default_rng(1)
    xa, wa, ba = rng.standard_normal((2, 8, 8, 8)), rng.standard_normal((4, 8, 3, 3)), rng.standard_normal(4)
    w = Tensor(wa, requires_grad=True)
    y = conv2d_relu_max_pool2d(Tensor(xa), w, Tensor(ba), padding=1)
    assert y.requires_grad
    y.sum().backward()
    tw = torch.tensor(wa, requires_grad=True)
    torch.nn.functional.max_pool2d(torch.relu(torch.nn.functional.conv2d(
        torch.tensor(xa), tw, torch.tensor(ba), padding=1)), 2).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-10, atol=1e-10)
    # a map too small to pool is left to max_pool2d and its error
    with pytest.raises(ValueError, match="max_pool2d"):
        conv2d_relu_max_pool2d(Tensor(xa[:, :, :3, :3]), Tensor(wa))
    with pytest.raises(ValueError, match="input has 8 channels"):
        conv2d_relu_max_pool2d(Tensor(xa), Tensor(wa[:, :4]))


@pytest.fixture
def fused_calls(monkeypatch):
    """The weight shapes the Numba conv2d_relu_max_pool2d_forward primitive is called with."""
    from tinycnn.backends import cpu_numba
    calls = []
    real = cpu_numba.conv2d_relu_max_pool2d_forward
    monkeypatch.setitem(backends._registry, ("conv2d_relu_max_pool2d_forward", "numba"),
                        lambda *a: calls.append(a[1].shape) or real(*a))
    return calls


def test_reference_cnn_inference_is_fused_and_equal_to_training_mode(fused_calls):
    import tinycnn
    from tinycnn.models import SimpleCNN
    calls = fused_calls
    tinycnn.manual_seed(0)
    model = SimpleCNN()
    model.eval()
    x = tinycnn.randn(4, 1, 28, 28)
    with tinycnn.no_grad():
        y = model(x)
    assert calls == [(32, 1, 3, 3), (64, 32, 3, 3)]
    y_grad_mode = model(x)                             # records a graph: the separate ops run
    assert y_grad_mode.requires_grad and len(calls) == 2
    np.testing.assert_array_equal(y.numpy(), y_grad_mode.numpy())
    seen = []
    handle = model.conv2.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with tinycnn.no_grad():
        y_hooked = model(x)
    handle.remove()
    assert seen == [(4, 64, 14, 14)] and calls == [(32, 1, 3, 3), (64, 32, 3, 3), (32, 1, 3, 3)]
    np.testing.assert_array_equal(y.numpy(), y_hooked.numpy())


def test_sequential_runs_conv_relu_pool_as_one_op_for_inference(fused_calls):
    import tinycnn
    from tinycnn import nn
    calls = fused_calls
    tinycnn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3),     # 3x3: not fused
                          nn.Flatten(), nn.Linear(8, 2))
    x = tinycnn.randn(2, 1, 6, 6)
    with tinycnn.no_grad():
        y = model(x)
    assert calls == [(8, 1, 3, 3)]
    y_train = model(x)
    assert len(calls) == 1 and y_train.requires_grad
    np.testing.assert_array_equal(y.numpy(), y_train.numpy())
    handle = model[0].register_forward_pre_hook(lambda m, i: None)
    with tinycnn.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), y.numpy())
    handle.remove()
    assert len(calls) == 1
    with pytest.raises(ValueError, match="expected input with 1 channels"):
        model(tinycnn.randn(2, 3, 6, 6))


# ---------------------------------------------------------------------- a first layer's conv + ReLU + pool in training
def _first_layer_both(xa, wa, ba, padding, g):
    """(z, dW, db) of relu(max_pool2d(conv2d(x) + b, 2)) with x needing no gradient: through
    ops.pool.conv2d_relu_max_pool2d (Conv2dReLUMaxPool2d) and through the three ops in turn."""
    from tinycnn.ops.pool import conv2d_relu_max_pool2d
    outs = []
    for fused in (True, False):
        x = Tensor(xa)
        w = Tensor(wa.copy(), requires_grad=True)
        b = None if ba is None else Tensor(ba.copy(), requires_grad=True)
        z = (conv2d_relu_max_pool2d(x, w, b, padding=padding) if fused
             else F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=padding)), 2))
        z.backward(Tensor(g))
        outs.append((z.numpy().copy(), w.grad.numpy().copy(), None if b is None else b.grad.numpy().copy()))
    return outs


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c,h,w,padding", [(1, 12, 12, 1), (1, 11, 9, 1), (1, 10, 13, 0), (1, 9, 9, 2), (3, 10, 10, 1)],
                         ids=["1ch-even", "1ch-odd", "1ch-pad0", "1ch-pad2", "3ch-dense"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_first_layer_conv_relu_pool_matches_the_three_ops_and_torch(dtype, c, h, w, padding, bias, cpu_family):
    """Same z bit for bit; dW and db within float rounding of the separate ops' (the sparse kernel sums
    the nonzero terms only, in float64) and of PyTorch's. Outputs <= 0 (ReLU) and ties (argmax) occur."""
    rng = np.random.default_rng(11)
    xa = rng.integers(-3, 4, (3, c, h, w)).astype(dtype)         # small integers: ties in the windows
    wa = (rng.standard_normal((5, c, 3, 3)) * 0.5).astype(dtype)
    ba = (rng.standard_normal(5) * 0.1).astype(dtype) if bias else None
    oh, ow = h + 2 * padding - 2, w + 2 * padding - 2
    g = rng.standard_normal((3, 5, oh // 2, ow // 2)).astype(dtype)
    (z1, dw1, db1), (z0, dw0, db0) = _first_layer_both(xa, wa, ba, padding, g)
    assert np.array_equal(z1, z0) and (z0 == 0).any() and (z0 > 0).any()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw1, dw0, **tol)
    tw = torch.tensor(wa, requires_grad=True)
    tb = torch.tensor(ba, requires_grad=True) if bias else None
    tz = TF.max_pool2d(torch.relu(TF.conv2d(torch.tensor(xa), tw, tb, padding=padding)), 2)
    tz.backward(torch.tensor(g))
    np.testing.assert_allclose(z1, tz.detach().numpy(), **tol)
    np.testing.assert_allclose(dw1, tw.grad.numpy(), **tol)
    if bias:
        np.testing.assert_allclose(db1, db0, **tol)
        np.testing.assert_allclose(db1, tb.grad.numpy(), **tol)
    else:
        assert db1 is None


def test_first_layer_conv_relu_pool_gradcheck():
    from tinycnn.ops.pool import conv2d_relu_max_pool2d
    rng = np.random.default_rng(12)
    x = Tensor(rng.permutation(2 * 8 * 8).reshape(2, 1, 8, 8) / 17.0 - 1.0)    # distinct values: no ties
    w = Tensor(rng.standard_normal((3, 1, 3, 3)), requires_grad=True)
    b = Tensor(rng.standard_normal(3) * 0.1, requires_grad=True)
    assert gradcheck(lambda w_, b_: conv2d_relu_max_pool2d(x, w_, b_, padding=1), (w, b))


def test_first_layer_pooled_weight_grad_does_not_depend_on_threads():
    """The sparse kernel's samples go into fixed chunks whose sums are added in order: 1 and 2 threads agree."""
    import numba
    from tinycnn.backends import cpu_numba
    rng = np.random.default_rng(13)
    x = rng.standard_normal((37, 1, 14, 14)).astype(np.float32)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    y = cpu_numba.conv2d_forward(x, w, (1, 1), (1, 1), (1, 1), 1)
    z, idx = cpu_numba.relu_max_pool2d_forward(y, (2, 2), (2, 2), (0, 0))
    g = rng.standard_normal(z.shape).astype(np.float32)
    prev, outs = numba.get_num_threads(), []
    try:
        for t in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(t)
            outs.append(cpu_numba.conv2d_relu_max_pool2d_backward_weight(g, z, idx, x, w.shape, (1, 1)))
    finally:
        numba.set_num_threads(prev)
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])
