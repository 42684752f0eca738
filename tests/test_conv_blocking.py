"""Cache blocking of the Numba convolution's GEMM path (cpu_numba._BLOCK_BYTES, _KEEP_COLS): blocks of
samples give the NumPy reference's results, with and without the forward keeping its columns, through
the primitives and through autograd, deterministically."""
import numpy as np
import pytest

import tinycnn
import tinycnn.nn.functional as F
from tinycnn.backends import cpu_numba as NB
from tinycnn.backends import cpu_numpy as NP

TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-5)}
CASES = [((7, 4, 9, 7), (6, 4, 3, 3), (1, 1), (1, 1), (1, 1), 1),
         ((5, 4, 9, 7), (6, 2, 3, 3), (2, 1), (1, 0), (1, 1), 2),
         ((6, 3, 8, 9), (4, 3, 2, 4), (3, 2), (0, 2), (1, 2), 1)]


@pytest.fixture(params=[(1, True), (2, True), (1, False), (3, False)], ids=["1-keep", "2-keep", "1-rebuild", "3-rebuild"])
def blocking(request, monkeypatch):
    """Blocks of `samples` samples; keep or rebuild the forward's columns for the weight gradient."""
    samples, keep = request.param
    monkeypatch.setattr(NB, "_BLOCK_BYTES", samples)   # bytes: scaled per case below
    monkeypatch.setattr(NB, "_KEEP_COLS", keep)
    return samples


def _per_sample_bytes(xs, ws, s, p, d, dtype):
    oh = NP.conv_out_size(xs[2], ws[2], s[0], p[0], d[0])
    ow = NP.conv_out_size(xs[3], ws[3], s[1], p[1], d[1])
    return xs[1] * ws[2] * ws[3] * oh * ow * np.dtype(dtype).itemsize


def test_blocks_cover_the_batch_in_nearly_equal_parts(monkeypatch):
    monkeypatch.setattr(NB, "_BLOCK_BYTES", 100)
    assert NB._blocks(10, 30) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert NB._blocks(3, 1000) == [(0, 1), (1, 2), (2, 3)]
    monkeypatch.setattr(NB, "_BLOCK_BYTES", None)
    assert NB._blocks(128, 1000) == [(0, 128)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=["3x3", "groups2-s21", "2x4-s32-d12"])
def test_blocked_primitives_match_reference(case, dtype, blocking, monkeypatch):
    xs, ws, s, p, d, g = case
    monkeypatch.setattr(NB, "_BLOCK_BYTES", blocking * _per_sample_bytes(xs, ws, s, p, d, dtype))
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    y = NP.conv2d_forward(x, w, s, p, d, g)
    gy = rng.standard_normal(y.shape).astype(dtype)
    keep, shared = {}, {}
    np.testing.assert_allclose(NB.conv2d_forward(x, w, s, p, d, g, keep=keep), y, **TOL[dtype])
    assert ("cols" in keep) == NB._KEEP_COLS
    np.testing.assert_allclose(NB.conv2d_backward_data(gy, w, xs, s, p, d, g, shared=shared),
                               NP.conv2d_backward_data(gy, w, xs, s, p, d, g), **TOL[dtype])
    dw = NB.conv2d_backward_weight(gy, x, ws, s, p, d, g, kept=keep, shared=shared)
    np.testing.assert_allclose(dw, NP.conv2d_backward_weight(gy, x, ws, s, p, d, g), **TOL[dtype])
    assert not keep and not shared
    again = NB.conv2d_backward_weight(gy, x, ws, s, p, d, g)     # rebuilt block by block
    if NB._KEEP_COLS:       # then dw was one GEMM over the kept columns: rounded differently
        np.testing.assert_allclose(again, dw, **TOL[dtype])
    else:
        np.testing.assert_array_equal(again, dw)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_blocked_conv_through_autograd_matches_unblocked(dtype, blocking, monkeypatch):
    rng = np.random.default_rng(1)
    xa, wa, ba = (rng.standard_normal((9, 5, 11, 10)).astype(dtype), rng.standard_normal((7, 5, 3, 3)).astype(dtype),
                  rng.standard_normal(7).astype(dtype))
    ga = rng.standard_normal((9, 7, 11, 10)).astype(dtype)

    def run():
        x, w, b = (tinycnn.tensor(a, requires_grad=True) for a in (xa, wa, ba))
        y = F.conv2d(x, w, b, padding=1)
        y.backward(tinycnn.tensor(ga))
        return [y.numpy().copy()] + [t.grad.numpy().copy() for t in (x, w, b)]

    monkeypatch.setattr(NB, "_BLOCK_BYTES", blocking * 5 * 9 * 110 * np.dtype(dtype).itemsize)
    blocked = run()
    assert all(np.array_equal(a, b) for a, b in zip(blocked, run()))   # deterministic
    monkeypatch.setattr(NB, "_BLOCK_BYTES", None)
    monkeypatch.setattr(NB, "_KEEP_COLS", True)
    for a, b in zip(blocked, run()):
        np.testing.assert_allclose(a, b, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(3, 1, 9, 8), (64, 1, 28, 28), (2, 4, 7, 9)], ids=["small", "conv1", "depthwise"])
def test_direct_conv_sums_the_bias_gradient_with_the_weight_gradient(shape, dtype):
    """C/groups == 1 (direct kernels): db comes out of the dW pass (bias_grad) and equals g.sum(0, 2, 3)."""
    rng = np.random.default_rng(2)
    n, c = shape[:2]
    ws = (2 * c, 1, 3, 3)
    x, gy = rng.standard_normal(shape).astype(dtype), rng.standard_normal((n, 2 * c) + shape[2:]).astype(dtype)
    out = {}
    dw = NB.conv2d_backward_weight(gy, x, ws, (1, 1), (1, 1), (1, 1), c, bias_grad=out)
    np.testing.assert_array_equal(dw, NB.conv2d_backward_weight(gy, x, ws, (1, 1), (1, 1), (1, 1), c))
    assert out["db"].dtype == dtype and out["db"].shape == (2 * c,)
    # float32 sums of 10^5 terms: error relative to the sum of |g| (the result itself may cancel to ~0)
    tol = dict(rtol=1e-12, atol=1e-12 * np.abs(gy).sum()) if dtype == np.float64 else dict(
        rtol=2e-5, atol=2e-6 * np.abs(gy).sum(axis=(0, 2, 3)).max())
    np.testing.assert_allclose(out["db"], gy.astype(np.float64).sum(axis=(0, 2, 3)), **tol)
    # the op takes it from there: conv through autograd against torch
    import torch
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, rng.standard_normal(ws).astype(dtype),
                                                                 rng.standard_normal(2 * c).astype(dtype)))
    torch.nn.functional.conv2d(xt, wt, bt, padding=1, groups=c).backward(torch.tensor(gy))
    xs, wts, bs = (tinycnn.tensor(t.detach().numpy(), requires_grad=True) for t in (xt, wt, bt))
    F.conv2d(xs, wts, bs, padding=1, groups=c).backward(tinycnn.tensor(gy))
    np.testing.assert_allclose(bs.grad.numpy(), bt.grad.numpy(), **tol)
    np.testing.assert_allclose(wts.grad.numpy(), wt.grad.numpy(), rtol=2e-5, atol=tol["atol"])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("dil", [(1, 1), (2, 1)], ids=["d1", "d21"])
@pytest.mark.parametrize("shape", [(3, 1, 9, 8), (40, 2, 28, 27)], ids=["small", "threaded"])
def test_direct_3x3_kernels_equal_the_plain_tap_loops_bit_for_bit(shape, dil, dtype):
    """taps9=True (all nine taps per element in registers) vs taps9=False (one pass per tap)."""
    rng = np.random.default_rng(3)
    n, c, h, wd = shape
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((3 * c, 1, 3, 3)).astype(dtype)
    b = rng.standard_normal(3 * c).astype(dtype)
    pad = dil
    xp = np.zeros((n, c, h + 2 * pad[0] + 1, wd + 2 * pad[1]), dtype)
    NB._pad_planes(x, pad[0], pad[1], xp)
    oh, ow = h + 2 * pad[0] - 2 * dil[0], wd + 2 * pad[1] - 2 * dil[1]
    ys = [np.empty((n, 3 * c, oh, ow), dtype) for _ in range(2)]
    for y, fast in zip(ys, (True, False)):
        NB._direct_fwd_s1(xp, w, b, True, dil[0], dil[1], y, fast, False)
    np.testing.assert_array_equal(ys[0], ys[1])
    np.testing.assert_allclose(ys[0], NP.conv2d_forward(x, w, (1, 1), pad, dil, c) + b[None, :, None, None],
                               **TOL[dtype])
    gy = rng.standard_normal(ys[0].shape).astype(dtype)
    outs = []
    for fast in (True, False):
        dwt, db = np.empty(w.shape, dtype), np.empty(3 * c, dtype)
        NB._direct_bwd_weight_s1(gy, xp, dil[0], dil[1], dwt, db, True, fast)
        outs.append((dwt, db))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    # float32 sums over n*h*w terms: error relative to their count (each |g x| ~ 1), not to the result
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6 * n * h * wd)
    np.testing.assert_allclose(outs[0][0], NP.conv2d_backward_weight(gy, x, w.shape, (1, 1), pad, dil, c), **tol)
