"""conv2d against PyTorch (forward, dx, dW, db), float64 gradcheck, linearity, chunking, and bad input."""
import itertools
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycnn.nn.functional as F
from tinycnn import backends
from tinycnn.backends import cpu_numpy
from tinycnn.gradcheck import gradcheck
from tinycnn.ops import conv as conv_ops
from tinycnn.tensor import Tensor

TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-5, atol=1e-5)}


@pytest.fixture(params=["numba", "numpy"])
def cpu_family(request):
    """Run a test with each CPU kernel family (the Numba fast paths and the NumPy reference)."""
    prev = backends.get_cpu_kernels()
    backends.set_cpu_kernels(request.param)
    yield request.param
    backends.set_cpu_kernels(prev)


def _run_both(x, w, b, g, dtype, **opts):
    """(ours, torch) lists [y, dx, dw, db] for the same inputs and upstream gradient."""
    X = Tensor(x.astype(dtype), requires_grad=True)
    W = Tensor(w.astype(dtype), requires_grad=True)
    B = None if b is None else Tensor(b.astype(dtype), requires_grad=True)
    y = F.conv2d(X, W, B, **opts)
    y.backward(Tensor(g.astype(dtype)))
    tx = torch.tensor(x.astype(dtype), requires_grad=True)
    tw = torch.tensor(w.astype(dtype), requires_grad=True)
    tb = None if b is None else torch.tensor(b.astype(dtype), requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, **opts)
    ty.backward(torch.tensor(g.astype(dtype)))
    ours = [y.data, X.grad.data, W.grad.data] + ([] if b is None else [B.grad.data])
    theirs = [ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy()] + ([] if b is None else [tb.grad.numpy()])
    return ours, theirs


def _torch_out_shape(x_shape, w_shape, **opts):
    return tuple(torch.nn.functional.conv2d(torch.zeros(x_shape), torch.zeros(w_shape), **opts).shape)


KERNELS = {"1x1": (1, 1), "3x3": (3, 3), "5x3": (5, 3)}
GROUPS = {"g1": 1, "g2": 2, "depthwise": 4}
GRID = list(itertools.product([1, 2, 3], [0, 1, 2], [1, 2], GROUPS, KERNELS))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("stride,padding,dilation,groups,kernel", GRID,
                         ids=[f"s{s}-p{p}-d{d}-{g}-k{k}" for s, p, d, g, k in GRID])
def test_conv2d_matches_torch_grid(stride, padding, dilation, groups, kernel, dtype):
    """The full grid with the default CPU kernels (Numba); the NumPy reference runs the grid below."""
    _check_grid_case(stride, padding, dilation, groups, kernel, dtype)


# the NumPy reference on every option value (not every combination), float64 only;
# tests/test_cpu_kernels.py ties the two families together on every code path
REF_GRID = [c for c in GRID if (c[0] + c[1]) % 2 == 0]


@pytest.mark.parametrize("stride,padding,dilation,groups,kernel", REF_GRID,
                         ids=[f"s{s}-p{p}-d{d}-{g}-k{k}" for s, p, d, g, k in REF_GRID])
def test_conv2d_numpy_reference_matches_torch_grid(stride, padding, dilation, groups, kernel):
    prev = backends.get_cpu_kernels()
    backends.set_cpu_kernels("numpy")
    try:
        _check_grid_case(stride, padding, dilation, groups, kernel, np.float64)
    finally:
        backends.set_cpu_kernels(prev)


def _check_grid_case(stride, padding, dilation, groups, kernel, dtype):
    rng = np.random.default_rng(zlib.crc32(repr((stride, padding, dilation, groups, kernel)).encode()))
    g = GROUPS[groups]
    kh, kw = KERNELS[kernel]
    c, o = 4, (4 if groups == "depthwise" else 6)
    x = rng.standard_normal((2, c, 11, 8))      # non-square input
    w = rng.standard_normal((o, c // g, kh, kw))
    b = rng.standard_normal(o)
    opts = dict(stride=stride, padding=padding, dilation=dilation, groups=g)
    gy = rng.standard_normal(_torch_out_shape(x.shape, w.shape, **opts))
    ours, theirs = _run_both(x, w, b, gy, dtype, **opts)
    for name, a, t in zip(["y", "dx", "dw", "db"], ours, theirs):
        assert a.dtype == dtype, name
        np.testing.assert_allclose(a, t, err_msg=name, **TOL[dtype])


@pytest.mark.parametrize("case", [
    dict(x=(1, 1, 5, 7), w=(3, 1, 3, 3), opts=dict(padding=1)),                       # batch 1, one channel
    dict(x=(3, 1, 9, 4), w=(1, 1, 2, 4), opts=dict(stride=(2, 1), padding=(0, 1))),    # pair args, 1 output
    dict(x=(2, 6, 6, 10), w=(3, 2, 1, 3), opts=dict(groups=3, dilation=(1, 3))),      # groups=3, wide dilation
    dict(x=(2, 3, 4, 4), w=(5, 3, 4, 4), opts=dict()),                                # kernel == input
    dict(x=(2, 2, 3, 3), w=(2, 2, 5, 5), opts=dict(padding=1)),                       # kernel > input, fits padding
], ids=["batch1-1ch", "pair-args", "groups3-dil", "kernel-eq-input", "kernel-gt-input"])
def test_conv2d_odd_shapes_match_torch(case, cpu_family):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(case["x"]), rng.standard_normal(case["w"])
    gy = rng.standard_normal(_torch_out_shape(case["x"], case["w"], **case["opts"]))
    ours, theirs = _run_both(x, w, None, gy, np.float64, **case["opts"])
    for name, a, t in zip(["y", "dx", "dw"], ours, theirs):
        np.testing.assert_allclose(a, t, err_msg=name, **TOL[np.float64])


GC_CASES = [
    dict(x=(2, 2, 5, 4), w=(3, 2, 3, 3), opts=dict(padding=1)),
    dict(x=(1, 2, 6, 5), w=(2, 2, 3, 2), opts=dict(stride=2, padding=(2, 0))),
    dict(x=(1, 4, 5, 5), w=(4, 2, 3, 3), opts=dict(groups=2, dilation=2, padding=1)),
    dict(x=(2, 3, 4, 5), w=(3, 1, 3, 3), opts=dict(groups=3, stride=3, padding=2)),
    dict(x=(1, 1, 6, 4), w=(2, 1, 5, 3), opts=dict(padding=1)),
    dict(x=(2, 2, 3, 3), w=(2, 2, 1, 1), opts=dict()),
]


@pytest.mark.parametrize("case", GC_CASES, ids=[str(i) for i in range(len(GC_CASES))])
def test_conv2d_gradcheck(case, cpu_family):
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal(case["x"]), requires_grad=True)
    w = Tensor(rng.standard_normal(case["w"]), requires_grad=True)
    b = Tensor(rng.standard_normal(case["w"][0]), requires_grad=True)
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, **case["opts"]), [x, w, b])


def test_conv2d_bias_optional_and_no_grad_needed():
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((2, 3, 5, 5)).astype(np.float32))          # input does not need grad
    w = Tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    y = F.conv2d(x, w)
    y.sum().backward()
    assert x.grad is None and w.grad.shape == (4, 3, 3, 3)
    ty = torch.nn.functional.conv2d(torch.tensor(x.data), torch.tensor(w.data))
    np.testing.assert_allclose(y.data, ty.numpy(), rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), a=st.floats(-3, 3), b=st.floats(-3, 3),
       stride=st.integers(1, 2), padding=st.integers(0, 2), groups=st.sampled_from([1, 2]))
def test_conv2d_is_linear_in_input_and_weight(seed, a, b, stride, padding, groups):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.standard_normal((2, 2, 4, 5, 6))
    w1, w2 = rng.standard_normal((2, 4, 4 // groups, 3, 2))

    def conv(x, w):
        return F.conv2d(Tensor(x), Tensor(w), stride=stride, padding=padding, groups=groups).data

    np.testing.assert_allclose(conv(a * x1 + b * x2, w1), a * conv(x1, w1) + b * conv(x2, w1), atol=1e-10)
    np.testing.assert_allclose(conv(x1, a * w1 + b * w2), a * conv(x1, w1) + b * conv(x1, w2), atol=1e-10)


@pytest.fixture
def tiny_cap():
    """A cap small enough that every batch below is processed in several chunks."""
    prev = conv_ops.set_im2col_cap_bytes(3000)
    yield
    conv_ops.set_im2col_cap_bytes(prev)


@pytest.mark.parametrize("groups", [1, 2])
def test_chunked_im2col_gives_the_same_result(groups, cpu_family):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 4, 7, 6))
    w = rng.standard_normal((6, 4 // groups, 3, 3))
    opts = dict(stride=1, padding=1, dilation=1, groups=groups)
    gy = rng.standard_normal(_torch_out_shape(x.shape, w.shape, **opts))
    full, _ = _run_both(x, w, None, gy, np.float64, **opts)
    prev = conv_ops.set_im2col_cap_bytes(3000)    # 4*9*42*8 = 12 kB per sample: one sample per chunk
    try:
        assert 4 * 9 * 7 * 6 * 8 > conv_ops.get_im2col_cap_bytes()
        chunked, _ = _run_both(x, w, None, gy, np.float64, **opts)
    finally:
        conv_ops.set_im2col_cap_bytes(prev)
    for name, a, t in zip(["y", "dx", "dw"], chunked, full):
        np.testing.assert_allclose(a, t, rtol=1e-12, atol=1e-12, err_msg=name)


def test_batch_chunks_respect_cap(tiny_cap):
    chunks = list(cpu_numpy.batch_chunks(10, 1000))       # cap 3000 -> 3 samples per chunk
    assert [(c.start, c.stop) for c in chunks] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert [(c.start, c.stop) for c in cpu_numpy.batch_chunks(2, 10**6)] == [(0, 1), (1, 2)]


def test_im2col_cap_setter_and_env(monkeypatch):
    with pytest.raises(ValueError, match="positive number of bytes, got 0"):
        conv_ops.set_im2col_cap_bytes(0)
    with pytest.raises(TypeError, match="int number of bytes, got float"):
        conv_ops.set_im2col_cap_bytes(1.5)
    monkeypatch.setenv("TINYCNN_IM2COL_CAP_MB", "64")
    assert cpu_numpy._cap_from_env() == 64 * 2**20
    monkeypatch.setenv("TINYCNN_IM2COL_CAP_MB", "lots")
    with pytest.raises(ValueError, match="TINYCNN_IM2COL_CAP_MB must be a positive number of MiB, got 'lots'"):
        cpu_numpy._cap_from_env()
    monkeypatch.delenv("TINYCNN_IM2COL_CAP_MB")
    assert cpu_numpy._cap_from_env() == 256 * 2**20


def test_im2col_col2im_are_adjoint():
    """<im2col(x), c> == <x, col2im(c)> for any x, c: col2im is the transpose of im2col."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 8))
    args = ((3, 2), (2, 1), (1, 2), (2, 1))
    cols = cpu_numpy.im2col(x, *args)
    c = rng.standard_normal(cols.shape)
    lhs = float((cols * c).sum())
    rhs = float((x * cpu_numpy.col2im(c, x.shape, *args)).sum())
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


def test_conv2d_deterministic():
    rng = np.random.default_rng(6)
    x = Tensor(rng.standard_normal((4, 8, 9, 9)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), requires_grad=True)
    results = []
    for _ in range(2):
        x.grad = w.grad = None
        y = F.conv2d(x, w, padding=1)
        y.sum().backward()
        results.append((y.data.copy(), x.grad.data.copy(), w.grad.data.copy()))
    for a, b in zip(*results):
        assert np.array_equal(a, b)


# ---------------------------------------------------------------------- bad input
def _t(*shape, dtype=np.float32):
    return Tensor(np.zeros(shape, dtype=dtype))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 2, 3, 3)), ValueError,
     r"input has 3 channels but weight expects weight.shape\[1\] \* groups = 2 \* 1 = 2"),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3)), ValueError, r"weight must be 4-D .* got shape \(4, 3, 3\)"),
    (lambda: F.conv2d(_t(3, 5, 5), _t(4, 3, 3, 3)), ValueError, r"input must be 4-D .* got shape \(3, 5, 5\)"),
    (lambda: F.conv2d(_t(2, 4, 5, 5), _t(4, 2, 3, 3), groups=3), ValueError,
     r"groups=3 must divide the input channels, got C_in=4"),
    (lambda: F.conv2d(_t(2, 4, 5, 5), _t(5, 2, 3, 3), groups=2), ValueError,
     r"groups=2 must divide the output channels, got C_out=5"),
    (lambda: F.conv2d(_t(2, 3, 4, 4), _t(4, 3, 7, 3), padding=1), ValueError,
     r"kernel height \(dilated: 7\) is larger than the padded input height 6"),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3), dilation=(1, 3)), ValueError,
     r"kernel width \(dilated: 7\) is larger than the padded input width 5"),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3), stride=0), ValueError, r"stride must be >= 1, got 0"),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3), padding=-1), ValueError, r"padding must be >= 0, got -1"),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3), stride=(1, 2, 3)), ValueError,
     r"stride must be an int or a pair of 2 ints, got \(1, 2, 3\)"),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3), groups=0), ValueError, r"groups must be >= 1, got 0"),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3), _t(3)), ValueError,
     r"bias must have shape \(4,\) \(C_out\), got \(3,\)"),
    (lambda: F.conv2d(_t(2, 3, 5, 5), _t(4, 3, 3, 3, dtype=np.float64)), TypeError,
     r"weight dtype must equal input dtype float32, got float64"),
    (lambda: F.conv2d(np.zeros((2, 3, 5, 5)), _t(4, 3, 3, 3)), TypeError, r"input must be a tinycnn Tensor, got ndarray"),
], ids=["channels", "weight-rank", "input-rank", "groups-in", "groups-out", "kernel-h", "kernel-w-dilated",
        "stride0", "padding-neg", "stride-triple", "groups0", "bias-shape", "dtype-mismatch", "not-tensor"])
def test_conv2d_bad_input_messages(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_conv2d_reference_cnn_shapes_match_torch(dtype, cpu_family):
    """The reference CNN's two convolutions at batch 32 (float32 to ~1e-5 relative)."""
    rng = np.random.default_rng(7)
    for xs, ws in [((32, 1, 28, 28), (32, 1, 3, 3)), ((32, 32, 14, 14), (64, 32, 3, 3))]:
        x, w, b = rng.standard_normal(xs), rng.standard_normal(ws) * 0.1, rng.standard_normal(ws[0])
        gy = rng.standard_normal((xs[0], ws[0]) + xs[2:])
        ours, theirs = _run_both(x, w, b, gy, dtype, padding=1)
        for name, a, t in zip(["y", "dx", "dw", "db"], ours, theirs):
            scale = np.abs(t).max()
            np.testing.assert_allclose(a / scale, t / scale, err_msg=name, atol=TOL[dtype]["atol"] * 10)


def test_conv2d_kept_columns_and_retain_graph_give_the_same_weight_gradient(cpu_family):
    """The Numba forward may keep its im2col columns for backward; a second backward rebuilds them."""
    rng = np.random.default_rng(8)
    x = Tensor(rng.standard_normal((3, 4, 6, 5)), requires_grad=True)
    w = Tensor(rng.standard_normal((5, 4, 3, 3)), requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    g = Tensor(rng.standard_normal(y.shape))
    y.backward(g, retain_graph=True)
    first = w.grad.data.copy()
    w.grad = None
    y.backward(g)
    np.testing.assert_allclose(w.grad.data, first, rtol=1e-12, atol=1e-12)
    tw = torch.tensor(w.data, requires_grad=True)
    torch.nn.functional.conv2d(torch.tensor(x.data), tw, padding=1).backward(torch.tensor(g.data))
    np.testing.assert_allclose(first, tw.grad.numpy(), rtol=1e-10, atol=1e-10)
