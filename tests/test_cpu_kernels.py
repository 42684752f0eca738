"""The Numba CPU primitives give the NumPy reference's results (docs/kernels.md), deterministically."""
import numpy as np
import pytest

from tinycnn.backends import cpu_numba as NB
from tinycnn.backends import cpu_numpy as NP

TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-5)}

# (x shape, w shape, stride, padding, dilation, groups): GEMM path, direct path (C/groups == 1), flat and
# row-wise im2col (unit stride with OW == W or not), odd sizes
CONV_CASES = [
    ((3, 4, 9, 7), (6, 4, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((3, 4, 9, 7), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2),
    ((2, 3, 8, 9), (4, 3, 2, 4), (3, 2), (0, 2), (1, 2), 1),
    ((2, 3, 10, 6), (5, 3, 5, 3), (1, 1), (2, 1), (1, 1), 1),
    ((2, 3, 10, 6), (5, 3, 3, 3), (1, 1), (2, 2), (2, 2), 1),
    ((3, 1, 9, 8), (5, 1, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((3, 1, 9, 8), (5, 1, 5, 3), (2, 1), (2, 1), (1, 2), 1),
    ((2, 4, 7, 9), (4, 1, 3, 3), (1, 1), (1, 1), (1, 1), 4),
    ((2, 4, 7, 9), (8, 1, 3, 3), (2, 2), (1, 0), (1, 1), 4),
    ((2, 4, 7, 9), (8, 1, 3, 2), (1, 1), (2, 1), (2, 1), 4),
    ((1, 2, 5, 5), (3, 2, 1, 1), (1, 1), (0, 0), (1, 1), 1),
]
IDS = [f"x{c[0]}-w{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}-g{c[5]}".replace(" ", "") for c in CONV_CASES]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CONV_CASES, ids=IDS)
def test_conv_primitives_match_reference(case, dtype):
    xs, ws, s, p, d, g = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    y = NP.conv2d_forward(x, w, s, p, d, g)
    gy = rng.standard_normal(y.shape).astype(dtype)
    got = NB.conv2d_forward(x, w, s, p, d, g)
    assert got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_allclose(got, y, **TOL[dtype])
    np.testing.assert_allclose(NB.conv2d_forward(x, w, s, p, d, g, bias=b), y + b[None, :, None, None], **TOL[dtype])
    np.testing.assert_allclose(NB.conv2d_backward_data(gy, w, xs, s, p, d, g),
                               NP.conv2d_backward_data(gy, w, xs, s, p, d, g), **TOL[dtype])
    np.testing.assert_allclose(NB.conv2d_backward_weight(gy, x, ws, s, p, d, g),
                               NP.conv2d_backward_weight(gy, x, ws, s, p, d, g), **TOL[dtype])


@pytest.mark.parametrize("args", [((3, 3), (1, 1), (1, 1), (1, 1)), ((5, 3), (2, 1), (2, 0), (1, 2)),
                                  ((2, 4), (3, 2), (0, 2), (1, 1)), ((3, 3), (1, 1), (2, 2), (2, 2))],
                         ids=["3x3-same", "5x3-s21-p20-d12", "2x4-s32-p02", "3x3-p2-d2-same"])
def test_im2col_col2im_match_reference(args):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 8, 9))
    cols = NP.im2col(x, *args)
    np.testing.assert_array_equal(NB.im2col(x, *args), cols)
    c = rng.standard_normal(cols.shape)
    np.testing.assert_allclose(NB.col2im(c, x.shape, *args), NP.col2im(c, x.shape, *args), rtol=1e-13, atol=1e-13)


def test_chunked_numba_conv_matches_reference():
    from tinycnn.ops import conv as conv_ops
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((5, 3, 6, 7)), rng.standard_normal((4, 3, 3, 3))
    opts = ((1, 1), (1, 1), (1, 1), 1)
    gy = rng.standard_normal((5, 4, 6, 7))
    prev = conv_ops.set_im2col_cap_bytes(3 * 9 * 42 * 8 * 2)     # two samples per chunk
    try:
        got = (NB.conv2d_forward(x, w, *opts), NB.conv2d_backward_data(gy, w, x.shape, *opts),
               NB.conv2d_backward_weight(gy, x, w.shape, *opts))
    finally:
        conv_ops.set_im2col_cap_bytes(prev)
    want = (NP.conv2d_forward(x, w, *opts), NP.conv2d_backward_data(gy, w, x.shape, *opts),
            NP.conv2d_backward_weight(gy, x, w.shape, *opts))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


POOL_CASES = [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((3, 3), (1, 1), (1, 1)), ((2, 3), (1, 2), (1, 0)),
              ((5, 3), (2, 1), (2, 1))]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(2, 3, 8, 11), (1, 2, 7, 7)], ids=["8x11", "7x7"])
@pytest.mark.parametrize("window", POOL_CASES, ids=["k2s2", "k3s2p1", "k3s1p1", "k23s12p10", "k53s21p21"])
def test_pool_primitives_match_reference(window, shape, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, :2] = 7.0                     # a tie: the first element must win in both
    y, idx = NP.max_pool2d_forward(x, *window)
    y2, idx2 = NB.max_pool2d_forward(x, *window)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(idx2, idx)
    assert idx2.dtype == np.int32
    gy = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_allclose(NB.max_pool2d_backward(gy, idx, x.shape), NP.max_pool2d_backward(gy, idx, x.shape),
                               **TOL[dtype])
    np.testing.assert_allclose(NB.avg_pool2d_forward(x, *window), NP.avg_pool2d_forward(x, *window), **TOL[dtype])
    np.testing.assert_allclose(NB.avg_pool2d_backward(gy, x.shape, *window),
                               NP.avg_pool2d_backward(gy, x.shape, *window), **TOL[dtype])


def test_max_pool_all_minus_inf_window_points_at_a_real_element():
    x = np.full((1, 1, 3, 3), -np.inf)
    for impl in (NP, NB):
        y, idx = impl.max_pool2d_forward(x, (2, 2), (2, 2), (1, 1))
        assert np.all(np.isneginf(y))
        np.testing.assert_array_equal(idx[0, 0], [[0, 1], [3, 4]])


def test_numba_kernels_are_deterministic_and_large_calls_use_threads():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 8, 20, 20)).astype(np.float32)     # above the single-thread threshold
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    opts = ((1, 1), (1, 1), (1, 1), 1)
    gy = rng.standard_normal((16, 16, 20, 20)).astype(np.float32)
    assert x.size >= NB._SMALL_WORK
    runs = [(NB.conv2d_forward(x, w, *opts), NB.conv2d_backward_data(gy, w, x.shape, *opts),
             NB.conv2d_backward_weight(gy, x, w.shape, *opts), NB.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))[0])
            for _ in range(2)]
    for a, b in zip(*runs):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("wd, decoupled", [(0.0, False), (0.01, False), (0.01, True)], ids=["plain", "l2", "adamw"])
def test_numba_adam_step_is_bit_identical_to_reference(dtype, wd, decoupled):
    """Numba's one-pass Adam update gives the NumPy reference's bits (same operations, same rounding);
    the reference itself is checked against torch.optim in tests/test_optim.py."""
    from tinycnn.backends import cpu_numba_ew
    from tinycnn.optim.adam import adam_step as reference

    rng = np.random.default_rng(1)
    n = 40_000  # above the single-thread cut-off, so the parallel path runs
    state = [rng.standard_normal(n).astype(dtype) for _ in range(2)] + [
        np.zeros(n, dtype), np.zeros(n, dtype)]
    ours = [a.copy() for a in state]
    for step in range(1, 4):
        g = rng.standard_normal(n).astype(dtype)
        state[1], ours[1] = g, g.copy()
        reference(state[0], state[1], state[2], state[3], step, 1e-3, 0.9, 0.999, 1e-8, wd, decoupled)
        cpu_numba_ew.adam_step(ours[0], ours[1], ours[2], ours[3], step, 1e-3, 0.9, 0.999, 1e-8, wd, decoupled)
        for a, b in zip(state, ours):
            np.testing.assert_array_equal(a, b)
