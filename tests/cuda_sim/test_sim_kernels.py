"""Every Numba CUDA kernel, run by the CUDA simulator on tiny shapes, matches the NumPy reference.

The simulator runs one Python thread per CUDA thread, so each launch here stays under ~1,000 threads.
The launchers accept NumPy arrays under the simulator; the comparisons are with the NumPy kernel
family (``cpu_numpy.py``, ``cpu_numpy_nn.py``, ``optim/adam.py``), the source of truth for every family,
and with PyTorch for the optimizer.
"""
from __future__ import annotations

import numpy as np
import pytest

from tinycnn.backends import cpu_numpy as ref
from tinycnn.backends import cpu_numpy_nn as ref_nn
from tinycnn.backends import cuda_common
from tinycnn.backends import cuda_numba as gpu

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}
DTYPES = [np.float32, np.float64]


def close(a, b, dtype):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL[dtype])


@pytest.fixture
def gemm_ours():
    cuda_common.set_gemm("ours")
    yield
    cuda_common.set_gemm("auto")


CONV_CASES = [  # (N, C, H, W, O, kernel, stride, padding, dilation, groups)
    (2, 2, 5, 6, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 4, 6, 5, 4, (3, 2), (2, 1), (1, 0), (1, 2), 2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=["k3s1p1", "k3x2s2x1p1x0d1x2g2"])
def test_im2col_col2im(case, dtype, rng):
    n, c, h, w, _, k, s, p, d, _ = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    cols = gpu.im2col(x, k, s, p, d)
    np.testing.assert_array_equal(cols, ref.im2col(x, k, s, p, d))
    g = rng.standard_normal(cols.shape).astype(dtype)
    close(gpu.col2im(g, x.shape, k, s, p, d), ref.col2im(g, x.shape, k, s, p, d), dtype)


@pytest.mark.parametrize("policy", ["cublas", "ours"])
@pytest.mark.parametrize("case", CONV_CASES, ids=["k3s1p1", "k3x2s2x1p1x0d1x2g2"])
def test_conv2d_forward_and_backward(case, policy, rng):
    dtype = np.float32
    n, c, h, w, o, k, s, p, d, groups = case
    cuda_common.set_gemm(policy)
    try:
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        wt = rng.standard_normal((o, c // groups) + k).astype(dtype)
        y = gpu.conv2d_forward(x, wt, s, p, d, groups)
        close(y, ref.conv2d_forward(x, wt, s, p, d, groups), dtype)
        gy = rng.standard_normal(y.shape).astype(dtype)
        dx = gpu.conv2d_backward_data(gy, wt, x.shape, s, p, d, groups)
        close(dx, ref.conv2d_backward_data(gy, wt, x.shape, s, p, d, groups), dtype)
        dw = gpu.conv2d_backward_weight(gy, x, wt.shape, s, p, d, groups)
        close(dw, ref.conv2d_backward_weight(gy, x, wt.shape, s, p, d, groups), dtype)
        # deterministic: the same inputs give the same bytes
        assert gpu.conv2d_backward_weight(gy, x, wt.shape, s, p, d, groups).tobytes() == dw.tobytes()
    finally:
        cuda_common.set_gemm("auto")


# (3, 600, 2) is split into two K slices of 304 and 296 (split-K with the in-order reduction);
# (130, 9, 129) runs the 128 x 128 float tile (gemm_f32), the others the 64 x 64 ones
@pytest.mark.parametrize("dtype,shape", [(np.float32, (65, 17, 66)), (np.float64, (9, 33, 5)),
                                         (np.float32, (3, 0, 4)), (np.float64, (3, 600, 2)),
                                         (np.float32, (130, 9, 129))])
def test_our_gemm(dtype, shape, rng, gemm_ours):
    m, k, n = shape
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c = gpu.matmul(a, b)
    assert c.shape == (m, n) and c.dtype == dtype
    close(c, a.astype(np.float64) @ b.astype(np.float64), dtype)


def test_our_gemm_batched_on_strided_views_with_split_k(rng):
    """The batched GEMM of grouped convolutions: a broadcast 2-D A, B and C as strided views of
    bigger arrays (written in place, nothing outside the view touched), K long enough to be split."""
    a = rng.standard_normal((2, 5, 520))
    b_big = rng.standard_normal((2, 2, 520, 4))
    out_big = np.zeros((2, 2, 5, 4))
    bm, bk = gpu.GEMM_TILES["gemm_f64"]
    assert cuda_common.gemm_split(5, 4, 520, bm, bm, bk, 2)[0] == 2
    got = gpu._our_gemm(a[1], b_big[:, 1], out_big[:, 1])
    assert got.base is not None and np.shares_memory(got, out_big)
    close(out_big[:, 1], a[1] @ b_big[:, 1], np.float64)
    assert not out_big[:, 0].any()
    # batched A too, without split-K (K = 7), C a fresh array
    a3 = rng.standard_normal((3, 5, 7)).astype(np.float32)
    b3 = rng.standard_normal((7, 6)).astype(np.float32)
    close(gpu._our_gemm(a3, b3), a3.astype(np.float64) @ b3, np.float32)


def test_matmul_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"matmul needs 2-D a \(M, K\) and b \(K, N\), got \(2, 3\) and \(2, 3\)"):
        gpu.matmul(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="float32 or float64 for the GPU kernels, got dtype int64"):
        gpu.im2col(np.zeros((1, 1, 2, 2), np.int64), (1, 1), (1, 1), (0, 0), (1, 1))


POOL_CASES = [((3, 3), (2, 2), (1, 1)), ((2, 2), (2, 2), (0, 0)), ((3, 2), (1, 2), (1, 0))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p", POOL_CASES, ids=["k3s2p1", "k2s2", "k3x2s1x2p1x0"])
def test_max_pool(k, s, p, dtype, rng):
    x = rng.standard_normal((2, 2, 6, 7)).astype(dtype)
    x[0, 0, 1, :3] = x[0, 0, 1, 0]          # ties: the first element wins
    y, idx = gpu.max_pool2d_forward(x, k, s, p)
    y0, idx0 = ref.max_pool2d_forward(x, k, s, p)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(idx, idx0)
    assert idx.dtype == np.int32
    gy = rng.standard_normal(y.shape).astype(dtype)
    expect = ref.max_pool2d_backward(gy, idx0, x.shape)
    close(gpu.max_pool2d_backward(gy, idx, x.shape), expect, dtype)                 # per-plane form
    close(gpu.max_pool2d_backward(gy, idx, x.shape, k, s, p), expect, dtype)        # gather form


def test_max_pool_nan_propagates_like_reference():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 0, 1] = np.nan
    y, idx = gpu.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    y0, idx0 = ref.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(idx, idx0)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p", POOL_CASES, ids=["k3s2p1", "k2s2", "k3x2s1x2p1x0"])
def test_avg_pool(k, s, p, dtype, rng):
    x = rng.standard_normal((2, 2, 6, 7)).astype(dtype)
    y = gpu.avg_pool2d_forward(x, k, s, p)
    close(y, ref.avg_pool2d_forward(x, k, s, p), dtype)
    gy = rng.standard_normal(y.shape).astype(dtype)
    close(gpu.avg_pool2d_backward(gy, x.shape, k, s, p), ref.avg_pool2d_backward(gy, x.shape, k, s, p), dtype)


@pytest.mark.parametrize("dtype,weighted,smoothing", [(np.float32, False, 0.0), (np.float32, True, 0.1),
                                                      (np.float64, True, 0.2)])
def test_cross_entropy(dtype, weighted, smoothing, rng):
    z = (rng.standard_normal((3, 5)) * 4).astype(dtype)
    z[0, 2] = 80.0                              # large logits: the max-shift keeps exp finite
    target = np.array([2, 0, 4], dtype=np.int64)
    weight = rng.random(5).astype(dtype) + 0.5 if weighted else None
    loss, logp = gpu.cross_entropy_forward(z, target, weight, smoothing)
    loss0, logp0 = ref_nn.cross_entropy_forward(z, target, weight, smoothing)
    close(loss, loss0, dtype)
    close(logp, logp0, dtype)
    gs = rng.random(3).astype(dtype)
    close(gpu.cross_entropy_backward(logp0, target, weight, smoothing, gs),
          ref_nn.cross_entropy_backward(logp0, target, weight, smoothing, gs), dtype)


def test_cross_entropy_bad_target_gives_nan_without_sync():
    z = np.zeros((2, 3), np.float32)
    loss, _ = gpu.cross_entropy_forward(z, np.array([1, 7]), None, 0.0)
    assert np.isfinite(loss[0]) and np.isnan(loss[1])


@pytest.mark.parametrize("dtype,shape,affine", [(np.float32, (2, 2, 3, 3), True), (np.float64, (5, 2), False)])
def test_batch_norm(dtype, shape, affine, rng):
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    c = shape[1]
    gamma = rng.random(c).astype(dtype) + 0.5 if affine else None
    beta = rng.standard_normal(c).astype(dtype) if affine else None
    got = gpu.batch_norm_forward_train(x, gamma, beta, 1e-5)
    want = ref_nn.batch_norm_forward_train(x, gamma, beta, 1e-5)
    for a, b in zip(got, want):
        close(a, b, dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    got_b = gpu.batch_norm_backward(gy, x, gamma, want[1], want[2])
    want_b = ref_nn.batch_norm_backward(gy, x, gamma, want[1], want[2])
    for a, b in zip(got_b, want_b):
        np.testing.assert_allclose(a, b, rtol=TOL[dtype]["rtol"] * 10, atol=TOL[dtype]["atol"] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_relu(dtype, rng):
    y = rng.standard_normal((2, 3, 2, 4)).astype(dtype)
    y[1, 2, 1, 3] = np.nan
    b = rng.standard_normal(3).astype(dtype)
    np.testing.assert_array_equal(gpu.bias_relu(y, b), np.maximum(y + b[None, :, None, None], 0))
    np.testing.assert_array_equal(gpu.bias_relu(y, None), np.maximum(y, 0))


# --------------------------------------------------------------------------- Philox dropout
def philox_numpy(counters, seed):
    """Philox4x32-10 written with NumPy uint64 arithmetic, independently of the kernels."""
    m32 = np.uint64(0xFFFFFFFF)
    c = [counters & m32, counters >> np.uint64(32), np.zeros_like(counters), np.zeros_like(counters)]
    k0, k1 = np.uint64(seed) & m32, np.uint64(seed) >> np.uint64(32)
    for r in range(10):
        if r:
            k0, k1 = (k0 + np.uint64(0x9E3779B9)) & m32, (k1 + np.uint64(0xBB67AE85)) & m32
        p0 = np.uint64(0xD2511F53) * c[0]
        p1 = np.uint64(0xCD9E8D57) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & m32, (p0 >> np.uint64(32)) ^ c[3] ^ k1, p0 & m32]
    return np.stack(c, axis=1).astype(np.uint32)


def test_philox_known_answer():
    # Random123's known-answer vector for philox4x32_10: counter 0, key 0
    words = gpu.philox_raw(np.zeros(1, np.uint64), 0)
    assert [int(v) for v in words[0]] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    counters = np.array([1, 2**32 + 5, 2**63 + 12345], dtype=np.uint64)
    np.testing.assert_array_equal(gpu.philox_raw(counters, 0xDEADBEEF12345678),
                                  philox_numpy(counters, 0xDEADBEEF12345678))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_mask_matches_philox_stream(dtype):
    import tinycnn

    tinycnn.manual_seed(7)
    like = np.zeros(1, dtype)
    p = 0.3
    m1 = gpu.dropout_mask((3, 5, 7), p, dtype, like)
    m2 = gpu.dropout_mask((10,), p, dtype, like)
    assert m1.dtype == dtype and m1.shape == (3, 5, 7)
    seed = cuda_common.philox_seed(7)
    words = philox_numpy(np.arange(27, dtype=np.uint64), seed).ravel()          # 105 elements -> 27 counters
    keep = words[:105].astype(np.float64) * 2.0**-32 >= p
    np.testing.assert_array_equal(m1.ravel(), np.where(keep, dtype(1 / (1 - p)), 0).astype(dtype))
    words2 = philox_numpy(np.arange(27, 30, dtype=np.uint64), seed).ravel()[:10]   # offset moved on by 27
    np.testing.assert_array_equal(m2, np.where(words2 * 2.0**-32 >= p, dtype(1 / (1 - p)), 0).astype(dtype))
    tinycnn.manual_seed(7)                                                           # same seed, same masks
    np.testing.assert_array_equal(gpu.dropout_mask((3, 5, 7), p, dtype, like), m1)
    tinycnn.manual_seed(8)
    assert not np.array_equal(gpu.dropout_mask((3, 5, 7), p, dtype, like), m1)


def test_dropout_mask_edges():
    like = np.zeros(1, np.float32)
    assert not gpu.dropout_mask((2, 3), 1.0, np.float32, like).any()
    np.testing.assert_array_equal(gpu.dropout_mask((2, 3), 0.0, np.float32, like), np.ones((2, 3), np.float32))
    assert gpu.dropout_mask((0, 3), 0.5, np.float32, like).shape == (0, 3)


# --------------------------------------------------------------------------- Adam
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decoupled,wd", [(False, 0.0), (False, 0.1), (True, 0.05)])
def test_adam_step_matches_torch(dtype, decoupled, wd, rng):
    torch = pytest.importorskip("torch")
    from tinycnn.optim.adam import adam_step as ref_adam

    n = 37
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(3)]
    p, m, v = p0.copy(), np.zeros(n, dtype), np.zeros(n, dtype)
    pr, mr, vr = p0.copy(), np.zeros(n, dtype), np.zeros(n, dtype)
    tp = torch.tensor(p0.copy(), requires_grad=True)
    opt = (torch.optim.AdamW if decoupled else torch.optim.Adam)([tp], lr=1e-2, betas=(0.9, 0.99), eps=1e-8,
                                                                 weight_decay=wd)
    for t, g in enumerate(grads, start=1):
        step = np.array([t], dtype=np.int64) if t == 2 else t      # the device-counter form too
        gpu.adam_step(p, g, m, v, step, 1e-2, 0.9, 0.99, 1e-8, wd, decoupled)
        ref_adam(pr, g, mr, vr, t, 1e-2, 0.9, 0.99, 1e-8, wd, decoupled)
        tp.grad = torch.tensor(g)
        opt.step()
    close(p, pr, dtype)
    close(m, mr, dtype)
    close(v, vr, dtype)
    close(p, tp.detach().numpy(), dtype)


# --------------------------------------------------------------------------- SGD
SGD_CASES = [dict(momentum=0.0), dict(momentum=0.9), dict(momentum=0.9, dampening=0.1, weight_decay=0.01),
             dict(momentum=0.9, nesterov=True, weight_decay=0.1), dict(momentum=0.5, maximize=True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SGD_CASES, ids=["plain", "momentum", "dampening-wd", "nesterov-wd", "maximize"])
def test_sgd_step_matches_reference_and_torch(dtype, case, rng):
    torch = pytest.importorskip("torch")
    from tinycnn.optim.sgd import sgd_step as ref_sgd

    kw = dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False) | case
    n = 37
    p0 = rng.standard_normal(n).astype(dtype)
    p, b, pr, br = p0.copy(), np.zeros(n, dtype), p0.copy(), np.zeros(n, dtype)
    tp = torch.tensor(p0.copy(), requires_grad=True)
    opt = torch.optim.SGD([tp], lr=0.05, **kw)
    for t in range(3):
        g = rng.standard_normal(n).astype(dtype)
        gpu.sgd_step(p, g, b, 0.05, *kw.values(), t == 0)
        ref_sgd(pr, g, br, 0.05, *kw.values(), t == 0)
        tp.grad = torch.tensor(g)
        opt.step()
    close(p, pr, dtype)
    close(b, br, dtype)
    close(p, tp.detach().numpy(), dtype)


def test_sgd_step_rejects_mismatched_buffers():
    a = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"sgd_step: buf must match param \(shape \(4,\), dtype float32\)"):
        gpu.sgd_step(a, a, np.zeros(3, np.float32), 0.1, 0.9, 0.0, 0.0, False, False, True)


def test_adam_step_rejects_non_flat_buffers():
    a = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"flat contiguous buffers in place: param has shape \(2, 2\)"):
        gpu.adam_step(a, a, a, a, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)
