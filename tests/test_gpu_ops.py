"""GPU tests (``pytest -m gpu``; skipped without an NVIDIA GPU and CuPy).

Every op's forward and backward on ``cuda``, in both GPU kernel families (CUDA C via CuPy, Numba CUDA)
and with both GEMMs (cuBLAS, ours), matches the CPU backend to float32 tolerance over a parameter grid;
the reference CNN trains on cuda along the CPU loss curve; two runs give identical bytes; a training
step replayed as a CUDA graph equals the eager steps; the two families draw identical dropout masks.
"""
from __future__ import annotations

import numpy as np
import pytest

import tinycnn
from tinycnn import backends
from tinycnn import nn
from tinycnn.backends import cuda_common
from tinycnn.nn import functional as F

pytestmark = pytest.mark.gpu

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(params=["cupy", "numba"])
def family(request):
    prev = backends.get_gpu_kernels()
    backends.set_gpu_kernels(request.param)
    yield request.param
    backends.set_gpu_kernels(prev)


@pytest.fixture(params=["cublas", "ours"])
def gemm(request):
    cuda_common.set_gemm(request.param)
    yield request.param
    cuda_common.set_gemm("auto")


def both_devices(fn, arrays, rng, grads=True):
    """Run fn on CPU and cuda leaf tensors made from `arrays`; compare outputs and every input gradient."""
    outs = {}
    for dev in ("cpu", "cuda"):
        ts = [tinycnn.tensor(a, requires_grad=grads and a.dtype.kind == "f", device=dev) for a in arrays]
        y = fn(*ts)
        assert y.device == dev
        if grads:
            g = np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype)
            y.backward(tinycnn.tensor(g, device=dev))
        outs[dev] = (y.numpy(), [t.grad.numpy() if t.grad is not None else None for t in ts])
    (yc, gc), (yg, gg) = outs["cpu"], outs["cuda"]
    np.testing.assert_allclose(yg, yc, rtol=RTOL, atol=ATOL)
    for a, b in zip(gg, gc):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


CONV_GRID = [  # (N, C, H, W, O, k, stride, padding, dilation, groups)
    (2, 3, 9, 9, 4, 3, 1, 1, 1, 1),
    (2, 4, 10, 7, 6, 3, 2, 1, 1, 2),
    (1, 3, 8, 8, 5, (3, 2), (2, 1), (0, 1), (2, 1), 1),
    (2, 4, 7, 7, 4, 1, 1, 0, 1, 4),
    (3, 2, 12, 11, 8, 5, 3, 2, 1, 1),
    (2, 16, 14, 14, 32, 3, 1, 1, 1, 1),
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", CONV_GRID)
def test_conv2d(case, bias, family, gemm, rng):
    n, c, h, w, o, k, s, p, d, g = case
    kh, kw = (k, k) if isinstance(k, int) else k
    arrays = [rng.standard_normal((n, c, h, w)).astype(np.float32),
              rng.standard_normal((o, c // g, kh, kw)).astype(np.float32)]
    if bias:
        arrays.append(rng.standard_normal(o).astype(np.float32))
        both_devices(lambda x, wt, b: F.conv2d(x, wt, b, stride=s, padding=p, dilation=d, groups=g), arrays, rng)
    else:
        both_devices(lambda x, wt: F.conv2d(x, wt, None, stride=s, padding=p, dilation=d, groups=g), arrays, rng)


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1), ((3, 2), (1, 2), (1, 0))])
def test_max_pool2d(k, s, p, family, rng):
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    x[0, 0, :2, :2] = 1.0                                        # ties
    both_devices(lambda t: F.max_pool2d(t, k, s, p), [x], rng)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0))])
def test_avg_pool2d(k, s, p, count_include_pad, family, rng):
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    both_devices(lambda t: F.avg_pool2d(t, k, s, p, count_include_pad=count_include_pad), [x], rng)


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (16, 8), (2, 5, 3, 1)])
def test_batch_norm_train(shape, family, rng):
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    c = shape[1]
    gamma = (rng.random(c) + 0.5).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    both_devices(lambda t, g, b: F.batch_norm(t, None, None, g, b, training=True), [x, gamma, beta], rng)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(weighted, smoothing, reduction, family, rng):
    z = (rng.standard_normal((17, 300)) * 3).astype(np.float32)     # C > threads per row
    target = rng.integers(0, 300, 17)
    weight = (rng.random(300) + 0.5).astype(np.float32) if weighted else None

    def fn(t):
        wt = None if weight is None else tinycnn.tensor(weight, device=t.device)
        tg = tinycnn.tensor(target, device=t.device)
        return F.cross_entropy(t, tg, weight=wt, reduction=reduction, label_smoothing=smoothing)

    both_devices(fn, [z], rng)


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 6)])
def test_linear(shape, family, gemm, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((9, shape[-1])).astype(np.float32)
    b = rng.standard_normal(9).astype(np.float32)
    both_devices(lambda t, wt, bb: F.linear(t, wt, bb), [x, w, b], rng)


def test_relu_and_elementwise(family, rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    both_devices(lambda t: (F.relu(t) * 2 + t.exp()).sum(dim=1), [x], rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_our_matmul_matches_cublas(dtype, family, rng):
    cp = backends.cupy_module()
    mm = backends.kernel("matmul", cp.zeros(1))
    eps = np.finfo(dtype).eps
    # the last four are split-K shapes of the reference CNN's step (conv1 / conv2 weight gradients, fc1)
    for m, k, n in [(1, 1, 1), (129, 7, 130), (256, 512, 128), (300, 65, 1),
                    (32, 100352, 9), (64, 25088, 288), (128, 3136, 128), (7, 3000, 5)]:
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        with cuda_common.gemm_override("ours"):
            ours = cp.asnumpy(mm(cp.asarray(a), cp.asarray(b)))
        cublas = cp.asnumpy(cp.matmul(cp.asarray(a), cp.asarray(b)))
        want = a.astype(np.float64) @ b.astype(np.float64)
        # rounding error of a k-term dot product grows like eps * sqrt(k) * sqrt(sum of squared terms);
        # a lost or doubled K slice would be off by about sqrt(kc) * |term|, far above this bound
        bound = 8 * eps * np.sqrt(k) * np.sqrt((a.astype(np.float64) ** 2) @ (b.astype(np.float64) ** 2)) + 1e-30
        assert np.all(np.abs(ours - want) <= bound), (m, k, n, float(np.max(np.abs(ours - want) / bound)))
        assert np.all(np.abs(cublas - want) <= bound), (m, k, n, "cuBLAS")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_primitives_against_numpy_reference(dtype, family, rng):
    """bias_relu, adam_step and sgd_step, called directly (the optimizer tests reach the last two too)."""
    cp = backends.cupy_module()
    y = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    out = backends.kernel("bias_relu", cp.zeros(1))(cp.asarray(y), cp.asarray(b))
    np.testing.assert_array_equal(cp.asnumpy(out), np.maximum(y + b[None, :, None, None], 0))
    ref = backends.kernel("adam_step", np.zeros(1))
    gpu = backends.kernel("adam_step", cp.zeros(1))
    for decoupled, wd in [(False, 0.0), (False, 0.1), (True, 0.01)]:
        host = [rng.standard_normal(50).astype(dtype), rng.standard_normal(50).astype(dtype),
                np.zeros(50, dtype), np.zeros(50, dtype)]
        dev = [cp.asarray(a) for a in host]
        for t in (1, 2, 3):
            step = cp.asarray([t], dtype=cp.int64) if t == 3 else t
            ref(*host, t, 1e-2, 0.9, 0.999, 1e-8, wd, decoupled)
            gpu(*dev, step, 1e-2, 0.9, 0.999, 1e-8, wd, decoupled)
        for a, d in zip(host, dev):
            np.testing.assert_allclose(cp.asnumpy(d), a, rtol=1e-5, atol=1e-6)
    ref = backends.kernel("sgd_step", np.zeros(1))
    gpu = backends.kernel("sgd_step", cp.zeros(1))
    for mu, tau, wd, nesterov, maximize in [(0.0, 0.0, 0.0, False, False), (0.9, 0.1, 0.01, False, False),
                                            (0.9, 0.0, 0.1, True, True)]:
        host = [rng.standard_normal(50).astype(dtype), rng.standard_normal(50).astype(dtype), np.zeros(50, dtype)]
        dev = [cp.asarray(a) for a in host]
        for t in range(3):
            ref(*host, 0.05, mu, tau, wd, nesterov, maximize, t == 0)
            gpu(*dev, 0.05, mu, tau, wd, nesterov, maximize, t == 0)
        for a, d in zip(host, dev):
            np.testing.assert_allclose(cp.asnumpy(d), a, rtol=1e-5, atol=1e-6)


def test_dropout_masks(family):
    cp = backends.cupy_module()
    like = cp.zeros(1, dtype=cp.float32)
    tinycnn.manual_seed(3)
    m1 = backends.kernel("dropout_mask", like)((64, 1000), 0.25, np.float32, like)
    m2 = backends.kernel("dropout_mask", like)((64, 1000), 0.25, np.float32, like)
    kept = float((m1 > 0).mean())
    assert abs(kept - 0.75) < 0.01
    assert set(np.unique(cp.asnumpy(m1)).tolist()) == {0.0, np.float32(1 / 0.75)}
    assert not cp.array_equal(m1, m2)                    # the offset moves on between masks
    tinycnn.manual_seed(3)
    np.testing.assert_array_equal(cp.asnumpy(backends.kernel("dropout_mask", like)((64, 1000), 0.25, np.float32,
                                                                                    like)), cp.asnumpy(m1))


def test_dropout_masks_identical_across_families():
    cp = backends.cupy_module()
    like = cp.zeros(1, dtype=cp.float32)
    masks = []
    prev = backends.get_gpu_kernels()
    try:
        for fam in ("cupy", "numba"):
            backends.set_gpu_kernels(fam)
            tinycnn.manual_seed(11)
            masks.append(cp.asnumpy(backends.kernel("dropout_mask", like)((3, 777), 0.4, np.float32, like)))
    finally:
        backends.set_gpu_kernels(prev)
    np.testing.assert_array_equal(masks[0], masks[1])


def test_mixed_devices_raise():
    a = tinycnn.tensor([1.0, 2.0])
    b = tinycnn.tensor([1.0, 2.0], device="cuda")
    with pytest.raises(RuntimeError, match="same device, got 'cpu' and 'cuda'"):
        a + b
    assert b.to("cpu").device == "cpu" and a.cuda().device == "cuda"


# --------------------------------------------------------------------------- training
def _batches(n_steps, seed=0):
    """A learnable task: is the top half of the image brighter than the bottom half?"""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_steps):
        x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
        y = (x[:, 0, :14].mean(axis=(1, 2)) > x[:, 0, 14:].mean(axis=(1, 2))).astype(np.int64)
        x[:, 0, :14] += np.where(y == 1, 0.3, -0.3).astype(np.float32)[:, None, None]
        out.append((x, y))
    return out


def _model(device):
    from tinycnn.models.simplecnn import SimpleCNN

    tinycnn.manual_seed(0)
    return SimpleCNN(1, 2, 28).to(device)


def _train(device, batches, optim="sgd"):
    model = _model(device)
    params = list(model.parameters())
    opt = (tinycnn.optim.SGD(params, lr=0.02, momentum=0.9) if optim == "sgd"
           else tinycnn.optim.Adam(params, lr=1e-3))
    losses = []
    for x, y in batches:
        opt.zero_grad()
        loss = F.cross_entropy(model(tinycnn.tensor(x, device=device)), tinycnn.tensor(y, device=device))
        loss.backward()
        opt.step()
        losses.append(loss.detach())          # no host sync inside the loop
    return np.array([float(v.item()) for v in losses]), [p.numpy() for p in params]


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_reference_cnn_trains_like_cpu(optim, family):
    batches = _batches(12)
    loss_cpu, p_cpu = _train("cpu", batches, optim)
    loss_gpu, p_gpu = _train("cuda", batches, optim)
    np.testing.assert_allclose(loss_gpu, loss_cpu, rtol=2e-3, atol=2e-4)
    assert loss_gpu[-3:].mean() < loss_gpu[:3].mean()
    for a, b in zip(p_gpu, p_cpu):
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("gemm_choice", ["cublas", "ours"])
def test_training_is_deterministic(family, gemm_choice):
    cuda_common.set_gemm(gemm_choice)
    try:
        batches = _batches(4)
        l1, p1 = _train("cuda", batches, "adam")
        l2, p2 = _train("cuda", batches, "adam")
    finally:
        cuda_common.set_gemm("auto")
    assert l1.tobytes() == l2.tobytes()
    for a, b in zip(p1, p2):
        assert a.tobytes() == b.tobytes()


def test_graph_capture_replay_equals_eager(family):
    batches = _batches(6)
    with cuda_common.gemm_override("ours"):    # what graph_capture runs (CuPy refuses cuBLAS in a capture)
        loss_eager, p_eager = _train("cuda", batches, "sgd")

    cp = backends.cupy_module()
    model = _model("cuda")
    params = list(model.parameters())
    opt = tinycnn.optim.SGD(params, lr=0.02, momentum=0.9)
    x = tinycnn.tensor(batches[0][0], device="cuda")      # static inputs: new batches are copied in
    y = tinycnn.tensor(batches[0][1], device="cuda")

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    graph = tinycnn.cuda.graph_capture(step, warmup=1)   # the warm-up call is real step 1 (batch 0)
    losses = []
    for bx, by in batches[1:]:                            # steps 2..6 are graph replays
        x.data[...] = cp.asarray(bx)
        y.data[...] = cp.asarray(by)
        losses.append(float(graph.replay().item()))
    tinycnn.cuda.synchronize()
    np.testing.assert_allclose(losses, loss_eager[1:], rtol=1e-5, atol=1e-6)
    for p, want in zip(params, p_eager):
        np.testing.assert_allclose(p.numpy(), want, rtol=1e-5, atol=1e-6)
