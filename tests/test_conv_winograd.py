"""Winograd F(2x2, 3x3) and F(4x4, 3x3) (backends/cpu_numba_winograd.py, cpu_numba_winograd4.py): the Numba
family's 3x3 stride-1 convolution, forward and both gradients. Checked against the float64 im2col reference
and PyTorch, for odd sizes, every padding, bias, both dtypes, both tile sizes, any blocking and thread
count; and where it is used."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycnn
import tinycnn.nn.functional as F
from tinycnn.backends import cpu_numba_winograd as W
from tinycnn.backends import cpu_numpy as NP


def _reference(x, w, padding, bias=None):
    y = NP.conv2d_forward(x.astype(np.float64), w.astype(np.float64), (1, 1), padding, (1, 1), 1)
    return y if bias is None else y + bias.astype(np.float64)[None, :, None, None]


TILES = [2, 4]
# Rounding bounds, in eps times the same convolution of |x| with |w|: F(2x2, 3x3)'s transforms add a few
# terms of that size (at most 4.7 measured over 600 random shapes and scales); F(4x4, 3x3)'s coefficients
# reach 8 (A^T), 5 (B^T) and 1/24 (G), and cancel more (at most 67 measured, the same cases).
FORWARD_EPS = {2: 16, 4: 256}


def _bound(x, w, padding, dtype, tile=2):
    """A rounding bound per output: FORWARD_EPS[tile] eps times the conv of |x| with |w| (the im2col path's
    own bound is K eps |x||w| with K = 9C)."""
    eps = np.finfo(dtype).eps
    return FORWARD_EPS[tile] * eps * NP.conv2d_forward(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64),
                                        (1, 1), padding, (1, 1), 1) + np.finfo(dtype).tiny


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape,padding", [((2, 8, 7, 9), (1, 1)), ((3, 9, 8, 8), (0, 0)), ((1, 8, 5, 6), (2, 1)),
                                           ((2, 10, 3, 3), (0, 2)), ((1, 8, 1, 1), (1, 1)), ((4, 16, 14, 14), (1, 1))],
                         ids=["odd-same", "even-valid", "p21", "3x3-p02", "1x1-p1", "14x14"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("whole", [False, True], ids=["blocked", "whole"])
@pytest.mark.parametrize("tile", TILES, ids=["F2", "F4"])
def test_winograd_matches_float64_reference(shape, padding, dtype, with_bias, whole, tile):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((6, shape[1], 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype) if with_bias else None
    y = W.conv2d_forward(x, w, padding, bias=b, whole=whole, tile=tile)
    ref = _reference(x, w, padding, b)
    assert y.dtype == dtype and y.shape == ref.shape and y.flags.c_contiguous
    assert np.all(np.abs(y - ref) <= _bound(x, w, padding, dtype, tile))


@pytest.mark.parametrize("tile,factor", [(2, 2), (4, 16)], ids=["F2", "F4"])
def test_winograd_is_as_accurate_as_im2col_in_float32(tile, factor):
    """Error against float64 within `factor` times the im2col GEMM path's (reference CNN's conv2 shape):
    the same order for F(2x2, 3x3); F(4x4, 3x3) trades about an order of magnitude for its speed."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 32, 14, 14)).astype(np.float32)
    w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    ref = _reference(x, w, (1, 1))
    err_w = np.abs(W.conv2d_forward(x, w, (1, 1), tile=tile) - ref).max()
    err_i = np.abs(NP.conv2d_forward(x, w, (1, 1), (1, 1), (1, 1), 1) - ref).max()     # im2col + one GEMM
    assert err_w <= factor * err_i


@pytest.mark.parametrize("tile", TILES, ids=["F2", "F4"])
def test_blocks_of_samples_give_the_same_result(tile):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 8, 9, 7)).astype(np.float32)
    w = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    whole = W.conv2d_forward(x, w, (1, 1), block_bytes=1 << 30, tile=tile).copy()
    one = W.conv2d_forward(x, w, (1, 1), block_bytes=1, tile=tile).copy()      # one sample per block
    np.testing.assert_allclose(one, whole, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(W.conv2d_forward(x, w, (1, 1), block_bytes=1, tile=tile), one)   # deterministic


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(W.MIN_CHANNELS, 12), o=st.integers(1, 5), h=st.integers(1, 11),
       wd=st.integers(1, 11), ph=st.integers(0, 2), pw=st.integers(0, 2), seed=st.integers(0, 2**16),
       tile=st.sampled_from(TILES))
def test_winograd_property_any_shape(n, c, o, h, wd, ph, pw, seed, tile):
    if h + 2 * ph < 3 or wd + 2 * pw < 3:
        return      # the kernel does not fit: conv2d refuses such input before any kernel runs
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c, h, wd)) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
    w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    y = W.conv2d_forward(x, w, (ph, pw), tile=tile)
    assert np.all(np.abs(y - _reference(x, w, (ph, pw))) <= _bound(x, w, (ph, pw), np.float32, tile))


G_MATRIX = {2: np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
            4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                         [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])}


@pytest.mark.parametrize("tile", TILES, ids=["F2", "F4"])
def test_weight_transform_is_G_g_Gt(tile):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2, 3, 3, 3))
    g = G_MATRIX[tile]
    u = W.weight_transform(w, tile=tile)
    assert u.shape == ((tile + 2) ** 2, 2, 3)
    for o in range(2):
        for c in range(3):
            np.testing.assert_allclose(u[:, o, c].reshape(tile + 2, tile + 2), g @ w[o, c] @ g.T,
                                       rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("tile", TILES, ids=["F2", "F4"])
def test_weight_gradient_transform_is_Gt_du_G(tile):
    """dW = G^T dU G: the adjoint of U = G g G^T (for every g, <U(g), dU> = <g, dW>)."""
    rng = np.random.default_rng(10)
    k = (tile + 2) ** 2
    du = rng.standard_normal((k, 3, 2))
    dw = np.empty((3, 2, 3, 3))
    W._KERNELS[tile][3](du, dw, 0, 3)
    g = G_MATRIX[tile]
    for o in range(3):
        for c in range(2):
            np.testing.assert_allclose(dw[o, c], g.T @ du[:, o, c].reshape(tile + 2, tile + 2) @ g,
                                       rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("tile", TILES, ids=["F2", "F4"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("o,c", [(1, 1), (3, 5), (37, 19)])
def test_turned_weight_transform_reads_the_turned_kernel_from_w(o, c, dtype, tile):
    """U of w'[c, o] = w[o, c, ::-1, ::-1] without making w': bit-identical to transforming w' itself."""
    w = np.random.default_rng(o * c).standard_normal((o, c, 3, 3)).astype(dtype)
    turned = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    u = W.weight_transform(w, turned=True, tile=tile)
    assert u.shape == ((tile + 2) ** 2, c, o)
    np.testing.assert_array_equal(u, W.weight_transform(turned, tile=tile))
    assert not np.array_equal(u, W.weight_transform(np.ascontiguousarray(w.transpose(1, 0, 2, 3)), tile=tile))


@pytest.mark.parametrize("tile", TILES, ids=["F2", "F4"])
def test_backward_data_is_the_forward_with_the_turned_kernel(tile):
    rng = np.random.default_rng(8)
    gy = rng.standard_normal((3, 16, 7, 9)).astype(np.float32)
    w = rng.standard_normal((16, 9, 3, 3)).astype(np.float32)
    turned = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    for whole in (False, True):
        np.testing.assert_array_equal(W.conv2d_backward_data(gy, w, (1, 1), whole=whole, tile=tile),
                                      W.conv2d_forward(gy, turned, (1, 1), whole=whole, tile=tile))


@pytest.mark.parametrize("tile", TILES, ids=["F2", "F4"])
def test_weight_transforms_are_split_among_threads_without_changing_a_bit(tile):
    """Rows of U (and of dW from dU) are shared among worker threads: 1 and 2 threads, same bits, and
    the blocks of rows cover every row once."""
    import numba
    rng = np.random.default_rng(9)
    w = rng.standard_normal((67, 45, 3, 3)).astype(np.float32)
    du = rng.standard_normal(((tile + 2) ** 2, 67, 45)).astype(np.float32)

    def grad(lo, hi, dw):
        W._KERNELS[tile][3](du, dw, lo, hi)

    outs = []
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        prev = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            dw = np.full((67, 45, 3, 3), np.nan, np.float32)
            W._workers.run(lambda lo, hi: grad(lo, hi, dw), W._row_blocks(67))
            outs.append((W.weight_transform(w, tile=tile), W.weight_transform(w, turned=True, tile=tile), dw))
        finally:
            numba.set_num_threads(prev)
    for one, two in zip(*outs):
        assert np.all(np.isfinite(one))
        np.testing.assert_array_equal(one, two)
    blocks = W._row_blocks(67)
    assert blocks[0][0] == 0 and blocks[-1][1] == 67 and all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    assert W._row_blocks(67, 45) == [(0, 67)]             # few kernels: one thread does them all
    assert W._row_blocks(128, 128) == W._row_blocks(128)


@pytest.mark.parametrize("stride,dilation,groups,kernel,channels,expected", [
    ((1, 1), (1, 1), 1, 3, 8, True), ((2, 2), (1, 1), 1, 3, 8, False), ((1, 1), (2, 2), 1, 3, 8, False),
    ((1, 1), (1, 1), 2, 3, 8, False), ((1, 1), (1, 1), 1, 5, 8, False), ((1, 1), (1, 1), 1, 3, 4, False)])
def test_applies_only_to_3x3_stride1_undilated_ungrouped(stride, dilation, groups, kernel, channels, expected):
    x_shape = (2, channels, 8, 8)
    w_shape = (4, channels // groups, kernel, kernel)
    assert W.applies(x_shape, w_shape, stride, dilation, groups) is expected


def test_used_for_forward_and_input_gradient_in_training_and_inference(monkeypatch):
    """F.conv2d takes the Winograd path with or without a graph, and its backward computes dx by the
    turned-kernel Winograd convolution; output, dx, dW and db agree with PyTorch."""
    if tinycnn.backends.get_cpu_kernels() != "numba":
        pytest.skip("the Numba CPU family is switched off (TINYCNN_CPU_KERNELS=numpy)")
    calls, dw_calls = [], []
    real, real_dw = W.conv2d_forward, W.conv2d_backward_weight
    monkeypatch.setattr(W, "conv2d_forward", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    monkeypatch.setattr(W, "conv2d_backward_weight", lambda *a, **k: dw_calls.append(a[2]) or real_dw(*a, **k))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 16, 10, 11)).astype(np.float32)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    g = rng.standard_normal((4, 8, 10, 11)).astype(np.float32)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    expected = torch.nn.functional.conv2d(tx, tw, tb, padding=1)
    expected.backward(torch.from_numpy(g))
    with tinycnn.no_grad():
        y_eval = F.conv2d(tinycnn.tensor(x), tinycnn.tensor(w), tinycnn.tensor(b), padding=1)
    assert calls == [(1, 1)]
    xs, ws, bs = (tinycnn.tensor(a, requires_grad=True) for a in (x, w, b))
    y_train = F.conv2d(xs, ws, bs, padding=1)
    y_train.backward(tinycnn.tensor(g))
    assert calls == [(1, 1), (1, 1), (1, 1)]      # eval forward, training forward, dx (padding 2 - 1)
    assert dw_calls == [(1, 1)]                     # dW by Winograd too
    for y in (y_eval, y_train):
        np.testing.assert_allclose(y.numpy(), expected.detach().numpy(), rtol=1e-4, atol=1e-4)
    for ours, theirs in ((xs, tx), (ws, tw), (bs, tb)):
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("tile", TILES, ids=["F2", "F4"])
@pytest.mark.parametrize("padding", [(0, 0), (1, 1), (2, 1), (0, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_backward_data_matches_float64_reference(padding, dtype, tile):
    rng = np.random.default_rng(5)
    x_shape = (3, 5, 9, 8)
    w = rng.standard_normal((10, 5, 3, 3)).astype(dtype)
    oh, ow = x_shape[2] + 2 * padding[0] - 2, x_shape[3] + 2 * padding[1] - 2
    gy = rng.standard_normal((3, 10, oh, ow)).astype(dtype)
    assert W.applies_backward_data(w.shape, (1, 1), padding, (1, 1), 1)
    dx = W.conv2d_backward_data(gy, w, padding, tile=tile)
    ref = NP.conv2d_backward_data(gy.astype(np.float64), w.astype(np.float64), x_shape, (1, 1), padding, (1, 1), 1)
    assert dx.shape == x_shape and dx.dtype == dtype
    absolute = NP.conv2d_backward_data(np.abs(gy).astype(np.float64), np.abs(w).astype(np.float64), x_shape, (1, 1),
                                       padding, (1, 1), 1)
    bound = FORWARD_EPS[tile] * np.finfo(dtype).eps * absolute
    assert np.all(np.abs(dx - ref) <= bound + np.finfo(dtype).tiny)


@pytest.mark.parametrize("padding", [(0, 0), (1, 1), (2, 1), (0, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("whole,block_bytes", [(False, None), (False, 1), (True, None), (True, 1)],
                         ids=["blocked", "one-sample-blocks", "whole", "whole-1-sample-chunks"])
@pytest.mark.parametrize("tile", TILES, ids=["F2", "F4"])
def test_backward_weight_matches_float64_reference(padding, dtype, whole, block_bytes, tile, monkeypatch):
    """Within 64 eps (F(2x2, 3x3)) or 512 eps (F(4x4, 3x3)) times the same sum of |gy| |x|: the weight
    gradient sums over every tile of the batch, and F(4x4, 3x3)'s transforms scale its rounding as in the
    forward (measured at most 80 and 285 eps over 600 random shapes)."""
    if whole and block_bytes == 1:       # the whole schedule's chunks follow the im2col cap
        monkeypatch.setattr(NP, "_im2col_cap_bytes", 1)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 9, 9, 8)).astype(dtype)
    oh, ow = 9 + 2 * padding[0] - 2, 8 + 2 * padding[1] - 2
    gy = rng.standard_normal((5, 7, oh, ow)).astype(dtype)
    bias_grad = {}
    dw = W.conv2d_backward_weight(gy, x, padding, block_bytes=block_bytes, whole=whole, tile=tile,
                                  bias_grad=bias_grad)
    ref = NP.conv2d_backward_weight(gy.astype(np.float64), x.astype(np.float64), (7, 9, 3, 3), (1, 1), padding,
                                    (1, 1), 1)
    # the bias gradient read off the transformed gradient's tile sums: float32 tile sums, added in float64
    db = bias_grad["db"]
    assert db.shape == (7,) and db.dtype == dtype
    db_ref = gy.astype(np.float64).sum(axis=(0, 2, 3))
    assert np.all(np.abs(db - db_ref) <= 8 * np.finfo(dtype).eps * np.abs(gy).astype(np.float64).sum(axis=(0, 2, 3)))
    absolute = NP.conv2d_backward_weight(np.abs(gy).astype(np.float64), np.abs(x).astype(np.float64), (7, 9, 3, 3),
                                         (1, 1), padding, (1, 1), 1)
    bound = {2: 64, 4: 512}[tile] * np.finfo(dtype).eps * absolute
    assert dw.shape == (7, 9, 3, 3) and dw.dtype == dtype
    assert np.all(np.abs(dw - ref) <= bound + np.finfo(dtype).tiny)


def test_backward_data_needs_padding_at_most_2_and_8_output_channels():
    assert not W.applies_backward_data((8, 8, 3, 3), (1, 1), (3, 1), (1, 1), 1)
    assert not W.applies_backward_data((4, 8, 3, 3), (1, 1), (1, 1), (1, 1), 1)
    assert W.applies_backward_data((8, 4, 3, 3), (1, 1), (1, 1), (1, 1), 1)


def _with_threads(fn):
    """{whole: [fn(whole) with 1 thread, fn(whole) with 2 threads]} for both schedules."""
    import numba
    prev = numba.get_num_threads()
    outs = {False: [], True: []}
    try:
        for t in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(t)
            for whole in outs:
                outs[whole].append(fn(whole).copy())
    finally:
        numba.set_num_threads(prev)
    return outs


@pytest.mark.parametrize("tile", TILES, ids=["F2", "F4"])
@pytest.mark.parametrize("which", ["forward", "backward_weight"])
def test_thread_count_does_not_change_results(which, tile):
    """Blocks (and the weight gradient's groups of partial sums) depend on the shapes only, and each
    block runs with single-threaded BLAS: 1 and 2 threads give bit-identical outputs."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((12, 8, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((16, 12, 12, 12)).astype(np.float32)
    if which == "forward":
        outs = _with_threads(lambda whole: W.conv2d_forward(x, w, (1, 1), block_bytes=40_000, whole=whole, tile=tile))
    else:
        def both(whole):
            bias_grad = {}
            dw = W.conv2d_backward_weight(gy, x, (1, 1), block_bytes=40_000, whole=whole, tile=tile,
                                          bias_grad=bias_grad)
            return np.concatenate([dw.ravel(), bias_grad["db"]])
        outs = _with_threads(both)
    tiles = (12 // tile) ** 2
    assert len(W._blocks(16, (tile + 2) ** 2 * (8 + 12) * tiles * 4, 40_000)) > 2
    for whole, (one, two) in outs.items():
        np.testing.assert_array_equal(one, two, err_msg=f"whole={whole}")
    # the two schedules run the same operations on each tile, but the GEMMs' sums may be ordered differently
    # (BLAS kernels differ by CPU): each is within its rounding bound of the exact result, so they are
    # within twice that of each other (a fixed 1e-4 failed for F(4x4)'s weight gradient on an AVX2 CPU)
    if which == "forward":
        bound = _bound(x, w, (1, 1), np.float32, tile)
    else:
        absolute = NP.conv2d_backward_weight(np.abs(gy).astype(np.float64), np.abs(x).astype(np.float64),
                                             w.shape, (1, 1), (1, 1), (1, 1), 1)
        bound = {2: 64, 4: 512}[tile] * np.finfo(np.float32).eps * absolute
        bound = np.concatenate([bound.ravel(), 8 * np.finfo(np.float32).eps * np.abs(gy).sum(axis=(0, 2, 3))])
    assert (np.abs(outs[True][0].astype(np.float64) - outs[False][0]) <= 2 * bound).all()


@pytest.mark.parametrize("tile", TILES, ids=["F2", "F4"])
def test_large_weights_take_the_whole_chunk_schedule(tile):
    """U larger than two blocks (one for the weight gradient; deep layers): one stacked GEMM over the
    chunk's tiles, with all BLAS threads."""
    from tinycnn.backends.cpu_numpy import record_gemms
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 64, 8, 8)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    k, tiles = (tile + 2) ** 2, (8 // tile) ** 2
    gy = rng.standard_normal((4, 64, 8, 8)).astype(np.float32)
    for block_bytes, whole in ((k * 64 * 64 * 4 // 2 - 1, True), (k * 64 * 64 * 4 // 2, False)):
        with record_gemms() as calls:
            y = W.conv2d_forward(x, w, (1, 1), block_bytes=block_bytes, tile=tile)
        assert [(c.m, c.k, c.n, c.count) for c in calls][0] == (64, 64, 4 * tiles if whole else calls[0].n, k)
        assert all(c.spread != whole for c in calls)
        assert np.all(np.abs(y - _reference(x, w, (1, 1))) <= _bound(x, w, (1, 1), np.float32, tile))
    for block_bytes, whole in ((k * 64 * 64 * 4 - 1, True), (k * 64 * 64 * 4, False)):
        with record_gemms() as calls:
            W.conv2d_backward_weight(gy, x, (1, 1), block_bytes=block_bytes, tile=tile)
        assert all(c.spread != whole and c.count == k for c in calls)


def test_slabs_move_apart_only_where_they_would_share_cache_sets():
    """V and M slabs a multiple of 1 KiB long (fewer than 8 offsets modulo 4 KiB) are spaced 4 KiB x k + 256
    bytes apart; others stay contiguous."""
    spaced = W._slabs("test_slab", 16, 64, np.float32)          # 4 KiB slabs: one offset
    assert spaced.shape == (16, 16, 64) and spaced.strides[0] % 4096 == 256
    assert spaced.strides[1:] == (64 * 4, 4)
    plain = W._slabs("test_slab", 7, 49, np.float32)            # 1372 bytes: 1024 offsets
    assert plain.shape == (16, 7, 49)
    spaced36 = W._slabs("test_slab36", 16, 64, np.float32, 36)  # F(4x4, 3x3)'s 36 slabs, the same rule
    assert spaced36.shape == (36, 16, 64) and spaced36.strides[0] % 4096 == 256
    assert plain.flags.c_contiguous


@pytest.mark.parametrize("tile", TILES, ids=["F2", "F4"])
@pytest.mark.parametrize("whole", [False, True], ids=["blocked", "whole"])
def test_spaced_slabs_change_no_bit(whole, tile, monkeypatch):
    """Forward and both gradients with the slabs spaced (64 channels x 8x8: 4 KiB slabs per sample) equal
    the same with contiguous slabs, for both schedules."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 64, 8, 8)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((4, 64, 8, 8)).astype(np.float32)

    def run():
        kw = dict(block_bytes=(tile + 2) ** 2 * 128 * (8 // tile) ** 2 * 4, whole=whole, tile=tile)  # a sample a block
        return (W.conv2d_forward(x, w, (1, 1), **kw).copy(), W.conv2d_backward_data(gy, w, (1, 1), **kw).copy(),
                W.conv2d_backward_weight(gy, x, (1, 1), **kw).copy())

    spaced = run()
    monkeypatch.setattr(W, "_SPREAD_ENOUGH", 1)
    contiguous = run()
    for a, b in zip(spaced, contiguous):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(spaced[0], _reference(x, w, (1, 1)), rtol=1e-4, atol=1e-3)


def test_tile_size_follows_the_output_size_and_channels():
    """F(4x4, 3x3) where its 36-element tiles cover the output with at most 0.6x the transformed elements of
    F(2x2, 3x3)'s 16-element ones, or at most 0.85x with c o / (c + o) >= 48 channels; 4x4 outputs and
    smaller (one tile per sample), 5x5 and 6x6 (no fewer elements): F(2x2, 3x3)."""
    assert [W.tile_for(64, 64, s, s) for s in (1, 2, 3, 4, 5, 6, 7, 8, 12, 28)] == [2] * 6 + [4] * 4
    assert W.tile_for(512, 512, 4, 4) == 2 and W.tile_for(512, 512, 6, 6) == 2
    assert W.tile_for(64, 64, 14, 14) == 2 and W.tile_for(32, 64, 14, 14) == 2     # r = 0.74, few channels
    assert W.tile_for(96, 96, 14, 14) == 4 and W.tile_for(128, 128, 14, 14) == 4   # r = 0.74, c o / (c + o) >= 48
    assert W.tile_for(64, 64, 28, 4) == 2 and W.tile_for(8, 8, 28, 28) == 4


def test_tile_override_and_bad_tile(monkeypatch):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    from tinycnn.backends.cpu_numpy import record_gemms
    for tile in TILES:
        monkeypatch.setattr(W, "TILE", tile)
        assert W.tile_for(8, 4, 28, 28) == tile
        with record_gemms() as calls:
            y = W.conv2d_forward(x, w, (1, 1))
        assert {c.count for c in calls} == {(tile + 2) ** 2}
        np.testing.assert_array_equal(y, W.conv2d_forward(x, w, (1, 1), tile=tile))
    with pytest.raises(ValueError, match="tile must be 2 or 4, got 3"):
        W.conv2d_forward(x, w, (1, 1), tile=3)
